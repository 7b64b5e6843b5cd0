"""Where this process stands in a ``torch.distributed`` run (torchrun), for code that also runs without one.

Single place for the "is a process group up, and which rank am I" test that checkpoint writers, reporting handlers
and rank-0-only file writers need; without a process group (one GPU, CPU, MONAI Label) the process is rank 0.
"""

from __future__ import annotations

import torch

__all__ = ["is_distributed", "process_rank"]


def is_distributed() -> bool:
    """A ``torch.distributed`` process group is initialised in this process."""
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def process_rank() -> int:
    """This process's rank in the default group; 0 without a process group."""
    return torch.distributed.get_rank() if is_distributed() else 0
