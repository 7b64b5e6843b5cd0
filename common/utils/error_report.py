"""The user's problem as the last line a failed ``python -m monai.bundle run`` prints, and exit codes that tell it.

A bad datalist, image or checkpoint raises :class:`~common.errors.BadInputError` deep inside a transform, a
dataset or a config expression; MONAI wraps it (``Failed to evaluate ConfigExpression ... set '_mode_=debug'``,
``RuntimeError: applying transform ...``), so the plain traceback ends 20-50 lines below the message that says what
to fix. Every bundle config calls :func:`install` first in ``initialize``; then an uncaught error prints

- the usual traceback (for a bug report), then
- one last line ``ERROR: <file or case>: <problem>`` with the message of the ``BadInputError`` or
  :class:`~common.errors.OutputWriteError` found in the exception chain (or ``ERROR: <type>: <message>`` of the
  error itself when there is none),

and exits with :data:`EXIT_BAD_INPUT` (2) for bad input, :data:`EXIT_OUTPUT_WRITE` (3) for an output that could not
be written (full disk), 1 for anything else (a bug). The exit is ``os._exit`` after flushing the streams: an
interpreter shutting down with worker threads still alive (``CacheDataset``'s pool) otherwise aborts with 134
(``terminate called without an active exception``). ``KeyboardInterrupt`` keeps Python's own handling.
"""

from __future__ import annotations

import logging
import os
import sys
import traceback
from types import TracebackType

from common.errors import BadInputError, OutputWriteError, find_error, short_message

__all__ = ["EXIT_BAD_INPUT", "EXIT_OUTPUT_WRITE", "EXIT_BUG", "install", "last_line", "exit_code"]

EXIT_BUG = 1
EXIT_BAD_INPUT = 2
EXIT_OUTPUT_WRITE = 3


def _user_error(exc: BaseException) -> BaseException | None:
    """The first ``BadInputError`` / ``OutputWriteError`` of ``exc``'s chain, the outermost first."""
    return find_error(exc, (BadInputError, OutputWriteError))


def exit_code(exc: BaseException) -> int:
    """2 if ``exc``'s chain holds a ``BadInputError``, 3 for an ``OutputWriteError``, else 1."""
    found = _user_error(exc)
    if isinstance(found, BadInputError):
        return EXIT_BAD_INPUT
    if isinstance(found, OutputWriteError):
        return EXIT_OUTPUT_WRITE
    return EXIT_BUG


def last_line(exc: BaseException) -> str:
    """``"ERROR: <message>"``: the user's error of the chain, or ``exc`` itself, on one line."""
    found = _user_error(exc)
    text = " ".join(str(found).split()) if found is not None else short_message(exc, limit=600)
    return f"ERROR: {text}"


def _hook(kind: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
    if issubclass(kind, KeyboardInterrupt):
        sys.__excepthook__(kind, exc, tb)
        return
    try:
        traceback.print_exception(kind, exc, tb, file=sys.stderr)
        logging.shutdown()
        sys.stdout.flush()
        print(last_line(exc), file=sys.stderr, flush=True)
    finally:
        os._exit(exit_code(exc))


def install() -> bool:
    """Make :func:`_hook` the process's ``sys.excepthook`` (idempotent); returns ``True`` (usable as a config
    expression: ``"$error_report.install()"``)."""
    sys.excepthook = _hook
    return True
