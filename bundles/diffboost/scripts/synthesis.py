"""Stage (c): offline synthesis of n images per real training slice (bundles/diffboost/docs/sources.md §2.4; paper
§III-D, Alg. 1).

:class:`ControlNetSampler` wraps diffusers' ``StableDiffusionControlNetPipeline`` with the authors' sampling recipe:
DDIM (eta 0) with 20 steps, classifier-free guidance 9, control strength 1 on all residuals (the unconditional branch
also gets the control), hint = the slice's edge map replicated to RGB, and the text embedding blend of the code

    c = 0.045 * E(prompt + ",best quality, extremely detailed") + 0.005 * E(aug_i) + 0.95 * E("gray, sketch")

with ``aug_i`` = line ``i mod 50`` of the authors' augmentation text list (:data:`AUGMENTATION_TEXTS`) and the
ControlNet demo's negative prompt. (The paper only says c = c_t + c_aug; set ``prompt_weights=(1, 1, 0)`` for that.)
Decoded RGB images are averaged over channels (the paper's "cross-channel average block"; the code keeps channel 0)
and mapped to [-1, 1].

:class:`Synthesizer` runs it over the training split: for every slice it writes ``num_per_slice`` images
``<output_dir>/<case>/<case>_syn<NNN>.nii`` (float32 in [-1, 1] on the bundle's pixel grid at ``image_size``;
uncompressed NIfTI, read fast at every training step; the real slice's label is reused as their ground truth,
pixel-aligned), plus the hint ``<case>/<case>_edge.nii``, and a manifest ``manifest.json`` recording each image's
provenance (source case and files, prompt, augmentation text, seed, sampler settings) under a provenance header (sampler
settings, seed, n, SD model, edge detector, size and sha256 of the ControlNet / HED weights). It is resumable: images
that exist are skipped (a killed run restarts where it stopped, the manifest is rewritten atomically after every case)
-- but only when the stored header equals the current one: a folder made with other settings (or with an unreadable
manifest) stops the run with a :class:`~common.errors.BadInputError` listing the differences. Each image has its own
seed (``sha256(seed, case, i)``; the authors reseed with 1 before every slice -- a quirk), so a resumed run writes the
same images as an uninterrupted one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import torch
from common.errors import BadInputError, find_bad_input_error
from common.io.atomic import atomic_path, atomic_write_json
from common.text.prompts import resolve_texts
from common.transforms.checks import check_label

from .transforms import MANIFEST_NAME

__all__ = [
    "AUGMENTATION_TEXTS",
    "NEGATIVE_PROMPT",
    "QUALITY_SUFFIX",
    "STYLE_TEXT",
    "ControlNetSampler",
    "Synthesizer",
    "file_identity",
    "sample_seed",
    "synthetic_file",
]

logger = logging.getLogger("diffboost.synthesize")

QUALITY_SUFFIX = ",best quality, extremely detailed"
STYLE_TEXT = "gray, sketch"
NEGATIVE_PROMPT = (
    "longbody, lowres, bad anatomy, bad hands, missing fingers, extra digit, fewer digits, cropped, worst quality, "
    "low quality"
)
#: the authors' ``aug_list.txt`` (50 entries, in order); sample i of a slice uses entry i mod 50
AUGMENTATION_TEXTS: tuple[str, ...] = (
    "Enhance contrast",
    "High resolution",
    "Low resolution",
    "Clear edges",
    "Blurred edges",
    "Noise reduction",
    "Sharpened details",
    "Smoothed texture",
    "Brightened image",
    "Darkened image",
    "High dynamic range",
    "Low dynamic range",
    "Balanced lighting",
    "Uniform background",
    "Grayscale colormap",
    "Pseudo-coloring",
    "Cropped view",
    "Zoomed-in detail",
    "Panoramic view",
    "Artifact removal",
    "Image subtraction",
    "Adaptive histogram equalization",
    "Contrast stretching",
    "Gamma correction",
    "Image normalization",
    "Intensity mapping",
    "Image thresholding",
    "Edge detection",
    "Contour extraction",
    "Morphological operations",
    "Image filtering",
    "Gaussian blur",
    "Median filter",
    "Bilateral filter",
    "Anisotropic diffusion",
    "Image enhancement",
    "Inverse transformation",
    "Image deconvolution",
    "Motion compensation",
    "Image compression",
    "Image denoising",
    "Speckle reduction",
    "Image inpainting",
    "Clustering techniques",
    "Vignetting correction",
    "Lens distortion correction",
    "Perspective correction",
    "Reflection removal",
    "Shadow removal",
    "Image blending",
)


def sample_seed(seed: int, case_id: str, index: int) -> int:
    """Seed of synthetic image ``index`` of ``case_id``: independent of batching and of what was done before."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{case_id}:{index}".encode()).digest()[:4], "little")


