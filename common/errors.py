"""The project's error types: :class:`BadInputError` for bad input (files, images, labels, text, checkpoints) and
:class:`OutputWriteError` for an output that could not be written completely (a full disk, a failing mount)."""

from __future__ import annotations

from collections.abc import Sequence
from os import PathLike
from typing import Any

__all__ = [
    "BadInputError",
    "OutputWriteError",
    "find_bad_input_error",
    "find_error",
    "format_list",
    "format_problems",
    "short_message",
]

MAX_LISTED = 5  # how many offending keys/values a message lists


class BadInputError(ValueError):
    """Bad input: the message always names the offending file (or case) and the problem.

    Args:
        source: the file path, case id or config key the problem was found in.
        problem: what is wrong, in words a clinical researcher understands, ideally with the fix.

    Example::

        raise BadInputError("data/img_01.nii.gz", "expected a 3D volume, got shape (256, 256)")
        # -> "data/img_01.nii.gz: expected a 3D volume, got shape (256, 256)"
    """

    def __init__(self, source: str | PathLike | None, problem: str) -> None:  # noqa: B042 -- see __reduce__
        self.source = None if source is None else str(source)
        self.problem = problem
        super().__init__(problem if self.source is None else f"{self.source}: {problem}")

    def __reduce__(self):  # keep picklable across DataLoader workers
        return (type(self), (self.source, self.problem))


class OutputWriteError(OSError):
    """An output file could not be written completely: the message names the file, what is wrong with what was
    written and the free space left. Nothing is left under that name (the previous file, if any, stays).

    Args:
        path: the output file (its final name).
        problem: what went wrong.
    """

    def __init__(self, path: str | PathLike, problem: str) -> None:  # noqa: B042 -- see __reduce__
        self.source = str(path)
        self.problem = problem
        super().__init__(f"{self.source}: {problem}")

    def __reduce__(self):  # keep picklable across DataLoader workers
        return (type(self), (self.source, self.problem))


def find_error(exc: BaseException | None, kinds: type | tuple[type, ...]) -> BaseException | None:
    """The first exception of type ``kinds`` in ``exc`` or its ``__cause__``/``__context__`` chain, outermost first
    (``None`` if absent)."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, kinds):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


def find_bad_input_error(exc: BaseException | None) -> BadInputError | None:
    """The :class:`BadInputError` in ``exc`` or its ``__cause__``/``__context__`` chain (``None`` if absent).

    MONAI's ``Compose``/``Dataset`` wrap transform errors in ``RuntimeError``; use this to report the real problem.
    """
    return find_error(exc, BadInputError)


def format_list(items: Sequence[Any], limit: int = MAX_LISTED) -> str:
    """``[a, b, c, ...]`` of at most ``limit`` items (strings quoted): how an error message lists offenders."""
    items = list(items)
    shown = ", ".join(repr(i) if isinstance(i, str) else str(i) for i in items[:limit])
    return f"[{shown}{', ...' if len(items) > limit else ''}]"


def format_problems(problems: Sequence[str], limit: int = 20) -> str:
    """``"p1; p2; ...; ... N more"``: at most ``limit`` problem sentences of one error message (missing files,
    unreadable files), the rest counted."""
    problems = list(problems)
    more = f"; ... {len(problems) - limit} more" if len(problems) > limit else ""
    return "; ".join(problems[:limit]) + more


def short_message(err: BaseException, limit: int = 300) -> str:
    """``"TypeName: message"`` of ``err`` on one line, cut to ``limit`` characters: a cause quoted in an error."""
    text = " ".join(str(err).split())
    text = text if len(text) <= limit else text[: limit - 3] + "..."
    return f"{type(err).__name__}: {text}" if text else type(err).__name__
