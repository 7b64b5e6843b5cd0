"""Masked cross-attention of 2D/3D feature maps (queries) over text tokens (keys/values).

Used by

- TextDiff (``bundles/textdiff/docs/sources.md`` §2.3): 2D decoder features, 768-d Bio_ClinicalBERT tokens; the official
head is one
  :class:`TextConditionedTransformerBlock` with two cross-attentions (8 heads x 64), a post-attention LayerNorm and a
  GELU -> Linear feed-forward, shared over all feature scales.
- TextDiffSeg (``bundles/textdiffseg/docs/sources.md`` §2.5, paper eq 2): ``z_it = z_i + CrossAttn(z_i, z_t)`` on the 3D
latent image
  embedding, i.e. :class:`TextCrossAttention` with ``spatial_dims=3``.

Why not ``monai.networks.blocks.CrossAttentionBlock`` as is: in MONAI 1.6.1 its ``forward(x, context)`` takes no
key-padding mask (only ``SelfAttentionBlock.forward`` has ``attn_mask``), so in a batch of texts of different
lengths every query would attend the padding tokens, and the result of a sample would depend on how long the other
texts in its batch are. Its ``use_flash_attention`` path also applies attention dropout in eval mode. So
:class:`MaskedCrossAttentionBlock` *builds on* it: it subclasses ``CrossAttentionBlock`` (same parameters and
state-dict keys ``to_q``/``to_k``/``to_v``/``out_proj``, same head layout) and only replaces ``forward`` with one that
calls :func:`torch.nn.functional.scaled_dot_product_attention` with a boolean mask, so padding tokens get exactly
zero attention weight.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn as nn
import torch.nn.functional as F
from common.errors import BadInputError
from monai.networks.blocks import CrossAttentionBlock, MLPBlock

__all__ = ["MaskedCrossAttentionBlock", "TextCrossAttention", "TextConditionedTransformerBlock", "check_context_mask"]


def check_context_mask(context_mask: torch.Tensor, batch_size: int, num_tokens: int) -> torch.Tensor:
    """Check a text key-padding mask and broadcast a batch of one to ``batch_size``.

    Args:
        context_mask: (B, L) or (1, L) bool tensor, True = real text token that may be attended.
        batch_size: B of the queries.
        num_tokens: L of the context.

    Returns:
        (B, L) bool mask.

    Raises:
        ValueError: wrong dtype or shape.
        BadInputError: a sample has no real token (nothing to attend; the softmax would be undefined).
    """
    if not isinstance(context_mask, torch.Tensor) or context_mask.dtype != torch.bool:
        got = context_mask.dtype if isinstance(context_mask, torch.Tensor) else type(context_mask).__name__
        raise ValueError(
            f"context_mask must be a bool tensor (True = real text token), got {got}; "
            "convert a 0/1 attention mask with `.bool()`."
        )
    if context_mask.ndim != 2 or context_mask.shape[1] != num_tokens or context_mask.shape[0] not in (1, batch_size):
        raise ValueError(
            f"context_mask must have shape (B, L) = ({batch_size}, {num_tokens}) (or (1, {num_tokens})), "
            f"got {tuple(context_mask.shape)}."
        )
    empty = (~context_mask.any(dim=1)).nonzero().flatten().tolist()
    if empty:
        raise BadInputError(
            "context_mask",
            f"sample(s) {empty} have no real text token (mask all False), so there is nothing to attend; "
            "every sample needs a non-empty text.",
        )
    return context_mask.expand(batch_size, num_tokens)


class MaskedCrossAttentionBlock(CrossAttentionBlock):
    """MONAI ``CrossAttentionBlock`` whose forward takes a key-padding mask for the context (text) tokens.

    Token layout in and out: ``x`` (B, N, hidden_input_size) queries, ``context`` (B, L, context_input_size)
    keys/values, output (B, N, hidden_input_size). Parameters and state-dict keys are those of the parent
    (``to_q``, ``to_k``, ``to_v``, ``out_proj``); see the module docstring for why ``forward`` is replaced.
    Unlike the parent, attention dropout is only active in training mode.

    Args:
        hidden_size: width of the attention (num_heads * dim_head unless ``dim_head`` is given).
        num_heads: number of attention heads.
        dropout_rate: dropout on the attention weights and on the output.
        hidden_input_size: channels of the queries ``x`` (default ``hidden_size``).
        context_input_size: channels of the context tokens (default ``hidden_size``).
        dim_head: channels per head (default ``hidden_size // num_heads``).
        qkv_bias: bias in the q/k/v projections.
    """

    def __init__(
        self,
        hidden_size: int,
        num_heads: int,
        dropout_rate: float = 0.0,
        hidden_input_size: int | None = None,
        context_input_size: int | None = None,
        dim_head: int | None = None,
        qkv_bias: bool = False,
    ) -> None:
        # MONAI CrossAttentionBlock's leading parameters, in its order (monai/networks/blocks/crossattention.py)
        sizes = (hidden_size, num_heads, dropout_rate, hidden_input_size, context_input_size, dim_head, qkv_bias)
        super().__init__(*sizes, use_flash_attention=True)

    def forward(  # type: ignore[override]
        self, x: torch.Tensor, context: torch.Tensor | None = None, context_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """
        Args:
            x: (B, N, hidden_input_size) query tokens.
            context: (B, L, context_input_size) key/value tokens; ``None`` attends ``x`` itself (as the parent).
            context_mask: (B, L) bool, True = real token; False tokens get exactly zero attention weight.
                ``None`` attends all tokens.

        Returns:
            (B, N, hidden_input_size).
        """
        kv = x if context is None else context
        q = self.input_rearrange(self.to_q(x))  # (B, heads, N, dim_head)
        k = self.input_rearrange(self.to_k(kv))  # (B, heads, L, dim_head)
        v = self.input_rearrange(self.to_v(kv))
        attn_mask = None
        if context_mask is not None:
            mask = check_context_mask(context_mask.to(x.device), x.shape[0], kv.shape[1])
            attn_mask = mask[:, None, None, :]  # (B, 1, 1, L), broadcast over heads and queries
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=attn_mask, dropout_p=self.dropout_rate if self.training else 0.0, scale=self.scale
        )
        out = self.out_proj(self.out_rearrange(out))
        return self.drop_output(out)


def _check_feature_and_context(
    x: torch.Tensor, context: torch.Tensor, spatial_dims: int, in_channels: int, context_dim: int
) -> torch.Tensor:
    """Check (B, C, *spatial) features against (B, L, D) context; return the context broadcast to batch B."""
    if x.ndim != spatial_dims + 2 or x.shape[1] != in_channels:
        spatial = ", ".join(["H", "W", "D"][:spatial_dims])
        raise ValueError(
            f"expected a feature map of shape (B, {in_channels}, {spatial}) "
            f"({spatial_dims}D, {in_channels} channels), got {tuple(x.shape)}."
        )
    if context.ndim != 3 or context.shape[2] != context_dim or context.shape[0] not in (1, x.shape[0]):
        raise ValueError(
            f"expected text context of shape (B, L, {context_dim}) with B = {x.shape[0]} (or 1), "
            f"got {tuple(context.shape)}."
        )
    if context.shape[1] == 0:
        raise BadInputError("context", "the text context has no tokens; every sample needs a non-empty text.")
    return context.expand(x.shape[0], -1, -1)


def _check_dims(spatial_dims: int, in_channels: int, hidden_size: int, num_heads: int, norm: bool) -> None:
    if spatial_dims not in (1, 2, 3):
        raise ValueError(f"spatial_dims must be 1, 2 or 3, got {spatial_dims}.")
    if hidden_size % num_heads != 0:
        raise ValueError(f"hidden_size ({hidden_size}) must be divisible by num_heads ({num_heads}).")
    if norm and in_channels == 1:
        # LayerNorm over one channel maps every voxel to the same value (x - mean = 0): all queries would be equal
        # and the attention output a constant offset -- the degenerate case of bundles/textdiffseg/docs/sources.md §2.4.
        raise ValueError("norm=True needs in_channels > 1 (LayerNorm over one channel is constant); set norm=False.")


class _TextAttention(nn.Module):
    """What both blocks below share: the checked sizes, the masked cross-attention layers built from them and the
    check of the feature map and text context in ``forward``."""

    def __init__(
        self, spatial_dims: int, in_channels: int, context_dim: int, hidden_size: int | None, num_heads: int, norm: bool
    ) -> None:
        super().__init__()
        hidden_size = in_channels if hidden_size is None else hidden_size
        _check_dims(spatial_dims, in_channels, hidden_size, num_heads, norm)
        self.spatial_dims = spatial_dims
        self.in_channels = in_channels
        self.context_dim = context_dim
        self._heads = (hidden_size, num_heads)

    def _cross_attention(self, dropout: float, qkv_bias: bool) -> MaskedCrossAttentionBlock:
        hidden_size, num_heads = self._heads
        return MaskedCrossAttentionBlock(
            hidden_size=hidden_size,
            num_heads=num_heads,
            dropout_rate=dropout,
            hidden_input_size=self.in_channels,
            context_input_size=self.context_dim,
            dim_head=hidden_size // num_heads,
            qkv_bias=qkv_bias,
        )

    def _context(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        return _check_feature_and_context(x, context, self.spatial_dims, self.in_channels, self.context_dim)


class TextCrossAttention(_TextAttention):
    """Residual masked cross-attention of a 2D/3D feature map over text tokens.

    ``y = x + proj(attn(norm(tokens(x)), context, context_mask))`` with one query token per pixel/voxel
    (channels-last tokens, no positional encoding), as TextDiffSeg eq 2 (``bundles/textdiffseg/docs/sources.md`` §2.5)
    with an optional pre-LayerNorm over channels.

    Args:
        spatial_dims: 2 or 3 (1 also works).
        in_channels: C of the feature map (query width).
        context_dim: D of the text tokens (768 for Bio_ClinicalBERT).
        hidden_size: attention width (num_heads * head dim); default ``in_channels``.
        num_heads: number of heads; must divide ``hidden_size``.
        dropout: dropout on the attention weights and output (training mode only).
        qkv_bias: bias in the q/k/v projections.
        norm: LayerNorm over channels before the attention (needs ``in_channels > 1``).

    Example (TextDiffSeg, 1-channel 12^3 latent; ``bundles/textdiffseg/docs/sources.md`` §2.5)::

        fuse = TextCrossAttention(3, in_channels=1, context_dim=768, hidden_size=64, num_heads=4, norm=False)
        z_it = fuse(z_i, text.tokens, text.mask)  # (B, 1, 12, 12, 12)
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        context_dim: int,
        hidden_size: int | None = None,
        num_heads: int = 8,
        dropout: float = 0.0,
        qkv_bias: bool = False,
        norm: bool = True,
    ) -> None:
        super().__init__(spatial_dims, in_channels, context_dim, hidden_size, num_heads, norm)
        self.norm: nn.Module = nn.LayerNorm(in_channels) if norm else nn.Identity()
        self.attn = self._cross_attention(dropout, qkv_bias)

    def forward(self, x: torch.Tensor, context: torch.Tensor, context_mask: torch.Tensor | None = None) -> torch.Tensor:
        """
        Args:
            x: (B, C, *spatial) feature map.
            context: (B, L, context_dim) text tokens; a batch of one is shared by all samples.
            context_mask: (B, L) bool, True = real token (e.g. ``TextEmbedding.mask``); ``None`` attends all.

        Returns:
            (B, C, *spatial), same shape as ``x``.
        """
        context = self._context(x, context)
        tokens = x.flatten(2).transpose(1, 2)  # (B, N, C)
        out = self.attn(self.norm(tokens), context, context_mask)
        return x + out.transpose(1, 2).reshape(x.shape)


