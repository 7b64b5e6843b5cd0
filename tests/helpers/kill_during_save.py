"""Save checkpoint epoch 1 normally, then start saving epoch 2 and hang in the middle of it.

Used by tests/common/training/test_training_resume.py: the test SIGKILLs this process while ``<dir>/saving`` exists,
i.e. while the second ``torch.save`` is in progress, and checks that the first checkpoint is intact and the latest
loadable one.

Usage: python kill_during_save.py <checkpoint_dir>
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch
from common.training.checkpoint import checkpoint_filename, save_training_checkpoint


class _HangWhilePickled:
    """Pickling this object (inside torch.save, after the file was opened) signals the test and hangs."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        self.marker.write_text("torch.save in progress\n")
        time.sleep(120)
        return (int, (0,))


def main(folder: str) -> None:
    out = Path(folder)
    engine_state = {"epoch_length": 2, "iteration": 2, "max_epochs": 2}
    save_training_checkpoint(
        out / checkpoint_filename(1), {"model": {"w": torch.zeros(256)}, "epoch": 1, "engine": engine_state}
    )
    save_training_checkpoint(
        out / checkpoint_filename(2),
        {
            "model": {"w": torch.ones(256)},
            "epoch": 2,
            "engine": engine_state,
            "hang": _HangWhilePickled(out / "saving"),
        },
    )


if __name__ == "__main__":
    main(sys.argv[1])
