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
import shutil
from os import PathLike
from pathlib import Path
from types import TracebackType
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


#: what torch's zip writer (``caffe2::serialize::PyTorchStreamWriter``) raises when a write fails (a full disk):
#: a ``RuntimeError`` without errno, e.g. ``[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598``
_TORCH_WRITER_FAILURES = ("inline_container.cc", "PytorchStreamWriter failed", "file write failed", "unexpected pos")


def _write_failure(err: BaseException, folder: Path, needed: int | None) -> str | None:
    """Why writing into ``folder`` failed, when ``err`` says a write did not reach the disk (``None`` otherwise)."""
    if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
        full = True
    elif isinstance(err, RuntimeError) and any(s in str(err) for s in _TORCH_WRITER_FAILURES):
        try:
            free = shutil.disk_usage(folder).free
        except OSError:
            free = None
        full = free is not None and free < max(needed or 0, 1 << 20)
        if not full:
            return f"could not be written (the writer failed: {' '.join(str(err).split())[:200]})"
    else:
        return None
    from common.io.verify import disk_space_hint

    need = f"needs about {needed / 1e6:.1f} MB, " if needed else ""
    return f"could not be written: the disk is full ({need}{disk_space_hint(folder)}); free space or write elsewhere"


def _drop_frames(err: BaseException) -> None:
    """Clear the tracebacks of ``err`` and its ``__cause__`` / ``__context__`` chain (their messages stay)."""
    seen: set[int] = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        current.__traceback__ = None
        if current.__cause__ is not None:
            _drop_frames(current.__cause__)
        current = current.__context__


def atomic_path(
    final_path: str | PathLike,
    durable: bool = True,
    verify: bool = True,
    expected_size: int | None = None,
    size_hint: int | None = None,
) -> AtomicPath:
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
        size_hint: about how many bytes the file needs, when known (named in the full-disk message).

    Raises:
        FileNotFoundError: the body finished without creating the temporary file.
        common.errors.OutputWriteError: the disk is full (``ENOSPC``/``EDQUOT`` from the writer or ``fsync``, or
            torch's zip writer failing) or the written file is incomplete or unreadable; the message names
            ``final_path``, the space it needs (``size_hint``) and the space left.

    Example::

        with atomic_path("out/report.csv") as tmp:
            write_csv(tmp)
    """
    return AtomicPath(final_path, durable, verify, expected_size, size_hint)


class AtomicPath:
    """The context manager of :func:`atomic_path` (a class rather than a generator, so that no frame of it keeps a
    failed writer -- and the open temporary file -- alive after the error: see :meth:`__exit__`)."""

    def __init__(
        self,
        final_path: str | PathLike,
        durable: bool = True,
        verify: bool = True,
        expected_size: int | None = None,
        size_hint: int | None = None,
    ) -> None:
        self.final_path = Path(final_path)
        self.durable = durable
        self.verify = verify
        self.expected_size = expected_size
        self.size_hint = size_hint
        self.tmp = temp_path_for(self.final_path)

    def __enter__(self) -> Path:
        self.final_path.parent.mkdir(parents=True, exist_ok=True)
        return self.tmp

    def _discard(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.tmp.unlink()

    def _write_error(self, err: BaseException) -> BaseException | None:
        """The :class:`~common.errors.OutputWriteError` for a write that did not reach the disk, else ``None``."""
        problem = _write_failure(err, self.final_path.parent, self.size_hint or self.expected_size)
        if problem is None:
            return None
        from common.errors import OutputWriteError

        # the error's frames hold the writer and its open temporary file: drop them, so that the file is closed and
        # its space given back once removed (a long-running process, e.g. a MONAI Label server, keeps going)
        _drop_frames(err)
        return OutputWriteError(self.final_path, problem)

    def _commit(self) -> None:
        if not self.tmp.exists():
            raise FileNotFoundError(f"{self.final_path}: nothing was written to the temporary file {self.tmp.name}")
        if self.durable:
            try:
                _fsync_file(self.tmp)
            except OSError as err:
                converted = self._write_error(err)
                if converted is None:
                    raise
                raise converted from err
        if self.verify:
            from common.io.verify import verify_written_file

            verify_written_file(self.tmp, str(self.final_path), self.expected_size)
        os.replace(self.tmp, self.final_path)
        if self.durable:
            _fsync_dir(self.final_path.parent)

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> bool:
        del tb  # a local of this frame would keep the failed writer's frames alive
        if exc is None:
            try:
                self._commit()
            except BaseException:
                self._discard()
                raise
            return False
        self._discard()
        converted = self._write_error(exc)
        if converted is None:
            return False  # the body's own error propagates unchanged
        raise converted from exc


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

    with atomic_path(path, durable=durable, size_hint=_tensor_bytes(obj)) as tmp:
        torch.save(obj, tmp)
    return Path(path)


def _tensor_bytes(obj: Any) -> int:
    """Bytes of the tensors in ``obj`` (nested dicts/lists/tuples): about the size of its ``torch.save`` file."""
    import torch

    if isinstance(obj, torch.Tensor):
        return obj.element_size() * obj.nelement()
    if isinstance(obj, dict):
        return sum(_tensor_bytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(_tensor_bytes(v) for v in obj)
    return 0
