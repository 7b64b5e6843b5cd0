"""Resumable training for MONAI/ignite engines: periodic atomic full-state checkpoints and automatic resume.

:class:`ResumableCheckpointer` is an ignite handler (``attach(engine)``, as MONAI's handlers) for
``monai.engines.SupervisedTrainer`` or any custom ``ignite.engine.Engine`` (GAN/diffusion loops).

Resume is at **epoch granularity**: checkpoints are written at the end of an epoch; a run killed in the middle of
epoch ``k + 1`` restarts that epoch from its beginning with exactly the state (weights, optimizer, schedulers, EMA,
random generators) it had after epoch ``k``, so it ends with the same weights as an uninterrupted run
(bit-exact on CPU with ``num_workers=0``; see :mod:`common.training.rng` for workers).

Why not MONAI's ``CheckpointSaver``/``CheckpointLoader`` (or ignite's ``Checkpoint``) directly, though it follows
their logic (``Checkpoint.load_objects``-style loading, ``max_epochs`` kept from the config as in
``CheckpointLoader``, DDP unwrapping, ``{"model": ...}`` layout):

- ``CheckpointSaver`` writes with ``DiskSaver(atomic=False)``: a kill during a save leaves a truncated file;
- ``CheckpointLoader`` needs a fixed ``load_path`` known when the config is written; resuming needs "the newest
  loadable checkpoint in a folder, or nothing", with fallback when the newest is corrupt;
- ignite's ``Checkpoint`` forgets the files of the killed run (``n_saved`` pruning restarts from zero) and neither
  saves the random states of MONAI transforms nor converts numpy RNG arrays for ``weights_only=True`` loading;
- for exact resume the save must run after every other end-of-epoch handler (validation, LR scheduler step),
  and the random states must be restored after every other start handler; this handler re-orders itself for that.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import warnings
from collections.abc import Mapping
from os import PathLike
from pathlib import Path
from typing import Any

import torch
from common.errors import BadInputError
from common.io.atomic import atomic_torch_save
from common.training.checkpoint import (
    DEFAULT_PREFIX,
    apply_state_dicts,
    checkpoint_filename,
    collect_state_dicts,
    list_checkpoints,
    load_training_checkpoint,
    prune_checkpoints,
    remove_stale_temp_files,
    save_training_checkpoint,
    unwrap_stateful,
)
from common.training.distributed import is_distributed, process_rank
from common.training.rng import RNGState
from common.training.run_lock import RunLock
from ignite.engine import Engine, Events

__all__ = ["ResumableCheckpointer", "RESERVED_KEYS", "training_data_fingerprint"]

#: top-level checkpoint keys written by the handler itself; ``save_dict`` must not use them.
RESERVED_KEYS = ("format", "epoch", "iteration", "engine", "rng", "data", "settings")


class ResumableCheckpointer:
    """Save the full training state every ``save_interval_epochs`` epochs and resume from the newest checkpoint.

    At ``Events.STARTED`` (if ``resume``): loads the newest loadable ``<checkpoint_dir>/<prefix>epoch=N.pt`` into
    every object of ``save_dict`` (models, optimizers, LR schedulers, EMA model, GradScaler, ...), sets the
    engine's epoch/iteration (``max_epochs`` stays the configured one, as in MONAI's ``CheckpointLoader``) and, as
    the last ``STARTED`` handler, restores the random generators (Python, numpy, torch, MONAI random transforms of
    the engine's data loader and of ``rng_sources``). It logs what was resumed. A corrupt newest checkpoint is
    skipped with a warning naming the file; if no checkpoint can be loaded, ``BadInputError`` is raised.

    At the end of every ``save_interval_epochs``-th epoch (as the last ``EPOCH_COMPLETED`` handler, i.e. after
    validation and the LR scheduler step) and at ``COMPLETED``: writes a checkpoint atomically (temp file +
    ``os.replace``) and keeps the ``n_saved`` newest. Only rank ``save_on_rank`` writes.

    Args:
        checkpoint_dir: folder of the checkpoints (created if missing).
        save_dict: ``{name: stateful}`` -- anything with ``state_dict()``/``load_state_dict()``; DDP/DataParallel
            are unwrapped; an ``ignite.handlers.EMAHandler`` is stored as its ``ema_model``. An entry holding the
            attached engine itself (MONAI's ``"trainer": "@train#trainer"`` convention) is saved but restored
            through the engine logic (keeping ``max_epochs``). Names in :data:`RESERVED_KEYS` are not allowed.
        save_interval_epochs: save every N epochs (always also at completion).
        n_saved: how many checkpoints to keep (oldest deleted; counts files of earlier runs too).
        rng_sources: extra datasets/loaders/transform chains whose random transforms are captured, in addition
            to the attached engine's data loader; ``None`` for none.
        resume: load the newest checkpoint at start; ``False`` starts a new run from scratch (the checkpoints
            already in the folder are moved to ``<checkpoint_dir>/previous_run_<k>/`` first: nothing is deleted).
        capture_rng: save/restore random generator states (needed for exact resume).
        file_prefix: checkpoint file name prefix (``checkpoint_epoch=3.pt``).
        final_model_path: if given, at completion also write the flat state dict of ``final_model_key`` here
            atomically (``models/model.pt``: the model zoo's form, loaded by MONAI's ``CheckpointLoader``,
            ``ckpt_export`` and MONAI Label).
        final_model_key: which ``save_dict`` entry ``final_model_path`` exports (e.g. ``"ema"`` to ship EMA weights).
        restart_on_new_data: a checkpoint records a fingerprint of the training data (the engine's
            ``data_loader.dataset.data``: case ids, file paths, texts). When the data differ at start (e.g. MONAI Label
            trains again after new labels were added to its datastore), a new run starts instead of resuming the old
            one: the earlier checkpoints are moved to ``<checkpoint_dir>/previous_run_<k>/`` (nothing is deleted)
            and the networks keep the weights they were given (MONAI Label's ``CheckpointLoader`` of
            ``models/model.pt``). ``False`` resumes regardless of the data.
        settings: ``{name: value}`` of the run's settings that a resumed run must share (learning rates, batch
            size, seed, ...; JSON-able values). Stored in every checkpoint; at resume, a checkpoint whose stored
            settings differ raises :class:`~common.errors.BadInputError` naming each differing key with both values
            (an optimizer's state would otherwise silently bring back the old learning rate). Keys the checkpoint does
            not have are not compared; ``max_epochs`` belongs outside (raising it is how a finished run continues).
        lock: take :class:`~common.training.run_lock.RunLock` on ``checkpoint_dir`` at start (writing rank only): a
            second training on the same folder stops with an error naming the first one's process.
        strict: networks must match the checkpoint keys exactly (shape mismatches are always errors).
        map_location: ``torch.load`` map location (default CPU; tensors are copied to the objects' devices).
        save_on_rank: the distributed rank that writes files.
        name: logger name (default: the engine's logger).

    Example (bundle ``train.json``)::

        {"_target_": "common.training.ResumableCheckpointer", "checkpoint_dir": "$@output_dir + '/checkpoints'",
         "save_dict": {"model": "@network", "optimizer": "@optimizer", "lr_scheduler": "@lr_scheduler",
                       "ema": "@ema_handler"},
         "save_interval_epochs": 1, "n_saved": 2, "final_model_path": "$@bundle_root + '/models/model.pt'"}
    """

    def __init__(
        self,
        checkpoint_dir: str | PathLike,
        save_dict: Mapping[str, Any],
        save_interval_epochs: int = 1,
        n_saved: int = 2,
        rng_sources: Any = None,
        resume: bool = True,
        capture_rng: bool = True,
        file_prefix: str = DEFAULT_PREFIX,
        final_model_path: str | PathLike | None = None,
        final_model_key: str = "model",
        strict: bool = True,
        map_location: str | torch.device | None = "cpu",
        save_on_rank: int = 0,
        name: str | None = None,
        restart_on_new_data: bool = True,
        settings: Mapping[str, Any] | None = None,
        lock: bool = True,
    ) -> None:
        if not save_dict:
            raise ValueError("ResumableCheckpointer: save_dict must name at least one object to save")
        clash = [k for k in save_dict if k in RESERVED_KEYS]
        if clash:
            raise ValueError(f"ResumableCheckpointer: save_dict keys {clash} are reserved ({RESERVED_KEYS})")
        if save_interval_epochs < 1 or n_saved < 1:
            raise ValueError("ResumableCheckpointer: save_interval_epochs and n_saved must be >= 1")
        if final_model_path is not None and final_model_key not in save_dict:
            raise ValueError(f"ResumableCheckpointer: final_model_key {final_model_key!r} is not in save_dict")
        self.checkpoint_dir = Path(checkpoint_dir)
        self.save_dict = dict(save_dict)
        self.save_interval_epochs = int(save_interval_epochs)
        self.n_saved = int(n_saved)
        self.rng_sources = rng_sources
        self.resume = resume
        self.capture_rng = capture_rng
        self.file_prefix = file_prefix
        self.final_model_path = None if final_model_path is None else Path(final_model_path)
        self.final_model_key = final_model_key
        self.strict = strict
        self.map_location = map_location
        self.save_on_rank = save_on_rank
        self.restart_on_new_data = bool(restart_on_new_data)
        self.settings = None if settings is None else {str(k): _canonical(v) for k, v in settings.items()}
        self._lock = RunLock(self.checkpoint_dir) if lock else None
        self._name = name
        self.logger = logging.getLogger(name)
        self.rng: RNGState | None = None
        self.engine: Engine | None = None
        self.resumed_from: Path | None = None
        self.last_saved: Path | None = None
        self._last_saved_epoch: int | None = None
        self._pending_rng: Mapping | None = None

    # ------------------------------------------------------------------------------------------------ attach
    def attach(self, engine: Engine) -> None:
        """Register the STARTED (resume), EPOCH_COMPLETED (periodic save) and COMPLETED (final save) handlers."""
        self.engine = engine
        if self._name is None:
            self.logger = engine.logger
        sources: list[Any] = [engine]
        if self.rng_sources is not None:
            sources += list(self.rng_sources) if isinstance(self.rng_sources, (list, tuple)) else [self.rng_sources]
        self.rng = RNGState(sources) if self.capture_rng else None
        engine.add_event_handler(Events.STARTED, self._on_started)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._on_epoch_completed)
        engine.add_event_handler(Events.COMPLETED, self._on_completed)

    @property
    def _objects(self) -> dict[str, Any]:
        """``save_dict`` without entries that are the attached engine (restored by the engine logic)."""
        return {k: v for k, v in self.save_dict.items() if v is not self.engine}

    # ------------------------------------------------------------------------------------------------ events
    def _on_started(self, engine: Engine) -> None:
        if process_rank() == self.save_on_rank:
            if self._lock is not None:  # before anything in the folder is read, removed or written
                self._lock.acquire()
            for p in remove_stale_temp_files(self.checkpoint_dir, self.file_prefix):
                self.logger.warning(f"removed the temporary file of an interrupted checkpoint save: {p}")
        # run the periodic save after every other end-of-epoch handler (validation, LR step, ...)
        engine.remove_event_handler(self._on_epoch_completed, Events.EPOCH_COMPLETED)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._on_epoch_completed)
        if self.resume:
            try:
                self._resume(engine)
            except BaseException:
                if self._lock is not None:
                    self._lock.release()
                raise
        else:
            self._archive_previous_run("resume is false: a new run starts from scratch")
        if self._pending_rng is not None:
            # appended to the STARTED list being fired: runs after every other STARTED handler; the
            # EPOCH_STARTED guard covers the case where another handler replaced that list meanwhile.
            engine.add_event_handler(Events.STARTED, self._restore_rng)
            engine.add_event_handler(Events.EPOCH_STARTED, self._restore_rng)

    def _restore_rng(self, engine: Engine) -> None:
        for event in (Events.STARTED, Events.EPOCH_STARTED):
            try:
                engine.remove_event_handler(self._restore_rng, event)
            except ValueError:
                pass
        if self._pending_rng is None or self.rng is None:
            return
        counts = self.rng.load_state_dict(self._pending_rng)
        self._pending_rng = None
        self.logger.info(
            f"Restored random generators: python/numpy/torch, {counts['transforms']} random transform(s), "
            f"{counts['generators']} torch.Generator(s)"
        )

    def _on_epoch_completed(self, engine: Engine) -> None:
        if engine.state.epoch % self.save_interval_epochs == 0:
            self.save(engine)

    def _on_completed(self, engine: Engine) -> None:
        length = engine.state.epoch_length
        at_epoch_end = length is None or engine.state.iteration == engine.state.epoch * length
        if not at_epoch_end:  # engine.terminate() in the middle of an epoch: not a resumable state
            self.logger.warning(
                f"Training stopped in the middle of epoch {engine.state.epoch}; no checkpoint for it (resume is at "
                "epoch granularity)"
            )
        elif self._last_saved_epoch != engine.state.epoch:
            self.save(engine)
        if self.final_model_path is not None and process_rank() == self.save_on_rank:
            target = unwrap_stateful(self.save_dict[self.final_model_key])
            atomic_torch_save(target.state_dict(), self.final_model_path)
            self.logger.info(f"Saved the final {self.final_model_key!r} weights to {self.final_model_path}")
        if self._lock is not None:
            self._lock.release()

    # ------------------------------------------------------------------------------------------------ save
    def checkpoint_path(self, epoch: int) -> Path:
        """Path of the checkpoint of ``epoch``."""
        return self.checkpoint_dir / checkpoint_filename(epoch, self.file_prefix)

    def state_dict_of(self, engine: Engine) -> dict[str, Any]:
        """The full training state that :meth:`save` writes (``weights_only``-safe)."""
        state = collect_state_dicts(self.save_dict)
        state["engine"] = dict(engine.state_dict())
        state["epoch"] = int(engine.state.epoch)
        state["iteration"] = int(engine.state.iteration)
        if self.rng is not None:
            state["rng"] = self.rng.state_dict()
        data = training_data_fingerprint(engine)
        if data is not None:
            state["data"] = data
        if self.settings is not None:
            state["settings"] = dict(self.settings)
        return state

    def save(self, engine: Engine) -> Path | None:
        """Write the checkpoint of the current epoch atomically and prune old ones; returns its path."""
        self._last_saved_epoch = engine.state.epoch
        if process_rank() != self.save_on_rank:
            return None
        path = save_training_checkpoint(self.checkpoint_path(engine.state.epoch), self.state_dict_of(engine))
        removed = prune_checkpoints(self.checkpoint_dir, self.n_saved, self.file_prefix)
        self.last_saved = path
        self.logger.info(
            f"Saved checkpoint {path} (epoch {engine.state.epoch}, iteration {engine.state.iteration})"
            + (f"; removed {', '.join(p.name for p in removed)}" if removed else "")
        )
        return path

    # ------------------------------------------------------------------------------------------------ resume
    def _data_changed(self, engine: Engine, path: Path, ckpt: Mapping[str, Any]) -> bool:
        """True (and the old run's checkpoints archived by the writing rank) when the checkpoint was trained on other
        data than the engine's; False when they match or either side has no fingerprint."""
        now, then = training_data_fingerprint(engine), ckpt.get("data")
        changed = now is not None and isinstance(then, Mapping) and then.get("sha256") != now["sha256"]
        if is_distributed():
            # one decision for all ranks (the writing rank's), and every rank has finished reading the old
            # checkpoints before the writing rank moves them
            decision = [changed]
            torch.distributed.broadcast_object_list(decision, src=self.save_on_rank)
            changed = bool(decision[0])
            torch.distributed.barrier()
        if not changed:
            return False
        self._archive_previous_run(
            f"{path}: that run trained on other data ({then.get('cases')} case(s), now {now and now['cases']}): "
            "starting a new run instead of resuming it"
        )
        return True

    def _archive_previous_run(self, reason: str) -> Path | None:
        """Move the folder's checkpoints to ``previous_run_<k>/`` (writing rank; nothing is deleted) and log
        ``reason``; returns the archive folder, ``None`` when there was nothing to move."""
        found = list_checkpoints(self.checkpoint_dir, self.file_prefix)
        if not found:
            return None
        archive = None
        if process_rank() == self.save_on_rank:
            k = 1
            while (self.checkpoint_dir / f"previous_run_{k}").exists():
                k += 1
            archive = self.checkpoint_dir / f"previous_run_{k}"
            archive.mkdir()
            for _, old in found:
                shutil.move(str(old), str(archive / old.name))
        self.logger.warning(reason + (f"; the earlier checkpoints were moved to {archive}" if archive else ""))
        return archive

    def _check_settings(self, path: Path, ckpt: Mapping[str, Any]) -> None:
        """Raise when the checkpoint's stored settings differ from this run's (names every differing key)."""
        stored = ckpt.get("settings")
        if self.settings is None or not isinstance(stored, Mapping):
            return
        differ = [k for k in self.settings if k in stored and stored[k] != self.settings[k]]
        if differ:
            changes = ", ".join(f"{k}: {stored[k]!r} in the checkpoint, {self.settings[k]!r} now" for k in differ)
            raise BadInputError(
                path,
                f"this run's settings differ from the checkpoint's ({changes}); resuming would mix them (the "
                "optimizer state brings back the old values). Set them back to resume, or set resume false to start "
                "a new run (the earlier checkpoints are then moved to previous_run_<k>/, nothing is deleted)",
            )

    def _load_newest(self) -> tuple[Path, dict] | None:
        found = list_checkpoints(self.checkpoint_dir, self.file_prefix)
        if not found:
            return None
        required = ("engine", "epoch", *self.save_dict.keys()) + (("rng",) if self.capture_rng else ())
        failures = []
        for _, path in reversed(found):
            try:
                return path, load_training_checkpoint(path, required_keys=required, map_location=self.map_location)
            except BadInputError as e:
                failures.append(f"{path.name} ({e.problem})")
                msg = f"{path}: cannot resume from this checkpoint: {e.problem}; trying the previous one"
                self.logger.warning(msg)
                warnings.warn(msg, RuntimeWarning, stacklevel=2)
        raise BadInputError(
            self.checkpoint_dir,
            f"none of the {len(found)} checkpoint(s) can be loaded: {'; '.join(failures)}. Delete them to start "
            "from scratch, or set resume=false",
        )

    def _resume(self, engine: Engine) -> None:
        loaded = self._load_newest()
        if loaded is None:
            self.logger.info(f"No checkpoint in {self.checkpoint_dir}: training starts from scratch")
            return
        path, ckpt = loaded
        if self.restart_on_new_data and self._data_changed(engine, path, ckpt):
            return
        self._check_settings(path, ckpt)
        epoch = int(ckpt["epoch"])
        prior_max_epochs, prior_max_iters = engine.state.max_epochs, engine.state.max_iters
        if prior_max_epochs is not None and epoch > prior_max_epochs:
            raise BadInputError(
                path,
                f"checkpoint is at epoch {epoch} but max_epochs is {prior_max_epochs}; raise max_epochs to continue "
                "training, or use another checkpoint_dir to start a new run",
            )
        apply_state_dicts(self._objects, ckpt, str(path), strict=self.strict)

        saved_engine = dict(ckpt["engine"])
        epoch_length = engine.state.epoch_length or saved_engine.get("epoch_length")
        if saved_engine.get("epoch_length") not in (None, epoch_length):
            self.logger.warning(
                f"{path}: epoch length was {saved_engine['epoch_length']} iterations, now {epoch_length} (the dataset "
                "changed?); the iteration counter is recomputed as epoch * new length"
            )
        engine_state = {k: v for k, v in saved_engine.items() if k in engine.state_dict_user_keys}
        engine_state.update(epoch_length=epoch_length, iteration=epoch * epoch_length)
        if prior_max_iters is not None:
            engine_state["max_iters"] = prior_max_iters
        else:
            engine_state["max_epochs"] = (
                prior_max_epochs if prior_max_epochs is not None else saved_engine.get("max_epochs", epoch)
            )
        engine.load_state_dict(engine_state)
        if prior_max_iters is None:
            engine.state.max_epochs = prior_max_epochs if prior_max_epochs is not None else engine.state.max_epochs

        self._pending_rng = ckpt.get("rng") if self.rng is not None else None
        self._last_saved_epoch = epoch
        self.resumed_from = path
        restored = ", ".join(
            list(self._objects)
            + ["engine (epoch/iteration)"]
            + (["random generators"] if self._pending_rng is not None else [])
        )
        total = engine.state.max_epochs if prior_max_iters is None else f"{prior_max_iters} iterations"
        if prior_max_epochs is not None and epoch >= prior_max_epochs:
            self.logger.warning(
                f"Resumed from {path}: training already finished ({epoch}/{total} epochs); nothing to train. Raise "
                "max_epochs to continue, or use another checkpoint_dir"
            )
        else:
            self.logger.info(
                f"Resumed from {path}: epoch {epoch}/{total} done, iteration {epoch * epoch_length}; restored "
                f"{restored}. Training continues at epoch {epoch + 1} (resume is at epoch granularity: an "
                "interrupted epoch is re-run from its start)"
            )


class _Unhashable(Exception):
    """An item holds a value without a stable serialisation: no fingerprint."""


def _canonical(value: Any) -> Any:
    """A JSON-able, run-independent form of a datalist value: arrays/tensors by dtype, shape and content hash,
    absolute paths by their file name (a dataset mounted elsewhere is the same data), containers recursively."""
    import numpy as np

    if isinstance(value, (torch.Tensor, np.ndarray)):
        arr = value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else value
        arr = np.ascontiguousarray(arr)
        return {"array": str(arr.dtype), "shape": list(arr.shape), "sha256": hashlib.sha256(arr.tobytes()).hexdigest()}
    if isinstance(value, (str, PathLike)):
        text = str(value)
        return Path(text).name if Path(text).is_absolute() else text
    if value is None or isinstance(value, (bool, int, float)):
        return value
    if isinstance(value, Mapping):
        return {str(k): _canonical(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    raise _Unhashable(type(value).__name__)


def training_data_fingerprint(engine: Engine) -> dict[str, Any] | None:
    """``{"sha256", "cases"}`` of the list of training items behind ``engine``'s data loader (MONAI datasets keep it as
    ``dataset.data``: case ids, paths, texts), or ``None`` when the loader has no such list or an item holds a value
    without a stable form. Absolute paths count by file name, arrays by content, so the same datalist gives the same
    fingerprint on every rank, in every process and wherever the dataset is mounted."""
    loader = getattr(engine.state, "dataloader", None) or getattr(engine, "data_loader", None)
    data = getattr(getattr(loader, "dataset", None), "data", None)
    if data is None or not isinstance(data, (list, tuple)):
        return None
    h = hashlib.sha256()
    try:
        for item in data:
            h.update(json.dumps(_canonical(item), sort_keys=True).encode())
            h.update(b"\n")
    except _Unhashable:
        return None
    return {"sha256": h.hexdigest(), "cases": len(data)}
