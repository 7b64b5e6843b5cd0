"""A MONAI inferer for "frozen image features + frozen text tokens -> trained head" methods (TextDiff's forward).

``inferer(image, network, texts=..., case_ids=...)`` is what the trainer, the evaluator and MONAI Label call
(``network`` = the trainable head, e.g. :class:`scripts.text_guided_head.TextGuidedPixelClassifier`). It

1. takes the per-case report texts (``texts``; ``None`` -> ``default_text`` if set, else a clear error: text is a
   first-class input of text-guided segmentation, a missing report must not silently become some prompt);
2. encodes them with the frozen text encoder (:class:`common.text.encoder.FrozenTextEncoder`, 10 tokens,
   truncation, [PAD]-padded; bundles/textdiff/docs/sources.md §2.4);
3. extracts the frozen UNet features (:class:`scripts.diffusion_features.DiffusionFeatureExtractor`; fixed noise,
   steps 50/150/250; bundles/textdiff/docs/sources.md §2.2), from a :class:`scripts.feature_cache.FeatureCache` when one
   is given and the cases have ids (features computed once per image; only valid without augmentation);
4. runs the head. ``output="logits"`` (training): the logits of noise draw 0. ``output="probabilities"``
   (inference): the softmax averaged over ``num_samples`` noise draws (K = 1 is the paper: one deterministic
   forward, argmax); with ``return_uncertainty`` a third channel holds the per-pixel variance over the K draws of
   the foreground probability (summed over the foreground classes when C > 2; 0 when K = 1;
   :func:`common.inferers.sampling.foreground_variance`, the bundles' uncertainty definition). Draw k uses the
   extractor's fixed noise ``noise_index=k`` (the paper's fixed noise for k = 0), so ``seed`` plays no role.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn as nn
from common.errors import BadInputError
from common.inferers.sampling import SamplingInferer, foreground_variance
from common.text.prompts import resolve_texts
from monai.data import MetaTensor

__all__ = ["TextGuidedFeatureInferer"]


class TextGuidedFeatureInferer(SamplingInferer):
    """See module docstring.

    Args:
        feature_extractor: frozen :class:`~scripts.diffusion_features.DiffusionFeatureExtractor`.
        text_encoder: frozen :class:`~common.text.encoder.FrozenTextEncoder` (or any callable
            ``(texts, case_ids) -> object with .tokens (B, L, D)``); ``None`` only with ``use_text=False``.
        default_text: prompt for cases without text; ``None`` = such a case is an error.
        num_samples: K noise draws averaged at inference (1 = the paper).
        output: ``"logits"`` (training) or ``"probabilities"`` (inference).
        return_uncertainty: append the variance over the draws of p(foreground) as channel 2 (probabilities only).
        feature_cache: optional :class:`~scripts.feature_cache.FeatureCache` keyed by case id, input content and draw.
        use_text: False for the text-free ablation (zeta_1).

    Shapes: ``image`` (B, 3, S, S) in [-1, 1] -> (B, 2, S, S) logits / probabilities, or (B, 3, S, S) with the
    uncertainty channel.
    """

    def __init__(
        self,
        feature_extractor: nn.Module,
        text_encoder: nn.Module | None,
        default_text: str | None = None,
        num_samples: int = 1,
        output: str = "probabilities",
        return_uncertainty: bool = False,
        feature_cache=None,
        use_text: bool = True,
    ) -> None:
        super().__init__(num_samples=num_samples, seed=None, return_uncertainty=return_uncertainty)
        if output not in ("logits", "probabilities"):
            raise ValueError(f"output must be 'logits' or 'probabilities', got {output!r}")
        if use_text and text_encoder is None:
            raise ValueError("a text encoder is needed unless use_text=False")
        if default_text is not None and (not isinstance(default_text, str) or not default_text.strip()):
            raise BadInputError("default_text", f"must be a non-empty string or null, got {default_text!r}")
        self.feature_extractor = feature_extractor
        self.text_encoder = text_encoder
        self.default_text = default_text
        self.output = output
        self.feature_cache = feature_cache
        self.use_text = bool(use_text)

    def with_uncertainty(self, flag: bool = True) -> TextGuidedFeatureInferer:
        """A shallow copy returning probabilities (+ the uncertainty channel with ``flag``); shares the networks."""
        other = super().with_uncertainty(flag)
        other.output = "probabilities"
        return other

    def _texts(self, texts: Sequence[str] | str | None, batch: int, case_ids: Sequence[str] | None) -> list[str]:
        return resolve_texts(texts, batch, self.default_text, case_ids)

    def _features(self, image: torch.Tensor, draw: int, case_ids: Sequence[str] | None) -> list[torch.Tensor]:
        cache = self.feature_cache
        if cache is None or case_ids is None:
            return self.feature_extractor(image, noise_index=draw)
        keys = [cache.entry_key(c, image[i], draw) for i, c in enumerate(case_ids)]  # by content: never stale
        per_case: list[list[torch.Tensor] | None] = [cache.get(k) for k in keys]
        todo = [i for i, f in enumerate(per_case) if f is None]
        if todo:
            fresh = self.feature_extractor(image[todo], noise_index=draw)
            for j, i in enumerate(todo):
                per_case[i] = cache.put(keys[i], [f[j] for f in fresh])
        return [torch.stack([pc[k] for pc in per_case]).to(image.device) for k in range(len(per_case[0]))]

    def _logits(
        self,
        inputs: torch.Tensor,
        network: nn.Module,
        texts: Sequence[str] | str | None,
        case_ids: Sequence[str] | None,
        draws: range,
    ) -> list[torch.Tensor]:
        """The head's logits (B, C, S, S) for each noise draw in ``draws``; the text is encoded once."""
        image = inputs.as_tensor() if isinstance(inputs, MetaTensor) else inputs
        case_ids = None if case_ids is None else [str(c) for c in case_ids]
        context = None
        if self.use_text:
            texts = self._texts(texts, image.shape[0], case_ids)
            context = self.text_encoder(texts, case_ids=case_ids).tokens.to(image.device)
        return [network(self._features(image, draw, case_ids), context, image.shape[2:]) for draw in draws]

    def sample(  # type: ignore[override]
        self,
        inputs: torch.Tensor,
        network: nn.Module,
        texts: Sequence[str] | str | None = None,
        case_ids: Sequence[str] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 3, S, S) -> (mean softmax (B, 2, S, S), variance of p(foreground) (B, 1, S, S)) over the K draws."""
        with torch.no_grad():
            logits = self._logits(inputs, network, texts, case_ids, range(self.num_samples))
        stacked = torch.softmax(torch.stack(logits), dim=2)  # (K, B, C, S, S)
        return stacked.mean(0), foreground_variance(stacked, sample_dim=0, channel_dim=2)

    def __call__(self, inputs: torch.Tensor, network: nn.Module, *args: Any, **kwargs: Any) -> torch.Tensor:
        """``output="logits"`` (training): the head's logits for noise draw 0, with gradients into the head; otherwise
        :meth:`SamplingInferer.__call__` (the keywords of :meth:`sample` and ``return_uncertainty``)."""
        if self.output == "logits":
            unknown = sorted(set(kwargs) - {"texts", "case_ids", "return_uncertainty"})
            if args or unknown:
                raise TypeError(f"{type(self).__name__}: unexpected arguments {args!r} {unknown}")
            return self._logits(inputs, network, kwargs.get("texts"), kwargs.get("case_ids"), range(1))[0]
        return super().__call__(inputs, network, *args, **kwargs)
