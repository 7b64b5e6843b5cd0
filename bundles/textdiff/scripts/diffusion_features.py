"""Decoder activations of a frozen diffusion UNet as image features (Baranchuk et al. 2022; TextDiff).

The clean image ``x0`` in [-1, 1] is noised to ``x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps`` with ONE fixed
Gaussian noise tensor ``eps`` (seeded, drawn once, shared by every image and step), the UNet is run once per step
``t``, and the outputs of chosen decoder blocks (ADM's ``output_blocks[i]``, located with
:func:`common.networks.guided_diffusion.adm_output_block`) are grabbed with forward hooks. Per block the activations of
the steps are concatenated on channels, at the block's native resolution (bundles/textdiff/docs/sources.md §2.2; unlike
ddpm-segmentation nothing is upsampled here).

Written here because MONAI has no feature extractor for diffusion UNets; the noise uses MONAI's
``DDPMScheduler.add_noise`` (linear betas 1e-4..0.02 over 1000 steps = ADM's schedule, bundles/textdiff/docs/sources.md
§10).

Beyond the paper: ``noise_index`` selects the k-th of a seeded sequence of noise draws (draw 0 = the paper's fixed
noise) for uncertainty over K draws; the forward stops after the last hooked block (the rest of the UNet does not
change the features).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import torch
import torch.nn as nn
from common.errors import BadInputError
from common.networks.guided_diffusion import adm_output_block, adm_output_block_shapes
from monai.networks.schedulers import DDPMScheduler

__all__ = ["DiffusionFeatureExtractor"]


class _StopForward(Exception):
    """Raised by the last hook to skip the rest of the UNet."""


class DiffusionFeatureExtractor(nn.Module):
    """Frozen diffusion UNet -> per-block decoder features at fixed steps with a fixed noise draw.

    Args:
        unet: a MONAI ``DiffusionModelUNet`` in ADM layout (:func:`common.networks.guided_diffusion.adm_unet`); frozen
        here
            (eval mode, ``requires_grad=False``; ``.train()`` keeps it in eval mode).
        steps: 0-based timesteps of the 1000-step schedule (TextDiff: 50, 150, 250).
        blocks: ADM ``output_blocks`` indices (TextDiff MoNuSeg 6, 8, 12, 16; QaTa 4, 6, 8, 12).
        noise_seed: seed of the fixed noise (official code: 40; drawn here with a CPU generator, so the values are
            device independent but not those of the official CUDA draw).
        num_train_timesteps, beta_start, beta_end: the DDPM linear schedule (ADM: 1000, 1e-4, 0.02).
        autocast_fp16: run the UNet under ``torch.autocast(float16)`` on CUDA (the official ``use_fp16``); ignored
            on CPU. Features are returned as float32.

    Shapes:
        ``forward(x0 (B, C, H, W), noise_index=0)`` -> list over ``blocks`` of (B, len(steps) * C_k, H_k, W_k);
        see :meth:`feature_shapes`.
    """

    def __init__(
        self,
        unet: nn.Module,
        steps: Sequence[int] = (50, 150, 250),
        blocks: Sequence[int] = (6, 8, 12, 16),
        noise_seed: int = 40,
        num_train_timesteps: int = 1000,
        beta_start: float = 1e-4,
        beta_end: float = 0.02,
        autocast_fp16: bool = True,
    ) -> None:
        super().__init__()
        if not steps or not blocks:
            raise ValueError("steps and blocks must be non-empty.")
        bad = [t for t in steps if not 0 <= int(t) < num_train_timesteps]
        if bad:
            raise ValueError(f"steps {bad} outside [0, {num_train_timesteps}).")
        self.unet = unet
        self.unet.requires_grad_(False)
        self.unet.eval()
        self.steps = tuple(int(t) for t in steps)
        self.blocks = tuple(int(b) for b in blocks)
        self.noise_seed = int(noise_seed)
        self.autocast_fp16 = bool(autocast_fp16)
        self.scheduler = DDPMScheduler(
            num_train_timesteps=num_train_timesteps, schedule="linear_beta", beta_start=beta_start, beta_end=beta_end
        )
        self._modules_to_hook = [adm_output_block(unet, b) for b in self.blocks]  # validates the indices
        self._noise: dict[tuple, torch.Tensor] = {}
        self._grabbed: dict[int, torch.Tensor] = {}
        self._active = False
        self._last_module = self._modules_to_hook[max(range(len(self.blocks)), key=lambda i: self.blocks[i])]
        for i, m in enumerate(self._modules_to_hook):
            m.register_forward_hook(self._make_hook(i, stop=m is self._last_module))

    def _make_hook(self, i: int, stop: bool):
        def hook(module: nn.Module, args, output: torch.Tensor) -> None:
            if not self._active:  # the UNet run by someone else: leave it alone
                return
            self._grabbed[i] = output.float()
            if stop and len(self._grabbed) == len(self.blocks):
                raise _StopForward

        return hook

    def train(self, mode: bool = True) -> DiffusionFeatureExtractor:
        """Stay in eval mode: the UNet is frozen."""
        return super().train(False)

    @property
    def in_channels(self) -> int:
        return int(self.unet.in_channels)

    def feature_shapes(self, image_size: int) -> list[tuple[int, int]]:
        """``[(channels, size), ...]`` per block for a square ``image_size`` input (channels incl. the steps)."""
        all_shapes = adm_output_block_shapes(self.unet, image_size)
        return [(all_shapes[b][0] * len(self.steps), all_shapes[b][1]) for b in self.blocks]

    def feature_channels(self) -> list[int]:
        """Channels per block, len(steps) * C_k (the head's input channels)."""
        return [c for c, _ in self.feature_shapes(2 ** len(self.unet.up_blocks))]

    def noise(self, shape: Sequence[int], noise_index: int = 0) -> torch.Tensor:
        """The ``noise_index``-th draw (CPU generator seeded with ``noise_seed``) of shape (1, C, H, W), cached."""
        key = (tuple(shape), int(noise_index))
        if key not in self._noise:
            g = torch.Generator().manual_seed(self.noise_seed)
            eps = None
            for _ in range(int(noise_index) + 1):
                eps = torch.randn(tuple(shape), generator=g)
            self._noise[key] = eps
        return self._noise[key]

    def fingerprint(self) -> str:
        """Short hash of everything the features depend on (steps, blocks, noise seed, UNet weights), for caches."""
        h = hashlib.sha256(repr((self.steps, self.blocks, self.noise_seed)).encode())
        for name, t in self.unet.state_dict().items():
            h.update(name.encode())
            flat = t.detach().flatten()
            h.update(repr((tuple(t.shape), float(flat[:: max(1, flat.numel() // 64)].double().sum()))).encode())
        return h.hexdigest()[:16]

    @torch.no_grad()
    def forward(self, x0: torch.Tensor, noise_index: int = 0) -> list[torch.Tensor]:
        """
        Args:
            x0: (B, C, H, W) clean images scaled to [-1, 1]; H, W multiples of 2 ** (levels - 1).
            noise_index: which fixed noise draw (0 = the paper's single draw).

        Returns:
            list over blocks of (B, len(steps) * C_k, H_k, W_k) float32, steps concatenated in ``steps`` order.
        """
        if x0.ndim != 4 or x0.shape[1] != self.in_channels:
            raise BadInputError(
                "image",
                f"expected a (B, {self.in_channels}, H, W) image batch for the diffusion UNet, got {tuple(x0.shape)}",
            )
        factor = 2 ** (len(self.unet.up_blocks) - 1)
        if x0.shape[2] % factor or x0.shape[3] % factor:
            raise BadInputError("image", f"image size {tuple(x0.shape[2:])} must be a multiple of {factor}")
        device = x0.device
        eps = self.noise((1, *x0.shape[1:]), noise_index).to(device)
        per_step: list[list[torch.Tensor]] = []
        use_amp = self.autocast_fp16 and device.type == "cuda"
        for t in self.steps:
            timesteps = torch.full((x0.shape[0],), t, dtype=torch.long, device=device)
            xt = self.scheduler.add_noise(x0.float(), eps.expand_as(x0), timesteps)
            self._grabbed = {}
            self._active = True
            try:
                with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=use_amp):
                    self.unet(xt, timesteps)
            except _StopForward:
                pass
            finally:
                self._active = False
            per_step.append([self._grabbed[i] for i in range(len(self.blocks))])
        self._grabbed = {}
        return [torch.cat([step[i] for step in per_step], dim=1) for i in range(len(self.blocks))]