class TextConditionedTransformerBlock(_TextAttention):
    """Pre-LN transformer block over the flattened pixels/voxels of a feature map, conditioned only on text.

    For each of ``num_cross_attention`` layers: ``t = t + out_norm(crossattn(LN(t), context, mask))``; then
    ``t = t + FF(LN(t))``. There is no image self-attention: with ``num_cross_attention=2``, ``out_norm=True``,
    ``feed_forward="gelu_linear"``, ``hidden_size=512``, ``num_heads=8`` and 768 channels this is TextDiff's
    ``BasicTransformerBlock(only_cross_attention=True)`` (``bundles/textdiff/docs/sources.md`` §2.3; 3,745,536
    parameters) -- the official code attends the [PAD] tokens (no mask); pass ``context_mask=None`` for that.

    Args:
        spatial_dims: 2 or 3 (1 also works).
        in_channels: C of the feature map (> 1, for the LayerNorms).
        context_dim: D of the text tokens.

    Keyword-only, the block's structure first, then its widths:
        num_cross_attention: number of stacked cross-attention layers (TextDiff: 2).
        feed_forward: ``"mlp"`` = MONAI ``MLPBlock`` Linear(C->mlp_dim) -> GELU -> Linear(mlp_dim->C);
            ``"gelu_linear"`` = GELU -> Dropout -> Linear(C->C) (TextDiff's modified FeedForward).
        out_norm: LayerNorm(C) after each attention output projection (TextDiff's non-standard ``to_out``).
        hidden_size: attention width (num_heads * head dim); default ``in_channels``.
        num_heads: number of heads; must divide ``hidden_size``.
        mlp_dim: hidden width of the ``"mlp"`` feed-forward; default ``4 * in_channels``.
        dropout: dropout in attention and feed-forward (training mode only).
        qkv_bias: bias in the q/k/v projections.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        context_dim: int,
        *,
        num_cross_attention: int = 1,
        feed_forward: Literal["mlp", "gelu_linear"] = "mlp",
        out_norm: bool = False,
        hidden_size: int | None = None,
        num_heads: int = 8,
        mlp_dim: int | None = None,
        dropout: float = 0.0,
        qkv_bias: bool = False,
    ) -> None:
        super().__init__(spatial_dims, in_channels, context_dim, hidden_size, num_heads, norm=True)
        if num_cross_attention < 1:
            raise ValueError(f"num_cross_attention must be >= 1, got {num_cross_attention}.")
        self.attn_norms = nn.ModuleList(nn.LayerNorm(in_channels) for _ in range(num_cross_attention))
        self.attns = nn.ModuleList(self._cross_attention(dropout, qkv_bias) for _ in range(num_cross_attention))
        self.attn_out_norms = nn.ModuleList(
            nn.LayerNorm(in_channels) if out_norm else nn.Identity() for _ in range(num_cross_attention)
        )
        self.ff_norm = nn.LayerNorm(in_channels)
        self.ff: nn.Module
        if feed_forward == "mlp":
            self.ff = MLPBlock(in_channels, mlp_dim or 4 * in_channels, dropout_rate=dropout, act="GELU")
        elif feed_forward == "gelu_linear":
            self.ff = nn.Sequential(nn.GELU(), nn.Dropout(dropout), nn.Linear(in_channels, in_channels))
        else:
            raise ValueError(f"feed_forward must be 'mlp' or 'gelu_linear', got {feed_forward!r}.")

    def forward(self, x: torch.Tensor, context: torch.Tensor, context_mask: torch.Tensor | None = None) -> torch.Tensor:
        """
        Args:
            x: (B, C, *spatial) feature map.
            context: (B, L, context_dim) text tokens; a batch of one is shared by all samples.
            context_mask: (B, L) bool, True = real token; ``None`` attends all tokens.

        Returns:
            (B, C, *spatial), same shape as ``x``.
        """
        context = self._context(x, context)
        t = x.flatten(2).transpose(1, 2)  # (B, N, C)
        for norm, attn, out_norm in zip(self.attn_norms, self.attns, self.attn_out_norms):
            t = t + out_norm(attn(norm(t), context, context_mask))
        t = t + self.ff(self.ff_norm(t))
        return t.transpose(1, 2).reshape(x.shape)
