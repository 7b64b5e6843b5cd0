"""One training per checkpoint folder: an advisory lock that names the process holding it.

Two trainings writing the same checkpoint folder each resume, save and prune the other's files. The second one must
stop before it touches anything, and say which process it collides with. :class:`RunLock` takes an exclusive
``fcntl.flock`` on ``<folder>/training.lock`` and writes the holder (pid, host, start time, command line) into it.
The kernel drops the lock when the process ends, however it ends (``kill -9`` included), so a killed training never
leaves a stale lock behind and the next run resumes as before; the file itself stays (unlinking it would let two
later runs lock two different inodes of the same name).

Within one process, a new lock of a folder takes over from an earlier lock object of the same folder (with a
warning): that earlier training has ended (an engine that raised keeps its handlers, and so its lock, alive), since
two trainings of one process on one folder at the same time are not something a bundle run does. Where ``fcntl`` does
not exist (Windows) the lock is a no-op with a warning.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
import time
from os import PathLike
from pathlib import Path
from typing import IO

from common.errors import BadInputError

__all__ = ["LOCK_FILENAME", "RunLock"]

#: file name of the lock inside the locked folder
LOCK_FILENAME = "training.lock"

logger = logging.getLogger(__name__)

#: the locks this process holds, by resolved lock file path
_HELD: dict[str, RunLock] = {}

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None


class RunLock:
    """Exclusive, process-lifetime lock of ``folder`` (see module docstring).

    Args:
        folder: the folder to lock (created if missing).
        what: how the error calls the folder's use (``"training"``).

    Example::

        lock = RunLock(checkpoint_dir)
        lock.acquire()      # BadInputError naming the other process if it is taken
        ...
        lock.release()
    """

    def __init__(self, folder: str | PathLike, what: str = "training") -> None:
        self.folder = Path(folder)
        self.path = self.folder / LOCK_FILENAME
        self._key = str(self.path.resolve())  # this process's registry key (_HELD)
        self.what = what
        self._file: IO[str] | None = None

    @property
    def held(self) -> bool:
        return self._file is not None

    def _holder(self) -> str:
        try:
            info = json.loads(self.path.read_text(encoding="utf-8") or "{}")
        except (OSError, ValueError):
            return "another process (its details are unreadable)"
        if not info:
            return "another process"
        command = " ".join(str(a) for a in info.get("argv", []))[:300]
        return (
            f"process {info.get('pid')} on {info.get('host')} (started {info.get('started')}"
            + (f", command: {command}" if command else "")
            + ")"
        )

    def acquire(self) -> RunLock:
        """Take the lock (idempotent); returns ``self``.

        Raises:
            BadInputError: naming the folder and the process that holds the lock, and what to do.
        """
        if self._file is not None:
            return self
        if fcntl is None:  # pragma: no cover - Windows
            logger.warning(f"{self.folder}: no file locking on this platform; run one {self.what} per folder")
            return self
        self.folder.mkdir(parents=True, exist_ok=True)
        earlier = _HELD.get(self._key)
        if earlier is not None and earlier is not self:
            logger.warning(f"{self.folder}: taking over the lock of an earlier {self.what} of this process")
            earlier.release()
        handle = open(self.path, "a+", encoding="utf-8")  # noqa: SIM115 - held open for the lock's lifetime
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            raise BadInputError(
                self.folder,
                f"another {self.what} is using this folder: {self._holder()}. Wait for it to finish or stop it, or "
                "give this run another output folder (ckpt_dir / output_dir)",
            ) from None
        handle.seek(0)
        handle.truncate()
        info = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
            "argv": sys.argv,
        }
        handle.write(json.dumps(info) + "\n")
        handle.flush()
        self._file = handle
        _HELD[self._key] = self
        return self

    def release(self) -> None:
        """Give the lock up (idempotent); the file is emptied, not removed."""
        if self._file is None:
            return
        if _HELD.get(self._key) is self:
            del _HELD[self._key]
        try:
            self._file.seek(0)
            self._file.truncate()
            self._file.flush()
            fcntl.flock(self._file.fileno(), fcntl.LOCK_UN)
        finally:
            self._file.close()
            self._file = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()
