"""Text conditioning of TextDiffSeg: which text a case gets, encoding it, and prompt-selected targets.

Paper §II.B.2 (eq 1) and ``bundles/textdiffseg/docs/sources.md`` §2.4. Two ways the text enters, chosen in the config:

- **dataset prompts** (the paper; default): every case of a dataset gets the same description, one sentence per
  target class (spec [choice]: the CLIP-Driven Universal Model template "A computerized tomography of a [CLS]"); the
  sentences are encoded separately and their real token states concatenated into one context sequence (§2.4).
  With ``use_case_text`` the case's own ``text`` from the datalist (a report, or the converters' generated
  description with organ / lesion / side / modality) replaces them.
- **class prompts** (beyond the paper; the demo): a list of ``{"text": prompt, "labels": [class ids]}``. Training
  picks one prompt per sample (:class:`RandPromptTargetd`) and the target becomes the binary mask of those
  classes, so the prompt selects the structure; inference runs once per prompt and paints the masks in order
  (:class:`TextGuidedInferer`), giving a multi-class map with one class per prompt.

The text encoder is :class:`common.text.encoder.FrozenTextEncoder` (frozen Clinical BioBERT; the demo uses the
offline MiniLM). It is loaded on first use (:class:`TextConditioner`), so configs parse without it.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from common.errors import BadInputError
from common.text.encoder import FrozenTextEncoder
from common.text.prompts import resolve_texts
from monai.config import KeysCollection
from monai.transforms import MapTransform, Randomizable

logger = logging.getLogger(__name__)

__all__ = [
    "CaseTextd",
    "RandPromptTargetd",
    "TextConditioner",
    "TextGuidedInferer",
    "check_class_prompts",
    "check_text_mode",
]


def check_class_prompts(class_prompts: Sequence[Mapping[str, Any]] | None) -> list[dict[str, Any]]:
    """Validate ``[{"text": str, "labels": [int, ...]}, ...]``; returns plain dicts (empty list for None)."""
    out = []
    for i, p in enumerate(class_prompts or []):
        if not isinstance(p, Mapping) or not isinstance(p.get("text"), str) or not p["text"].strip():
            raise BadInputError(
                "class_prompts", f"entry {i} must be {{'text': non-empty str, 'labels': [...]}}, got {p!r}"
            )
        labels = p.get("labels", [])
        if not isinstance(labels, (list, tuple)) or not labels or not all(isinstance(v, int) and v > 0 for v in labels):
            raise BadInputError("class_prompts", f"entry {i} ({p['text']!r}) needs 'labels': a list of class ids > 0")
        out.append({"text": p["text"], "labels": [int(v) for v in labels]})
    return out


def check_text_mode(use_case_text: bool, class_prompts: Sequence[Mapping[str, Any]] | None) -> list[dict[str, Any]]:
    """:func:`check_class_prompts`, and refuse the case texts together with class prompts (class-prompt mode
    conditions every pass on a class prompt: the case texts would be ignored without a word)."""
    checked = check_class_prompts(class_prompts)
    if use_case_text and checked:
        raise BadInputError(
            "use_case_text",
            "is true but class_prompts are set: in class-prompt mode every pass is conditioned on a class prompt, "
            "never on the case text; set class_prompts [] to use the case texts, or use_case_text false",
        )
    return checked


class TextConditioner:
    """Texts -> (tokens (B, L, D), mask (B, L)) for the fusion, with dataset prompts and a lazily loaded encoder.

    Args:
        text_encoder: a :class:`FrozenTextEncoder`, or its ``name_or_path`` (loaded on first use).
        dataset_prompts: sentences used for every case when the case text is not used (dataset-prompt mode).
        use_case_text: use each case's own text instead of ``dataset_prompts``.
        default_text: text for a case without one when ``use_case_text`` (``None``: such a case is an error).
    """

    def __init__(
        self,
        text_encoder: FrozenTextEncoder | str,
        dataset_prompts: Sequence[str] | None = None,
        use_case_text: bool = False,
        default_text: str | None = None,
    ) -> None:
        self._encoder = text_encoder if isinstance(text_encoder, FrozenTextEncoder) else None
        self._name = None if self._encoder is not None else str(text_encoder)
        self.dataset_prompts = [str(p) for p in (dataset_prompts or [])]
        self.use_case_text = bool(use_case_text)
        self.default_text = default_text
        if not self.use_case_text and not self.dataset_prompts:
            raise BadInputError(
                "dataset_prompts", "no dataset prompts given and use_case_text is false: no text to use"
            )

    @property
    def encoder(self) -> FrozenTextEncoder:
        """The frozen text encoder (loaded now if it was given by name)."""
        if self._encoder is None:
            self._encoder = FrozenTextEncoder(self._name, truncation=False, padding="longest")
        return self._encoder

    def encode_sentences(
        self, per_sample: Sequence[Sequence[str]], names: Sequence[Any] | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Each sample's sentences encoded separately, real tokens concatenated: -> (B, L, D), (B, L) bool.

        ``names``: one per sample (case ids), named in the error of a bad or too long sentence (sentence ``i`` of
        sample ``b`` is ``<name>`` or ``<name> sentence i``)."""
        flat = [s for sents in per_sample for s in sents]
        flat_names = None
        if names is not None:
            flat_names = [
                str(n) if len(sents) == 1 else f"{n} sentence {i}"
                for n, sents in zip(names, per_sample)
                for i in range(len(sents))
            ]
        emb = self.encoder(flat, case_ids=flat_names)
        tokens, mask = emb.tokens.cpu(), emb.mask.cpu()
        seqs, j = [], 0
        for sents in per_sample:
            seqs.append(torch.cat([tokens[j + i][mask[j + i]] for i in range(len(sents))], dim=0))
            j += len(sents)
        length = max(s.shape[0] for s in seqs)
        out = torch.zeros(len(seqs), length, tokens.shape[-1])
        out_mask = torch.zeros(len(seqs), length, dtype=torch.bool)
        for b, s in enumerate(seqs):
            out[b, : s.shape[0]] = s
            out_mask[b, : s.shape[0]] = True
        return out, out_mask

    def texts_for(
        self, case_texts: Sequence[Any] | None, batch: int, case_ids: Sequence[Any] | None = None
    ) -> list[list[str]]:
        """The sentences of each of ``batch`` cases: the dataset prompts, or (``use_case_text``) the case's text,
        else ``default_text``, else :class:`BadInputError` naming the case
        (:func:`common.text.prompts.resolve_texts`)."""
        if not self.use_case_text:
            return [list(self.dataset_prompts) for _ in range(batch)]
        return [[t] for t in resolve_texts(case_texts, batch, self.default_text, case_ids)]

    def names_for(self, batch: int, case_ids: Sequence[Any] | None = None) -> list[str] | None:
        """What the errors call each sample's text: the case id (case texts) or ``dataset_prompts``."""
        if not self.use_case_text:
            return ["dataset_prompts"] * batch
        return None if case_ids is None else [f"case {c!r} text" for c in case_ids]

    def __call__(
        self,
        case_texts: Sequence[Any] | None,
        batch: int,
        device: torch.device | str = "cpu",
        case_ids: Sequence[Any] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Context tokens and mask for a batch, on ``device``."""
        tokens, mask = self.encode_sentences(
            self.texts_for(case_texts, batch, case_ids), self.names_for(batch, case_ids)
        )
        return tokens.to(device), mask.to(device)


class CaseTextd(MapTransform):
    """Normalise the ``text`` entry so batches collate: the case text (or ``default_text``) when it is used, else "".

    With ``use_case_text`` a case without text and without ``default_text`` raises :class:`BadInputError` naming
    the case (the contract: inference without text is an error unless ``default_text`` is set).
    """

    def __init__(
        self,
        keys: KeysCollection = "text",
        use_case_text: bool = False,
        default_text: str | None = None,
        case_key: str = "case_id",
    ) -> None:
        super().__init__(keys, allow_missing_keys=True)
        self.use_case_text = bool(use_case_text)
        self.default_text = default_text
        self.case_key = case_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.keys:
            if not self.use_case_text:
                d[key] = ""
                continue
            (d[key],) = resolve_texts([d.get(key)], 1, self.default_text, [d.get(self.case_key, "?")])
        return d


class RandPromptTargetd(Randomizable, MapTransform):
    """Class-prompt training: pick one prompt per sample; label -> binary mask of its classes, text -> prompt.

    Args:
        keys: (label key, text key).
        class_prompts: ``[{"text": ..., "labels": [...]}, ...]``; empty/None makes the transform a no-op.
        target_key: where the chosen prompt index is stored.
    """

    def __init__(
        self,
        keys: KeysCollection = ("label", "text"),
        class_prompts: Sequence[Mapping[str, Any]] | None = None,
        target_key: str = "prompt_index",
    ) -> None:
        MapTransform.__init__(self, keys)
        if len(self.keys) != 2:
            raise ValueError(f"keys must be (label, text), got {self.keys}")
        self.class_prompts = check_class_prompts(class_prompts)
        self.target_key = target_key
        self._index = 0

    def randomize(self, data: Any = None) -> None:
        self._index = int(self.R.randint(len(self.class_prompts)))

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        if not self.class_prompts:
            return d
        self.randomize()
        label_key, text_key = self.keys
        prompt = self.class_prompts[self._index]
        label = d[label_key]
        values = torch.as_tensor(prompt["labels"], device=label.device if isinstance(label, torch.Tensor) else None)
        d[label_key] = (
            torch.isin(torch.as_tensor(label), values).to(torch.uint8)
            if isinstance(label, torch.Tensor)
            else np.isin(label, prompt["labels"]).astype(np.uint8)
        )
        if hasattr(label, "meta") and hasattr(d[label_key], "meta"):
            d[label_key].meta = label.meta
        d[text_key] = prompt["text"]
        d[self.target_key] = self._index
        return d


class TextGuidedInferer:
    """The contract's ``inferer(image, network, text=None)``: text -> context, then the DDIM sliding-window inferer.

    Dataset-prompt mode (``class_prompts`` empty): one pass with the conditioner's text for each image; output
    (B, N, ...) class probabilities. Class-prompt mode: one pass per prompt with a binary (N = 2) network; the
    foreground probabilities p_k are painted in prompt order, ``P <- P * (1 - p_k) + p_k * onehot(k + 1)``
    starting from all background, so later prompts (e.g. a tumour inside its organ) win where they fire; output
    (B, K + 1, ...), summing to 1. An uncertainty channel of the inner inferer (``return_uncertainty``) is kept
    last; in class-prompt mode it is the sum over the prompts of each binary pass's foreground-probability variance,
    i.e. the contract's "sum over foreground classes of the per-class variances" (bundles/README.md, "Outputs").

    A typed ``prompt`` (the config's ``prompt``, MONAI Label's ``text`` option through ``displayable_configs``)
    applies to every image: in dataset-prompt mode it replaces the dataset prompts, and with ``use_case_text`` the
    case texts (what a MONAI Label user types is the report of the image in view); in class-prompt mode it must be
    one of the class prompts (case and surrounding spaces ignored; anything else is a :class:`BadInputError` listing
    them, since the binary network only learnt those) and only that structure is segmented, in its own channel
    ``k + 1`` of the same (B, K + 1, ...) output, the other classes staying 0. An empty prompt is logged as such.

    Args:
        inferer: a :class:`common.inferers.ddim_sliding_window.DDIMSlidingWindowInferer`.
        conditioner: the :class:`TextConditioner`.
        class_prompts: class-prompt mode when non-empty (see the module docstring).
        prompt: the typed prompt, or ``None``/empty (the dataset or class prompts as configured).
    """

    def __init__(
        self,
        inferer: Any,
        conditioner: TextConditioner,
        class_prompts: Sequence[Mapping[str, Any]] | None = None,
        prompt: str | None = None,
    ) -> None:
        self.inferer = inferer
        self.conditioner = conditioner
        self.class_prompts = check_text_mode(conditioner.use_case_text, class_prompts)
        if prompt is not None and not isinstance(prompt, str):
            raise BadInputError("prompt", f"must be a string or null, got {type(prompt).__name__}")
        if prompt is not None and not prompt.strip():
            logger.warning(
                "the typed prompt is empty: %s are used (leave prompt unset (null) to say so, or type a sentence)",
                "the class prompts" if self.class_prompts else "the dataset prompts",
            )
        self.prompt = prompt.strip() if prompt and prompt.strip() else None
        self._selected = range(len(self.class_prompts))
        if self.prompt is not None and self.class_prompts:
            wanted = " ".join(self.prompt.lower().split())
            match = [k for k, c in enumerate(self.class_prompts) if " ".join(c["text"].lower().split()) == wanted]
            if not match:
                allowed = "; ".join(repr(c["text"]) for c in self.class_prompts)
                raise BadInputError("prompt", f"{self.prompt!r} is not one of this model's class prompts: {allowed}")
            self._selected = match

    def with_uncertainty(self, flag: bool = True) -> TextGuidedInferer:
        """A shallow copy whose inner sampler does (or does not) append the uncertainty channel (the evaluator's
        variant of the plain ``inferer`` MONAI Label calls;
        :meth:`common.inferers.sampling.SamplingInferer.with_uncertainty`)."""
        other = copy.copy(self)
        other.inferer = self.inferer.with_uncertainty(flag)
        return other

    def __call__(
        self,
        inputs: torch.Tensor,
        network: torch.nn.Module,
        text: Sequence[Any] | str | None = None,
        case_ids: Sequence[Any] | None = None,
        return_uncertainty: bool | None = None,
    ) -> torch.Tensor:
        if inputs.ndim != 5:
            raise BadInputError(
                "image",
                f"expected a 3D image batch (B, C, D, H, W), got shape {tuple(inputs.shape)}"
                + ("; a 2D image was given, TextDiffSeg segments 3D volumes" if inputs.ndim == 4 else ""),
            )
        batch = inputs.shape[0]
        if isinstance(text, str):
            text = [text] * batch
        kw = {} if return_uncertainty is None else {"return_uncertainty": return_uncertainty}
        if not self.class_prompts:
            if self.prompt is not None:
                ctx, mask = self.conditioner.encode_sentences([[self.prompt]] * batch, ["prompt"] * batch)
                ctx, mask = ctx.to(inputs.device), mask.to(inputs.device)
            else:
                ctx, mask = self.conditioner(text, batch, inputs.device, case_ids)
            return self.inferer(inputs, network, context=ctx, context_mask=mask, **kw)
        probs = None
        unc = None
        for k in self._selected:
            prompt = self.class_prompts[k]
            ctx, mask = self.conditioner.encode_sentences([[prompt["text"]]])
            out = self.inferer(
                inputs, network, context=ctx.to(inputs.device), context_mask=mask.to(inputs.device), **kw
            )
            if out.shape[1] == 3:  # binary probabilities + uncertainty
                unc = out[:, 2:3] if unc is None else unc + out[:, 2:3]
            elif out.shape[1] != 2:
                raise BadInputError(
                    "class_prompts", f"class-prompt mode needs a binary network (2 classes), got {out.shape[1]}"
                )
            fg = out[:, 1:2]
            if probs is None:
                probs = torch.zeros(batch, len(self.class_prompts) + 1, *inputs.shape[2:], device=out.device)
                probs[:, 0] = 1.0
            probs = probs * (1 - fg)
            probs[:, k + 1 : k + 2] += fg
        return probs if unc is None else torch.cat([probs, unc], dim=1)
