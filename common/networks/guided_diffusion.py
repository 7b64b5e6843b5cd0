"""OpenAI guided-diffusion ("ADM", Dhariwal & Nichol 2021) UNets as MONAI ``DiffusionModelUNet`` s.

MONAI's :class:`~monai.networks.nets.DiffusionModelUNet` has the same layout as ADM's ``UNetModel`` (conv in, time
MLP, levels of ResBlocks (+ self-attention), ResBlock up/down-sampling with ``resblock_updown``, an attention middle
block, output head), but its ResBlocks *add* the time embedding, while ADM checkpoints trained with
``use_scale_shift_norm=True`` (e.g. ``256x256_diffusion_uncond.pt``, TextDiff's frozen image encoder) *scale and
shift* the normalised features with it (FiLM: ``GN(h) * (1 + s) + b``; bundles/textdiff/docs/sources.md §2.1, §9).
Instead of a second
UNet implementation this module

* subclasses MONAI's ResBlock (:class:`ScaleShiftResnetBlock`: ``time_emb_proj`` -> ``2 * out_channels``, FiLM in
  ``forward``) and swaps it into a built ``DiffusionModelUNet`` (:func:`use_scale_shift_norm`);
* builds the ADM configuration from guided-diffusion's own arguments (:func:`adm_unet`, defaults = the 256x256
  unconditional model);
* maps ADM state-dict names and shapes onto it (:func:`convert_adm_state_dict`; the fused legacy ``qkv`` 1x1 conv
  is split head by head into ``to_q``/``to_k``/``to_v``), strictly: every official key consumed, every MONAI key
  filled, shapes equal, else :class:`~common.errors.BadInputError` listing them;
* names the MONAI module whose output equals ADM's ``output_blocks[i]`` output (:func:`adm_output_block`), the hook
  points of diffusion-feature methods (TextDiff, ddpm-segmentation);
* converts official ADM checkpoints (:func:`convert_adm_state_dict`), the ``textdiff`` converter of
  ``python -m common.io.convert_checkpoint`` (-> ``{"model": MONAI state dict, "adm_flags": ...}``).

Remaining differences to ADM (bundles/textdiff/docs/sources.md §9): ADM's ``GroupNorm32`` computes in fp32 under fp16
and its attention softmax is fp32 -- run the MONAI net under ``torch.autocast(float16)`` (group_norm/softmax are on
autocast's fp32 list), not with ``.half()`` weights; dropout (0.1 in ADM) is absent (irrelevant in eval mode).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from os import PathLike
from pathlib import Path

import torch
import torch.nn as nn
from common.errors import BadInputError
from common.io.checkpoints import describe_state_dict_mismatch, load_state_dict_file
from common.standins import warn_if_standin
from monai.networks.nets import DiffusionModelUNet
from monai.networks.nets.diffusion_model_unet import DiffusionUNetResnetBlock

__all__ = [
    "ADM_256_UNCOND",
    "adm_key_pairs",
    "ADM_256_UNCOND_URL",
    "ScaleShiftResnetBlock",
    "adm_output_block",
    "adm_output_block_shapes",
    "adm_to_monai_names",
    "adm_unet",
    "convert_adm_state_dict",
    "is_adm_state_dict",
    "load_adm_weights",
    "randomize_zero_initialised",
    "use_scale_shift_norm",
]

#: guided-diffusion flags of ``256x256_diffusion_uncond.pt`` (552,814,086 parameters; bundles/textdiff/docs/sources.md
#: §2.1).
ADM_256_UNCOND: dict = {
    "image_size": 256,
    "in_channels": 3,
    "out_channels": 6,
    "model_channels": 256,
    "channel_mult": (1, 1, 2, 2, 4, 4),
    "num_res_blocks": 2,
    "attention_resolutions": (32, 16, 8),
    "num_head_channels": 64,
}

ADM_256_UNCOND_URL = "https://openaipublic.blob.core.windows.net/diffusion/jul-2021/256x256_diffusion_uncond.pt"


class ScaleShiftResnetBlock(DiffusionUNetResnetBlock):
    """MONAI ``DiffusionUNetResnetBlock`` with ADM's scale-shift (FiLM) time conditioning (``use_scale_shift_norm``).

    Same arguments, sub-modules and key names as the parent except ``time_emb_proj``: Linear(temb -> 2 * C_out),
    split into (scale, shift) in that order. Forward (ADM ``ResBlock._forward``)::

        h = conv1(up/down(SiLU(norm1(x))));  scale, shift = chunk(time_emb_proj(SiLU(emb)), 2)
        h = conv2(SiLU(norm2(h) * (1 + scale) + shift));  out = skip(up/down(x)) + h

    Shapes: ``x`` (B, C_in, *spatial), ``emb`` (B, temb) -> (B, C_out, *spatial') (spatial doubled/halved by up/down).
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.time_emb_proj = nn.Linear(self.emb_channels, 2 * self.out_channels)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.nonlinearity(self.norm1(x))
        if self.upsample is not None:
            x, h = self.upsample(x), self.upsample(h)
        elif self.downsample is not None:
            x, h = self.downsample(x), self.downsample(h)
        h = self.conv1(h)
        emb_out = self.time_emb_proj(self.nonlinearity(emb)).to(h.dtype)
        emb_out = emb_out.reshape(*emb_out.shape, *([1] * (h.ndim - 2)))
        scale, shift = emb_out.chunk(2, dim=1)
        h = self.norm2(h) * (1 + scale) + shift
        h = self.conv2(self.nonlinearity(h))
        return self.skip_connection(x) + h


def use_scale_shift_norm(unet: nn.Module) -> nn.Module:
    """Replace every ``DiffusionUNetResnetBlock`` of ``unet`` (in place) by a :class:`ScaleShiftResnetBlock` of the
    same configuration (new random weights); returns ``unet``. Idempotent."""
    for parent in list(unet.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is DiffusionUNetResnetBlock:
                new = ScaleShiftResnetBlock(
                    spatial_dims=child.spatial_dims,
                    in_channels=child.channels,
                    temb_channels=child.emb_channels,
                    out_channels=child.out_channels,
                    up=child.up,
                    down=child.down,
                    norm_num_groups=child.norm1.num_groups,
                    norm_eps=child.norm1.eps,
                )
                setattr(parent, name, new.to(next(child.parameters()).device))
    return unet


def randomize_zero_initialised(
    unet: nn.Module, generator: torch.Generator | None = None, std: float = 0.02
) -> nn.Module:
    """Give the zero-initialised output convs/projections of a *randomly initialised* MONAI diffusion UNet small
    random weights (N(0, std)), in place.

    A fresh ``DiffusionModelUNet`` zero-initialises every ResBlock's ``conv2``, every attention ``out_proj`` and the
    output conv (as ADM does for training from scratch), so all residual branches output 0 and the decoder
    activations are a linear function of the input. Random-feature extractors (the CPU demo of TextDiff, which
    has no pretrained tiny UNet) need the branches active. Not for pretrained weights.
    """
    with torch.no_grad():
        for p in unet.parameters():
            if p.ndim > 1 and not p.any():
                p.copy_(torch.randn(p.shape, generator=generator) * std)
    return unet


def _attention_levels(image_size: int, channel_mult: Sequence[int], attention_resolutions: Sequence[int]) -> list[bool]:
    """ADM puts attention at downsample rate ``ds = 2**level`` when ``image_size // ds`` is in the resolutions."""
    ds_with_attention = {image_size // int(r) for r in attention_resolutions}
    return [2**level in ds_with_attention for level in range(len(channel_mult))]


def adm_unet(
    image_size: int = 256,
    in_channels: int = 3,
    out_channels: int = 6,
    model_channels: int = 256,
    channel_mult: Sequence[int] = (1, 1, 2, 2, 4, 4),
    num_res_blocks: int = 2,
    attention_resolutions: Sequence[int] = (32, 16, 8),
    num_head_channels: int = 64,
    checkpoint: str | PathLike | None = None,
    init_seed: int | None = None,
    random_residuals: bool = False,
    frozen: bool = False,
) -> DiffusionModelUNet:
    """A MONAI ``DiffusionModelUNet`` with ADM's architecture and scale-shift ResBlocks
    (bundles/textdiff/docs/sources.md §9).

    Arguments are guided-diffusion's ``create_model`` flags (defaults: ``256x256_diffusion_uncond.pt``, see
    :data:`ADM_256_UNCOND`; ``use_scale_shift_norm=True``, ``resblock_updown=True``, ``learn_sigma`` via
    ``out_channels=6``, legacy attention order). ``attention_resolutions`` are feature-map sizes (ADM's
    ``"32,16,8"``), ``channel_mult`` multiplies ``model_channels`` per level.

    Args:
        checkpoint: weights to load strictly, official ADM names or already converted (:func:`load_adm_weights`).
        init_seed: seed of the random initialisation (deterministic weights without a checkpoint).
        random_residuals: without a checkpoint, give the zero-initialised layers random weights
            (:func:`randomize_zero_initialised`) so that a random UNet is a non-trivial feature extractor.
        frozen: eval mode and ``requires_grad=False``.

    Shapes: ``unet(x (B, in_channels, S, S), t (B,)) -> (B, out_channels, S, S)``, ``S`` a multiple of
    ``2 ** (len(channel_mult) - 1)``.
    """
    channels = tuple(int(model_channels) * int(m) for m in channel_mult)
    attention = _attention_levels(int(image_size), channel_mult, attention_resolutions)
    with torch.random.fork_rng(devices=[]):  # seeded init without touching the caller's RNG state
        if init_seed is not None:
            torch.manual_seed(int(init_seed))
        unet = DiffusionModelUNet(
            spatial_dims=2,
            in_channels=in_channels,
            out_channels=out_channels,
            num_res_blocks=int(num_res_blocks),
            channels=channels,
            attention_levels=attention,
            norm_num_groups=32,
            norm_eps=1e-5,
            resblock_updown=True,
            num_head_channels=int(num_head_channels),
            include_fc=True,
            use_combined_linear=False,
        )
        use_scale_shift_norm(unet)
        if checkpoint is None and random_residuals:
            randomize_zero_initialised(unet)
    if checkpoint is not None:
        load_adm_weights(unet, checkpoint)
    if frozen:
        unet.requires_grad_(False)
        unet.eval()
    return unet


# ------------------------------------------------------------------------------------------------ name mapping
def _unet_layout(unet: DiffusionModelUNet) -> tuple[list[int], list[bool], int]:
    """(res blocks per level, attention per level, number of levels) of a MONAI diffusion UNet."""
    levels = len(unet.down_blocks)
    nres = [len(b.resnets) for b in unet.down_blocks]
    attn = [hasattr(b, "attentions") for b in unet.down_blocks]
    return nres, attn, levels


def adm_to_monai_names(unet: DiffusionModelUNet) -> dict[str, tuple[str, str]]:
    """Module-prefix map ``{ADM prefix: (MONAI prefix, kind)}``, kind in {"res", "attn", "conv", "linear", "norm"}.

    Follows ADM's ``UNetModel.__init__`` (bundles/textdiff/docs/sources.md §9 table): ``input_blocks`` = [conv_in] + per
    level (ResBlock[, Attention]) x num_res_blocks + a down ResBlock between levels; ``middle_block`` = Res, Attn, Res;
    ``output_blocks`` = per level from the deepest (ResBlock[, Attention]) x (num_res_blocks + 1), the last one of a
    level ending with an up ResBlock (sub-index 2 with attention, else 1) except at the top level.
    """
    nres, attn, levels = _unet_layout(unet)
    names: dict[str, tuple[str, str]] = {
        "time_embed.0": ("time_embed.0", "linear"),
        "time_embed.2": ("time_embed.2", "linear"),
        "input_blocks.0.0": ("conv_in.conv", "conv"),
        "middle_block.0": ("middle_block.resnet_1", "res"),
        "middle_block.1": ("middle_block.attention", "attn"),
        "middle_block.2": ("middle_block.resnet_2", "res"),
        "out.0": ("out.0", "norm"),
        "out.2": ("out.2.conv", "conv"),
    }
    k = 1
    for level in range(levels):
        for r in range(nres[level]):
            names[f"input_blocks.{k}.0"] = (f"down_blocks.{level}.resnets.{r}", "res")
            if attn[level]:
                names[f"input_blocks.{k}.1"] = (f"down_blocks.{level}.attentions.{r}", "attn")
            k += 1
        if unet.down_blocks[level].downsampler is not None:
            names[f"input_blocks.{k}.0"] = (f"down_blocks.{level}.downsampler", "res")
            k += 1
    k = 0
    for u, block in enumerate(unet.up_blocks):
        has_attn = hasattr(block, "attentions")
        for r in range(len(block.resnets)):
            names[f"output_blocks.{k}.0"] = (f"up_blocks.{u}.resnets.{r}", "res")
            if has_attn:
                names[f"output_blocks.{k}.1"] = (f"up_blocks.{u}.attentions.{r}", "attn")
            if r == len(block.resnets) - 1 and block.upsampler is not None:
                names[f"output_blocks.{k}.{2 if has_attn else 1}"] = (f"up_blocks.{u}.upsampler", "res")
            k += 1
    return names


_RES_SUBKEYS = {
    "in_layers.0": "norm1",
    "in_layers.2": "conv1.conv",
    "emb_layers.1": "time_emb_proj",
    "out_layers.0": "norm2",
    "out_layers.3": "conv2.conv",
    "skip_connection": "skip_connection.conv",
}


def _adm_sort_key(prefix: str) -> tuple:
    section = {"time_embed": 0, "input_blocks": 1, "middle_block": 2, "output_blocks": 3, "out": 4}
    head, *rest = prefix.split(".")
    return (section[head], *(int(x) for x in rest))


def adm_key_pairs(unet: DiffusionModelUNet) -> list[tuple[str, str, str]]:
    """Every guided-diffusion key of ``unet``'s architecture with its MONAI counterpart, in ADM's key order.

    Returns ``(adm_key, monai_key, how)``: ``how`` is ``"same"`` (same tensor), ``"conv1d"`` (ADM's Conv1d
    ``(C, C, 1)`` = MONAI's Linear ``(C, C)``: attention ``proj_out`` -> ``out_proj``) or ``"qkv"`` (ADM's fused
    ``qkv`` ``(3C, C, 1)`` / ``(3C,)``, heads first (legacy order); ``monai_key`` is then the attention prefix
    ``<block>.attn`` whose ``to_q`` / ``to_k`` / ``to_v`` hold it). :func:`convert_adm_state_dict` reads ADM
    checkpoints through it; ``common.standins`` writes them through it.
    """
    names = adm_to_monai_names(unet)
    pairs: list[tuple[str, str, str]] = []
    for adm_prefix in sorted(names, key=_adm_sort_key):
        monai_prefix, kind = names[adm_prefix]
        if kind == "res":
            pairs += [
                (f"{adm_prefix}.{a}.{p}", f"{monai_prefix}.{m}.{p}", "same")
                for a, m in _RES_SUBKEYS.items()
                for p in ("weight", "bias")
            ]
        elif kind == "attn":
            pairs += [(f"{adm_prefix}.norm.{p}", f"{monai_prefix}.norm.{p}", "same") for p in ("weight", "bias")]
            pairs += [(f"{adm_prefix}.qkv.{p}", f"{monai_prefix}.attn", "qkv") for p in ("weight", "bias")]
            pairs += [
                (f"{adm_prefix}.proj_out.weight", f"{monai_prefix}.attn.out_proj.weight", "conv1d"),
                (f"{adm_prefix}.proj_out.bias", f"{monai_prefix}.attn.out_proj.bias", "same"),
            ]
        else:
            pairs += [(f"{adm_prefix}.{p}", f"{monai_prefix}.{p}", "same") for p in ("weight", "bias")]
    return pairs


def is_adm_state_dict(state: Mapping[str, torch.Tensor]) -> bool:
    """True if the keys are guided-diffusion names (``input_blocks.*`` / ``output_blocks.*``)."""
    return any(k.startswith(("input_blocks.", "output_blocks.")) for k in state)


def convert_adm_state_dict(
    adm_state: Mapping[str, torch.Tensor], unet: DiffusionModelUNet, source: str | PathLike = "<state dict>"
) -> dict[str, torch.Tensor]:
    """Map an ADM (guided-diffusion) state dict onto ``unet`` (built by :func:`adm_unet` with the same flags).

    Attention ``qkv`` (3C, C, 1) is viewed as (heads, 3, C/heads, C) (legacy order: heads first) and split into
    ``to_q``/``to_k``/``to_v`` (C, C); ``proj_out`` (C, C, 1) -> ``out_proj`` (C, C). Legacy attention scales q and k
    by ``ch ** -0.25`` each, MONAI scales q.k by ``dim_head ** -0.5``: identical.

    Returns:
        the MONAI state dict (``unet`` itself is not modified).

    Raises:
        BadInputError: official keys left unused, MONAI keys not filled, or shape mismatches (listed; e.g. a
            checkpoint of another ADM configuration, or one without ``use_scale_shift_norm``).
    """
    target = unet.state_dict()
    remaining = dict(adm_state.items())
    out: dict[str, torch.Tensor] = {}
    problems: list[str] = []
    for adm_key, monai_key, how in adm_key_pairs(unet):
        if adm_key not in remaining:
            continue
        v = remaining.pop(adm_key)
        if how == "same":
            out[monai_key] = v
        elif how == "conv1d":
            out[monai_key] = v.reshape(v.shape[0], -1)  # Conv1d (C, C, 1) -> Linear (C, C)
        else:  # qkv: (3C, C, 1) or (3C,) -> to_q / to_k / to_v, heads first (legacy order)
            channels = target[f"{monai_key}.to_q.{adm_key.rsplit('.', 1)[1]}"].shape[0]
            num_heads = int(unet.get_submodule(monai_key.rsplit(".", 1)[0]).attn.num_heads)
            if v.shape[0] != 3 * channels or v.shape[0] % (3 * num_heads):
                problems.append(f"{adm_key}: shape {tuple(v.shape)} does not fit {channels} channels")
                continue
            p = adm_key.rsplit(".", 1)[1]
            v = v.reshape(num_heads, 3, channels // num_heads, *v.shape[1:])
            for j, name in enumerate(("to_q", "to_k", "to_v")):
                part = v[:, j].reshape(channels, *v.shape[3:])
                out[f"{monai_key}.{name}.{p}"] = part.reshape(channels, -1) if p == "weight" else part

    if remaining:
        problems.append(f"{len(remaining)} official key(s) not used: {sorted(remaining)[:5]}")
    mismatch = describe_state_dict_mismatch(target, out, strict=True)  # network keys not filled + shape mismatches
    if mismatch:
        problems.append(mismatch)
    if problems:
        raise BadInputError(
            source,
            "not a guided-diffusion checkpoint of this architecture: "
            + "; ".join(problems)
            + ". Build the UNet with the flags the checkpoint was trained with "
            "(common.networks.guided_diffusion.adm_unet; "
            "use_scale_shift_norm and resblock_updown must be True)",
        )
    return {k: out[k] for k in target}


def load_adm_weights(
    unet: DiffusionModelUNet, path_or_state: str | PathLike | Mapping[str, torch.Tensor], key: str | None = None
) -> DiffusionModelUNet:
    """Load official ADM weights (``256x256_diffusion_uncond.pt``) or their converted MONAI form (``{"model": sd}``
    written by ``tools/convert_checkpoint.py textdiff``) into ``unet`` strictly (``weights_only=True``)."""
    if isinstance(path_or_state, Mapping):
        state, source = dict(path_or_state), "<state dict>"
    elif not Path(path_or_state).is_file():
        raise BadInputError(
            path_or_state,
            "guided-diffusion checkpoint not found. Download the official 256x256 unconditional model "
            f"({ADM_256_UNCOND_URL}) to this path (a bundle's large_files.yml lists it), or point the config "
            "key that names it (TextDiff: adm_checkpoint) at your copy",
        )
    else:
        warn_if_standin(path_or_state, "guided-diffusion checkpoint")
        state, source = load_state_dict_file(path_or_state, key=key), str(path_or_state)
    if is_adm_state_dict(state):
        state = convert_adm_state_dict(state, unet, source)
    from common.io.checkpoints import load_network_weights

    load_network_weights(unet, state, key=None, strict=True, source=source)
    return unet


def adm_output_block(unet: DiffusionModelUNet, index: int) -> nn.Module:
    """The MONAI module whose output equals ADM's ``output_blocks[index]`` output (a forward-hook point).

    ADM's ``output_blocks[i]`` is (ResBlock[, Attention][, up ResBlock]); its output is that of its last part:
    the level's ``upsampler`` for the last block of a level (not the top one), else ``attentions[r]`` on levels with
    attention, else ``resnets[r]`` (bundles/textdiff/docs/sources.md §9; e.g. ADM-256: 6 ->
    ``up_blocks[2].attentions[0]``, 8 ->
    ``up_blocks[2].upsampler``, 12 -> ``up_blocks[4].resnets[0]``, 16 -> ``up_blocks[5].resnets[1]``).
    """
    k = 0
    for block in unet.up_blocks:
        n = len(block.resnets)
        if index < k + n:
            r = index - k
            if r == n - 1 and block.upsampler is not None:
                return block.upsampler
            if hasattr(block, "attentions"):
                return block.attentions[r]
            return block.resnets[r]
        k += n
    raise ValueError(f"output block index {index} out of range: this UNet has {k} output blocks (0..{k - 1}).")


def adm_output_block_shapes(unet: DiffusionModelUNet, image_size: int) -> list[tuple[int, int]]:
    """``[(channels, size), ...]`` of every ``output_blocks[i]`` output for a square input of ``image_size``."""
    shapes = []
    levels = len(unet.up_blocks)
    channels = list(reversed(unet.block_out_channels))
    for u, block in enumerate(unet.up_blocks):
        size = image_size // 2 ** (levels - 1 - u)
        for r in range(len(block.resnets)):
            last_up = r == len(block.resnets) - 1 and block.upsampler is not None
            shapes.append((channels[u], size * 2 if last_up else size))
    return shapes
