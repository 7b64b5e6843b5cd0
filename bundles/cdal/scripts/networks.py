"""cDAL networks: the NCSN++-AdaGN generator x_theta(x_t, t, I, z) and the time-conditioned discriminator.

bundles/cdal/docs/sources.md §2 (generator) and §3.1 (discriminator); official code
``score_sde/models/ncsnpp_generator_adagn.py``,
``layerspp.py``, ``discriminator.py`` (DDGAN). Written by hand because MONAI has no equivalent: MONAI's
``DiffusionModelUNet`` has no latent-z path (AdaGN) and no additive image branch, and its discriminators are not
time-conditioned (bundles/cdal/docs/sources.md §9). The layer internals keep the official parameter names
(``GroupNorm_0.style``, ``Conv_0``, ``Dense_0``, ``NIN_0.W``, ...) so :mod:`scripts.convert` maps the authors'
checkpoints by position.

FIR resampling is the pure-PyTorch :mod:`scripts.fir` (the official code needs a CUDA extension).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from common.networks.utils import unwrap_network
from scripts.adaptive_norm import AdaptiveGroupNorm, default_dense, latent_mapping_network
from scripts.fir import FIRConvDownsample2d, fir_downsample_2d, fir_upsample_2d, variance_scaling_uniform_
from torch import nn

__all__ = [
    "sinusoidal_embedding",
    "ResnetBlockBigGANAdaGN",
    "AttnBlockpp",
    "ResBlockEncoder",
    "ImageEncoder",
    "CDALGenerator",
    "DownConvBlock",
    "CDALDiscriminator",
]

_SQRT2 = math.sqrt(2.0)


def sinusoidal_embedding(t: torch.Tensor, dim: int, max_positions: int = 10000) -> torch.Tensor:
    """score_sde positional embedding of integer steps ``t [B]`` -> ``[B, dim]``: sin first, then cos,
    frequencies ``exp(-ln(max_positions) k / (half - 1))`` (MONAI's ``get_timestep_embedding`` is cos-first with
    ``/half``, which would not load the authors' weights)."""
    half = dim // 2
    scale = math.log(max_positions) / max(half - 1, 1)
    freqs = torch.exp(torch.arange(half, dtype=torch.float32, device=t.device) * -scale)
    args = t.float()[:, None] * freqs[None, :]
    emb = torch.cat([torch.sin(args), torch.cos(args)], dim=1)
    if dim % 2 == 1:
        emb = F.pad(emb, (0, 1))
    return emb


def _conv(in_ch: int, out_ch: int, kernel: int, init_scale: float = 1.0, bias: bool = True) -> nn.Conv2d:
    """DDPM-initialised conv (variance scaling fan_avg uniform, zero bias): score_sde ``ddpm_conv3x3/1x1``."""
    conv = nn.Conv2d(in_ch, out_ch, kernel, padding=kernel // 2, bias=bias)
    variance_scaling_uniform_(conv.weight, init_scale)
    if bias:
        nn.init.zeros_(conv.bias)
    return conv


def _groups(channels: int, cap: int = 32) -> int:
    """NCSN++ group count ``min(C // 4, 32)`` (at least 1)."""
    return max(1, min(channels // 4, cap))


class NIN(nn.Module):
    """1x1 "network in network" projection with score_sde's parameter layout ``W [in, out]``, ``b [out]``."""

    def __init__(self, in_dim: int, num_units: int, init_scale: float = 0.1) -> None:
        super().__init__()
        self.W = nn.Parameter(variance_scaling_uniform_(torch.empty(in_dim, num_units), init_scale))
        self.b = nn.Parameter(torch.zeros(num_units))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.einsum("bchw,cd->bdhw", x, self.W) + self.b.view(1, -1, 1, 1)


class AttnBlockpp(nn.Module):
    """Single-head self-attention over all pixels, residual ``(x + h) / sqrt(2)`` (bundles/cdal/docs/sources.md §2.2;
    not z/t-conditioned).

    ``[B, C, H, W] -> [B, C, H, W]``; scaled dot-product attention with scale ``C^-1/2``.
    """

    def __init__(self, channels: int, skip_rescale: bool = True) -> None:
        super().__init__()
        self.GroupNorm_0 = nn.GroupNorm(_groups(channels), channels, eps=1e-6)
        self.NIN_0 = NIN(channels, channels)
        self.NIN_1 = NIN(channels, channels)
        self.NIN_2 = NIN(channels, channels)
        self.NIN_3 = NIN(channels, channels, init_scale=0.0)
        self.skip_rescale = skip_rescale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        n = self.GroupNorm_0(x)
        q, k, v = (m(n).reshape(b, 1, c, h * w).transpose(-1, -2) for m in (self.NIN_0, self.NIN_1, self.NIN_2))
        a = F.scaled_dot_product_attention(q, k, v)  # [B, 1, HW, C], softmax(q k^T / sqrt(C)) v
        a = self.NIN_3(a.transpose(-1, -2).reshape(b, c, h, w))
        return (x + a) / _SQRT2 if self.skip_rescale else x + a


class ResnetBlockBigGANAdaGN(nn.Module):
    """BigGAN-style ResBlock with adaptive GroupNorm (z) for both norms and a time bias (bundles/cdal/docs/sources.md
    §2.4).

    ``AdaGN -> SiLU -> (FIR up/down) -> conv3x3 -> + Dense(SiLU(temb)) -> AdaGN -> SiLU -> dropout -> conv3x3 (~0
    init)``;
    skip: (FIR up/down) -> 1x1 conv when channels change or resampling; output ``(skip + h) / sqrt(2)``.

    Forward: ``x [B, in, H, W]``, ``temb [B, temb_dim]``, ``zemb [B, zemb_dim]`` -> ``[B, out, H', W']``.
    """

    def __init__(
        self,
        in_ch: int,
        out_ch: int | None = None,
        temb_dim: int | None = None,
        zemb_dim: int = 256,
        up: bool = False,
        down: bool = False,
        dropout: float = 0.0,
        fir_kernel: Sequence[float] = (1, 3, 3, 1),
        skip_rescale: bool = True,
    ) -> None:
        super().__init__()
        out_ch = out_ch or in_ch
        self.GroupNorm_0 = AdaptiveGroupNorm(_groups(in_ch), in_ch, zemb_dim)
        self.Conv_0 = _conv(in_ch, out_ch, 3)
        if temb_dim is not None:
            self.Dense_0 = default_dense(temb_dim, out_ch)
        self.GroupNorm_1 = AdaptiveGroupNorm(_groups(out_ch), out_ch, zemb_dim)
        self.Dropout_0 = nn.Dropout(dropout)
        self.Conv_1 = _conv(out_ch, out_ch, 3, init_scale=0.0)
        if in_ch != out_ch or up or down:
            self.Conv_2 = _conv(in_ch, out_ch, 1)
        self.up, self.down = up, down
        self.fir_kernel = tuple(fir_kernel)
        self.skip_rescale = skip_rescale
        self.in_ch, self.out_ch = in_ch, out_ch

    def forward(self, x: torch.Tensor, temb: torch.Tensor | None, zemb: torch.Tensor) -> torch.Tensor:
        h = F.silu(self.GroupNorm_0(x, zemb))
        if self.up:
            h, x = fir_upsample_2d(h, self.fir_kernel), fir_upsample_2d(x, self.fir_kernel)
        elif self.down:
            h, x = fir_downsample_2d(h, self.fir_kernel), fir_downsample_2d(x, self.fir_kernel)
        h = self.Conv_0(h)
        if temb is not None and hasattr(self, "Dense_0"):
            h = h + self.Dense_0(F.silu(temb))[:, :, None, None]
        h = F.silu(self.GroupNorm_1(h, zemb))
        h = self.Conv_1(self.Dropout_0(h))
        if hasattr(self, "Conv_2"):
            x = self.Conv_2(x)
        return (x + h) / _SQRT2 if self.skip_rescale else x + h


class ResBlockEncoder(nn.Module):
    """Image-encoder block (bundles/cdal/docs/sources.md §2.3): ``GN -> SiLU -> conv3x3 -> GN -> SiLU -> dropout ->
    conv3x3 (zero init)``, identity skip (no rescale), no t and no z. GroupNorm uses 32 groups (fewer when ``channels <
    32``, for tiny demos). ``[B, C, H, W] -> [B, C, H, W]``."""

    def __init__(self, channels: int, dropout: float = 0.0) -> None:
        super().__init__()
        groups = math.gcd(32, channels)
        self.in_layers = nn.Sequential(
            nn.GroupNorm(groups, channels), nn.SiLU(), nn.Conv2d(channels, channels, 3, padding=1)
        )
        zero = nn.Conv2d(channels, channels, 3, padding=1)
        nn.init.zeros_(zero.weight)
        nn.init.zeros_(zero.bias)
        self.out_layers = nn.Sequential(nn.GroupNorm(groups, channels), nn.SiLU(), nn.Dropout(dropout), zero)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.out_layers(self.in_layers(x))


class ImageEncoder(nn.Module):
    """Conditioning-image encoder at full resolution: ``conv3x3(image_ch -> nf)`` then ``num_blocks`` ResBlockEncoders.
    ``[B, image_ch, H, W] -> [B, nf, H, W]`` (added to the stem feature of ``x_t``, bundles/cdal/docs/sources.md
    §2.3)."""

    def __init__(self, image_channels: int, num_channels: int, num_blocks: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.stem = nn.Conv2d(image_channels, num_channels, 3, padding=1)
        self.blocks = nn.ModuleList(ResBlockEncoder(num_channels, dropout) for _ in range(num_blocks))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        h = self.stem(image)
        for block in self.blocks:
            h = block(h)
        return h


class CDALGenerator(nn.Module):
    """x_theta(x_t, t, I, z): predicts the clean label x0 in [-1, 1] (bundles/cdal/docs/sources.md §2, paper eq 3-4).

    NCSN++ U-Net ("biggan" ResBlocks with adaptive GroupNorm driven by the latent ``z`` through a mapping MLP,
    FIR [1,3,3,1] resampling, skip rescale 1/sqrt(2), residual input pyramid, self-attention at
    ``attn_resolutions``), the image encoder added to the stem feature, sinusoidal time embedding, tanh output.

    Args:
        image_size: training crop size ``S`` (fixes which levels get attention: level ``i`` is at ``S / 2^i``).
        label_channels: channels of ``x_t`` / output (1 binary, 3 Hippocampus one-hot).
        image_channels: channels of the condition image ``I`` (3 MoNuSeg RGB, 1 CXR / MRI).
        num_channels: ``nf``.
        channel_mult: per-level width multipliers (the number of levels ``L``).
        num_res_blocks: ResBlocks per level (decoder: +1).
        attn_resolutions: resolutions with self-attention.
        dropout: dropout in the ResBlocks (0 in the paper's configs).
        encoder_layers, encoder_res_blocks: image encoder depth = their product (MoNuSeg 5 x 1, CXR 3 x 2).
        nz, z_emb_dim, n_mlp: latent size, style size, hidden layers of the mapping network.
        fir_kernel: FIR taps.
        use_tanh: squash the output to (-1, 1).

    Forward:
        x_t ``[B, label_channels, H, W]``, t ``[B]`` int (0..T-1), image ``[B, image_channels, H, W]``,
        z ``[B, nz]`` (drawn from ``N(0, I)`` when ``None``) -> x0_hat ``[B, label_channels, H, W]``.
        ``H, W`` must be multiples of ``2^(L-1)``.
    """

    def __init__(
        self,
        image_size: int = 256,
        label_channels: int = 1,
        image_channels: int = 3,
        num_channels: int = 64,
        channel_mult: Sequence[int] = (1, 1, 1, 2, 2, 4, 4),
        num_res_blocks: int = 2,
        attn_resolutions: Sequence[int] = (16, 8),
        dropout: float = 0.0,
        encoder_layers: int = 5,
        encoder_res_blocks: int = 1,
        nz: int = 100,
        z_emb_dim: int = 256,
        n_mlp: int = 3,
        fir_kernel: Sequence[float] = (1, 3, 3, 1),
        use_tanh: bool = True,
    ) -> None:
        super().__init__()
        nf = int(num_channels)
        self.nf, self.nz = nf, int(nz)
        self.image_size = int(image_size)
        self.label_channels, self.image_channels = int(label_channels), int(image_channels)
        self.num_levels = len(channel_mult)
        self.num_res_blocks = int(num_res_blocks)
        self.use_tanh = use_tanh
        resolutions = [self.image_size // (2**i) for i in range(self.num_levels)]
        attn = {int(r) for r in attn_resolutions}
        self.level_has_attn = [r in attn for r in resolutions]
        order: list[str] = []  # module names in the official ``all_modules`` order (for checkpoint conversion)

        temb_dim = 4 * nf
        self.time_embed = nn.ModuleList([default_dense(nf, temb_dim), default_dense(temb_dim, temb_dim)])
        order += ["time_embed.0", "time_embed.1"]
        self.image_encoder = ImageEncoder(self.image_channels, nf, encoder_layers * encoder_res_blocks, dropout)
        order += ["image_encoder.stem"] + [f"image_encoder.blocks.{j}" for j in range(len(self.image_encoder.blocks))]
        self.input_conv = _conv(self.label_channels, nf, 3)
        order.append("input_conv")

        def block(in_ch: int, out_ch: int | None = None, **kw) -> ResnetBlockBigGANAdaGN:
            return ResnetBlockBigGANAdaGN(
                in_ch, out_ch, temb_dim, z_emb_dim, dropout=dropout, fir_kernel=fir_kernel, **kw
            )

        hs_c = [nf]
        in_ch = nf
        pyramid_ch = self.label_channels
        self.down_levels = nn.ModuleList()
        for i, mult in enumerate(channel_mult):
            level = nn.Module()
            level.blocks, level.attns = nn.ModuleList(), nn.ModuleList()
            for j in range(self.num_res_blocks):
                out_ch = nf * mult
                level.blocks.append(block(in_ch, out_ch))
                order.append(f"down_levels.{i}.blocks.{j}")
                in_ch = out_ch
                if self.level_has_attn[i]:
                    level.attns.append(AttnBlockpp(in_ch))
                    order.append(f"down_levels.{i}.attns.{j}")
                hs_c.append(in_ch)
            if i != self.num_levels - 1:
                level.downsample = block(in_ch, down=True)
                level.pyramid = nn.Module()
                level.pyramid.Conv2d_0 = FIRConvDownsample2d(pyramid_ch, in_ch, 3, fir_kernel)
                order += [f"down_levels.{i}.downsample", f"down_levels.{i}.pyramid"]
                pyramid_ch = in_ch
                hs_c.append(in_ch)
            self.down_levels.append(level)

        in_ch = hs_c[-1]
        self.mid_block_1 = block(in_ch)
        self.mid_attn = AttnBlockpp(in_ch)
        self.mid_block_2 = block(in_ch)
        order += ["mid_block_1", "mid_attn", "mid_block_2"]

        self.up_levels = nn.ModuleList([nn.Module() for _ in range(self.num_levels)])
        for i in reversed(range(self.num_levels)):
            level = self.up_levels[i]
            level.blocks = nn.ModuleList()
            for j in range(self.num_res_blocks + 1):
                out_ch = nf * channel_mult[i]
                level.blocks.append(block(in_ch + hs_c.pop(), out_ch))
                order.append(f"up_levels.{i}.blocks.{j}")
                in_ch = out_ch
            if self.level_has_attn[i]:
                level.attn = AttnBlockpp(in_ch)
                order.append(f"up_levels.{i}.attn")
            if i != 0:
                level.upsample = block(in_ch, up=True)
                order.append(f"up_levels.{i}.upsample")
        assert not hs_c
        self.out_norm = nn.GroupNorm(_groups(in_ch), in_ch, eps=1e-6)
        self.out_conv = _conv(in_ch, self.label_channels, 3, init_scale=0.0)
        order += ["out_norm", "out_conv"]
        self.z_transform = latent_mapping_network(self.nz, z_emb_dim, n_mlp)
        self.official_module_order: tuple[str, ...] = tuple(order)

    def forward(
        self, x_t: torch.Tensor, t: torch.Tensor, image: torch.Tensor, z: torch.Tensor | None = None
    ) -> torch.Tensor:
        if x_t.ndim != 4 or image.ndim != 4:
            raise ValueError(
                f"CDALGenerator expects 2D batches [B, C, H, W]; got x_t {tuple(x_t.shape)}, image {tuple(image.shape)}"
            )
        if x_t.shape[1] != self.label_channels or image.shape[1] != self.image_channels:
            raise ValueError(
                f"CDALGenerator built for {self.label_channels} label and {self.image_channels} image channel(s); got "
                f"x_t {tuple(x_t.shape)} and image {tuple(image.shape)}"
            )
        if x_t.shape[-2:] != image.shape[-2:]:
            raise ValueError(f"x_t {tuple(x_t.shape)} and image {tuple(image.shape)} differ in spatial size")
        factor = 2 ** (self.num_levels - 1)
        if x_t.shape[-1] % factor or x_t.shape[-2] % factor:
            raise ValueError(
                f"spatial size {tuple(x_t.shape[-2:])} must be a multiple of {factor} ({self.num_levels} levels)"
            )
        b = x_t.shape[0]
        if z is None:
            z = torch.randn(b, self.nz, device=x_t.device, dtype=x_t.dtype)
        t = torch.as_tensor(t, device=x_t.device).reshape(-1).expand(b) if torch.as_tensor(t).numel() == 1 else t
        zemb = self.z_transform(z)
        temb = self.time_embed[0](sinusoidal_embedding(t, self.nf))
        temb = self.time_embed[1](F.silu(temb))

        pyramid = x_t
        hs = [self.input_conv(x_t) + self.image_encoder(image)]
        for i, level in enumerate(self.down_levels):
            for j, blk in enumerate(level.blocks):
                h = blk(hs[-1], temb, zemb)
                if self.level_has_attn[i]:
                    h = level.attns[j](h)
                hs.append(h)
            if i != self.num_levels - 1:
                h = level.downsample(hs[-1], temb, zemb)
                pyramid = (level.pyramid.Conv2d_0(pyramid) + h) / _SQRT2
                h = pyramid
                hs.append(h)
        h = hs[-1]
        h = self.mid_block_2(self.mid_attn(self.mid_block_1(h, temb, zemb)), temb, zemb)
        for i in reversed(range(self.num_levels)):
            level = self.up_levels[i]
            for blk in level.blocks:
                h = blk(torch.cat([h, hs.pop()], dim=1), temb, zemb)
            if self.level_has_attn[i]:
                h = level.attn(h)
            if i != 0:
                h = level.upsample(h, temb, zemb)
        h = self.out_conv(F.silu(self.out_norm(h)))
        return torch.tanh(h) if self.use_tanh else h


# ----------------------------------------------------------------------------------------------- discriminator
class TimestepEmbedding(nn.Module):
    """sinusoidal(t_emb_dim) -> Linear -> LeakyReLU(0.2) -> Linear (DDGAN); ``t [B] -> [B, t_emb_dim]``."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim
        self.main = nn.Sequential(default_dense(dim, dim), nn.LeakyReLU(0.2), default_dense(dim, dim))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return self.main(sinusoidal_embedding(t, self.dim))


class DownConvBlock(nn.Module):
    """DDGAN discriminator block: ``LReLU -> conv3x3 -> + Dense(temb) -> LReLU -> (FIR down of h and input) ->
    conv3x3 (~0 init)``; skip = 1x1 conv (no bias) of the (downsampled) input; ``(h + skip) / sqrt(2)``."""

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        t_emb_dim: int,
        downsample: bool = False,
        fir_kernel: Sequence[float] = (1, 3, 3, 1),
    ) -> None:
        super().__init__()
        self.conv1 = nn.Sequential(_conv(in_ch, out_ch, 3))
        self.conv2 = nn.Sequential(_conv(out_ch, out_ch, 3, init_scale=0.0))
        self.dense_t1 = default_dense(t_emb_dim, out_ch)
        self.skip = nn.Sequential(_conv(in_ch, out_ch, 1, bias=False))
        self.act = nn.LeakyReLU(0.2)
        self.downsample = downsample
        self.fir_kernel = tuple(fir_kernel)

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(self.act(x)) + self.dense_t1(temb)[..., None, None]
        h = self.act(h)
        if self.downsample:
            h, x = fir_downsample_2d(h, self.fir_kernel), fir_downsample_2d(x, self.fir_kernel)
        return (self.conv2(h) + self.skip(x)) / _SQRT2


class CDALDiscriminator(nn.Module):
    """Time-conditioned discriminator D(x_{t-1}, t, x_t) with a feature tap for the attention map
    (bundles/cdal/docs/sources.md §3.1).

    One network for all t (the paper's "one discriminator per step" is one t-conditioned network in the code).
    Input: ``concat(x_lo, x_hi)`` on channels (``2 * label_channels``); the image is never seen.

    Args:
        label_channels: channels of one label (the input has twice as many).
        ngf: base width (64 in the paper's configs).
        t_emb_dim: time embedding size (256 large, 128 small).
        variant: ``"large"`` (MoNuSeg/CXR: 1x1 stem -> 2ngf, 6 down blocks to 8ngf, 256 px -> 4 px) or ``"small"``
            (Hippocampus: 2ngf, 2ngf (no down), 4ngf, 8ngf, 8ngf).
        init_normal_std: if set, every conv weight is re-drawn from ``N(0, std)`` (the monu/lung scripts' 0.02);
            ``None`` keeps DDGAN's variance-scaling init (Hippocampus).

    ``forward(x_lo, t, x_hi) -> [B, 1]`` logits; ``get_features(x_lo, t, x_hi) -> [stem, block1, ..., blockK]``
    (raw block outputs, no grad).
    """

    def __init__(
        self,
        label_channels: int = 1,
        ngf: int = 64,
        t_emb_dim: int = 256,
        variant: str = "large",
        init_normal_std: float | None = 0.02,
        fir_kernel: Sequence[float] = (1, 3, 3, 1),
    ) -> None:
        super().__init__()
        if variant == "large":
            widths = [2 * ngf, 4 * ngf, 8 * ngf, 8 * ngf, 8 * ngf, 8 * ngf, 8 * ngf]
            downs = [True] * 6
        elif variant == "small":
            widths = [2 * ngf, 2 * ngf, 4 * ngf, 8 * ngf, 8 * ngf]
            downs = [False, True, True, True]
        else:
            raise ValueError(f"variant must be 'large' or 'small', got {variant!r}")
        self.variant = variant
        self.t_embed = TimestepEmbedding(t_emb_dim)
        self.act = nn.LeakyReLU(0.2)
        self.start_conv = _conv(2 * label_channels, widths[0], 1)
        self.blocks = nn.ModuleList(
            DownConvBlock(widths[k], widths[k + 1], t_emb_dim, downs[k], fir_kernel) for k in range(len(downs))
        )
        # DDGAN's Discriminator_small starts its final conv at init_scale 0 (weights ~1e-7), the large one at 1
        self.final_conv = _conv(widths[-1] + 1, widths[-1], 3, init_scale=0.0 if variant == "small" else 1.0)
        self.end_linear = default_dense(widths[-1], 1)
        self.stddev_group, self.stddev_feat = 4, 1
        self.feature_channels = tuple(widths)
        if init_normal_std is not None:
            for m in self.modules():
                if isinstance(m, nn.Conv2d):
                    nn.init.normal_(m.weight, 0.0, float(init_normal_std))

    @property
    def num_features(self) -> int:
        """Length of the :meth:`get_features` list."""
        return len(self.blocks) + 1

    def _trunk(self, x_lo: torch.Tensor, t: torch.Tensor, x_hi: torch.Tensor) -> list[torch.Tensor]:
        smallest = 2 ** sum(b.downsample for b in self.blocks)
        if min(x_lo.shape[-2:]) < smallest:
            raise ValueError(
                f"the {self.variant!r} discriminator downsamples {smallest}x: inputs need at least {smallest} pixels "
                "per "
                f"side, got {tuple(x_lo.shape[-2:])} (use variant 'small' for small crops)"
            )
        temb = self.act(self.t_embed(t))
        h = self.start_conv(torch.cat([x_lo, x_hi], dim=1))
        hs = [h]
        for blk in self.blocks:
            h = blk(h, temb)
            hs.append(h)
        return hs

    def forward(self, x_lo: torch.Tensor, t: torch.Tensor, x_hi: torch.Tensor) -> torch.Tensor:
        out = self._trunk(x_lo, t, x_hi)[-1]
        b, c, h, w = out.shape
        group = min(b, self.stddev_group)
        while b % group:  # the official view() needs b % group == 0; use the largest divisor <= 4
            group -= 1
        std = out.view(group, -1, self.stddev_feat, c // self.stddev_feat, h, w)
        std = torch.sqrt(std.var(0, unbiased=False) + 1e-8).mean([2, 3, 4], keepdim=True).squeeze(2)
        std = std.repeat(group, 1, h, w)
        out = self.act(self.final_conv(torch.cat([out, std], 1)))
        return self.end_linear(out.flatten(2).sum(2))

    @torch.no_grad()
    def get_features(self, x_lo: torch.Tensor, t: torch.Tensor, x_hi: torch.Tensor) -> list[torch.Tensor]:
        """``[stem, block_1, ..., block_K]`` feature maps (no grad), bundles/cdal/docs/sources.md §3.1."""
        return self._trunk(x_lo, t, x_hi)


def discriminator_attention_map(
    discriminator: nn.Module, x_lo: torch.Tensor, t: torch.Tensor, x_hi: torch.Tensor, layer: int
) -> torch.Tensor:
    """Spatial attention map A_D (paper §2.2, bundles/cdal/docs/sources.md §3.2 exactly): channel mean of
    ``get_features(...)[layer]``, bilinearly upsampled (``align_corners=False``) to the label size; no abs, no
    normalisation.

    Returns ``[B, 1, H, W]`` (same ``H, W`` as ``x_lo``).
    """
    d = unwrap_network(discriminator)
    feats = d.get_features(x_lo, t, x_hi)
    if not 0 <= layer < len(feats):
        raise ValueError(f"attention layer {layer} out of range: the discriminator has {len(feats)} feature maps")
    a = feats[layer].mean(dim=1, keepdim=True)
    return F.interpolate(a, size=tuple(x_lo.shape[-2:]), mode="bilinear", align_corners=False)


__all__.append("discriminator_attention_map")
