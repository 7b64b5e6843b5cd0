"""Atomic file outputs: write to a temporary name in the same folder, then ``os.replace`` it into place.

A reader (another process, MONAI Label, a resumed run) therefore sees either the previous complete file or the new
complete file, never a half-written one, even if the writer is killed (``SIGKILL``, power loss after ``fsync``).

- :func:`atomic_path` -- the context manager everything else is built on.
- :func:`atomic_write_text`, :func:`atomic_write_bytes`, :func:`atomic_write_json`, :func:`atomic_torch_save`.
- :mod:`common.io.savers` -- ``AtomicSaveImage(d)``, MONAI's image savers built on these.

This module needs only the standard library (torch is imported inside :func:`atomic_torch_save`), so data
converters and tools can use it without loading torch or MONAI.

Why not ``tempfile.NamedTemporaryFile`` (as ignite's ``DiskSaver(atomic=True)`` does): it creates the file with mode
0600 and drops the file extension, which image writers (nibabel, ITK, PIL) use to choose the format. Here the temp name
keeps the extension (``.seg.nii.gz`` -> ``.seg.<token>.tmp.nii.gz``) and the file is created by the writer with the
normal umask permissions.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import secrets
from collections.abc import Iterator
from os import PathLike
from pathlib import Path
from typing import Any

__all__ = [
    "TMP_MARKER",
    "atomic_path",
    "atomic_write_bytes",
    "atomic_write_text",
    "atomic_write_json",
    "atomic_torch_save",
    "temp_path_for",
    "is_temp_path",
]

#: every temporary name contains this marker (and starts with a dot), see :func:`temp_path_for`.
TMP_MARKER = ".tmp"

# extensions made of two suffixes; the temp name must keep them whole so writers pick the right format.
_DOUBLE_EXTENSIONS = (".nii.gz", ".tar.gz", ".ome.tif", ".ome.tiff")


def _split_extension(name: str) -> tuple[str, str]:
    """``"case_01.seg.nii.gz"`` -> ``("case_01.seg", ".nii.gz")``; ``"model.pt"`` -> ``("model", ".pt")``."""
    lower = name.lower()
    for ext in _DOUBLE_EXTENSIONS:
        if lower.endswith(ext) and len(name) > len(ext):
            return name[: -len(ext)], name[-len(ext) :]
    stem, ext = os.path.splitext(name)
    return stem, ext


def temp_path_for(final_path: str | PathLike) -> Path:
    """A fresh hidden temporary path next to ``final_path`` that keeps its extension.

    Example: ``out/case_01_seg.nii.gz`` -> ``out/.case_01_seg.3f9a1c2b.tmp.nii.gz``.
    """
    final_path = Path(final_path)
    stem, ext = _split_extension(final_path.name)
    return final_path.with_name(f".{stem}.{secrets.token_hex(4)}{TMP_MARKER}{ext}")


def is_temp_path(path: str | PathLike) -> bool:
    """Whether ``path`` looks like a leftover of :func:`temp_path_for` (e.g. after a crash during a write)."""
    name = Path(path).name
    return name.startswith(".") and TMP_MARKER in name


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # not supported on this platform/filesystem
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(
    final_path: str | PathLike, durable: bool = True, verify: bool = True, expected_size: int | None = None
) -> Iterator[Path]:
    """Yield a temporary path in the folder of ``final_path``; on success rename it to ``final_path``.

    The body must create the file at the yielded path. On success it is ``fsync``-ed (if ``durable``), checked
    (if ``verify``: re-read by its format, :func:`common.io.verify.verify_written_file`, since some writers return
    normally on a full disk) and moved over ``final_path`` with :func:`os.replace` (atomic on POSIX and Windows
    within one filesystem). On any error (including ``KeyboardInterrupt``) the temporary file is removed and the
    exception re-raised; ``final_path`` is left untouched. The parent folder is created if needed.

    Args:
        final_path: where the finished file must end up.
        durable: ``fsync`` the file before and the folder after the rename, so that the new content survives a
            power loss. Costs a few milliseconds per file.
        verify: re-read the written file before the rename (format by ``final_path``'s extension).
        expected_size: bytes the body wrote, when known (then the size must match).

    Raises:
        FileNotFoundError: the body finished without creating the temporary file.
        common.errors.OutputWriteError: the disk is full (``ENOSPC``/``EDQUOT`` from the writer or ``fsync``) or
            the written file is incomplete or unreadable; the message names ``final_path``.

    Example::

        with atomic_path("out/report.csv") as tmp:
            write_csv(tmp)
    """
    final_path = Path(final_path)
    final_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path_for(final_path)
    try:
        try:
            yield tmp
            if not tmp.exists():
                raise FileNotFoundError(f"{final_path}: nothing was written to the temporary file {tmp.name}")
            if durable:
                _fsync_file(tmp)
        except OSError as err:
            if err.errno not in (errno.ENOSPC, errno.EDQUOT):
                raise
            from common.errors import OutputWriteError
            from common.io.verify import disk_space_hint

            raise OutputWriteError(
                final_path, f"could not be written: the disk is full ({disk_space_hint(final_path.parent)})"
            ) from err
        if verify:
            from common.io.verify import verify_written_file

            verify_written_file(tmp, str(final_path), expected_size)
        os.replace(tmp, final_path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    if durable:
        _fsync_dir(final_path.parent)


def atomic_write_bytes(path: str | PathLike, data: bytes, durable: bool = True) -> Path:
    """Write ``data`` to ``path`` atomically; returns ``Path(path)``."""
    with atomic_path(path, durable=durable, expected_size=len(data)) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_text(path: str | PathLike, text: str, encoding: str = "utf-8", durable: bool = True) -> Path:
    """Write ``text`` to ``path`` atomically; returns ``Path(path)``."""
    data = text.encode(encoding)
    with atomic_path(path, durable=durable, expected_size=len(data)) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_json(path: str | PathLike, obj: Any, indent: int | None = 2, durable: bool = True, **kwargs) -> Path:
    """Serialise ``obj`` with :func:`json.dumps` (``kwargs`` passed on) and write it atomically.

    The object is serialised before the file is created, so a non-serialisable object leaves no file behind.
    """
    text = json.dumps(obj, indent=indent, **kwargs)
    return atomic_write_text(path, text + "\n", durable=durable)


def atomic_torch_save(obj: Any, path: str | PathLike, durable: bool = True) -> Path:
    """``torch.save(obj, path)`` through a temporary file in the same folder; returns ``Path(path)``.

    Store only tensors, numbers, strings and (nested) dicts/lists/tuples of them, so that the file loads with
    ``torch.load(..., weights_only=True)`` (see :func:`common.training.checkpoint.to_weights_only_safe`).
    """
    import torch

    with atomic_path(path, durable=durable) as tmp:
        torch.save(obj, tmp)
    return Path(path)
