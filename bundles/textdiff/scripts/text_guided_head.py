"""Text-guided pixel classifier over multi-scale frozen features: per-scale projections, one shared text
cross-attention block, a conv pixel head. Default configuration = TextDiff's trainable part.

Exactly the official TextDiff ``pixel_classifier`` (bundles/textdiff/docs/sources.md §2.3; paper §2.2 eq 3), generalised
from batch 1 to B; usable on any list of multi-scale feature maps (diffusion-UNet decoder features, CNN/ViT pyramids):

- ``down1`` = Conv2d(C_0 -> 768, 1x1) for scale 0 and ``down2`` = Conv2d(C_1 -> 768, 1x1) shared by every later
  scale whose channels are not already 768 (QaTa: scales 1 and 2 share it);
- ``cross1`` = :class:`common.networks.cross_attention.TextConditionedTransformerBlock` with two stacked
cross-attentions to
  the text tokens (8 heads x 64, no image self-attention), a LayerNorm after each attention output and a
  GELU -> Linear feed-forward, pre-LN residuals, shared by all scales; no text padding mask (the official code
  attends the [PAD] tokens);
- every attended scale is bilinearly upsampled (align_corners False) to ``output_size``, the scales are
  concatenated (4 x 768 = 3072 ch) and decoded by Conv3x3 -> BN -> ReLU -> Conv3x3 -> BN -> ReLU -> Conv3x3 into
  class logits;
- init: every Conv/Linear weight ~ N(0, 0.02), bias 0; BatchNorm weight ~ N(1, 0.02), bias 0 (official
  ``init_weights``); LayerNorms default.

MoNuSeg config (features 1536, 1536, 768, 768): 9,683,234 trainable parameters (the paper's 9.68 M).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from common.errors import BadInputError
from common.networks.cross_attention import TextConditionedTransformerBlock

__all__ = ["TextGuidedPixelClassifier"]


class TextGuidedPixelClassifier(nn.Module):
    """Trainable TextGuidedPixelClassifier: multi-scale diffusion features + text tokens -> class logits.

    Args:
        feature_channels: channels of each scale's features (len(steps) x UNet block channels), e.g. MoNuSeg
            (1536, 1536, 768, 768), QaTa (3072, 1536, 1536, 768).
        context_dim: width of the text tokens (768 for Clinical BioBERT; 384 for the demo MiniLM).
        proj_dim: width of the projected features and of the attention queries (768).
        num_heads: attention heads (8); head width = ``attention_dim // num_heads``.
        attention_dim: inner width of the attention (512 = 8 x 64).
        decoder_channels: hidden channels of the conv head (128, 32).
        num_classes: output classes (2).
        output_size: side of the output logits (256 = the input image size).
        use_text: False gives the paper's ablation zeta_1 (no text, no cross-attention: projections -> upsample ->
            head; bundles/textdiff/docs/sources.md §8 n, our reading).

    Shapes:
        ``forward(features, context)``: ``features`` list of (B, C_k, h_k, w_k), ``context`` (B, L, context_dim)
        (or (1, L, D), shared) -> logits (B, num_classes, output_size, output_size).
    """

    def __init__(
        self,
        feature_channels: Sequence[int] = (1536, 1536, 768, 768),
        context_dim: int = 768,
        proj_dim: int = 768,
        num_heads: int = 8,
        attention_dim: int = 512,
        decoder_channels: Sequence[int] = (128, 32),
        num_classes: int = 2,
        output_size: int = 256,
        use_text: bool = True,
    ) -> None:
        super().__init__()
        chans = [int(c) for c in feature_channels]
        if not chans:
            raise ValueError("feature_channels must name at least one scale.")
        self.feature_channels = tuple(chans)
        self.proj_dim = int(proj_dim)
        self.output_size = int(output_size)
        self.use_text = bool(use_text)
        # official rule: scale k uses no projection if it already has proj_dim channels, else down{min(k + 1, 2)}
        self.down1 = nn.Conv2d(chans[0], proj_dim, 1) if chans[0] != proj_dim else None
        later = [c for c in chans[1:] if c != proj_dim]
        if len(set(later)) > 1:
            raise ValueError(
                f"feature_channels {chans}: scales 1.. share one projection (down2) in TextDiff, so those that are "
                f"not already {proj_dim} channels must all have the same width; got {sorted(set(later))}."
            )
        self.down2 = nn.Conv2d(later[0], proj_dim, 1) if later else None
        self.cross1 = (
            TextConditionedTransformerBlock(
                spatial_dims=2,
                in_channels=proj_dim,
                context_dim=context_dim,
                hidden_size=attention_dim,
                num_heads=num_heads,
                num_cross_attention=2,
                feed_forward="gelu_linear",
                dropout=0.0,
                qkv_bias=False,
                out_norm=True,
            )
            if use_text
            else None
        )
        layers: list[nn.Module] = []
        c_in = proj_dim * len(chans)
        for c in decoder_channels:
            layers += [nn.Conv2d(c_in, int(c), 3, padding=1), nn.BatchNorm2d(int(c)), nn.ReLU(inplace=True)]
            c_in = int(c)
        layers.append(nn.Conv2d(c_in, num_classes, 3, padding=1))
        self.decodes = nn.Sequential(*layers)
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        """Official ``init_weights(init_type='normal', gain=0.02)``."""
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)

    def project(self, k: int, x: torch.Tensor) -> torch.Tensor:
        """1x1 projection of scale ``k`` to ``proj_dim`` channels (identity if it already has them)."""
        if x.shape[1] == self.proj_dim:
            return x
        return (self.down1 if k == 0 else self.down2)(x)

    def forward(
        self, features: Sequence[torch.Tensor], context: torch.Tensor | None, output_size: Sequence[int] | None = None
    ) -> torch.Tensor:
        """
        Args:
            features: list of (B, C_k, h_k, w_k), one per scale, in ``feature_channels`` order.
            context: (B, L, context_dim) text tokens (a batch of one is shared); ignored with ``use_text=False``.
            output_size: (H, W) of the logits; default (``output_size``, ``output_size``).

        Returns:
            (B, num_classes, H, W) logits.
        """
        if len(features) != len(self.feature_channels):
            raise BadInputError(
                "features", f"expected {len(self.feature_channels)} feature scales, got {len(features)}"
            )
        for k, (f, c) in enumerate(zip(features, self.feature_channels)):
            if f.ndim != 4 or f.shape[1] != c:
                raise BadInputError(
                    "features",
                    f"scale {k}: expected (B, {c}, h, w) features, got {tuple(f.shape)}; the UNet "
                    "blocks/steps of the config do not match the head's feature_channels",
                )
        if self.use_text and context is None:
            raise BadInputError("text", "the TextGuidedPixelClassifier needs the text tokens (context); got none")
        size = tuple(int(s) for s in output_size) if output_size is not None else (self.output_size,) * 2
        maps = []
        for k, f in enumerate(features):
            x = self.project(k, f)
            if self.cross1 is not None:
                x = self.cross1(x, context)
            maps.append(F.interpolate(x, size=size, mode="bilinear", align_corners=False))
        return self.decodes(torch.cat(maps, dim=1))
