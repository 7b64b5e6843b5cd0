"""Random-weight STAND-INS of the pretrained parts, written in the exact public formats (``tools/make_standins.py``).

The real weights cannot be downloaded on every machine (CI, air-gapped clusters). The stand-ins below have the real
artefacts' file layout, key names, shapes, sizes and configs, so the bundles' unchanged loading code opens them and
the shipped paper-scale configs run end to end -- with random weights, i.e. meaningless outputs. Every stand-in folder
holds a :data:`STANDIN_MARKER` file; the real loaders call :func:`warn_if_standin` and log one warning per path.

- ``adm``: ``guided_diffusion/256x256_diffusion_uncond.pt`` -- OpenAI ADM state dict, 566 tensors, 552,814,086
  parameters, fp32, ~2.2 GB. Real: https://github.com/openai/guided-diffusion (README, 256x256 unconditional).
- ``bert``: ``Bio_ClinicalBERT/`` -- BERT-base cased, 108,310,272 parameters (with pooler), vocab 28,996, ~433 MB.
  Real: https://huggingface.co/emilyalsentzer/Bio_ClinicalBERT
- ``sd``: ``stable-diffusion-v1-5/`` -- diffusers folder: UNet 859,520,964, VAE 83,653,863, CLIP text encoder
  123,060,480 parameters, ~4.3 GB. Real: https://huggingface.co/stable-diffusion-v1-5/stable-diffusion-v1-5
- ``hed``: ``hed/network-bsds500.pth`` -- HED BSDS500, 14,716,171 parameters, ~59 MB.
  Real: https://huggingface.co/lllyasviel/Annotators (``network-bsds500.pth``)
- ``cdal``: ``cdal/netG_standin.pth`` -- cDAL MoNuSeg generator in the authors' DDP format (``module.`` keys),
  41,666,753 parameters, ~167 MB. Real: https://huggingface.co/Hejrati/cDAL

Each part is written by one function (``write_<part>_standin(folder, seed=0, ...)``) whose architecture comes from a
config function (:func:`adm_standin_config`, :func:`bert_standin_config`, :func:`sd_unet_config`, ...), so the tests
check the full-size parameter counts on the ``meta`` device and run the same writers on small configs. Files are
written atomically (temporary name + ``os.replace``; folders written by ``save_pretrained`` are staged in a temporary
folder and renamed), re-loaded and compared after writing (tensor counts, parameter counts, values or fingerprints,
and the bundles' own loaders), and the marker is written last: a folder with a marker whose listed files exist with
the listed sizes is complete (:func:`standin_complete`) and :func:`make_standins` skips it unless ``force``.
Everything is seeded (``torch.manual_seed(seed)`` inside ``torch.random.fork_rng``: the caller's RNG is untouched),
so a rerun with the same seed and torch version gives the same tensors.

The tokenizers are synthetic but valid: the BERT ``vocab.txt`` has BERT-base-cased's layout (``[PAD]`` 0,
``[unused1..99]``, ``[UNK] [CLS] [SEP] [MASK]`` 100-103, characters, words, ``##`` pieces) and the CLIP BPE
(``vocab.json`` 49,408 entries, ``merges.txt`` 48,894 merges) starts from CLIP's 256 byte symbols and their ``</w>``
forms, so English/clinical prompts tokenize to a handful of pieces, never to unknown tokens.

This module imports only the standard library at import time (torch, transformers, diffusers and the bundle code
are imported inside the functions), so the loaders in ``common`` can import :func:`warn_if_standin` freely.
"""

from __future__ import annotations

import contextlib
import datetime
import gc
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from os import PathLike
from pathlib import Path
from typing import TYPE_CHECKING, Any

from common.io.atomic import atomic_torch_save, atomic_write_json, atomic_write_text, temp_path_for
from common.utils.bundles import bundle_scripts

if TYPE_CHECKING:
    import torch

__all__ = [
    "STANDIN_MARKER",
    "PARTS",
    "PART_FOLDERS",
    "STANDIN_URLS",
    "ADM_FILENAME",
    "HED_FILENAME",
    "CDAL_FILENAME",
    "ADM_TENSORS",
    "ADM_PARAMS",
    "BERT_PARAMS",
    "BERT_VOCAB_SIZE",
    "SD_UNET_PARAMS",
    "SD_VAE_PARAMS",
    "SD_TEXT_ENCODER_PARAMS",
    "CLIP_VOCAB_SIZE",
    "CLIP_NUM_MERGES",
    "HED_PARAMS",
    "CDAL_PARAMS",
    "STANDIN_WORDS",
    "warn_if_standin",
    "find_standin_marker",
    "standin_complete",
    "write_standin_marker",
    "adm_standin_config",
    "monai_to_adm_state_dict",
    "write_adm_standin",
    "bert_standin_config",
    "bert_standin_vocab",
    "write_bert_tokenizer",
    "write_bert_standin",
    "sd_unet_config",
    "sd_vae_config",
    "sd_text_encoder_config",
    "sd_scheduler_config",
    "sd_model_index",
    "clip_standin_vocab_and_merges",
    "write_clip_tokenizer",
    "write_sd_standin",
    "hed_standin_state_dict",
    "write_hed_standin",
    "cdal_standin_config",
    "cdal_official_state_dict",
    "write_cdal_standin",
    "make_standins",
]

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[1]

#: Name of the marker file in every stand-in folder (a few lines of text, see :func:`write_standin_marker`).
STANDIN_MARKER = "STANDIN"

#: The parts :func:`make_standins` writes, in this order.
PARTS: tuple[str, ...] = ("adm", "bert", "sd", "hed", "cdal")

#: Sub-folder of ``OUT`` per part.
PART_FOLDERS: dict[str, str] = {
    "adm": "guided_diffusion",
    "bert": "Bio_ClinicalBERT",
    "sd": "stable-diffusion-v1-5",
    "hed": "hed",
    "cdal": "cdal",
}

#: Public address of the real artefact each part stands in for.
STANDIN_URLS: dict[str, str] = {
    "adm": "https://github.com/openai/guided-diffusion (README: 256x256 diffusion, unconditional; "
    "https://openaipublic.blob.core.windows.net/diffusion/jul-2021/256x256_diffusion_uncond.pt)",
    "bert": "https://huggingface.co/emilyalsentzer/Bio_ClinicalBERT",
    "sd": "https://huggingface.co/stable-diffusion-v1-5/stable-diffusion-v1-5",
    "hed": "https://huggingface.co/lllyasviel/Annotators (network-bsds500.pth)",
    "cdal": "https://huggingface.co/Hejrati/cDAL (netG_*.pth generator checkpoints)",
}

ADM_FILENAME = "256x256_diffusion_uncond.pt"
HED_FILENAME = "network-bsds500.pth"
CDAL_FILENAME = "netG_standin.pth"