def file_identity(path: str | Path | None) -> dict[str, Any] | None:
    """Content identity ``{"path", "size", "sha256"}`` of a weights file (``None`` for no file).

    Recorded in the synthesis manifest so that images made by other generator weights are recognised on resume (the
    sha256, not the path or mtime, is compared: copying or moving the file keeps its identity).

    Raises:
        BadInputError: ``path`` is given but is not a file.
    """
    if path is None or str(path) == "":
        return None
    p = Path(path)
    if not p.is_file():
        raise BadInputError(p, "weights file not found (needed to record which generator made the synthetic images)")
    digest = hashlib.sha256()
    with p.open("rb") as f:
        for block in iter(lambda: f.read(1 << 24), b""):
            digest.update(block)
    return {"path": str(p), "size": p.stat().st_size, "sha256": digest.hexdigest()}


def _differences(old: Any, new: Any, prefix: str = "") -> list[str]:
    """Human-readable ``key: was X, now Y`` lines for the leaves where ``old`` and ``new`` differ."""
    if isinstance(old, Mapping) and isinstance(new, Mapping):
        out = []
        for k in sorted(set(old) | set(new), key=str):
            key = f"{prefix}.{k}" if prefix else str(k)
            if k not in old:
                out.append(f"{key}: absent before, now {new[k]!r}")
            elif k not in new:
                out.append(f"{key}: was {old[k]!r}, now absent")
            else:
                out += _differences(old[k], new[k], key)
        return out
    return [] if old == new else [f"{prefix or 'header'}: was {old!r}, now {new!r}"]


