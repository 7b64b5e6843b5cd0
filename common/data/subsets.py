"""Label-efficient training subsets: a seeded random choice of N labelled training cases, recorded to a file.

Used by TextDiff (paper §3: 5 MoNuSeg / 150 QaTa training images, "randomly selected"; bundles/textdiff/docs/sources.md
§8 c) and by any bundle that trains on a few labelled images.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from os import PathLike

from common.errors import BadInputError
from common.io.atomic import atomic_write_json

__all__ = ["select_training_subset", "write_training_subset"]


def select_training_subset(cases: Sequence[dict], num_cases: int | None, seed: int = 40) -> list[dict]:
    """A seeded random subset of ``num_cases`` training cases (all if ``None``), in datalist order.

    Which images the paper used is not released (bundles/textdiff/docs/sources.md §8 c); we draw them with Python's
    ``random.Random(seed)`` (seed 40 = the official default) from the datalist's ``training`` split. Nothing is
    written here (a config builds this list before its dataset check): :func:`write_training_subset` records it once
    the run has started.

    Raises:
        BadInputError: ``num_cases`` is not positive or exceeds the number of training cases.
    """
    cases = list(cases)
    if num_cases is None:
        return cases
    n = int(num_cases)
    if not 1 <= n <= len(cases):
        raise BadInputError("num_train_cases", f"asked for {n} training cases but the training split has {len(cases)}")
    picked = sorted(random.Random(int(seed)).sample(range(len(cases)), n))
    return [cases[i] for i in picked]


def write_training_subset(chosen: Sequence[dict], seed: int, record_path: str | PathLike) -> bool:
    """Write the chosen case ids (JSON ``{"seed", "num_cases", "case_ids"}``) to ``record_path`` so a run can be
    reproduced and reported; ``True`` (usable as a config ``initialize`` step, after the dataset check)."""
    atomic_write_json(
        record_path,
        {"seed": seed, "num_cases": len(chosen), "case_ids": [str(c.get("case_id", c.get("image"))) for c in chosen]},
    )
    return True
