"""Training support shared by all bundles: resumable checkpoints, random states, seeding, logging handlers.

- :mod:`common.training.checkpoint` -- atomic full-state checkpoints, ``weights_only=True`` loading, keep-last-n.
- :mod:`common.training.rng` -- :class:`RNGState`: Python/numpy/torch generators + MONAI random transforms.
- :mod:`common.training.resume` -- :class:`ResumableCheckpointer`, the ignite handler that saves and resumes.
- :mod:`common.training.seed` -- :func:`seed_everything` (``monai.utils.set_determinism`` + deterministic kernels).
- :mod:`common.training.distributed` -- :func:`is_distributed`, :func:`process_rank` (0 without torchrun).
- :mod:`common.training.handlers` -- epoch loss, progress bar, the standard handler list, rank-0-only reporting.
"""

from common.training.checkpoint import (
    CHECKPOINT_FORMAT,
    apply_state_dicts,
    checkpoint_filename,
    collect_state_dicts,
    find_latest_checkpoint,
    list_checkpoints,
    load_training_checkpoint,
    prune_checkpoints,
    remove_stale_temp_files,
    save_training_checkpoint,
    to_weights_only_safe,
)
from common.training.distributed import is_distributed, process_rank
from common.training.handlers import (
    AttachHandler,
    EpochAverageLoss,
    LossOutput,
    ProgressBarHandler,
    RankZeroTensorBoardStatsHandler,
    handlers_for_this_rank,
    standard_train_handlers,
)
from common.training.resume import ResumableCheckpointer
from common.training.rng import RNGState, find_random_states, get_global_rng_state, set_global_rng_state
from common.training.seed import seed_everything

__all__ = [
    "CHECKPOINT_FORMAT",
    "apply_state_dicts",
    "checkpoint_filename",
    "collect_state_dicts",
    "find_latest_checkpoint",
    "list_checkpoints",
    "load_training_checkpoint",
    "prune_checkpoints",
    "remove_stale_temp_files",
    "save_training_checkpoint",
    "to_weights_only_safe",
    "AttachHandler",
    "EpochAverageLoss",
    "is_distributed",
    "process_rank",
    "LossOutput",
    "ProgressBarHandler",
    "RankZeroTensorBoardStatsHandler",
    "handlers_for_this_rank",
    "standard_train_handlers",
    "ResumableCheckpointer",
    "RNGState",
    "find_random_states",
    "get_global_rng_state",
    "set_global_rng_state",
    "seed_everything",
]
