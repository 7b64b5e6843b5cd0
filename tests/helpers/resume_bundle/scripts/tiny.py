"""Synthetic in-memory data and a pause handler for the resume test bundle
(tests/common/training/test_training_resume.py)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from ignite.engine import Engine, Events


def synthetic_data(n: int = 8, size: int = 32, seed: int = 0) -> list[dict]:
    """``n`` cases of a noisy disc image ``[1, size, size]`` float32 and its mask ``[1, size, size]`` (0/1)."""
    rs = np.random.RandomState(seed)
    yy, xx = np.mgrid[:size, :size]
    data = []
    for i in range(n):
        cy, cx, r = rs.randint(8, size - 8), rs.randint(8, size - 8), rs.randint(3, 7)
        mask = ((yy - cy) ** 2 + (xx - cx) ** 2 <= r * r).astype(np.float32)[None]
        image = (mask + 0.3 * rs.randn(1, size, size)).astype(np.float32)
        data.append({"image": image, "label": mask, "case_id": f"case_{i:02d}"})
    return data


class PauseHandler:
    """In epoch ``pause_epoch``, after ``pause_iteration`` iterations of it: write ``marker`` and sleep.

    The test then kills the process with SIGKILL: a crash in the middle of an epoch, after the checkpoint of the
    previous epoch was written. ``pause_epoch=0`` disables it.
    """

    def __init__(self, pause_epoch: int = 0, marker: str = "paused", pause_iteration: int = 2, sleep_s: float = 120):
        self.pause_epoch, self.marker, self.pause_iteration, self.sleep_s = (
            pause_epoch,
            marker,
            pause_iteration,
            sleep_s,
        )

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.ITERATION_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        in_epoch = (engine.state.iteration - 1) % engine.state.epoch_length + 1
        if engine.state.epoch == self.pause_epoch and in_epoch == self.pause_iteration:
            Path(self.marker).write_text(f"epoch {engine.state.epoch} iteration {engine.state.iteration}\n")
            time.sleep(self.sleep_s)