ADM_TENSORS = 566
ADM_PARAMS = 552_814_086
BERT_PARAMS = 108_310_272  # BertModel incl. pooler: embeddings 22,665,216 + 12 x 7,087,872 + pooler 590,592
BERT_VOCAB_SIZE = 28_996
SD_UNET_PARAMS = 859_520_964
SD_VAE_PARAMS = 83_653_863
SD_TEXT_ENCODER_PARAMS = 123_060_480  # embeddings 38,004,480 + 12 x 7,087,872 + final LayerNorm 1,536
CLIP_VOCAB_SIZE = 49_408  # 256 byte symbols + 256 "</w>" forms + 48,894 merges + 2 special tokens
CLIP_NUM_MERGES = 48_894
HED_PARAMS = 14_716_171  # VGG16 convs 14,714,688 + 5 score convs 1,477 + fuse 6
CDAL_PARAMS = 41_666_753

_LogFn = Callable[[str], None]

# ------------------------------------------------------------------------------------------------ marker + warning
_warned: set[str] = set()


def find_standin_marker(path: str | PathLike) -> Path | None:
    """The :data:`STANDIN_MARKER` file belonging to ``path`` (in it if it is a folder, else in its parent folder;
    a folder's parent counts too, e.g. ``OUT/stable-diffusion-v1-5/unet``), or ``None``."""
    p = Path(path).expanduser()
    candidates = ([p / STANDIN_MARKER] if p.is_dir() else []) + [p.parent / STANDIN_MARKER]
    for c in candidates:
        if c.is_file():
            return c
    return None


def warn_if_standin(path: str | PathLike, what: str) -> bool:
    """True if ``path`` (a weights file or model folder) is a random-weight stand-in of :func:`make_standins`.

    Logs one ``logging.warning`` per (resolved) path and process: ``"<what> at <path> is a random-weight STAND-IN
    (tools/make_standins.py): outputs are meaningless"``. Returns False (silently) for anything else.
    """
    marker = find_standin_marker(path)
    if marker is None:
        return False
    key = str(Path(path).expanduser().resolve())
    if key not in _warned:
        _warned.add(key)
        logger.warning(
            "%s at %s is a random-weight STAND-IN (tools/make_standins.py): outputs are meaningless (marker %s)",
            what,
            path,
            marker,
        )
    return True


def write_standin_marker(
    folder: str | PathLike, part: str, seed: int, files: Sequence[str | PathLike], details: Sequence[str] = ()
) -> Path:
    """Write ``folder/STANDIN`` (atomically): what wrote it, that the weights are random, date, seed, the real
    artefact's address, ``details`` lines and one ``<relative path>\\t<bytes>`` line per file (every file of a
    folder is listed). :func:`standin_complete` reads it back."""
    folder = Path(folder)
    listed: list[tuple[str, int]] = []
    for f in files:
        f = Path(f)
        f = f if f.is_absolute() else folder / f
        items = sorted(x for x in f.rglob("*") if x.is_file()) if f.is_dir() else [f]
        listed += [(x.relative_to(folder).as_posix(), x.stat().st_size) for x in items]
    now = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0).isoformat()
    lines = [
        f"STAND-IN ({part}): written by tools/make_standins.py (common.standins.write_{part}_standin).",
        "Random weights in the public format of the real artefact: outputs are meaningless.",
        f"real artefact: {STANDIN_URLS.get(part, '?')}",
        f"date: {now}",
        f"seed: {int(seed)}",
        *details,
        "files:",
        *(f"  {name}\t{size}" for name, size in listed),
    ]
    return atomic_write_text(folder / STANDIN_MARKER, "\n".join(lines) + "\n")


def _read_marker(folder: Path) -> tuple[int | None, list[tuple[str, int]]]:
    marker = folder / STANDIN_MARKER
    if not marker.is_file():
        return None, []
    seed, files, in_files = None, [], False
    for line in marker.read_text(encoding="utf-8").splitlines():
        if in_files and line.startswith("  ") and "\t" in line:
            name, _, size = line.strip().rpartition("\t")
            files.append((name, int(size)))
        elif line.startswith("seed:"):
            seed = int(line.split(":", 1)[1])
        elif line.strip() == "files:":
            in_files = True
    return seed, files


def standin_complete(folder: str | PathLike, seed: int | None = None) -> bool:
    """True if ``folder`` holds a marker (of ``seed``, if given) and every file it lists with the listed size."""
    folder = Path(folder)
    marker_seed, files = _read_marker(folder)
    if marker_seed is None or not files or (seed is not None and marker_seed != int(seed)):
        return False
    return all((folder / name).is_file() and (folder / name).stat().st_size == size for name, size in files)


# ----------------------------------------------------------------------------------------------------- helpers
@contextlib.contextmanager
def _seeded(seed: int) -> Iterator[None]:
    """``torch.manual_seed(seed)`` for the block without changing the caller's RNG state."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        yield


def _usual_permissions(folder: Path) -> None:
    """Give the files under ``folder`` the umask's permissions (some writers create their files with mode 0600)."""
    umask = os.umask(0)
    os.umask(umask)
    for f in folder.rglob("*"):
        if f.is_file():
            os.chmod(f, 0o666 & ~umask)


@contextlib.contextmanager
def _staged_folder(final: Path) -> Iterator[Path]:
    """Yield an empty temporary folder next to ``final``; on success it replaces ``final`` (rename), on error it is
    removed and ``final`` left as it was."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path_for(final)
    tmp.mkdir()
    try:
        yield tmp
        _usual_permissions(tmp)
        old = None
        if final.exists():
            old = temp_path_for(final).with_suffix(".old")
            os.replace(final, old)
        os.replace(tmp, final)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _invalidate(folder: Path) -> None:
    """Remove ``folder``'s marker: the folder counts as incomplete until the writer has verified the new files."""
    with contextlib.suppress(FileNotFoundError):
        (folder / STANDIN_MARKER).unlink()


def _numel(tensors: Iterable[torch.Tensor]) -> int:
    return sum(int(t.numel()) for t in tensors)


def _fingerprint(tensors: Iterable[torch.Tensor]) -> tuple[int, int, float, float]:
    """(tensors, elements, float64 sum, float64 sum of squares): compares two copies of a big model cheaply."""
    n, numel, s, s2 = 0, 0, 0.0, 0.0
    for t in tensors:
        d = t.detach().double()
        n, numel, s, s2 = n + 1, numel + t.numel(), s + float(d.sum()), s2 + float((d * d).sum())
    return n, numel, s, s2


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise RuntimeError(f"stand-in verification failed: {message}")


def _say(log: _LogFn | None, message: str) -> None:
    if log is not None:
        log(message)


# ---------------------------------------------------------------------------------------------------------- ADM
def adm_standin_config() -> dict[str, Any]:
    """guided-diffusion flags of ``256x256_diffusion_uncond.pt`` = TextDiff's paper config
    (``bundles/textdiff/configs/train.json``): 566 tensors / 552,814,086 parameters."""
    from common.networks.guided_diffusion import ADM_256_UNCOND

    return dict(ADM_256_UNCOND)


