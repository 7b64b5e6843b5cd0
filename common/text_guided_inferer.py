"""A MONAI inferer for "frozen image features + frozen text tokens -> trained head" methods (TextDiff's forward).

``inferer(image, network, texts=..., case_ids=...)`` is what the trainer, the evaluator and MONAI Label call
(``network`` = the trainable head, e.g. :class:`common.text_guided_head.TextGuidedPixelClassifier`). It

1. takes the per-case report texts (``texts``; ``None`` -> ``default_text`` if set, else a clear error: text is a
   first-class input of text-guided segmentation, a missing report must not silently become some prompt);
2. encodes them with the frozen text encoder (:class:`common.text_encoder.FrozenTextEncoder`, 10 tokens,
   truncation, [PAD]-padded; spec §2.4);
3. extracts the frozen UNet features (:class:`common.diffusion_features.DiffusionFeatureExtractor`; fixed noise,
   steps 50/150/250; spec §2.2), from a :class:`common.feature_cache.FeatureCache` when one is given and the
   cases have ids (features computed once per image; only valid without augmentation);
4. runs the head. ``output="logits"`` (training): the logits of noise draw 0. ``output="probabilities"``
   (inference): the softmax averaged over ``num_noise_draws`` independent noise draws (K = 1 is the paper: one
   deterministic forward, argmax); with ``uncertainty_channel`` and K > 1 a third channel holds the per-pixel
   variance over the K draws of the foreground probability (summed over the foreground classes when C > 2;
   :func:`common.inference_transforms.foreground_variance`, the bundles' uncertainty definition).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
import torch.nn as nn
from monai.data import MetaTensor
from monai.inferers import Inferer

from common.checks import resolve_texts
from common.errors import BadInputError
from common.inference_transforms import foreground_variance

__all__ = ["TextGuidedFeatureInferer"]


class TextGuidedFeatureInferer(Inferer):
    """See module docstring.

    Args:
        feature_extractor: frozen :class:`~common.diffusion_features.DiffusionFeatureExtractor`.
        text_encoder: frozen :class:`~common.text_encoder.FrozenTextEncoder` (or any callable
            ``(texts, case_ids) -> object with .tokens (B, L, D)``); ``None`` only with ``use_text=False``.
        default_text: prompt for cases without text; ``None`` = such a case is an error.
        num_noise_draws: K noise draws averaged at inference (1 = the paper).
        output: ``"logits"`` (training) or ``"probabilities"`` (inference).
        uncertainty_channel: with K > 1, append the variance over the draws of p(foreground) as channel 2.
        feature_cache: optional :class:`~common.feature_cache.FeatureCache` keyed by ``<case_id>@<draw>``.
        use_text: False for the text-free ablation (zeta_1).

    Shapes: ``image`` (B, 3, S, S) in [-1, 1] -> (B, 2, S, S) logits / probabilities, or (B, 3, S, S) with the
    uncertainty channel.
    """

    def __init__(
        self,
        feature_extractor: nn.Module,
        text_encoder: nn.Module | None,
        default_text: str | None = None,
        num_noise_draws: int = 1,
        output: str = "probabilities",
        uncertainty_channel: bool = False,
        feature_cache=None,
        use_text: bool = True,
    ) -> None:
        super().__init__()
        if output not in ("logits", "probabilities"):
            raise ValueError(f"output must be 'logits' or 'probabilities', got {output!r}")
        if int(num_noise_draws) < 1:
            raise ValueError(f"num_noise_draws must be >= 1, got {num_noise_draws}")
        if use_text and text_encoder is None:
            raise ValueError("a text encoder is needed unless use_text=False")
        if default_text is not None and (not isinstance(default_text, str) or not default_text.strip()):
            raise BadInputError("default_text", f"must be a non-empty string or null, got {default_text!r}")
        self.feature_extractor = feature_extractor
        self.text_encoder = text_encoder
        self.default_text = default_text
        self.num_noise_draws = int(num_noise_draws)
        self.output = output
        self.uncertainty_channel = bool(uncertainty_channel)
        self.feature_cache = feature_cache
        self.use_text = bool(use_text)

    def with_uncertainty_channel(self) -> TextGuidedFeatureInferer:
        """A shallow copy returning probabilities + the uncertainty channel (shares the frozen networks)."""
        other = copy.copy(self)
        other.output, other.uncertainty_channel = "probabilities", True
        return other

    def _texts(self, texts: Sequence[str] | str | None, batch: int, case_ids: Sequence[str] | None) -> list[str]:
        return resolve_texts(texts, batch, self.default_text, case_ids)

    def _features(self, image: torch.Tensor, draw: int, case_ids: Sequence[str] | None) -> list[torch.Tensor]:
        cache = self.feature_cache
        if cache is None or case_ids is None:
            return self.feature_extractor(image, noise_index=draw)
        per_case: list[list[torch.Tensor] | None] = [cache.get(f"{c}@{draw}") for c in case_ids]
        todo = [i for i, f in enumerate(per_case) if f is None]
        if todo:
            fresh = self.feature_extractor(image[todo], noise_index=draw)
            for j, i in enumerate(todo):
                per_case[i] = cache.put(f"{case_ids[i]}@{draw}", [f[j] for f in fresh])
        return [torch.stack([pc[k] for pc in per_case]).to(image.device) for k in range(len(per_case[0]))]

    def __call__(  # type: ignore[override]
        self,
        inputs: torch.Tensor,
        network: nn.Module,
        texts: Sequence[str] | str | None = None,
        case_ids: Sequence[str] | None = None,
    ) -> torch.Tensor:
        image = inputs.as_tensor() if isinstance(inputs, MetaTensor) else inputs
        batch = image.shape[0]
        if case_ids is not None:
            case_ids = [str(c) for c in case_ids]
        context = None
        if self.use_text:
            texts = self._texts(texts, batch, case_ids)
            context = self.text_encoder(texts, case_ids=case_ids).tokens.to(image.device)
        if self.output == "logits":
            return network(self._features(image, 0, case_ids), context, image.shape[2:])
        probs = []
        for draw in range(self.num_noise_draws):
            with torch.no_grad():
                logits = network(self._features(image, draw, case_ids), context, image.shape[2:])
                probs.append(torch.softmax(logits, dim=1))
        stacked = torch.stack(probs)  # (K, B, C, S, S)
        mean = stacked.mean(0)
        if self.uncertainty_channel and self.num_noise_draws > 1:
            var = foreground_variance(stacked, sample_dim=0, channel_dim=2)
            mean = torch.cat([mean, var], dim=1)
        return mean
