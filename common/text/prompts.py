"""Text prompts: the per-case text with the bundle's fallback, and its checks against the tokenizer's limit.

- :func:`resolve_texts` -- one prompt per case: the case's own text, else the bundle's ``default_text`` (stated, never
  silent), else a :class:`~common.errors.BadInputError` naming the case.
- :func:`check_text` -- empty or over-long prompts (token count of the encoder's own tokenizer).
- :func:`token_counter` -- the token count function :func:`check_text` uses.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from os import PathLike
from typing import Any

from common.errors import BadInputError

__all__ = ["token_counter", "resolve_texts", "check_text"]


# ------------------------------------------------------------------------------------------------------------ text
def token_counter(tokenizer: Any, add_special_tokens: bool = True) -> Callable[[str], int]:
    """A ``str -> int`` token counter from a Hugging Face tokenizer (counts special tokens such as [CLS]/[SEP])."""

    def count(text: str) -> int:
        return len(tokenizer(text, add_special_tokens=add_special_tokens, truncation=False)["input_ids"])

    return count


def resolve_texts(
    texts: Sequence[Any] | str | None,
    batch: int,
    default_text: str | None = None,
    case_ids: Sequence[Any] | None = None,
) -> list[str]:
    """The report text of each of ``batch`` cases: the case's own text, else ``default_text``, else an error.

    The bundle contract (``bundles/README.md``): text is a first-class per-case input, and a text-guided bundle
    refuses a case without text unless the config sets ``default_text``. A single text (a ``str`` or a list of one)
    is shared by the whole batch.

    Args:
        texts: one text per case (``None``/empty/non-string entries count as missing), a single text, or ``None``.
        batch: number of cases.
        default_text: prompt used for cases without text; ``None`` = a missing text is an error.
        case_ids: names used in error messages (default ``image[i]``).

    Raises:
        BadInputError: naming the case, when a text is missing and there is no ``default_text``, or when the
            number of texts does not match ``batch``.
    """
    names = [f"case {c}" for c in case_ids] if case_ids is not None else [f"image[{i}]" for i in range(batch)]
    if isinstance(texts, str) or texts is None:
        texts = [texts] * batch
    texts = list(texts)
    if len(texts) == 1 and batch > 1:
        texts = texts * batch
    if len(texts) != batch:
        raise BadInputError("text", f"{len(texts)} texts for a batch of {batch} images; give one per image")
    out = []
    for name, t in zip(names, texts):
        if not isinstance(t, str) or not t.strip():
            if default_text is None:
                raise BadInputError(
                    name,
                    f"no report text for this case (got {t!r}); this model segments an image given its text: add a "
                    "'text' to the case in the datalist, or set 'default_text' in the config",
                )
            t = default_text
        out.append(t)
    return out


def check_text(
    text: Any,
    source: str | PathLike | None,
    max_tokens: int | None = None,
    count_tokens: Callable[[str], int] | Any | None = None,
    max_chars: int | None = None,
    name: str = "text prompt",
) -> str:
    """Check a text prompt: present, a non-empty string, and not longer than the text encoder accepts.

    Args:
        text: the prompt.
        source: file name or case id for the message.
        max_tokens: the most tokens the text encoder accepts (e.g. 512 for BERT); needs ``count_tokens``.
        count_tokens: ``str -> int`` token counter, or a Hugging Face tokenizer (wrapped with :func:`token_counter`).
        max_chars: optional limit on characters (for encoders without a tokenizer at hand).
        name: what the text is, for the message.

    Returns:
        the text, unchanged.

    Raises:
        BadInputError: missing (``None``), not a string, empty/whitespace only, or too long.
    """
    if text is None:
        raise BadInputError(source, f"{name} is missing; every case needs a text description")
    if not isinstance(text, str):
        raise BadInputError(source, f"{name} must be a string, got {type(text).__name__}")
    if not text.strip():
        raise BadInputError(source, f"{name} is empty; every case needs a text description")
    if max_chars is not None and len(text) > max_chars:
        raise BadInputError(source, f"{name} has {len(text)} characters, at most {max_chars} are allowed; shorten it")
    if max_tokens is not None:
        if count_tokens is None:
            raise ValueError("check_text: max_tokens needs count_tokens (a str -> int callable or a tokenizer)")
        counter = token_counter(count_tokens) if hasattr(count_tokens, "convert_tokens_to_ids") else count_tokens
        n = int(counter(text))
        if n > max_tokens:
            raise BadInputError(
                source,
                f"{name} is too long: {n} tokens, the text encoder accepts at most {max_tokens}; shorten it "
                f"(it would otherwise be truncated): {text[:60]!r}...",
            )
    return text
