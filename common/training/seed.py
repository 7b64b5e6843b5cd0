"""Seeding for reproducible training, built on :func:`monai.utils.set_determinism`."""

from __future__ import annotations

import os

import torch
from monai.utils import set_determinism

__all__ = ["seed_everything"]


def seed_everything(seed: int, deterministic: bool = True, warn_only: bool = True) -> int:
    """Seed Python ``random``, numpy and torch (CPU + CUDA) and choose deterministic kernels.

    Calls ``monai.utils.set_determinism(seed)`` (which also sets ``cudnn.deterministic=True``,
    ``cudnn.benchmark=False``). With ``deterministic`` it additionally calls
    ``torch.use_deterministic_algorithms(True, warn_only=warn_only)`` and sets ``CUBLAS_WORKSPACE_CONFIG`` (needed
    by deterministic cuBLAS; effective only if CUDA is not initialised yet). ``warn_only=True`` warns instead of
    failing for ops without a deterministic implementation (some CUDA backward kernels). Without
    ``deterministic``, cuDNN autotuning (``benchmark=True``) is re-enabled for speed.

    MONAI random transforms have their own random states: MONAI's ``DataLoader`` seeds them from the torch
    generator when it is built, so call this before the data loaders are created (in a bundle: the first
    ``initialize`` expression, ``"$common.training.seed_everything(@seed)"``).

    Returns:
        the seed actually used (``seed % 2**32``, as MONAI).
    """
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    set_determinism(seed=seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=warn_only)
    else:
        torch.use_deterministic_algorithms(False)
        torch.backends.cudnn.deterministic = False
        torch.backends.cudnn.benchmark = True
    return int(seed) % (2**32)
