"""Stable Diffusion v1.5 parts + ControlNet for DiffBoost (bundles/diffboost/docs/sources.md §2.1, §11.1), via
diffusers.

- :func:`load_sd_parts` -- frozen VAE, UNet, CLIP text encoder + tokenizer and the DDPM training scheduler from a
  Hugging Face hub id (found in the local cache; nothing is downloaded unless ``local_files_only=False``) or from a
  local folder in the diffusers layout (``vae/``, ``unet/``, ``text_encoder/``, ``tokenizer/``, ``scheduler/``).
  Missing parts stop with one :class:`BadInputError` naming the id/folder, the missing parts and the config key.
- :func:`build_tiny_sd_parts` -- a tiny random SD (VAE x2, 2-level UNet, 5-layer CLIP, character tokenizer) written
  with ``save_pretrained`` into a folder of that layout: the demo/test stand-in for SD v1.5 (no download).
- :func:`make_controlnet` -- ``ControlNetModel.from_unet`` (weights copied from the UNet encoder, zero convs), the
  only trained part (``sd_locked=True`` in the authors' code).

Full scale: ``sd_model = "stable-diffusion-v1-5/stable-diffusion-v1-5"`` (formerly ``runwayml/...``), 384^2 images,
latents 4 x 48 x 48, ControlNet conditioning embedding (16, 32, 96, 256) (downsamples the hint by 8 = the VAE factor).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from common.errors import BadInputError
from common.io.atomic import atomic_write_text
from common.standins import warn_if_standin
from common.training.distributed import is_distributed, process_rank

__all__ = ["SD_SUBFOLDERS", "StableDiffusionParts", "load_sd_parts", "build_tiny_sd_parts", "make_controlnet"]

logger = logging.getLogger(__name__)

#: the diffusers subfolders DiffBoost needs (model_index.json layout of SD v1.5)
SD_SUBFOLDERS = ("vae", "unet", "text_encoder", "tokenizer", "scheduler")


@dataclass
class StableDiffusionParts:
    """The frozen Stable Diffusion parts (all in eval mode, ``requires_grad=False``)."""

    vae: Any
    unet: Any
    text_encoder: Any
    tokenizer: Any
    noise_scheduler: Any
    source: str

    def to(self, device: str | torch.device) -> StableDiffusionParts:
        for m in (self.vae, self.unet, self.text_encoder):
            m.to(device)
        return self

    @property
    def vae_scale_factor(self) -> int:
        """Spatial downsampling of the VAE (8 for SD v1.5, 2 for the tiny demo parts)."""
        return 2 ** (len(self.vae.config.block_out_channels) - 1)


def _missing_parts_error(name: str, detail: str) -> BadInputError:
    return BadInputError(
        name,
        f"Stable Diffusion parts not available offline ({detail}). Set the config key 'sd_model' to a local folder "
        f"in the diffusers layout with subfolders {list(SD_SUBFOLDERS)} (e.g. after `huggingface-cli download "
        "stable-diffusion-v1-5/stable-diffusion-v1-5 --local-dir <folder>` on a machine with network), or put the "
        "hub id in the Hugging Face cache; for a CPU demo set 'build_tiny_sd': true",
    )


def load_sd_parts(
    name_or_path: str | os.PathLike,
    device: str | torch.device = "cpu",
    local_files_only: bool = True,
    build_tiny: bool = False,
    seed: int = 0,
) -> StableDiffusionParts:
    """Load the frozen SD parts from a hub id or a local diffusers folder.

    Args:
        name_or_path: hub id (``stable-diffusion-v1-5/stable-diffusion-v1-5``) or local folder.
        device: where the parts go.
        local_files_only: never download (the project's offline-first rule); set ``False`` to allow downloads.
        build_tiny: if ``name_or_path`` is a folder without the parts, write tiny random parts there first
            (:func:`build_tiny_sd_parts`; demo only).
        seed: seed of the tiny parts.

    Raises:
        BadInputError: a local folder missing subfolders, or a hub id not in the local cache (offline), naming the id.
    """
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    name = str(name_or_path)
    if build_tiny:
        # under torchrun every rank loads the same folder: rank 0 writes it, the others wait until it is complete
        if process_rank() == 0:
            build_tiny_sd_parts(name, seed=seed)
        if is_distributed():
            torch.distributed.barrier()
    is_local = os.path.exists(os.path.expanduser(name)) or name.startswith((".", "/", "~"))
    if is_local:
        folder = Path(name).expanduser()
        if not folder.is_dir():
            raise _missing_parts_error(name, "the folder does not exist")
        missing = [s for s in SD_SUBFOLDERS if not (folder / s).is_dir()]
        if missing:
            raise _missing_parts_error(name, f"the folder lacks the subfolder(s) {missing}")
        warn_if_standin(folder, "Stable Diffusion")
    kwargs = {"local_files_only": local_files_only}
    try:
        vae = AutoencoderKL.from_pretrained(name, subfolder="vae", **kwargs)
        unet = UNet2DConditionModel.from_pretrained(name, subfolder="unet", **kwargs)
        text_encoder = CLIPTextModel.from_pretrained(name, subfolder="text_encoder", **kwargs)
        tokenizer = CLIPTokenizer.from_pretrained(name, subfolder="tokenizer", **kwargs)
        noise_scheduler = DDPMScheduler.from_pretrained(name, subfolder="scheduler", **kwargs)
    except (OSError, ValueError) as err:  # EnvironmentError is OSError
        raise _missing_parts_error(name, f"{type(err).__name__}: {' '.join(str(err).split())[:300]}") from err
    for m in (vae, unet, text_encoder):
        m.requires_grad_(False).eval().to(device)
    logger.info("loaded Stable Diffusion parts from %s", name)
    return StableDiffusionParts(vae, unet, text_encoder, tokenizer, noise_scheduler, name)


_TINY_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789,.-'()"


def build_tiny_sd_parts(folder: str | os.PathLike, seed: int = 0, overwrite: bool = False) -> Path:
    """Write tiny random SD parts (diffusers layout) into ``folder``; return it. No download, ~3 M parameters.

    VAE: 2 levels (32, 64 ch, x2 downsampling, 4 latent channels); UNet: (32, 64) channels, cross-attention dim 32;
    CLIP text encoder: hidden 32, 5 layers; tokenizer: CLIP BPE over single characters (+ ``</w>`` word ends) with no
    merges -- so every prompt character matters; DDPM scheduler with SD's scaled-linear betas (0.00085 -> 0.012).
    The ControlNet for these parts needs ``conditioning_embedding_out_channels=(16, 32)`` (x2 = the VAE factor).
    Skips the work if ``folder/model_index.json`` exists (unless ``overwrite``).
    """
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    folder = Path(folder)
    if (folder / "model_index.json").is_file() and not overwrite:
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        unet = UNet2DConditionModel(
            sample_size=32,
            in_channels=4,
            out_channels=4,
            layers_per_block=2,
            block_out_channels=(32, 64),
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
            cross_attention_dim=32,
            norm_num_groups=8,
        )
        vae = AutoencoderKL(
            in_channels=3,
            out_channels=3,
            block_out_channels=[32, 64],
            down_block_types=["DownEncoderBlock2D"] * 2,
            up_block_types=["UpDecoderBlock2D"] * 2,
            latent_channels=4,
            norm_num_groups=8,
        )
        text_encoder = CLIPTextModel(
            CLIPTextConfig(
                bos_token_id=0,
                eos_token_id=2,
                pad_token_id=1,
                hidden_size=32,
                intermediate_size=37,
                num_attention_heads=4,
                num_hidden_layers=5,
                layer_norm_eps=1e-5,
                vocab_size=1000,
            )
        )
    finally:
        torch.random.set_rng_state(state)
    vocab = {"<|startoftext|>": 0, "!": 1, "<|endoftext|>": 2}
    for c in _TINY_CHARS:
        vocab.setdefault(c, len(vocab))
        vocab.setdefault(c + "</w>", len(vocab))
    tok_dir = folder / "tokenizer"
    tok_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(tok_dir / "vocab.json", json.dumps(vocab))
    atomic_write_text(tok_dir / "merges.txt", "#version: 0.2\n")
    tokenizer = CLIPTokenizer(
        str(tok_dir / "vocab.json"), str(tok_dir / "merges.txt"), model_max_length=77, pad_token="!"
    )
    scheduler = DDPMScheduler(
        num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False
    )
    vae.save_pretrained(folder / "vae")
    unet.save_pretrained(folder / "unet")
    text_encoder.save_pretrained(folder / "text_encoder")
    tokenizer.save_pretrained(tok_dir)
    scheduler.save_pretrained(folder / "scheduler")
    atomic_write_text(
        folder / "model_index.json",
        json.dumps(
            {"_class_name": "StableDiffusionPipeline", "_note": "tiny random parts for CPU demos/tests"}, indent=2
        ),
    )
    logger.info("wrote tiny Stable Diffusion parts to %s", folder)
    return folder


def make_controlnet(unet: Any, conditioning_channels: tuple[int, ...] | list[int] = (16, 32, 96, 256)) -> Any:
    """``ControlNetModel.from_unet(unet)`` with a 3-channel hint (the edge map replicated to RGB).

    ``conditioning_channels`` (the hint embedding) must downsample by the VAE factor: 2^(len - 1) == vae factor
    ((16, 32, 96, 256) for SD v1.5, (16, 32) for the tiny parts). Returns the ControlNet in train mode.
    """
    from diffusers import ControlNetModel

    return ControlNetModel.from_unet(
        unet, conditioning_embedding_out_channels=tuple(int(c) for c in conditioning_channels), conditioning_channels=3
    ).train()
