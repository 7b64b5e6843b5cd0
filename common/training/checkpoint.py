"""Full training-state checkpoints: atomic save, ``weights_only=True`` load, keep-last-n, find-latest.

A training checkpoint is one ``.pt`` file holding a dict of plain state dicts::

    {"format": "common.training/1", "epoch": 3, "iteration": 120,
     "engine": {...}, "rng": {...},                  # written by ResumableCheckpointer
     "model": {...}, "optimizer": {...}, "lr_scheduler": {...}, "ema": {...}}

Only tensors, numbers, strings, ``None`` and dicts/lists/tuples of them are stored (numpy arrays, e.g. RNG states,
are converted by :func:`to_weights_only_safe`), so every file loads with ``torch.load(..., weights_only=True)``.
The ``"model"`` entry follows MONAI's convention, so MONAI's ``CheckpointLoader(load_dict={"model": net})``, MONAI
Label and :func:`common.io.checkpoints.load_network_weights` can read a training checkpoint directly.

File names: ``<prefix>epoch=<N>.pt`` (default prefix ``"checkpoint_"``, as MONAI's ``CheckpointSaver``), written
through :func:`common.io.atomic.atomic_torch_save`; a crash during a save leaves at most a hidden
``.<name>.<token>.tmp.pt`` file, which :func:`list_checkpoints` ignores and :func:`remove_stale_temp_files` deletes.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Mapping
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np
import torch
from common.errors import BadInputError
from common.io.atomic import atomic_torch_save, is_temp_path
from common.io.checkpoints import describe_state_dict_mismatch, load_checkpoint

__all__ = [
    "CHECKPOINT_FORMAT",
    "DEFAULT_PREFIX",
    "checkpoint_filename",
    "to_weights_only_safe",
    "unwrap_stateful",
    "collect_state_dicts",
    "apply_state_dicts",
    "save_training_checkpoint",
    "load_training_checkpoint",
    "list_checkpoints",
    "find_latest_checkpoint",
    "prune_checkpoints",
    "remove_stale_temp_files",
]

CHECKPOINT_FORMAT = "common.training/1"
DEFAULT_PREFIX = "checkpoint_"


def checkpoint_filename(epoch: int, prefix: str = DEFAULT_PREFIX) -> str:
    """``checkpoint_epoch=3.pt`` for ``epoch=3``."""
    return f"{prefix}epoch={int(epoch)}.pt"


def to_weights_only_safe(obj: Any) -> Any:
    """Recursively convert numpy arrays/scalars to tensors/Python numbers so ``weights_only=True`` can load ``obj``.

    ``torch.load(weights_only=True)`` refuses numpy objects (``numpy.core.multiarray._reconstruct``). Integer
    arrays become ``int64`` tensors (uint32 RNG keys fit), others keep their dtype. Containers keep their type
    (dict/OrderedDict -> dict, list, tuple).
    """
    if isinstance(obj, np.ndarray):
        if obj.dtype.kind in "ui":
            return torch.from_numpy(obj.astype(np.int64))
        return torch.from_numpy(np.ascontiguousarray(obj))
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, Mapping):
        return {k: to_weights_only_safe(v) for k, v in obj.items()}
    if isinstance(obj, tuple):
        return tuple(to_weights_only_safe(v) for v in obj)
    if isinstance(obj, list):
        return [to_weights_only_safe(v) for v in obj]
    return obj


def unwrap_stateful(obj: Any) -> Any:
    """The object whose ``state_dict``/``load_state_dict`` should be used.

    ``DataParallel``/``DistributedDataParallel`` -> ``.module`` (checkpoints stay loadable without the wrapper);
    an ``ignite.handlers.EMAHandler`` (which has no state dict) -> its ``ema_model``.
    """
    while isinstance(obj, (torch.nn.DataParallel, torch.nn.parallel.DistributedDataParallel)):
        obj = obj.module
    if not hasattr(obj, "state_dict") and isinstance(getattr(obj, "ema_model", None), torch.nn.Module):
        obj = obj.ema_model
    return obj


def collect_state_dicts(objects: Mapping[str, Any]) -> dict[str, Any]:
    """``{name: obj.state_dict()}`` for stateful objects, made ``weights_only``-safe.

    Raises:
        TypeError: an object has no ``state_dict``.
    """
    out = {}
    for name, obj in objects.items():
        target = unwrap_stateful(obj)
        if not callable(getattr(target, "state_dict", None)):
            raise TypeError(f"cannot checkpoint {name!r}: {type(obj).__name__} has no state_dict()")
        out[name] = to_weights_only_safe(target.state_dict())
    return out


def apply_state_dicts(
    objects: Mapping[str, Any], checkpoint: Mapping[str, Any], source: str, strict: bool = True
) -> None:
    """Load ``checkpoint[name]`` into each object of ``objects`` (modules checked first, then loaded).

    All networks are checked against the checkpoint before anything is modified, so a checkpoint of another
    network leaves the models untouched.

    Raises:
        BadInputError: a name is missing from the checkpoint, or a state dict does not fit its object
            (keys/shapes listed for networks; the torch error for optimizers/schedulers).
    """
    missing = [k for k in objects if k not in checkpoint]
    if missing:
        raise BadInputError(
            source,
            f"checkpoint has no entry for {missing} (found {sorted(map(str, checkpoint))}); it was written by a "
            "different training configuration",
        )
    for name, obj in objects.items():
        target = unwrap_stateful(obj)
        if isinstance(target, torch.nn.Module):
            problem = describe_state_dict_mismatch(target.state_dict(), checkpoint[name], strict=strict)
            if problem:
                raise BadInputError(source, f"entry {name!r} does not fit {type(target).__name__}: {problem}")
    for name, obj in objects.items():
        target = unwrap_stateful(obj)
        try:
            if isinstance(target, torch.nn.Module):
                target.load_state_dict(checkpoint[name], strict=strict)
            else:
                target.load_state_dict(checkpoint[name])
        except (KeyError, ValueError, RuntimeError, TypeError) as e:
            raise BadInputError(source, f"entry {name!r} cannot be loaded into {type(target).__name__}: {e}") from e


def save_training_checkpoint(path: str | PathLike, state: Mapping[str, Any]) -> Path:
    """Write a training-state dict atomically (temp file + ``os.replace``) after making it ``weights_only``-safe."""
    payload = {"format": CHECKPOINT_FORMAT, **to_weights_only_safe(dict(state))}
    return atomic_torch_save(payload, path)


def load_training_checkpoint(
    path: str | PathLike, required_keys: tuple[str, ...] = (), map_location: str | torch.device | None = "cpu"
) -> dict:
    """Load a training checkpoint with ``weights_only=True`` (see :func:`common.io.checkpoints.load_checkpoint`)."""
    return load_checkpoint(path, required_keys=required_keys, map_location=map_location)


def _pattern(prefix: str) -> re.Pattern:
    return re.compile(rf"^{re.escape(prefix)}epoch=(\d+)\.pt$")


def list_checkpoints(folder: str | PathLike, prefix: str = DEFAULT_PREFIX) -> list[tuple[int, Path]]:
    """``[(epoch, path), ...]`` of the checkpoints in ``folder``, oldest epoch first (temp files ignored)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    pat = _pattern(prefix)
    found = []
    for p in folder.iterdir():
        m = pat.match(p.name)
        if m and p.is_file():
            found.append((int(m.group(1)), p))
    return sorted(found)


def find_latest_checkpoint(folder: str | PathLike, prefix: str = DEFAULT_PREFIX) -> Path | None:
    """The checkpoint with the highest epoch in ``folder`` (by file name, not modification time), or ``None``."""
    found = list_checkpoints(folder, prefix)
    return found[-1][1] if found else None


def prune_checkpoints(folder: str | PathLike, keep: int, prefix: str = DEFAULT_PREFIX) -> list[Path]:
    """Delete all but the ``keep`` newest checkpoints; returns the deleted paths (works across restarts)."""
    if keep < 1:
        raise ValueError(f"keep must be >= 1, got {keep}")
    found = list_checkpoints(folder, prefix)
    removed = []
    for _, p in found[:-keep]:
        with contextlib.suppress(FileNotFoundError):
            p.unlink()
            removed.append(p)
    return removed


def remove_stale_temp_files(folder: str | PathLike, prefix: str = DEFAULT_PREFIX) -> list[Path]:
    """Delete temp files left by a save that was killed (``.<prefix>epoch=N.<token>.tmp.pt``)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    for p in folder.iterdir():
        if is_temp_path(p) and p.name.startswith(f".{prefix}epoch=") and p.is_file():
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
                removed.append(p)
    return removed
