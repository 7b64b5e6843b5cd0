"""The TextDiffSeg network: image encoder, text fusion, label autoencoder and latent denoiser, trained jointly.

Paper §II (Fig. 1) and ``bundles/textdiffseg/docs/sources.md`` §2-§3. Parts (MONAI building blocks, constructor
arguments per spec):

- image encoder f_3D-image-enc (§2.3): ``monai.networks.nets.autoencoderkl.Encoder`` with self-attention at its last
  two levels (the paper's "final two down-sampling layers ... incorporate multi-head attention layers"; MONAI's
  block there is single-head, so its ``SpatialAttentionBlock`` s are rebuilt with ``num_head_channels``), then
  ``BatchNorm3d`` (LDSeg). x (B, 1, 96^3) -> z_i (B, c, 12^3).
- 3D cross-modal attention (§2.5, eq 2): :class:`common.networks.cross_attention.TextCrossAttention` (voxels of z_i are
the
  queries, text tokens keys/values, residual): z_it = z_i + attn(z_i, z_t). ``text_pooling="tokens"`` (default) attends
  the full token sequence; ``"pooled"`` is the paper's literal single text vector (one key: a constant offset).
- label autoencoder (§2.2): :class:`common.networks.label_autoencoder.LabelAutoencoder`, one-hot (B, N, 96^3) ->
standardised
  z_l(0) (B, k, 12^3) -> logits (B, N, 96^3).
- denoiser (§2.6): ``monai.networks.nets.DiffusionModelUNet`` on concat(z_l(t), z_it) ((k + c) channels) and t,
  predicting the noise (k channels). Text does not enter the denoiser (the paper fuses it before).

Training forward (§3): z_l(0) = E_label(onehot(y)); t ~ U{0..T-1}; z_l(t) = add_noise(z_l(0), eps, t);
eps_hat = denoiser(concat(z_l(t), z_it), t); the decoder sees z_dn = z_l(t) - eps_hat (LDSeg's code,
``decoder_input="z_minus_eps"``, default) or the clamped x0 estimate (``"x0_estimate"``, flag).
Sampling (§5) is :class:`common.inferers.ddim_sliding_window.DDIMSlidingWindowInferer`, through the methods
``condition``, ``latent_shape``, ``predict_noise`` and ``decode_probabilities``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, NamedTuple

import torch
import torch.nn as nn
from common.errors import BadInputError
from common.networks.cross_attention import TextCrossAttention
from common.networks.label_autoencoder import LabelAutoencoder
from monai.networks.blocks import SpatialAttentionBlock
from monai.networks.nets import DiffusionModelUNet
from monai.networks.nets.autoencoderkl import Encoder
from monai.networks.schedulers import DDIMScheduler

__all__ = ["TextDiffSegNet", "TrainingOutput", "pool_text"]


class TrainingOutput(NamedTuple):
    """Outputs of one training forward: decoder logits (B, N, *spatial), predicted and true noise (B, k, *latent)."""

    logits: torch.Tensor
    noise_pred: torch.Tensor
    noise: torch.Tensor


def pool_text(tokens: torch.Tensor, mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, L, D) token states -> (B, 1, D) mean over the real tokens and a (B, 1) all-True mask.

    The paper's z_t in R^{d_t} (eq 2) is one vector per text; how it is pooled is unstated -- the mean of the real
    token states is used here (sentence-embedding practice; [choice]).
    """
    if mask is None:
        pooled = tokens.mean(dim=1, keepdim=True)
    else:
        w = mask.to(tokens.dtype).unsqueeze(-1)
        pooled = (tokens * w).sum(dim=1, keepdim=True) / w.sum(dim=1, keepdim=True).clamp_min(1.0)
    return pooled, torch.ones(tokens.shape[0], 1, dtype=torch.bool, device=tokens.device)


