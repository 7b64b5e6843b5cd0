"""Progress display and TensorBoard logging for training engines, from MONAI/ignite handlers.

MONAI bundles list handlers in ``train#handlers`` and the workflow calls ``handler.attach(engine)`` on each.
MONAI's ``StatsHandler``, ``TensorBoardStatsHandler`` and ``LrScheduleHandler`` fit that directly. Two small
adapters are added here because their ignite counterparts need extra ``attach`` arguments a config cannot pass:

- :class:`EpochAverageLoss` -- ignite's ``Average`` metric of the iteration loss, attached under a name so
  ``StatsHandler``/``TensorBoardStatsHandler`` report the **epoch** loss next to the iteration loss;
- :class:`ProgressBarHandler` -- ignite's tqdm ``ProgressBar`` showing the loss; hidden when stderr is not a
  terminal (``disable=None``), so log files of non-interactive runs (MONAI Label, CI) stay clean.

:func:`standard_train_handlers` builds the usual list for Python-built engines (GAN/diffusion loops). In a bundle
config, write the same list in JSON (MONAI Label inserts its ``CheckpointLoader`` into that list, so it must be a
list, not a ``$`` expression)::

    "handlers": [
      {"_target_": "common.training.EpochAverageLoss", "name": "train_loss_epoch"},
      {"_target_": "LrScheduleHandler", "lr_scheduler": "@lr_scheduler", "print_lr": true},
      {"_target_": "StatsHandler", "tag_name": "train_loss",
       "output_transform": "$common.training.LossOutput('loss')"},
      {"_target_": "TensorBoardStatsHandler", "log_dir": "@output_dir", "tag_name": "train_loss",
       "output_transform": "$common.training.LossOutput('loss')"},
      {"_target_": "common.training.ProgressBarHandler"}
    ]
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from common.training.distributed import process_rank
from ignite.engine import Engine
from ignite.handlers import ProgressBar
from ignite.metrics import Average
from monai.handlers import LrScheduleHandler, StatsHandler, TensorBoardStatsHandler

__all__ = [
    "AttachHandler",
    "LossOutput",
    "EpochAverageLoss",
    "ProgressBarHandler",
    "RankZeroTensorBoardStatsHandler",
    "handlers_for_this_rank",
    "standard_train_handlers",
]

#: handlers that only report (console statistics, TensorBoard event files, progress bar): one rank is enough
REPORTING_HANDLERS = (StatsHandler, TensorBoardStatsHandler)


class LossOutput:
    """``output_transform`` returning the loss of an engine output as a float.

    Works for MONAI trainers (``state.output`` is a dict, or a list of dicts after decollation) and custom ignite
    engines returning a dict, a tensor or a number. Picklable (unlike a lambda).

    Args:
        key: the loss entry of a dict output (e.g. ``"loss"``, ``"loss_g"`` for a GAN generator).
    """

    def __init__(self, key: str = "loss") -> None:
        self.key = key

    def __call__(self, output: Any) -> float:
        if isinstance(output, Sequence) and not isinstance(output, (str, torch.Tensor)) and output:
            output = output[0]
        if isinstance(output, Mapping):
            output = output[self.key]
        return float(output.detach().float().mean()) if isinstance(output, torch.Tensor) else float(output)


class EpochAverageLoss:
    """Average of the iteration loss over each epoch, stored in ``engine.state.metrics[name]``.

    Attach it before ``StatsHandler``/``TensorBoardStatsHandler`` (earlier in ``train#handlers``) so their epoch
    logs include it. Wraps ``ignite.metrics.Average``.
    """

    def __init__(self, name: str = "train_loss_epoch", output_transform: Any = None) -> None:
        self.name = name
        self.output_transform = output_transform if output_transform is not None else LossOutput("loss")

    def attach(self, engine: Engine) -> None:
        Average(output_transform=self.output_transform).attach(engine, self.name)


class ProgressBarHandler:
    """ignite's tqdm ``ProgressBar`` with the loss, attachable by MONAI workflows (``attach(engine)`` only).

    Args:
        output_transform: what to show (default: the ``"loss"`` entry as a float).
        persist: keep the bar after each epoch.
        tqdm_kwargs: passed to tqdm; default ``disable=None`` hides the bar when stderr is not a terminal.
    """

    def __init__(self, output_transform: Any = None, persist: bool = False, **tqdm_kwargs: Any) -> None:
        self.output_transform = output_transform if output_transform is not None else LossOutput("loss")
        tqdm_kwargs.setdefault("disable", None)
        self.bar = ProgressBar(persist=persist, **tqdm_kwargs)

    def attach(self, engine: Engine) -> None:
        self.bar.attach(engine, output_transform=lambda out: {"loss": self.output_transform(out)})


def standard_train_handlers(
    log_dir: str | None = None,
    lr_scheduler: Any = None,
    epoch_level_lr: bool = True,
    loss_key: str = "loss",
    tag_name: str = "train_loss",
    progress_bar: bool = True,
    iteration_log: bool | int = True,
) -> list:
    """The usual training handler list: epoch-average loss, LR schedule, console stats, TensorBoard, progress bar.

    Args:
        log_dir: TensorBoard folder; ``None`` skips TensorBoard.
        lr_scheduler: a torch LR scheduler stepped by ``monai.handlers.LrScheduleHandler`` (``None`` skips).
        epoch_level_lr: step the scheduler per epoch (else per iteration).
        loss_key: the loss entry of the engine output.
        tag_name: name of the iteration loss in logs.
        progress_bar: add :class:`ProgressBarHandler`.
        iteration_log: log every iteration (``True``), never (``False``) or every N iterations (TensorBoard).

    Returns:
        handlers to pass as ``train_handlers`` to a MONAI trainer, or to ``h.attach(engine)`` one by one.
    """
    out_t = LossOutput(loss_key)
    handlers: list = [EpochAverageLoss(f"{tag_name}_epoch", out_t)]
    if lr_scheduler is not None:
        handlers.append(LrScheduleHandler(lr_scheduler, print_lr=True, epoch_level=epoch_level_lr))
    handlers.append(StatsHandler(tag_name=tag_name, output_transform=out_t, iteration_log=bool(iteration_log)))
    if log_dir is not None:
        handlers.append(
            TensorBoardStatsHandler(
                log_dir=log_dir, tag_name=tag_name, output_transform=out_t, iteration_log=iteration_log
            )
        )
    if progress_bar:
        handlers.append(ProgressBarHandler(out_t))
    return handlers


def handlers_for_this_rank(handlers: Sequence[Any] | None, rank: int | None = None) -> list[Any]:
    """``handlers`` as the distributed rank ``rank`` should attach them: all of them on rank 0 (or without
    ``torch.distributed``); on the other ranks without the reporting handlers (``StatsHandler``,
    ``TensorBoardStatsHandler``, :class:`ProgressBarHandler`), which would otherwise print every line once per rank and
    write one TensorBoard event file per rank into the same folder.

    Used by every bundle's ``configs/multi_gpu_train.json`` as
    ``"train#trainer#train_handlers": "$common.training.handlers_for_this_rank(@train#handlers)"``: it filters by
    type, not by position, so a handler MONAI Label inserts into ``train#handlers`` (its ``CheckpointLoader`` at
    index 0) is kept on every rank. Checkpoint writers decide themselves (``ResumableCheckpointer(save_on_rank=0)``).

    Args:
        handlers: the configured handler list (``None`` -> ``[]``).
        rank: the process rank; ``None`` reads ``torch.distributed`` (0 when it is not initialised).
    """
    handlers = list(handlers or [])
    if rank is None:
        rank = process_rank()
    if rank == 0:
        return handlers
    return [h for h in handlers if not isinstance(h, (*REPORTING_HANDLERS, ProgressBarHandler))]


class _NullSummaryWriter:
    """Accepts every ``SummaryWriter`` call and writes nothing (the writer of a non-zero rank)."""

    def __getattr__(self, name: str) -> Any:
        return lambda *args, **kwargs: None


class RankZeroTensorBoardStatsHandler(TensorBoardStatsHandler):
    """MONAI's ``TensorBoardStatsHandler`` whose event file exists on distributed rank 0 only.

    MONAI's handler opens its ``SummaryWriter`` (and so creates an ``events.out.tfevents.*`` file) when it is
    constructed, i.e. when a bundle config is parsed, on every torchrun rank: removing it from the trainer's handler
    list afterwards (:func:`handlers_for_this_rank`) is too late. On ranks > 0 this subclass gets a writer that
    discards everything. Without ``torch.distributed`` (one GPU, CPU, MONAI Label) it is MONAI's handler unchanged.
    Same arguments as ``monai.handlers.TensorBoardStatsHandler``.
    """

    def __init__(self, summary_writer: Any = None, log_dir: str = "./runs", **kwargs: Any) -> None:
        if summary_writer is None and process_rank() != 0:
            summary_writer = _NullSummaryWriter()
        super().__init__(summary_writer=summary_writer, log_dir=log_dir, **kwargs)


class AttachHandler:
    """A ``train#handlers`` entry for a handler defined elsewhere in the config: ``attach(engine)`` attaches it.

    Bundle configs define some handlers at top level because other components need them too (e.g. an ignite
    ``EMAHandler`` whose ``ema_model`` the checkpointer saves). Listing them as ``"@ema"`` works for
    ``monai.bundle run``, but MONAI Label edits ``train#handlers`` as a list of dicts (it calls ``.get`` on every
    entry to find its ``CheckpointLoader``), so a bare reference makes its training request fail. Write instead::

        {"_target_": "common.training.AttachHandler", "handler": "@ema"}

    Args:
        handler: anything with ``attach(engine)`` (MONAI handlers, ignite ``EMAHandler`` with its defaults).
    """

    def __init__(self, handler: Any) -> None:
        if not callable(getattr(handler, "attach", None)):
            raise TypeError(f"AttachHandler: {type(handler).__name__} has no attach(engine) method")
        self.handler = handler

    def attach(self, engine: Engine) -> None:
        self.handler.attach(engine)