def _shard() -> tuple[int, int]:
    """(rank, world size) of the initialised ``torch.distributed`` process group, else ``(0, 1)``."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def synthetic_file(case_id: str, index: int) -> str:
    """Path of a synthetic image relative to the synthesis folder."""
    return f"{case_id}/{case_id}_syn{index:03d}.nii"


class ControlNetSampler:
    """Edge- and text-conditioned sampling with SD + the fine-tuned ControlNet (see module docstring).

    Args:
        sd_parts: :class:`scripts.sd_parts.StableDiffusionParts`.
        controlnet: the (fine-tuned) diffusers ``ControlNetModel``.
        num_inference_steps, guidance_scale, eta, conditioning_scale: DDIM steps (20), CFG scale (9), DDIM eta (0),
            ControlNet strength (1).
        prompt_weights: weights of (prompt + quality suffix, augmentation text, "gray, sketch").
        negative_prompt: the unconditional prompt.
        augmentation_texts: the c_aug list.
        device: where sampling runs.
    """

    def __init__(
        self,
        sd_parts: Any,
        controlnet: torch.nn.Module,
        num_inference_steps: int = 20,
        guidance_scale: float = 9.0,
        eta: float = 0.0,
        conditioning_scale: float = 1.0,
        prompt_weights: Sequence[float] = (0.045, 0.005, 0.95),
        negative_prompt: str = NEGATIVE_PROMPT,
        augmentation_texts: Sequence[str] = AUGMENTATION_TEXTS,
        device: str | torch.device = "cpu",
    ) -> None:
        from diffusers import DDIMScheduler, StableDiffusionControlNetPipeline

        if len(prompt_weights) != 3:
            raise BadInputError("prompt_weights", f"need 3 weights (prompt, augmentation, style), got {prompt_weights}")
        if not augmentation_texts:
            raise BadInputError("augmentation_texts", "the augmentation text list is empty")
        self.device = torch.device(device)
        self.num_inference_steps, self.guidance_scale, self.eta = (
            int(num_inference_steps),
            float(guidance_scale),
            float(eta),
        )
        self.conditioning_scale = float(conditioning_scale)
        self.prompt_weights = tuple(float(w) for w in prompt_weights)
        self.negative_prompt = negative_prompt
        self.augmentation_texts = tuple(augmentation_texts)
        scheduler = DDIMScheduler.from_config(
            sd_parts.noise_scheduler.config, clip_sample=False, set_alpha_to_one=False, steps_offset=1
        )
        controlnet.eval().requires_grad_(False)
        self.pipe = StableDiffusionControlNetPipeline(
            vae=sd_parts.vae,
            text_encoder=sd_parts.text_encoder,
            tokenizer=sd_parts.tokenizer,
            unet=sd_parts.unet,
            controlnet=controlnet,
            scheduler=scheduler,
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
        ).to(self.device)
        self.pipe.set_progress_bar_config(disable=True)
        self.vae_scale_factor = sd_parts.vae_scale_factor

    def _pipeline_settings(self) -> dict[str, Any]:
        """The DDIM, guidance and ControlNet arguments of every pipeline call (recorded by :meth:`settings`)."""
        return {
            "num_inference_steps": self.num_inference_steps,
            "guidance_scale": self.guidance_scale,
            "eta": self.eta,
            "controlnet_conditioning_scale": self.conditioning_scale,
            "guess_mode": False,
        }

    def settings(self) -> dict[str, Any]:
        """The sampler settings recorded in the manifest."""
        return {
            "scheduler": "DDIM",
            **self._pipeline_settings(),
            "prompt_weights": list(self.prompt_weights),
            "prompt_template": "{prompt}" + QUALITY_SUFFIX,
            "quality_suffix": QUALITY_SUFFIX,
            "style_text": STYLE_TEXT,
            "negative_prompt": self.negative_prompt,
            "augmentation_texts_sha256": hashlib.sha256("\n".join(self.augmentation_texts).encode()).hexdigest(),
        }

    def augmentation_text(self, index: int) -> str:
        return self.augmentation_texts[index % len(self.augmentation_texts)]

    def _encode(self, texts: list[str]) -> torch.Tensor:
        return self.pipe.encode_prompt(texts, self.device, 1, False)[0]

    @torch.no_grad()
    def embeddings(self, prompt: str, indices: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """(prompt_embeds, negative_prompt_embeds), each ``(n, 77, D)``: the weighted blend per sample index."""
        n = len(indices)
        w_prompt, w_aug, w_style = self.prompt_weights
        cond = w_prompt * self._encode([prompt + QUALITY_SUFFIX] * n)
        cond = cond + w_aug * self._encode([self.augmentation_text(i) for i in indices])
        cond = cond + w_style * self._encode([STYLE_TEXT] * n)
        return cond, self._encode([self.negative_prompt] * n)

    @torch.no_grad()
    def sample(self, edge: torch.Tensor, prompt: str, seeds: Sequence[int], indices: Sequence[int]) -> torch.Tensor:
        """Generate one image per seed from one edge map.

        Args:
            edge: ``(1, H, W)`` hint in [0, 1] (H, W multiples of 8 x the VAE factor is safest; SD: 384).
            prompt: the task prompt ("<Organ>, <Modality>").
            seeds: one seed per image.
            indices: sample indices (choose the augmentation texts).

        Returns:
            ``(n, 1, H, W)`` float32 in [-1, 1] on the CPU.
        """
        e = torch.as_tensor(edge).float()
        if e.ndim != 3 or e.shape[0] != 1:
            raise BadInputError("edge", f"expected a (1, H, W) edge map, got shape {tuple(e.shape)}")
        h, w = e.shape[-2:]
        if h % self.vae_scale_factor or w % self.vae_scale_factor:
            raise BadInputError("image_size", f"{(h, w)} must be a multiple of the VAE factor {self.vae_scale_factor}")
        n = len(seeds)
        hint = e.clamp(0, 1).expand(n, 3, h, w).to(self.device)
        cond, neg = self.embeddings(prompt, indices)
        generators = [torch.Generator(device="cpu").manual_seed(int(s)) for s in seeds]
        call = dict(self._pipeline_settings(), prompt_embeds=cond, negative_prompt_embeds=neg, generator=generators)
        out = self.pipe(image=hint, height=h, width=w, output_type="pt", **call).images
        return (out.float().mean(dim=1, keepdim=True) * 2.0 - 1.0).clamp(-1.0, 1.0).cpu()


def _save_nifti(path: Path, image: torch.Tensor) -> None:
    arr = np.ascontiguousarray(torch.as_tensor(image).detach().cpu().numpy()[0].astype(np.float32))
    with atomic_path(path) as tmp:
        nib.save(nib.Nifti1Image(arr, np.eye(4)), str(tmp))


class Synthesizer:
    """Write ``num_per_slice`` synthetic images per training slice, resumably, with a provenance manifest.

    The manifest header records what decides the images: ``num_per_slice``, ``seed``, the sampler settings (steps,
    guidance, eta, control strength, prompt template and weights, negative prompt, augmentation texts), the
    ``provenance`` settings (e.g. SD model, edge detector, image size) and the content identity (size + sha256) of
    the ``weights_files`` (ControlNet, HED). It is written before the first image. On resume the stored header must
    equal the current one, and each kept image's recorded prompt must equal its case's current prompt; otherwise
    the run stops (images made with other settings would be mislabelled with the new provenance).

    Args:
        sampler: :class:`ControlNetSampler` (a zero-argument callable is built at the start of :meth:`run`: its
            settings are part of the provenance header).
        data: the training entries (``case_id``, ``image``, ``label``, ``text``).
        preprocessing: the deterministic transform producing ``image`` ``(1, S, S)``, ``label``, ``edge`` and ``text``.
        output_dir: the synthesis folder (``synthetic_dir``).
        num_per_slice: n (50 at full scale; the paper reports a plateau beyond ~10).
        batch_size: images per pipeline call (not part of the header: it changes the images by float rounding only,
            measured 1.3e-6 at most on CPU for an image made alone instead of in a batch of 2).
        seed: base seed (see :func:`sample_seed`).
        default_text: prompt for entries without text (``None``: such an entry is an error naming the case).
        provenance: settings written into the manifest header and compared on resume (e.g. the SD model).
        weights_files: ``{name: path or None}`` of generator weights whose identity (:func:`file_identity`) is
            recorded and compared on resume (e.g. ``controlnet_weights``, ``hed_weights``).
        locations: paths recorded in the header for information only, not compared (e.g. the datalist).
        shard: ``(rank, world_size)``: this process writes the slices ``data[rank::world_size]``; default: the
            ``torch.distributed`` rank and world size when a process group is initialised (``torchrun`` with
            ``configs/multi_gpu_synthesize.json``), else ``(0, 1)``. Each image's seed depends on its case and index
            only, so N processes write the same images as one. With N > 1 each rank keeps its own resumable
            ``manifest.rank<r>of<N>.json`` while it works; at the end all ranks meet at a barrier and rank 0 merges
            them (and any earlier ``manifest.json``) into the one ``manifest.json``, then removes the shard files.

    Raises (from :meth:`run`):
        BadInputError: naming ``manifest.json``, when it is unreadable, or was made with other settings (the
            differences are listed), or when ``output_dir`` holds synthetic images without a manifest.
    """

    def __init__(
        self,
        sampler: ControlNetSampler | Callable[[], ControlNetSampler],
        data: Sequence[Mapping[str, Any]],
        preprocessing: Callable[[Mapping[str, Any]], Mapping[str, Any]],
        output_dir: str | Path,
        num_per_slice: int = 50,
        batch_size: int = 10,
        seed: int = 0,
        default_text: str | None = None,
        provenance: Mapping[str, Any] | None = None,
        weights_files: Mapping[str, str | Path | None] | None = None,
        locations: Mapping[str, Any] | None = None,
        shard: tuple[int, int] | None = None,
    ) -> None:
        if int(num_per_slice) < 1:
            raise BadInputError("num_synthetic", f"must be >= 1, got {num_per_slice}")
        self._sampler = sampler
        self.data = list(data)
        self.preprocessing = preprocessing
        self.output_dir = Path(output_dir)
        self.num_per_slice = int(num_per_slice)
        self.batch_size = max(1, int(batch_size))
        self.seed = int(seed)
        self.default_text = default_text
        self.provenance = dict(provenance or {})
        self.weights_files = dict(weights_files or {})
        self.locations = dict(locations or {})
        self.generated: list[tuple[str, int]] = []
        self._identities: dict[str, dict[str, Any] | None] = {}
        self.rank, self.world_size = _shard() if shard is None else (int(shard[0]), int(shard[1]))
        if not 0 <= self.rank < self.world_size:
            raise BadInputError("shard", f"rank {self.rank} is not in 0..{self.world_size - 1}")

    @property
    def sampler(self) -> ControlNetSampler:
        if not isinstance(self._sampler, ControlNetSampler):
            self._sampler = self._sampler()
        return self._sampler

    @property
    def manifest_path(self) -> Path:
        """The merged manifest (``manifest.json``)."""
        return self.output_dir / MANIFEST_NAME

    @property
    def shard_manifest_path(self) -> Path:
        """This process's manifest while it works: ``manifest.json`` alone, or ``manifest.rank<r>of<N>.json``."""
        if self.world_size == 1:
            return self.manifest_path
        return self.output_dir / f"{Path(MANIFEST_NAME).stem}.rank{self.rank}of{self.world_size}.json"

    def header(self) -> dict[str, Any]:
        """The provenance header compared on resume (see the class docstring)."""
        self._identities = {name: file_identity(path) for name, path in sorted(self.weights_files.items())}
        weights = {
            name: None if ident is None else {"size": ident["size"], "sha256": ident["sha256"]}
            for name, ident in self._identities.items()
        }
        return {
            "num_per_slice": self.num_per_slice,
            "seed": self.seed,
            "sampler": self._settings(),
            "provenance": self.provenance,
            "weights": weights,
        }

    def _fail(self, problem: str) -> BadInputError:
        return BadInputError(self.manifest_path, f"{problem}; delete the folder or set another synthetic_dir")

    def _manifests(self) -> list[Path]:
        """The merged manifest and every shard manifest in ``output_dir`` (those of other world sizes too)."""
        shards = sorted(self.output_dir.glob(f"{Path(MANIFEST_NAME).stem}.rank*of*.json"))
        return [p for p in [self.manifest_path, *shards] if p.is_file()]

    def _read_manifest(self, path: Path, header: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
        """Records of the manifest ``path``, after checking that its header equals ``header``."""
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
            old = doc["header"]
            records = {r["file"]: r for r in doc["images"]}
        except (ValueError, KeyError, TypeError) as err:
            raise BadInputError(
                path,
                f"unreadable synthesis manifest ({type(err).__name__}: {err}); delete the folder or set another "
                "synthetic_dir",
            ) from None
        diffs = _differences(json.loads(json.dumps(old)), json.loads(json.dumps(header)))
        if diffs:
            shown = "; ".join(diffs[:6]) + ("; ..." if len(diffs) > 6 else "")
            raise BadInputError(
                path, f"made with other settings ({shown}); delete the folder or set another synthetic_dir"
            )
        return records

    def _load_records(self, header: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
        """Records of every existing manifest (merged and shards), after checking that their headers equal
        ``header``."""
        manifests = self._manifests()
        if not manifests:
            stray = sorted(self.output_dir.glob("*/*_syn[0-9][0-9][0-9].nii"))
            if stray:
                raise BadInputError(
                    self.output_dir,
                    f"holds {len(stray)} synthetic image(s) (e.g. {stray[0].name}) but no {MANIFEST_NAME}, so the "
                    "settings that made them are unknown; delete the folder or set another synthetic_dir",
                )
            return {}
        records: dict[str, dict[str, Any]] = {}
        for path in manifests:
            records.update(self._read_manifest(path, header))
        return records

    def _write_manifest(
        self, header: Mapping[str, Any], records: Mapping[str, Mapping[str, Any]], path: Path | None = None
    ) -> None:
        doc = {
            "format": 2,
            "description": "DiffBoost synthetic images; each is paired with the label of its source slice",
            "header": header,
            "num_per_slice": self.num_per_slice,
            "seed": self.seed,
            "provenance": self.provenance,
            "weights_files": self._identities,
            "locations": self.locations,
            "images": [records[k] for k in sorted(records)],
        }
        atomic_write_json(self.shard_manifest_path if path is None else path, doc)

    def _prepare(self, entry: Mapping[str, Any]) -> Mapping[str, Any]:
        try:
            d = self.preprocessing(dict(entry))
        except Exception as err:
            bad = find_bad_input_error(err)
            if bad is not None:
                raise bad from err
            raise
        cid = entry["case_id"]
        check_label(d["label"], f"case {cid}", require_foreground=True, name="label (synthesis needs its outline)")
        return d

    def run(self) -> dict[str, int]:
        """Synthesise what is missing; returns ``{"cases", "generated", "skipped"}`` counts (images)."""
        self.output_dir.mkdir(parents=True, exist_ok=True)
        header = self.header()
        records = self._load_records(header)
        self._write_manifest(header, records)  # the header exists before the first image is written
        generated = skipped = 0
        mine = self.data[self.rank :: self.world_size]
        n_cases = len(mine)
        start = time.perf_counter()
        for k, entry in enumerate(mine, 1):
            cid = str(entry["case_id"])
            files = [synthetic_file(cid, i) for i in range(self.num_per_slice)]
            todo = [i for i, f in enumerate(files) if not (self.output_dir / f).is_file()]
            prompt = resolve_texts([entry.get("text")], 1, self.default_text, [cid])[0]
            kept = [f for i, f in enumerate(files) if i not in todo and f in records]
            stale = [f for f in kept if records[f].get("prompt") != prompt]
            if stale:
                raise self._fail(
                    f"made with other settings (case {cid}: prompt was {records[stale[0]].get('prompt')!r}, now "
                    f"{prompt!r})"
                )
            if todo:
                t0 = time.perf_counter()
                d = self._prepare(entry)
                _save_nifti(self.output_dir / cid / f"{cid}_edge.nii", d["edge"])
                for s in range(0, len(todo), self.batch_size):
                    chunk = todo[s : s + self.batch_size]
                    seeds = [sample_seed(self.seed, cid, i) for i in chunk]
                    images = self.sampler.sample(d["edge"], prompt, seeds, chunk)
                    for i, img in zip(chunk, images):
                        _save_nifti(self.output_dir / files[i], img)
                        self.generated.append((cid, i))
                generated += len(todo)
                logger.info(
                    "case %d/%d %s: wrote %d, kept %d existing (%.1f s)",
                    k,
                    n_cases,
                    cid,
                    len(todo),
                    self.num_per_slice - len(todo),
                    time.perf_counter() - t0,
                )
            else:
                logger.info("case %d/%d %s: all %d images exist, skipped", k, n_cases, cid, self.num_per_slice)
            skipped += self.num_per_slice - len(todo)
            for i, f in enumerate(files):
                if f in records and i not in todo:
                    continue
                records[f] = {
                    "file": f,
                    "case_id": cid,
                    "index": i,
                    "source_image": str(entry.get("image")),
                    "source_label": str(entry.get("label")),
                    "label": str(entry.get("label")),
                    "prompt": prompt,
                    "augmentation_text": self._aug_text(i),
                    "seed": sample_seed(self.seed, cid, i),
                    "sampler": self._settings(),
                }
            self._write_manifest(header, records)
        if self.world_size > 1:
            self._merge_shards(header)
        logger.info(
            "synthesis done%s: %d slices, %d images written, %d existing kept, %.1f s -> %s",
            "" if self.world_size == 1 else f" (rank {self.rank} of {self.world_size})",
            n_cases,
            generated,
            skipped,
            time.perf_counter() - start,
            self.manifest_path,
        )
        return {"cases": n_cases, "generated": generated, "skipped": skipped}

    def _merge_shards(self, header: Mapping[str, Any]) -> None:
        """Barrier; rank 0 writes every manifest's records into ``manifest.json`` and removes the shard files;
        barrier (so no rank returns before the merged manifest exists)."""
        import torch.distributed as dist

        distributed = dist.is_available() and dist.is_initialized()
        if distributed:
            dist.barrier()
        if self.rank == 0:
            shards = [p for p in self._manifests() if p != self.manifest_path]
            records = self._load_records(header)
            expected = {synthetic_file(str(e["case_id"]), i) for e in self.data for i in range(self.num_per_slice)}
            missing = sorted(expected - set(records))
            if missing:
                raise self._fail(
                    f"{len(missing)} image(s) of other ranks are not in their manifests (e.g. {missing[0]})"
                )
            self._write_manifest(header, records, path=self.manifest_path)
            for p in shards:
                p.unlink()
        if distributed:
            dist.barrier()

    def _aug_text(self, index: int) -> str:
        if isinstance(self._sampler, ControlNetSampler):
            return self._sampler.augmentation_text(index)
        return AUGMENTATION_TEXTS[index % len(AUGMENTATION_TEXTS)]

    def _settings(self) -> dict[str, Any]:
        return self.sampler.settings()