class TextDiffSegNet(nn.Module):
    """TextDiffSeg's trainable parts (see the module docstring). Defaults = ``bundles/textdiffseg/docs/sources.md`` §2
    at 96^3.

    Args:
        num_classes: N, label classes incl. background.
        image_channels: input image channels (CT: 1).
        text_dim: width of the text token states (768 Clinical BioBERT, 384 MiniLM).
        latent_channels: k, channels of the label latent (paper: "dual-channel" denoiser input -> k = 1).
        image_latent_channels: c, channels of the image embedding z_i (must be concatenable: same spatial size).
        label_ae_channels: widths of the label encoder/decoder levels (down factor 2 ** (len - 1)).
        image_encoder_channels: widths of the image encoder levels (same number of levels as the label AE).
        image_attention_levels: self-attention per image-encoder level (default: the last two).
        image_attention_head_channels: channels per head of those attention blocks (64 / 16 = 4 heads).
        norm_num_groups: GroupNorm groups of the encoders / decoder.
        denoiser_channels, denoiser_attention_levels, denoiser_res_blocks, denoiser_norm_groups,
        denoiser_head_channels: the DiffusionModelUNet (§2.6).
        fusion_hidden_size, fusion_heads: cross-attention width and heads (§2.5: 64, 4).
        text_pooling: ``"tokens"`` (default) or ``"pooled"`` (the paper's literal eq 2).
        decoder_input: ``"z_minus_eps"`` (LDSeg code, default) or ``"x0_estimate"``.
        scheduler: the noise schedule for training (``add_noise``); default DDIM cosine T = 1000 (§2.7).
        use_flash_attention: SDPA attention in the image encoder (GPU memory at 24^3 tokens).
    """

    def __init__(
        self,
        num_classes: int = 4,
        image_channels: int = 1,
        text_dim: int = 768,
        latent_channels: int = 1,
        image_latent_channels: int = 1,
        label_ae_channels: Sequence[int] = (16, 32, 64, 64),
        image_encoder_channels: Sequence[int] = (16, 32, 64, 64),
        image_attention_levels: Sequence[bool] | None = None,
        image_attention_head_channels: int = 16,
        norm_num_groups: int = 16,
        denoiser_channels: Sequence[int] = (16, 32, 64),
        denoiser_attention_levels: Sequence[bool] = (False, True, True),
        denoiser_res_blocks: int = 2,
        denoiser_norm_groups: int = 4,
        denoiser_head_channels: Sequence[int] | int | None = None,
        fusion_hidden_size: int = 64,
        fusion_heads: int = 4,
        text_pooling: Literal["tokens", "pooled"] = "tokens",
        decoder_input: Literal["z_minus_eps", "x0_estimate"] = "z_minus_eps",
        scheduler: DDIMScheduler | None = None,
        use_flash_attention: bool = False,
    ) -> None:
        super().__init__()
        if text_pooling not in ("tokens", "pooled"):
            raise ValueError(f"text_pooling must be 'tokens' or 'pooled', got {text_pooling!r}.")
        if decoder_input not in ("z_minus_eps", "x0_estimate"):
            raise ValueError(f"decoder_input must be 'z_minus_eps' or 'x0_estimate', got {decoder_input!r}.")
        if len(image_encoder_channels) != len(label_ae_channels):
            raise ValueError(
                "image_encoder_channels and label_ae_channels need the same number of levels (same latent size), "
                f"got {tuple(image_encoder_channels)} and {tuple(label_ae_channels)}."
            )
        self.num_classes = num_classes
        self.image_channels = image_channels
        self.text_pooling = text_pooling
        self.decoder_input = decoder_input
        self.scheduler = scheduler or DDIMScheduler(
            num_train_timesteps=1000, schedule="cosine", clip_sample=False, prediction_type="epsilon"
        )
        levels = len(image_encoder_channels)
        attn = (
            tuple(image_attention_levels)
            if image_attention_levels is not None
            else (False,) * (levels - 2) + (True, True)
        )
        self.image_encoder = Encoder(
            spatial_dims=3,
            in_channels=image_channels,
            channels=tuple(image_encoder_channels),
            out_channels=image_latent_channels,
            num_res_blocks=(1,) * levels,
            norm_num_groups=norm_num_groups,
            norm_eps=1e-6,
            attention_levels=attn,
            with_nonlocal_attn=False,
            use_flash_attention=use_flash_attention,
        )
        for i, block in enumerate(self.image_encoder.blocks):  # single-head MONAI blocks -> multi-head
            if isinstance(block, SpatialAttentionBlock):
                ch = block.norm.num_channels
                self.image_encoder.blocks[i] = SpatialAttentionBlock(
                    spatial_dims=3,
                    num_channels=ch,
                    num_head_channels=min(image_attention_head_channels, ch),
                    norm_num_groups=norm_num_groups,
                    norm_eps=1e-6,
                    use_flash_attention=use_flash_attention,
                )
        self.image_norm = nn.BatchNorm3d(image_latent_channels)
        self.fusion = TextCrossAttention(
            3,
            in_channels=image_latent_channels,
            context_dim=text_dim,
            hidden_size=fusion_hidden_size,
            num_heads=fusion_heads,
            norm=False,
        )
        self.label_autoencoder = LabelAutoencoder(
            3,
            num_classes=num_classes,
            latent_channels=latent_channels,
            channels=tuple(label_ae_channels),
            num_res_blocks=1,
            norm_num_groups=norm_num_groups,
        )
        dn_channels = tuple(denoiser_channels)
        head_ch = dn_channels if denoiser_head_channels is None else denoiser_head_channels
        self.denoiser = DiffusionModelUNet(
            spatial_dims=3,
            in_channels=latent_channels + image_latent_channels,
            out_channels=latent_channels,
            num_res_blocks=denoiser_res_blocks,
            channels=dn_channels,
            attention_levels=tuple(denoiser_attention_levels),
            norm_num_groups=denoiser_norm_groups,
            num_head_channels=head_ch,
            with_conditioning=False,
        )
        self.downsample_factor = self.label_autoencoder.downsample_factor

    # ------------------------------------------------------------------------------------------ conditioning
    def _check_image(self, image: torch.Tensor) -> None:
        if image.ndim != 5 or image.shape[1] != self.image_channels:
            raise BadInputError(
                "image",
                f"expected a 3D image batch (B, {self.image_channels}, D, H, W), got shape {tuple(image.shape)}"
                + ("; a 2D image was given, TextDiffSeg segments 3D volumes" if image.ndim == 4 else ""),
            )

    def encode_image(self, image: torch.Tensor) -> torch.Tensor:
        """(B, C_img, *spatial) -> z_i (B, c, *spatial / factor)."""
        self._check_image(image)
        self.label_autoencoder._check_spatial(tuple(image.shape[2:]), "image window")
        return self.image_norm(self.image_encoder(image))

    def fuse(self, z_i: torch.Tensor, context: torch.Tensor, context_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Eq 2: z_it = z_i + CrossAttn(z_i, text). context (B or 1, L, D); mask (B or 1, L) bool."""
        if context is None:
            raise BadInputError("text", "TextDiffSeg needs a text context (tokens of the prompt); none was given")
        if self.text_pooling == "pooled":
            context, context_mask = pool_text(context, context_mask)
        return self.fusion(z_i, context, context_mask)

    def condition(
        self, window: torch.Tensor, context: torch.Tensor | None = None, context_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Image window (W, C_img, *roi) + text -> z_it (W, c, *roi / factor) (the denoiser's condition)."""
        if context is None:
            raise BadInputError("text", "TextDiffSeg needs a text context (tokens of the prompt); none was given")
        z_it = self.fuse(self.encode_image(window), context, context_mask)
        return z_it

    # ------------------------------------------------------------------------------------------ diffusion
    def latent_shape(self, spatial_shape: Sequence[int]) -> tuple[int, ...]:
        """(k, *spatial / factor)."""
        return self.label_autoencoder.latent_shape(spatial_shape)

    def predict_noise(self, z_t: torch.Tensor, timesteps: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        """eps_hat = denoiser(concat(z_l(t), z_it), t): (B, k, *latent)."""
        return self.denoiser(torch.cat([z_t, condition], dim=1), timesteps)

    def decode_probabilities(self, z_0: torch.Tensor) -> torch.Tensor:
        """(B, k, *latent) -> (B, N, *spatial) softmax class probabilities."""
        return self.label_autoencoder.decode(z_0).softmax(dim=1)

    def forward(
        self,
        image: torch.Tensor,
        label: torch.Tensor,
        context: torch.Tensor,
        context_mask: torch.Tensor | None = None,
        timesteps: torch.Tensor | None = None,
        noise: torch.Tensor | None = None,
    ) -> TrainingOutput:
        """Training forward (§3 steps 1-4).

        Args:
            image: (B, C_img, *spatial) image patches.
            label: (B, 1, *spatial) integer class ids.
            context, context_mask: (B or 1, L, D) text tokens and (B or 1, L) bool mask.
            timesteps: (B,) long; default uniform in [0, T).
            noise: (B, k, *latent); default standard normal.

        Returns:
            :class:`TrainingOutput` (decoder logits, eps_hat, eps).
        """
        if label.shape[0] != image.shape[0] or tuple(label.shape[2:]) != tuple(image.shape[2:]):
            raise BadInputError(
                "label", f"label {tuple(label.shape)} and image {tuple(image.shape)} patches differ in batch/size"
            )
        z_it = self.condition(image, context, context_mask)
        z0 = self.label_autoencoder.encode(self.label_autoencoder.one_hot(label))
        if noise is None:
            noise = torch.randn_like(z0)
        if timesteps is None:
            timesteps = torch.randint(0, self.scheduler.num_train_timesteps, (z0.shape[0],), device=z0.device)
        z_t = self.scheduler.add_noise(z0, noise, timesteps)
        noise_pred = self.predict_noise(z_t, timesteps, z_it)
        if self.decoder_input == "z_minus_eps":
            z_dn = z_t - noise_pred
        else:
            abar = self.scheduler.alphas_cumprod.to(z0.device)[timesteps].view(-1, *([1] * (z0.ndim - 1)))
            z_dn = ((z_t - (1 - abar).sqrt() * noise_pred) / abar.sqrt()).clamp(-5.0, 5.0)
        logits = self.label_autoencoder.decode(z_dn)
        return TrainingOutput(logits, noise_pred, noise)
