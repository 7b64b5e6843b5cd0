"""Latent-modulated normalisation (StyleGAN / DDGAN): pixel norm, the z mapping network, adaptive GroupNorm.

A random latent ``z ~ N(0, I)`` is mapped to a style vector (``PixelNorm -> Linear -> SiLU -> n x [Linear -> SiLU]``)
that sets the per-channel scale and shift of a non-affine GroupNorm in every residual block. DDGAN introduced this
to make each few-step denoising distribution multimodal; cDAL uses it unchanged (bundles/cdal/docs/sources.md §2.4,
paper §2.3 eq 3).

Why hand-written: MONAI's diffusion blocks hard-code an affine ``nn.GroupNorm`` (``DiffusionUNetResnetBlock``) and
SPADE modulates by a spatial map, not by a vector; neither fits.

Parameter names follow score_sde (``style`` linear of :class:`AdaptiveGroupNorm`; the mapping network as a
``Sequential`` ``[PixelNorm, Linear, SiLU, Linear, SiLU, ...]``) so official checkpoints load by name.
"""

from __future__ import annotations

import torch
from scripts.fir import variance_scaling_uniform_
from torch import nn

__all__ = ["PixelNorm", "AdaptiveGroupNorm", "latent_mapping_network", "default_dense"]


def default_dense(in_features: int, out_features: int, init_scale: float = 1.0) -> nn.Linear:
    """``nn.Linear`` with DDPM variance-scaling (fan_avg, uniform) weights and zero bias (score_sde ``dense``)."""
    lin = nn.Linear(in_features, out_features)
    variance_scaling_uniform_(lin.weight, init_scale)
    nn.init.zeros_(lin.bias)
    return lin


class PixelNorm(nn.Module):
    """``z / sqrt(mean(z^2 over dim 1) + 1e-8)``; input ``[B, nz]`` (or ``[B, C, ...]``), same shape out."""

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return z * torch.rsqrt(torch.mean(z**2, dim=1, keepdim=True) + 1e-8)


def latent_mapping_network(nz: int, z_emb_dim: int, n_mlp: int = 3) -> nn.Sequential:
    """``PixelNorm -> Linear(nz, z_emb) -> SiLU -> n_mlp x [Linear(z_emb, z_emb) -> SiLU]`` : ``[B, nz] -> [B,
    z_emb]``."""
    if nz < 1 or z_emb_dim < 1 or n_mlp < 0:
        raise ValueError(f"latent mapping needs nz >= 1, z_emb_dim >= 1, n_mlp >= 0 (got {nz}, {z_emb_dim}, {n_mlp})")
    layers: list[nn.Module] = [PixelNorm(), default_dense(nz, z_emb_dim), nn.SiLU()]
    for _ in range(n_mlp):
        layers += [default_dense(z_emb_dim, z_emb_dim), nn.SiLU()]
    return nn.Sequential(*layers)


class AdaptiveGroupNorm(nn.Module):
    """Non-affine GroupNorm whose scale and shift come from a style vector: ``gamma * GN(x) + beta``.

    ``[gamma, beta] = style(zemb)`` with ``style = Linear(style_dim, 2 C)`` initialised so that ``gamma = 1``,
    ``beta = 0`` at the start (bias), as in DDGAN's ``layerspp.AdaptiveGroupNorm``.

    Args:
        num_groups: GroupNorm groups (NCSN++ uses ``min(C // 4, 32)``).
        num_channels: ``C``.
        style_dim: size of the style vector.
        eps: GroupNorm epsilon (1e-6 in NCSN++).

    Forward: ``x [B, C, *spatial]``, ``style [B, style_dim]`` -> ``[B, C, *spatial]``.
    """

    def __init__(self, num_groups: int, num_channels: int, style_dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.norm = nn.GroupNorm(num_groups, num_channels, affine=False, eps=eps)
        self.style = default_dense(style_dim, num_channels * 2)
        with torch.no_grad():
            self.style.bias[:num_channels] = 1.0
            self.style.bias[num_channels:] = 0.0

    def forward(self, x: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        gamma, beta = self.style(style).chunk(2, dim=1)
        shape = (x.shape[0], x.shape[1]) + (1,) * (x.ndim - 2)
        return gamma.reshape(shape) * self.norm(x) + beta.reshape(shape)