def monai_to_adm_state_dict(unet: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The inverse of :func:`common.networks.guided_diffusion.convert_adm_state_dict`: MONAI ``DiffusionModelUNet``
    weights (built by ``adm_unet``) -> an official guided-diffusion state dict, in ADM's key order.

    ``to_q``/``to_k``/``to_v`` (C, C) are fused head by head (legacy order) into ``qkv`` (3C, C, 1) (biases (3C,));
    ``out_proj`` (C, C) -> ``proj_out`` (C, C, 1) (Conv1d); everything else keeps its shape. Works on ``meta``
    tensors (counting without memory).

    Raises:
        KeyError: a MONAI key has no ADM name (an architecture outside ``adm_unet``).
    """
    import torch
    from common.networks.guided_diffusion import adm_key_pairs

    ours = unet.state_dict()
    used: set[str] = set()
    out: dict[str, torch.Tensor] = {}
    for adm_key, monai_key, how in adm_key_pairs(unet):
        if how == "qkv":
            p = adm_key.rsplit(".", 1)[1]
            keys = [f"{monai_key}.{n}.{p}" for n in ("to_q", "to_k", "to_v")]
            heads = int(unet.get_submodule(monai_key).num_heads)
            q = ours[keys[0]]
            c = q.shape[0]
            parts = [ours[k].reshape(heads, c // heads, *q.shape[1:]) for k in keys]
            qkv = torch.stack(parts, dim=1).reshape(3 * c, *q.shape[1:])
            out[adm_key] = qkv.unsqueeze(-1) if p == "weight" else qkv  # Conv1d (3C, C, 1)
            used.update(keys)
        elif monai_key in ours:
            used.add(monai_key)
            v = ours[monai_key]
            out[adm_key] = v.unsqueeze(-1) if how == "conv1d" else v  # Linear (C, C) -> Conv1d (C, C, 1)
    left = sorted(set(ours) - used)
    if left:
        raise KeyError(f"{len(left)} MONAI key(s) without an ADM name: {left[:5]}")
    return out


def write_adm_standin(
    folder: str | PathLike,
    seed: int = 0,
    config: Mapping[str, Any] | None = None,
    filename: str = ADM_FILENAME,
    verify: bool = True,
    log: _LogFn | None = None,
) -> Path:
    """Write ``folder/256x256_diffusion_uncond.pt``: a plain ``torch.save``-d fp32 state dict in OpenAI's key names
    (``time_embed.0.weight``, ``input_blocks.0.0.weight``, ..., ``output_blocks.17.*``, ``out.2.weight``), as the
    released checkpoint (https://github.com/openai/guided-diffusion README, 256x256 unconditional).

    Built by ``common.networks.guided_diffusion.adm_unet(**config, init_seed=seed, random_residuals=True)`` (the
    zero-initialised output layers get small random weights, as a trained checkpoint has none that are zero) and renamed
    with :func:`monai_to_adm_state_dict`. Full size (``config=None`` = :func:`adm_standin_config`): 566 tensors,
    552,814,086 parameters, ~2.2 GB; the counts are asserted.

    Verification: the file re-loads with the same keys and values, and
    ``common.networks.guided_diffusion.load_adm_weights(fresh_unet, path)`` loads it strictly into a fresh UNet whose
    weights then equal the written ones. The marker is written last. Returns the file path.
    """
    import torch
    from common.networks.guided_diffusion import adm_unet, load_adm_weights

    folder = Path(folder)
    flags = dict(config) if config is not None else adm_standin_config()
    path = folder / filename
    _invalidate(folder)
    unet = adm_unet(**flags, init_seed=seed, random_residuals=True)
    state = monai_to_adm_state_dict(unet)
    n_tensors, n_params = len(state), _numel(state.values())
    if config is None:
        _check((n_tensors, n_params) == (ADM_TENSORS, ADM_PARAMS), f"ADM {n_tensors} tensors / {n_params} params")
    _say(log, f"  adm: {n_tensors} tensors, {n_params:,} parameters; saving {path}")
    atomic_torch_save(state, path)
    if verify:
        loaded = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        _check(list(loaded) == list(state), "re-loaded keys differ")
        _check(all(torch.equal(loaded[k], v) for k, v in state.items()), "re-loaded values differ")
        del loaded, state
        with torch.device("meta"):
            fresh = adm_unet(**flags)
        fresh.to_empty(device="cpu")
        load_adm_weights(fresh, path)  # the real loader, strict
        written, got = unet.state_dict(), fresh.state_dict()
        _check(all(torch.equal(got[k], v) for k, v in written.items()), "load_adm_weights round trip differs")
        del fresh, written, got
    del unet
    gc.collect()
    write_standin_marker(
        folder,
        "adm",
        seed,
        [filename],
        [f"tensors: {n_tensors}", f"parameters: {n_params}", f"flags: {json.dumps(_jsonable(flags))}"],
    )
    return path


def _jsonable(d: Mapping[str, Any]) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


# --------------------------------------------------------------------------------------------------------- words
_STANDIN_WORDS_TEXT = """
    the of and to a in is it that was for on are as with be by at this have from or an they which one you were all
    we her she there would their will each about how up out them then many some so these would other into has more
    two like him see time could no make than first been its who now people my made over did down only way find use
    may water long little very after words called just where most know get through back much before go good new
    write our used me man too any day same right look think also around another came come work three must because
    does part even place well such here take why help put different away again off went old number great tell men
    say small every found still between name should home big give air line set own under read last never us left
    end along while might next sound below saw something thought both few those always show large often together
    asked house world going want school important until form food keep children feet land side without boy once
    animal life enough took four head above kind began almost live page got earth need far hand high year mother
    light country father let night picture being study second soon story since white ever paper hard near sentence
    better best across during today however sure knew try told young sun thing whole hear example heard several
    change answer room sea against top turned learn point city play toward five himself usually money seen car
    morning body upon family later move face door cut done group true half red fish plants living black eat short
    color run book gave order open ground cold really table remember tree course front oh known five six seven eight
    nine ten zero none single double multiple partial total normal abnormal mild moderate severe marked slight
    slightly evenly sparsely irregularly densely regularly uniformly randomly mainly mostly partly highly clearly
    distributed density dense sparse irregular regular uniform random even higher lower highest lowest increased
    decreased reduced enlarged elevated stable unchanged improved worse new old acute chronic diffuse focal local
    patchy scattered isolated clustered central peripheral proximal distal medial lateral anterior posterior
    superior inferior upper lower middle left right both bilateral unilateral side sides half halves center centre
    corner edge border boundary region regions area areas zone zones part parts quadrant quadrants lobe lobes
    segment segments field fields image images slice slices view views scan scans nuclei nucleus nuclear cell cells
    cellular tissue tissues stroma stromal gland glands glandular epithelium epithelial membrane cytoplasm
    chromatin mitosis mitotic tumor tumors tumour tumours cancer cancers carcinoma adenocarcinoma lesion lesions
    cyst cysts mass masses nodule nodules metastasis metastases malignant benign neoplasm polyp polyps growth
    infection infections infected inflammation inflammatory opacity opacities consolidation effusion pneumonia
    covid coronavirus virus viral bacterial pulmonary lung lungs chest thorax thoracic heart cardiac liver hepatic
    kidney kidneys renal pancreas pancreatic spleen splenic colon colonic colorectal rectum bowel intestine stomach
    gastric bladder prostate breast brain cerebral hippocampus hippocampal skull spine spinal bone bones vessel
    vessels artery arteries vein veins aorta abdomen abdominal pelvis pelvic organ organs anatomy anatomical
    patient patients case cases report reports finding findings diagnosis clinical medical radiology radiological
    pathology pathological histology histological histopathology microscopy microscope stain stained staining
    hematoxylin eosin biopsy sample samples specimen computerized computed tomography tomographic magnetic
    resonance imaging ultrasound sonography radiograph radiography mammography endoscopy xray ray rays contrast
    enhanced enhancement weighted sequence axial coronal sagittal transverse plane planes volume volumes voxel
    pixel pixels resolution segmentation segment segmented label labels labelled labeled mask masks boundary
    outline contour contours edges edge detection detected showing shows shown show seen visible present absent
    appears appear appearing suggest suggests suggesting consistent compatible likely possible probable no not
    without within there here than around near far inside outside between among across through along over under
    above below behind beside beyond toward towards onto into upon per via high low small large tiny huge big
    little medium size sized shape shaped round oval elongated smooth rough sharp blurred clear dark bright gray
    grey grayscale white black colour color colored texture textured pattern patterns structure structures
    detail details detailed extremely quality best better good bad worst poor lowres longbody hands fingers missing
    extra digit digits fewer cropped crop zoomed panoramic sketch photo photograph realistic illustration style
    noise noisy denoising reduction reduced sharpened smoothed brightened darkened dynamic range balanced lighting
    background colormap pseudo coloring artifact artifacts removal subtraction adaptive histogram equalization
    stretching gamma correction normalization normalized intensity mapping thresholding threshold extraction
    morphological operations operation filtering filter filters gaussian blur median bilateral anisotropic
    diffusion inverse transformation deconvolution motion compensation compression inpainting clustering
    techniques technique vignetting lens distortion perspective reflection shadow blending enhance enhancement
    weighted flair mri ct pet spect dwi adc contrast modality modalities abdomen head neck brain body whole
    distributed evenly the nuclei are is high low density higher around upper lower left right
    """
#: English and clinical words made whole tokens by the stand-in tokenizers (the prompts of the bundles and datasets:
#: LViT MoNuSeg/QaTa sentences, TextDiffSeg's CT prompts, DiffBoost's prompt/augmentation/negative texts).
STANDIN_WORDS: tuple[str, ...] = tuple(_STANDIN_WORDS_TEXT.split())

_ACRONYMS: tuple[str, ...] = (
    "CT",
    "MRI",
    "MR",
    "PET",
    "SPECT",
    "DWI",
    "ADC",
    "FLAIR",
    "COVID",
    "MSD",
    "KiTS",
    "LiTS",
    "BUSI",
    "CXR",
    "HE",
    "H&E",
    "TCGA",
    "US",
    "X",
    "T1",
    "T2",
    "3D",
    "2D",
    "mm",
    "cm",
)


# ---------------------------------------------------------------------------------------------------------- BERT
def bert_standin_config() -> dict[str, Any]:
    """``BertConfig`` kwargs of Clinical BioBERT (BERT-base cased; ``config.json`` of
    https://huggingface.co/emilyalsentzer/Bio_ClinicalBERT): ``BertModel`` with pooler = 108,310,272 parameters."""
    return {
        "vocab_size": BERT_VOCAB_SIZE,
        "hidden_size": 768,
        "num_hidden_layers": 12,
        "num_attention_heads": 12,
        "intermediate_size": 3072,
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.1,
        "attention_probs_dropout_prob": 0.1,
        "max_position_embeddings": 512,
        "type_vocab_size": 2,
        "initializer_range": 0.02,
        "layer_norm_eps": 1e-12,
    }


def _bert_characters() -> list[str]:
    ascii_chars = [chr(c) for c in range(33, 127)]
    latin1 = [chr(c) for c in range(161, 256) if c != 173]  # 173 = soft hyphen (a format char BERT removes)
    greek = [chr(c) for c in range(0x391, 0x3AA) if c != 0x3A2] + [chr(c) for c in range(0x3B1, 0x3CA)]
    typographic = ["–", "—", "‘", "’", "“", "”", "•", "…", "€", "™", "→", "←", "≤", "≥"]
    return ascii_chars + latin1 + greek + typographic


def bert_standin_vocab(size: int = BERT_VOCAB_SIZE, words: Sequence[str] = STANDIN_WORDS) -> list[str]:
    """A WordPiece vocabulary with BERT-base-cased's layout: ``[PAD]`` (0), ``[unused1]``..``[unused99]`` (1-99),
    ``[UNK] [CLS] [SEP] [MASK]`` (100-103), single characters (ASCII, Latin-1, Greek, typographic), ``words`` in
    lower case and capitalised, acronyms, ``##`` + every character, common ``##`` suffixes, then letter bi- and
    trigrams (``##`` and word-initial) up to ``size`` entries (default 28,996). Deterministic; every entry unique.

    Any text of these characters tokenizes without ``[UNK]`` (a word falls back to ``##`` pieces); the words of
    :data:`STANDIN_WORDS` are one token each.
    """
    vocab: dict[str, None] = {"[PAD]": None}
    vocab.update((f"[unused{i}]", None) for i in range(1, 100))
    vocab.update((t, None) for t in ("[UNK]", "[CLS]", "[SEP]", "[MASK]"))
    chars = _bert_characters()
    letters = "etaoinsrhldcumfpgwybvkxjqz"
    entries: list[str] = list(chars)
    for w in words:
        entries += [w, w[:1].upper() + w[1:]]
    entries += list(_ACRONYMS)
    entries += ["##" + c for c in chars]
    entries += [
        "##" + s
        for s in (
            "s es ed ing ly er ers est ion ions tion tions sion al ally ic ical ous ness ment ments ity ities ive able "
            "ible "
            "ful less ism ist ists ize ized ise ised ation ations ia ic ics oma omas itis osis ectomy ogram ography "
            "ology "
            "ologist scopy al ar ary ory ent ence ance ant y ies"
        ).split()
    ]
    bigrams = [a + b for a in letters for b in letters]
    trigrams = [a + b + c for a in letters for b in letters for c in letters]
    entries += ["##" + b for b in bigrams] + bigrams + [b[:1].upper() + b[1:] for b in bigrams]
    entries += ["##" + t for t in trigrams] + trigrams
    for e in entries:
        if len(vocab) >= size:
            break
        vocab.setdefault(e, None)
    tokens = list(vocab)
    if len(tokens) != size:
        raise ValueError(f"could build only {len(tokens)} distinct vocabulary entries, {size} requested")
    return tokens


def write_bert_tokenizer(folder: str | PathLike, vocab: Sequence[str] | None = None) -> Path:
    """Write ``vocab.txt`` (:func:`bert_standin_vocab`, one token a line) and ``tokenizer_config.json``
    (``BertTokenizer``, ``do_lower_case: false`` -- the model is cased --, ``model_max_length: 512``) atomically.
    ``AutoTokenizer.from_pretrained(folder)`` loads them. Returns ``folder``."""
    folder = Path(folder)
    tokens = list(vocab) if vocab is not None else bert_standin_vocab()
    atomic_write_text(folder / "vocab.txt", "\n".join(tokens) + "\n")
    atomic_write_json(
        folder / "tokenizer_config.json",
        {
            "tokenizer_class": "BertTokenizer",
            "do_lower_case": False,
            "do_basic_tokenize": True,
            "tokenize_chinese_chars": True,
            "strip_accents": None,
            "model_max_length": 512,
            "unk_token": "[UNK]",
            "sep_token": "[SEP]",
            "pad_token": "[PAD]",
            "cls_token": "[CLS]",
            "mask_token": "[MASK]",
        },
    )
    return folder


def write_bert_standin(
    folder: str | PathLike,
    seed: int = 0,
    config: Mapping[str, Any] | None = None,
    verify: bool = True,
    log: _LogFn | None = None,
) -> Path:
    """Write a Hugging Face folder shaped like https://huggingface.co/emilyalsentzer/Bio_ClinicalBERT: random
    ``BertModel`` weights (``save_pretrained``: ``config.json`` + ``model.safetensors``), ``vocab.txt`` (28,996
    lines) and ``tokenizer_config.json`` (:func:`write_bert_tokenizer`).

    ``config`` (``BertConfig`` kwargs) defaults to :func:`bert_standin_config` (108,310,272 parameters, asserted,
    ~433 MB); a smaller config must keep ``vocab_size`` 28,996. The folder is staged and renamed into place.

    Verification: ``common.text.encoder.load_pretrained_text_encoder(folder)`` gives the same parameter count and
    values (fingerprint) and a 28,996-token tokenizer, and ``FrozenTextEncoder(folder, max_length=10,
    padding="max_length", truncation=True)`` embeds a sentence to (1, 10, hidden). Returns ``folder``.
    """
    from transformers import BertConfig, BertModel

    folder = Path(folder)
    _invalidate(folder)
    cfg = dict(config) if config is not None else bert_standin_config()
    with _seeded(seed):
        model = BertModel(BertConfig(**cfg))
    n_params = _numel(model.parameters())
    if config is None:
        _check(n_params == BERT_PARAMS, f"BERT has {n_params} parameters, expected {BERT_PARAMS}")
    fingerprint = _fingerprint(model.state_dict().values())
    _say(log, f"  bert: {n_params:,} parameters; saving {folder}")
    with _staged_folder(folder) as tmp:
        model.save_pretrained(str(tmp), safe_serialization=True)
        write_bert_tokenizer(tmp)
    del model
    gc.collect()
    if verify:
        from common.text.encoder import FrozenTextEncoder, load_pretrained_text_encoder

        tokenizer, loaded = load_pretrained_text_encoder(folder)
        _check(_numel(loaded.parameters()) == n_params, "re-loaded BERT parameter count differs")
        _check(_fingerprint(loaded.state_dict().values()) == fingerprint, "re-loaded BERT weights differ")
        _check(len(tokenizer) == cfg["vocab_size"] == BERT_VOCAB_SIZE, f"tokenizer has {len(tokenizer)} tokens")
        del loaded
        encoder = FrozenTextEncoder(folder, max_length=10, truncation=True, padding="max_length")
        emb = encoder(["The nuclei density in the upper right is high."])
        _check(tuple(emb.tokens.shape) == (1, 10, cfg["hidden_size"]), f"embedding shape {tuple(emb.tokens.shape)}")
        del encoder
        gc.collect()
    write_standin_marker(folder, "bert", seed, [folder], [f"parameters: {n_params}", "class: BertModel (with pooler)"])
    return folder


# ------------------------------------------------------------------------------------------------- Stable Diffusion
def sd_unet_config() -> dict[str, Any]:
    """``UNet2DConditionModel`` kwargs of SD v1.5 (``unet/config.json`` of
    https://huggingface.co/stable-diffusion-v1-5/stable-diffusion-v1-5): 859,520,964 parameters."""
    return {
        "act_fn": "silu",
        "attention_head_dim": 8,
        "block_out_channels": [320, 640, 1280, 1280],
        "center_input_sample": False,
        "cross_attention_dim": 768,
        "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
        "downsample_padding": 1,
        "flip_sin_to_cos": True,
        "freq_shift": 0,
        "in_channels": 4,
        "layers_per_block": 2,
        "mid_block_scale_factor": 1,
        "norm_eps": 1e-05,
        "norm_num_groups": 32,
        "out_channels": 4,
        "sample_size": 64,
        "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
    }


def sd_vae_config() -> dict[str, Any]:
    """``AutoencoderKL`` kwargs of SD v1.5 (``vae/config.json``): 83,653,863 parameters, x8 downsampling."""
    return {
        "act_fn": "silu",
        "block_out_channels": [128, 256, 512, 512],
        "down_block_types": ["DownEncoderBlock2D"] * 4,
        "in_channels": 3,
        "latent_channels": 4,
        "layers_per_block": 2,
        "norm_num_groups": 32,
        "out_channels": 3,
        "sample_size": 512,
        "up_block_types": ["UpDecoderBlock2D"] * 4,
    }


def sd_text_encoder_config() -> dict[str, Any]:
    """``CLIPTextConfig`` kwargs of SD v1.5's text encoder (CLIP ViT-L/14 text tower, ``text_encoder/config.json``):
    123,060,480 parameters. The token ids 0/1/2 are those of that config file (the tokenizer's are 49406/49407)."""
    return {
        "vocab_size": CLIP_VOCAB_SIZE,
        "hidden_size": 768,
        "intermediate_size": 3072,
        "projection_dim": 768,
        "num_hidden_layers": 12,
        "num_attention_heads": 12,
        "max_position_embeddings": 77,
        "hidden_act": "quick_gelu",
        "layer_norm_eps": 1e-05,
        "attention_dropout": 0.0,
        "dropout": 0.0,
        "initializer_range": 0.02,
        "initializer_factor": 1.0,
        "pad_token_id": 1,
        "bos_token_id": 0,
        "eos_token_id": 2,
    }


def sd_scheduler_config() -> dict[str, Any]:
    """``scheduler/scheduler_config.json`` of SD v1.5 (PNDM, scaled-linear betas 0.00085 -> 0.012, 1000 steps)."""
    return {
        "_class_name": "PNDMScheduler",
        "_diffusers_version": "0.6.0",
        "beta_end": 0.012,
        "beta_schedule": "scaled_linear",
        "beta_start": 0.00085,
        "num_train_timesteps": 1000,
        "set_alpha_to_one": False,
        "skip_prk_steps": True,
        "steps_offset": 1,
        "trained_betas": None,
        "clip_sample": False,
    }


def sd_model_index() -> dict[str, Any]:
    """``model_index.json`` of SD v1.5 without the ``feature_extractor`` and ``safety_checker`` entries (both optional
    pipeline components; the stand-in has no safety checker). Everything else as on the hub."""
    return {
        "_class_name": "StableDiffusionPipeline",
        "_diffusers_version": "0.6.0",
        "scheduler": ["diffusers", "PNDMScheduler"],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
    }


def _bytes_to_unicode() -> dict[int, str]:
    """CLIP's / GPT-2's reversible byte -> printable unicode symbol table (256 entries, CLIP's order)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    bs += list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


def _bpe(word: Sequence[str], ranks: Mapping[tuple[str, str], int]) -> list[str]:
    """CLIP's BPE of one pre-token (``word`` = its symbols, the last one ending in ``</w>``)."""
    word = list(word)
    while len(word) > 1:
        pairs = [(ranks.get((a, b), 1 << 62), i) for i, (a, b) in enumerate(zip(word, word[1:]))]
        best = min(pairs)[0]
        if best == 1 << 62:
            break
        a, b = next((word[i], word[i + 1]) for r, i in pairs if r == best)
        merged, i = [], 0
        while i < len(word):
            if i < len(word) - 1 and word[i] == a and word[i + 1] == b:
                merged.append(a + b)
                i += 2
            else:
                merged.append(word[i])
                i += 1
        word = merged
    return word


def clip_standin_vocab_and_merges(
    words: Sequence[str] = STANDIN_WORDS, num_merges: int = CLIP_NUM_MERGES
) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """A synthetic but valid byte-level BPE in CLIP's format: ``(vocab {token: id}, merges [(left, right)])``.

    Vocabulary order as CLIP's: the 256 byte symbols (:func:`_bytes_to_unicode`), their 256 ``</w>`` (word-end)
    forms, one token per merge (its result, new each time), ``<|startoftext|>`` (49406), ``<|endoftext|>`` (49407):
    512 + 48,894 + 2 = 49,408 entries. Merges: first those that make every word of ``words`` (lower case, letter
    runs, as CLIP's pre-tokenizer splits) one token -- each added merge has a higher rank than all before, so words
    made earlier keep their tokenization --, then letter bigrams, trigrams and 4-grams (plain and ``</w>``) by
    English letter frequency until ``num_merges``. Deterministic.
    """
    base = list(_bytes_to_unicode().values())
    known = set(base) | {b + "</w>" for b in base}
    merges: list[tuple[str, str]] = []
    ranks: dict[tuple[str, str], int] = {}

    def add(a: str, b: str) -> bool:
        if len(merges) >= num_merges or a + b in known or a not in known or b not in known or a.endswith("</w>"):
            return False
        ranks[(a, b)] = len(merges)
        merges.append((a, b))
        known.add(a + b)
        return True

    seen_words: set[str] = set()
    for w in words:
        for piece in re.findall(r"[a-z]+", w.lower()):
            if len(piece) < 2 or piece in seen_words:
                continue
            seen_words.add(piece)
            symbols = list(piece[:-1]) + [piece[-1] + "</w>"]
            while True:
                toks = _bpe(symbols, ranks)
                if len(toks) == 1:
                    break
                if not any(add(a, b) for a, b in zip(toks, toks[1:])):
                    break  # every adjacent pair already names another token: leave the word in pieces
    letters = "etaoinsrhldcumfpgwybvkxjqz"
    grams = list(letters)
    for _ in range(3):  # results of 2, 3, 4 letters
        for g in grams:
            for c in letters:
                add(g, c)
                add(g, c + "</w>")
        if len(merges) >= num_merges:
            break
        grams = [g + c for g in grams for c in letters]
    if len(merges) != num_merges:
        raise ValueError(f"could build only {len(merges)} merges, {num_merges} requested")
    tokens = base + [b + "</w>" for b in base] + ["".join(m) for m in merges] + ["<|startoftext|>", "<|endoftext|>"]
    vocab = {t: i for i, t in enumerate(tokens)}
    if len(vocab) != len(tokens):
        raise ValueError("duplicate tokens in the synthetic CLIP vocabulary")
    return vocab, merges


def _clip_added_token(content: str, with_type: bool) -> dict[str, Any]:
    d = {"content": content, "lstrip": False, "normalized": True, "rstrip": False, "single_word": False}
    return {"__type": "AddedToken", **d} if with_type else d


def write_clip_tokenizer(folder: str | PathLike) -> Path:
    """Write SD v1.5's ``tokenizer/`` files (atomically): ``vocab.json`` (49,408 entries), ``merges.txt``
    (``#version: 0.2`` + 48,894 merges), ``tokenizer_config.json`` (``CLIPTokenizer``, ``model_max_length`` 77,
    lower case) and ``special_tokens_map.json`` (bos ``<|startoftext|>``, eos/pad/unk ``<|endoftext|>``), as the hub
    folder. ``CLIPTokenizer.from_pretrained(folder)`` loads them. Returns ``folder``."""
    folder = Path(folder)
    vocab, merges = clip_standin_vocab_and_merges()
    atomic_write_text(folder / "vocab.json", json.dumps(vocab, ensure_ascii=False))
    atomic_write_text(folder / "merges.txt", "#version: 0.2\n" + "\n".join(f"{a} {b}" for a, b in merges) + "\n")
    atomic_write_json(
        folder / "tokenizer_config.json",
        {
            "add_prefix_space": False,
            "bos_token": _clip_added_token("<|startoftext|>", True),
            "do_lower_case": True,
            "eos_token": _clip_added_token("<|endoftext|>", True),
            "errors": "replace",
            "model_max_length": 77,
            "name_or_path": "openai/clip-vit-large-patch14",
            "pad_token": "<|endoftext|>",
            "special_tokens_map_file": "./special_tokens_map.json",
            "tokenizer_class": "CLIPTokenizer",
            "unk_token": _clip_added_token("<|endoftext|>", True),
        },
    )
    atomic_write_json(
        folder / "special_tokens_map.json",
        {
            "bos_token": _clip_added_token("<|startoftext|>", False),
            "eos_token": _clip_added_token("<|endoftext|>", False),
            "pad_token": "<|endoftext|>",
            "unk_token": _clip_added_token("<|endoftext|>", False),
        },
    )
    return folder


def write_sd_standin(
    folder: str | PathLike,
    seed: int = 0,
    unet_config: Mapping[str, Any] | None = None,
    vae_config: Mapping[str, Any] | None = None,
    text_encoder_config: Mapping[str, Any] | None = None,
    verify: bool = True,
    log: _LogFn | None = None,
) -> Path:
    """Write a diffusers folder shaped like https://huggingface.co/stable-diffusion-v1-5/stable-diffusion-v1-5:
    ``model_index.json`` (:func:`sd_model_index`: no ``feature_extractor``/``safety_checker`` entries),
    ``unet/`` (``UNet2DConditionModel``, 859,520,964 parameters, 3.4 GB fp32), ``vae/`` (``AutoencoderKL``,
    83,653,863), ``text_encoder/`` (``CLIPTextModel``, 123,060,480), all via ``save_pretrained`` (safetensors),
    ``tokenizer/`` (:func:`write_clip_tokenizer`) and ``scheduler/scheduler_config.json`` (:func:`sd_scheduler_config`).

    The configs default to the real ones (counts asserted); smaller ones make a quick test folder (the text encoder
    must keep ``vocab_size`` 49,408). One model at a time is built, saved (staged folder, renamed), fingerprinted,
    freed and re-loaded with ``from_pretrained`` (count + fingerprint compared), so memory stays near 2x the UNet.

    Verification with the bundle's loader: ``scripts.sd_parts.load_sd_parts(folder)`` (DiffBoost) loads the five
    parts and ``make_controlnet`` builds a ControlNet from its UNet. Returns ``folder``.
    """
    from diffusers import AutoencoderKL, DDPMScheduler, PNDMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    _invalidate(folder)
    components: list[tuple[str, Any, Callable[[], Any], int | None]] = [
        (
            "unet",
            UNet2DConditionModel,
            lambda: UNet2DConditionModel(**(unet_config or sd_unet_config())),
            SD_UNET_PARAMS if unet_config is None else None,
        ),
        (
            "vae",
            AutoencoderKL,
            lambda: AutoencoderKL(**(vae_config or sd_vae_config())),
            SD_VAE_PARAMS if vae_config is None else None,
        ),
        (
            "text_encoder",
            CLIPTextModel,
            lambda: CLIPTextModel(CLIPTextConfig(**(text_encoder_config or sd_text_encoder_config()))),
            SD_TEXT_ENCODER_PARAMS if text_encoder_config is None else None,
        ),
    ]
    counts: dict[str, int] = {}
    for offset, (name, cls, build, expected) in enumerate(components):
        t0 = time.perf_counter()
        with _seeded(seed + offset):
            model = build()
        n = _numel(model.parameters())
        if expected is not None:
            _check(n == expected, f"SD {name} has {n} parameters, expected {expected}")
        fingerprint = _fingerprint(model.state_dict().values()) if verify else None
        with _staged_folder(folder / name) as tmp:
            model.save_pretrained(str(tmp), safe_serialization=True)
        del model
        gc.collect()
        if verify:
            loaded = cls.from_pretrained(str(folder / name), local_files_only=True)
            _check(_numel(loaded.parameters()) == n, f"re-loaded SD {name} parameter count differs")
            _check(_fingerprint(loaded.state_dict().values()) == fingerprint, f"re-loaded SD {name} weights differ")
            del loaded
            gc.collect()
        counts[name] = n
        _say(log, f"  sd/{name}: {n:,} parameters, {time.perf_counter() - t0:.1f} s")
    write_clip_tokenizer(folder / "tokenizer")
    atomic_write_json(folder / "scheduler" / "scheduler_config.json", sd_scheduler_config())
    atomic_write_json(folder / "model_index.json", sd_model_index())
    if verify:
        tok = CLIPTokenizer.from_pretrained(str(folder / "tokenizer"), local_files_only=True)
        _check(len(tok) == CLIP_VOCAB_SIZE, f"CLIP tokenizer has {len(tok)} tokens")
        PNDMScheduler.from_pretrained(str(folder / "scheduler"))
        DDPMScheduler.from_pretrained(str(folder / "scheduler"))
        t0 = time.perf_counter()
        with bundle_scripts("diffboost"):
            from scripts.sd_parts import load_sd_parts, make_controlnet

            parts = load_sd_parts(folder)
            for name in ("unet", "vae", "text_encoder"):
                got = _numel(getattr(parts, name).parameters())
                _check(got == counts[name], f"load_sd_parts: {name} has {got} parameters, expected {counts[name]}")
            controlnet = make_controlnet(parts.unet)
            counts["controlnet"] = _numel(controlnet.parameters())
            del parts, controlnet
        gc.collect()
        _say(
            log,
            f"  sd: load_sd_parts + make_controlnet ({counts['controlnet']:,} ControlNet parameters) "
            f"{time.perf_counter() - t0:.1f} s",
        )
    write_standin_marker(
        folder,
        "sd",
        seed,
        ["model_index.json", *(n for n, *_ in components), "tokenizer", "scheduler"],
        [f"parameters {name}: {n}" for name, n in counts.items() if name != "controlnet"]
        + ["model_index.json: feature_extractor and safety_checker omitted (optional components)"],
    )
    return folder


# ----------------------------------------------------------------------------------------------------------- HED
def hed_standin_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    """Random ``scripts.edges.HEDNetwork`` weights under the real file's key names: the annotator's
    ``network-bsds500.pth`` stores ``moduleVggOne.0.weight`` ... ``moduleCombine.0.bias`` (38 tensors, 14,716,171
    parameters; the ControlNet annotator and :meth:`HEDNetwork.from_file` rename ``module`` -> ``net``)."""
    with bundle_scripts("diffboost"):
        from scripts.edges import HEDNetwork

    with _seeded(seed):
        net = HEDNetwork()
    return {"module" + k[len("net") :]: v for k, v in net.state_dict().items()}


def write_hed_standin(
    folder: str | PathLike, seed: int = 0, filename: str = HED_FILENAME, verify: bool = True, log: _LogFn | None = None
) -> Path:
    """Write ``folder/network-bsds500.pth`` (HED BSDS500 weights of https://huggingface.co/lllyasviel/Annotators,
    the file DiffBoost's ``hed_weights`` names): a ``torch.save``-d state dict of :func:`hed_standin_state_dict`.

    Verification: ``scripts.edges.HEDNetwork.from_file(path)`` (the real loader) loads it strictly with equal
    weights. Returns the file path.
    """
    import torch

    with bundle_scripts("diffboost"):
        from scripts.edges import HEDNetwork

    folder = Path(folder)
    path = folder / filename
    _invalidate(folder)
    state = hed_standin_state_dict(seed)
    n_params = _numel(state.values())
    _check(n_params == HED_PARAMS, f"HED has {n_params} parameters, expected {HED_PARAMS}")
    _say(log, f"  hed: {len(state)} tensors, {n_params:,} parameters; saving {path}")
    atomic_torch_save(state, path)
    if verify:
        net = HEDNetwork.from_file(path)
        got = net.state_dict()
        _check(all(torch.equal(got["net" + k[len("module") :]], v) for k, v in state.items()), "HED round trip differs")
    write_standin_marker(folder, "hed", seed, [filename], [f"tensors: {len(state)}", f"parameters: {n_params}"])
    return path


# ---------------------------------------------------------------------------------------------------------- cDAL
_CDAL_NETWORK_KEYS = (
    "image_size",
    "label_channels",
    "image_channels",
    "num_channels",
    "channel_mult",
    "num_res_blocks",
    "attn_resolutions",
    "dropout",
    "encoder_layers",
    "encoder_res_blocks",
    "nz",
    "z_emb_dim",
    "n_mlp",
)


def cdal_standin_config(overrides: Sequence[str | PathLike] = ()) -> dict[str, Any]:
    """``CDALGenerator`` kwargs of the cDAL bundle's ``network_def``: ``bundles/cdal/configs/train.json`` (MoNuSeg
    paper config, 41,666,753 parameters) with the top-level values of ``overrides`` (e.g. ``configs/cxr.json``,
    ``configs/hippocampus.json``) on top, as ``tools/convert_checkpoint.py cdal --override`` merges them."""
    merged: dict[str, Any] = {}
    for f in [REPO_ROOT / "bundles" / "cdal" / "configs" / "train.json", *overrides]:
        merged.update(json.loads(Path(f).read_text(encoding="utf-8")))
    return {k: merged[k] for k in _CDAL_NETWORK_KEYS}


def cdal_official_state_dict(network: torch.nn.Module, ddp: bool = True) -> dict[str, torch.Tensor]:
    """``CDALGenerator`` weights under the authors' ``NCSNpp`` names (``all_modules.<i>.*``, ``z_transform.*``; with
    ``module.`` in front when ``ddp``, as their ``DistributedDataParallel`` saved them): the inverse of
    ``scripts.convert.official_key_map`` of the cDAL bundle."""
    with bundle_scripts("cdal"):
        from scripts.convert import official_key_map

        mapping = official_key_map(network)
    prefix = "module." if ddp else ""
    return {prefix + mapping[k]: v for k, v in network.state_dict().items()}


def write_cdal_standin(
    folder: str | PathLike,
    seed: int = 0,
    overrides: Sequence[str | PathLike] = (),
    filename: str = CDAL_FILENAME,
    verify: bool = True,
    check_converter_cli: bool = True,
    log: _LogFn | None = None,
) -> Path:
    """Write ``folder/netG_standin.pth``: a cDAL generator checkpoint in the authors' format
    (https://huggingface.co/Hejrati/cDAL ``netG_*.pth``: a ``torch.save``-d state dict with ``module.all_modules.<i>.*``
    and ``module.z_transform.*`` keys) for the bundle's network config (:func:`cdal_standin_config` of ``overrides``;
    default MoNuSeg, 41,666,753 parameters, asserted).

    Verification: the file re-loads with equal values; the bundle's ``convert_official_generator_state_dict`` maps
    it back onto a fresh ``CDALGenerator`` with equal weights; with ``check_converter_cli`` also
    ``python tools/convert_checkpoint.py cdal --src <file> --dst <tmp> [--override ...]`` succeeds (a subprocess).
    Returns the file path.
    """
    import torch

    folder = Path(folder)
    path = folder / filename
    _invalidate(folder)
    cfg = cdal_standin_config(overrides)
    with bundle_scripts("cdal"):
        from scripts.convert import convert_official_generator_state_dict
        from scripts.networks import CDALGenerator

        with _seeded(seed):
            net = CDALGenerator(**cfg)
        n_params = _numel(net.parameters())
        if not overrides:
            _check(n_params == CDAL_PARAMS, f"cDAL generator has {n_params} parameters, expected {CDAL_PARAMS}")
        state = cdal_official_state_dict(net)
        _say(log, f"  cdal: {len(state)} tensors, {n_params:,} parameters; saving {path}")
        atomic_torch_save(state, path)
        if verify:
            loaded = torch.load(path, map_location="cpu", weights_only=True)
            _check(list(loaded) == list(state), "re-loaded keys differ")
            _check(all(torch.equal(loaded[k], v) for k, v in state.items()), "re-loaded values differ")
            with torch.device("meta"):
                fresh = CDALGenerator(**cfg)
            converted = convert_official_generator_state_dict(fresh, loaded, source=str(path))
            ours = net.state_dict()
            _check(all(torch.equal(converted[k], v) for k, v in ours.items()), "authors'-format round trip differs")
    if verify and check_converter_cli:
        with tempfile.TemporaryDirectory() as tmp:
            dst = Path(tmp) / "model.pt"
            cmd = [
                sys.executable,
                str(REPO_ROOT / "tools" / "convert_checkpoint.py"),
                "cdal",
                "--src",
                str(path),
                "--dst",
                str(dst),
            ] + (["--override", *map(str, overrides)] if overrides else [])
            r = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp)
            _check(r.returncode == 0 and dst.is_file(), f"{' '.join(cmd)} failed: {r.stderr[-2000:]}")
            converted = torch.load(dst, map_location="cpu", weights_only=True)  # flat state dict
            _check(_numel(converted.values()) == n_params, "converted checkpoint parameter count differs")
    write_standin_marker(
        folder,
        "cdal",
        seed,
        [filename],
        [
            f"tensors: {len(state)}",
            f"parameters: {n_params}",
            f"network: {json.dumps(cfg)}",
            f"overrides: {[str(o) for o in overrides]}",
        ],
    )
    return path


# --------------------------------------------------------------------------------------------------------- driver
#: The bundles' top-level config key that names each pretrained part (cDAL's checkpoint is converted, not named).
STANDIN_CONFIG_KEYS: dict[str, str] = {
    "adm": "adm_checkpoint",  # TextDiff
    "bert": "text_encoder_path",  # TextDiff, TextDiffSeg
    "sd": "sd_model",  # DiffBoost
    "hed": "hed_weights",  # DiffBoost
}


def standin_path(out: str | PathLike, part: str) -> Path:
    """Where :func:`make_standins` writes ``part`` under ``out``: the weights file (adm, hed, cdal) or the model
    folder (bert, sd)."""
    folder = Path(out) / PART_FOLDERS[part]
    files = {"adm": ADM_FILENAME, "hed": HED_FILENAME, "cdal": CDAL_FILENAME}
    return folder / files[part] if part in files else folder


def standin_overrides(out: str | PathLike, parts: Iterable[str] = tuple(STANDIN_CONFIG_KEYS)) -> dict[str, str]:
    """``{config key: stand-in path}`` for ``parts``: the overrides that point a shipped config at the stand-ins."""
    return {STANDIN_CONFIG_KEYS[p]: str(standin_path(out, p)) for p in parts if p in STANDIN_CONFIG_KEYS}


def make_standins(
    out: str | PathLike,
    parts: Sequence[str] | str | None = None,
    force: bool = False,
    seed: int = 0,
    verify: bool = True,
    log: _LogFn | None = print,
) -> dict[str, Path]:
    """Write the full-size stand-ins of ``parts`` (default all of :data:`PARTS`) under ``out``; returns
    ``{part: path}`` (the weights file for adm/hed/cdal, the model folder for bert/sd).

    A part whose folder is already complete for ``seed`` (:func:`standin_complete`) is skipped unless ``force``.
    ``log`` gets one line per part with the seconds taken (``None``: silent). Needs ~7.5 GB of disk and < 10 GB of
    memory (one model at a time); takes minutes on a laptop CPU.

    Raises:
        ValueError: an unknown part name.
        RuntimeError: a written file failed its verification.
    """
    out = Path(out).expanduser()
    if parts is None:
        chosen = list(PARTS)
    else:
        chosen = [p.strip() for p in (parts.split(",") if isinstance(parts, str) else parts) if p.strip()]
    unknown = [p for p in chosen if p not in PARTS]
    if unknown:
        raise ValueError(f"unknown stand-in part(s) {unknown}; choose from {list(PARTS)}")
    writers: dict[str, Callable[..., Path]] = {
        "adm": write_adm_standin,
        "bert": write_bert_standin,
        "sd": write_sd_standin,
        "hed": write_hed_standin,
        "cdal": write_cdal_standin,
    }
    result: dict[str, Path] = {}
    for part in [p for p in PARTS if p in chosen]:
        folder = out / PART_FOLDERS[part]
        target = standin_path(out, part)
        if not force and standin_complete(folder, seed):
            _say(log, f"[{part}] complete, skipped: {target}")
            result[part] = target
            continue
        t0 = time.perf_counter()
        _say(log, f"[{part}] writing {target} ...")
        result[part] = writers[part](folder, seed=seed, verify=verify, log=log)
        size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
        _say(log, f"[{part}] done in {time.perf_counter() - t0:.1f} s ({size / 1e9:.3f} GB in {folder})")
    return result
