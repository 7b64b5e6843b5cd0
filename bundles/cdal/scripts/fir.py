"""FIR up/down-sampling of 2D feature maps in pure PyTorch (StyleGAN2 ``upfirdn2d`` and the ops built on it).

NCSN++ / DDGAN (and so the cDAL generator and discriminator, bundles/cdal/docs/sources.md §2.1 "FIR resampling kernel
[1,3,3,1]")
resample feature maps with a separable FIR filter through ``upfirdn2d``: upsample by zero insertion, pad, filter,
downsample by striding. The official implementations call a CUDA extension JIT-compiled at import
(``score_sde/op/upfirdn2d.cpp``), which does not run on CPU. This module re-implements the same operator with
``torch.nn.functional`` only (zero insertion + ``F.pad`` + depthwise ``F.conv2d`` with stride), so models run on
CPU and GPU with identical results and any order of gradients (R1 penalties need double backward).

Why not MONAI / torch: neither has an FIR resampler; ``F.interpolate``/``avg_pool2d`` are different filters (nearest
= kernel [1,1], average pooling = [1,1]) and would change the model.

Public API (tensors ``[N, C, H, W]``):

- :func:`setup_fir_kernel` -- 1D taps -> normalised 2D kernel (outer product / sum).
- :func:`upfirdn2d` -- the general operator.
- :func:`fir_upsample_2d`, :func:`fir_downsample_2d` -- x2 (or xk) resampling with gain 1 (StyleGAN2 ``upsample_2d``
  / ``downsample_2d``).
- :func:`fir_conv_downsample_2d` -- fused 3x3 (any odd) conv followed by FIR downsampling (``conv_downsample_2d``).
- :class:`FIRConvDownsample2d` -- learned conv + FIR downsample with parameters ``weight [out, in, k, k]`` and
  ``bias [out]`` (the layout of score_sde's ``up_or_down_sampling.Conv2d(down=True)``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "setup_fir_kernel",
    "upfirdn2d",
    "fir_upsample_2d",
    "fir_downsample_2d",
    "fir_conv_downsample_2d",
    "FIRConvDownsample2d",
    "variance_scaling_uniform_",
]


def setup_fir_kernel(taps: Sequence[float] | torch.Tensor, device: torch.device | None = None) -> torch.Tensor:
    """Normalised 2D FIR kernel ``[K, K]`` (float32) from separable 1D ``taps`` (or a 2D kernel), summing to 1."""
    k = torch.as_tensor(taps, dtype=torch.float32, device=device)
    if k.ndim == 1:
        k = torch.outer(k, k)
    if k.ndim != 2 or k.shape[0] != k.shape[1]:
        raise ValueError(f"FIR kernel must be 1D taps or a square 2D kernel, got shape {tuple(k.shape)}")
    return k / k.sum()


def upfirdn2d(
    x: torch.Tensor, kernel: torch.Tensor, up: int = 1, down: int = 1, pad: tuple[int, int] = (0, 0)
) -> torch.Tensor:
    """Upsample (zero insertion) -> pad -> FIR filter -> downsample, per channel (StyleGAN2 ``upfirdn2d``).

    Args:
        x: ``[N, C, H, W]``.
        kernel: 2D FIR kernel ``[K, K]`` (used as a true convolution, i.e. flipped, as the CUDA op does).
        up, down: integer factors applied to both axes.
        pad: ``(before, after)`` padding applied to both axes after upsampling (negative values crop).

    Returns:
        ``[N, C, (H*up + pad0 + pad1 - K) // down + 1, (W*up + ...) // down + 1]``.
    """
    n, c, h, w = x.shape
    if up > 1:
        z = x.new_zeros(n, c, h * up, w * up)
        z[:, :, ::up, ::up] = x
        x = z
    p0, p1 = int(pad[0]), int(pad[1])
    if p0 or p1:
        x = F.pad(x, [p0, p1, p0, p1])
    k = torch.flip(kernel, [0, 1]).to(dtype=x.dtype, device=x.device)
    weight = k[None, None].expand(c, 1, *k.shape)
    return F.conv2d(x, weight, stride=down, groups=c)


def fir_upsample_2d(
    x: torch.Tensor, taps: Sequence[float] = (1, 3, 3, 1), factor: int = 2, gain: float = 1.0
) -> torch.Tensor:
    """``[N, C, H, W]`` -> ``[N, C, H*factor, W*factor]`` with the FIR filter (StyleGAN2 ``upsample_2d``)."""
    k = setup_fir_kernel(taps, x.device) * (gain * factor**2)
    p = k.shape[0] - factor
    return upfirdn2d(x, k, up=factor, pad=((p + 1) // 2 + factor - 1, p // 2))


def fir_downsample_2d(
    x: torch.Tensor, taps: Sequence[float] = (1, 3, 3, 1), factor: int = 2, gain: float = 1.0
) -> torch.Tensor:
    """``[N, C, H, W]`` -> ``[N, C, H//factor, W//factor]`` with the FIR filter (StyleGAN2 ``downsample_2d``)."""
    k = setup_fir_kernel(taps, x.device) * gain
    p = k.shape[0] - factor
    return upfirdn2d(x, k, down=factor, pad=((p + 1) // 2, p // 2))


def fir_conv_downsample_2d(
    x: torch.Tensor, weight: torch.Tensor, taps: Sequence[float] = (1, 3, 3, 1), factor: int = 2, gain: float = 1.0
) -> torch.Tensor:
    """Fused ``conv2d(weight)`` + FIR downsample (StyleGAN2 ``conv_downsample_2d``): pad once, filter, strided conv.

    Args:
        x: ``[N, C_in, H, W]``; weight: ``[C_out, C_in, k, k]`` (odd ``k``).

    Returns:
        ``[N, C_out, H // factor, W // factor]``.
    """
    conv_k = weight.shape[-1]
    k = setup_fir_kernel(taps, x.device) * gain
    p = (k.shape[0] - factor) + (conv_k - 1)
    x = upfirdn2d(x, k, pad=((p + 1) // 2, p // 2))
    return F.conv2d(x, weight, stride=factor)


def variance_scaling_uniform_(tensor: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """DDPM / score_sde ``default_init``: uniform variance scaling, ``fan_avg`` mode (``scale`` 0 -> 1e-10).

    ``fan_in = shape[1] * receptive field``, ``fan_out = shape[0] * receptive field``; bound = sqrt(3 * scale /
    fan_avg).
    """
    scale = 1e-10 if scale == 0 else scale
    shape = tensor.shape
    receptive = 1
    for s in shape[2:]:
        receptive *= int(s)
    fan_in = (shape[1] if len(shape) > 1 else shape[0]) * receptive
    fan_out = shape[0] * receptive
    bound = (3.0 * scale / ((fan_in + fan_out) / 2.0)) ** 0.5
    with torch.no_grad():
        return tensor.uniform_(-bound, bound)


class FIRConvDownsample2d(nn.Module):
    """Learned ``k x k`` convolution fused with FIR x2 downsampling (score_sde ``Conv2d(down=True)``).

    Parameters ``weight [out, in, k, k]`` (DDPM variance-scaling init) and ``bias [out]`` (zeros), the names and
    layout of the official layer, so its weights load unchanged.

    Input ``[N, in_channels, H, W]`` -> output ``[N, out_channels, H/2, W/2]``.
    """

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int = 3, fir_kernel: Sequence[float] = (1, 3, 3, 1)
    ) -> None:
        super().__init__()
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd and >= 1, got {kernel_size}")
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        variance_scaling_uniform_(self.weight)
        self.fir_kernel = tuple(float(v) for v in fir_kernel)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return fir_conv_downsample_2d(x, self.weight, self.fir_kernel) + self.bias.view(1, -1, 1, 1)
