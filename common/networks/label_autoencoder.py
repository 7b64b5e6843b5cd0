"""Deterministic label autoencoder: one-hot label -> standardised continuous latent -> class logits.

TextDiffSeg (``bundles/textdiffseg/docs/sources.md`` §2.2, paper §II.C and §III.B) and its ancestor LDSeg embed a
discrete label volume into a low-dimensional continuous latent on which a diffusion model runs, because adding Gaussian
noise to a label with a handful of modes is unnatural. The encoder is "a lightweight 3D convolutional network" whose
last layer is a normalisation "to ensure that the label embeddings follow a standardized distribution (mu = 0, sigma =
1)"; the decoder "resembles a typical ResUnet but without skip connections" and ends with a softmax.

Built from MONAI parts: the encoder/decoder are ``monai.networks.nets.autoencoderkl.Encoder`` / ``Decoder``
(residual blocks, GroupNorm, stride-2 down / nearest-upsample + conv up, no skips). Not ``AutoencoderKL`` itself:
that is a VAE (mu/sigma, reparameterisation, KL term) while the paper's label embedding is deterministic and
standardised; written here is only the standardisation (a ``LayerNorm`` over (C, *spatial) without affine, so
every sample's latent has mean 0 and population std 1 exactly) and the interface diffusion code needs
(``encode`` / ``decode`` plus the ``encode_stage_2_inputs`` / ``decode_stage_2_outputs`` pair that
``monai.inferers.LatentDiffusionInferer`` calls).

Shapes (defaults, 3D, 96^3 window, N classes): one-hot (B, N, 96, 96, 96) -> latent (B, 1, 12, 12, 12)
-> logits (B, N, 96, 96, 96). The spatial down factor is ``2 ** (len(channels) - 1)``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from common.errors import BadInputError
from monai.networks.nets.autoencoderkl import Decoder, Encoder

__all__ = ["LabelAutoencoder", "StandardiseLatent"]


class StandardiseLatent(nn.Module):
    """Per-sample standardisation over all non-batch dims: ``(z - mean) / sqrt(var + eps)``.

    Equivalent to ``nn.LayerNorm(z.shape[1:], elementwise_affine=False)`` but independent of the spatial size, so
    the same encoder works for every window size (the paper's "final normalization layer",
    ``bundles/textdiffseg/docs/sources.md``
    §2.2). Output: mean 0, population std 1 (up to ``eps``) per sample.
    """

    def __init__(self, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """z: (B, C, *spatial) -> same shape, standardised per sample."""
        return F.layer_norm(z, z.shape[1:], eps=self.eps)


class LabelAutoencoder(nn.Module):
    """Label encoder to a standardised latent + label decoder to class logits (``bundles/textdiffseg/docs/sources.md``
    §2.2).

    Args:
        spatial_dims: 2 or 3.
        num_classes: N, classes incl. background (input channels of the one-hot label, output channels).
        latent_channels: k, channels of the latent (paper: k << N; 1 by default).
        channels: widths of the encoder levels (the decoder mirrors them); ``len(channels) - 1`` stride-2
            down-samplings, so the latent is the input size / ``2 ** (len(channels) - 1)``.
        num_res_blocks: residual blocks per level (int or one per level).
        norm_num_groups: GroupNorm groups (must divide every width).
        norm_eps: GroupNorm epsilon.
        standardise: end the encoder with :class:`StandardiseLatent` (the paper's normalisation layer).

    Example (spec defaults, KiTS21 with 4 classes)::

        ae = LabelAutoencoder(3, num_classes=4)
        z = ae.encode(one_hot)            # (B, 1, 12, 12, 12), mean 0 / std 1 per sample
        probs = ae.decode(z).softmax(1)   # (B, 4, 96, 96, 96)
    """

    def __init__(
        self,
        spatial_dims: int = 3,
        num_classes: int = 2,
        latent_channels: int = 1,
        channels: Sequence[int] = (16, 32, 64, 64),
        num_res_blocks: int | Sequence[int] = 1,
        norm_num_groups: int = 16,
        norm_eps: float = 1e-6,
        standardise: bool = True,
    ) -> None:
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2 (background included), got {num_classes}.")
        if latent_channels < 1:
            raise ValueError(f"latent_channels must be >= 1, got {latent_channels}.")
        channels = tuple(int(c) for c in channels)
        if any(c % norm_num_groups for c in channels):
            raise ValueError(
                f"every width in channels {channels} must be divisible by norm_num_groups={norm_num_groups}."
            )
        blocks = (num_res_blocks,) * len(channels) if isinstance(num_res_blocks, int) else tuple(num_res_blocks)
        self.spatial_dims = spatial_dims
        self.num_classes = num_classes
        self.latent_channels = latent_channels
        self.downsample_factor = 2 ** (len(channels) - 1)
        levels = dict(
            spatial_dims=spatial_dims,
            channels=channels,
            num_res_blocks=blocks,
            norm_num_groups=norm_num_groups,
            norm_eps=norm_eps,
            attention_levels=(False,) * len(channels),
            with_nonlocal_attn=False,
        )  # the encoder's and the decoder's (mirrored) levels
        self.encoder = Encoder(in_channels=num_classes, out_channels=latent_channels, **levels)
        self.standardise: nn.Module = StandardiseLatent() if standardise else nn.Identity()
        self.decoder = Decoder(in_channels=latent_channels, out_channels=num_classes, **levels)

    def latent_shape(self, spatial_shape: Sequence[int]) -> tuple[int, ...]:
        """(k, *spatial / factor) of the latent of a label window of ``spatial_shape``."""
        self._check_spatial(tuple(spatial_shape), "label window")
        return (self.latent_channels, *(int(s) // self.downsample_factor for s in spatial_shape))

    def _check_spatial(self, spatial: tuple[int, ...], what: str) -> None:
        if len(spatial) != self.spatial_dims or any(s % self.downsample_factor for s in spatial):
            raise BadInputError(
                what,
                f"spatial size {spatial} must have {self.spatial_dims} dims, each divisible by the autoencoder's "
                f"down factor {self.downsample_factor}; pad or crop the window (e.g. SpatialPadd / roi_size).",
            )

    def one_hot(self, label: torch.Tensor) -> torch.Tensor:
        """(B, 1, *spatial) integer label -> (B, N, *spatial) float one-hot; raises on out-of-range values."""
        if label.ndim != self.spatial_dims + 2 or label.shape[1] != 1:
            raise BadInputError("label", f"expected (B, 1, *spatial) class ids, got shape {tuple(label.shape)}.")
        ids = label[:, 0].long()
        if ids.numel() and (ids.min() < 0 or ids.max() >= self.num_classes):
            raise BadInputError(
                "label",
                f"class ids must be in [0, {self.num_classes - 1}], found {int(ids.min())}..{int(ids.max())}; "
                "check num_classes or map the labels (MapLabelValued).",
            )
        return F.one_hot(ids, self.num_classes).movedim(-1, 1).to(torch.float32)

    def encode(self, one_hot: torch.Tensor) -> torch.Tensor:
        """(B, N, *spatial) one-hot (or soft) label -> (B, k, *spatial / factor) standardised latent."""
        if one_hot.ndim != self.spatial_dims + 2 or one_hot.shape[1] != self.num_classes:
            raise BadInputError(
                "label",
                f"expected a one-hot label (B, {self.num_classes}, *spatial), got shape {tuple(one_hot.shape)}; "
                "use LabelAutoencoder.one_hot for class-id maps.",
            )
        self._check_spatial(tuple(one_hot.shape[2:]), "label")
        return self.standardise(self.encoder(one_hot))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """(B, k, *latent) -> (B, N, *latent * factor) class logits (apply softmax for probabilities)."""
        if z.ndim != self.spatial_dims + 2 or z.shape[1] != self.latent_channels:
            raise BadInputError(
                "latent", f"expected (B, {self.latent_channels}, *spatial), got shape {tuple(z.shape)}."
            )
        return self.decoder(z)

    def forward(self, one_hot: torch.Tensor) -> torch.Tensor:
        """Round trip: one-hot (B, N, *spatial) -> logits (B, N, *spatial)."""
        return self.decode(self.encode(one_hot))

    # interface of monai.inferers.LatentDiffusionInferer (the "stage 1" model)
    def encode_stage_2_inputs(self, one_hot: torch.Tensor) -> torch.Tensor:
        """Same as :meth:`encode`."""
        return self.encode(one_hot)

    def decode_stage_2_outputs(self, z: torch.Tensor) -> torch.Tensor:
        """Class probabilities: softmax of :meth:`decode` (the paper's final softmax)."""
        return self.decode(z).softmax(dim=1)
