"""Case-level K-fold cross-validation splits (bundles/diffboost/docs/sources.md §1.3) shared by the busi and msd_slices
converters.

Not a converter module (leading underscore: skipped by the registry's discovery).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from common.data.datalist import kfold_splits
from common.errors import BadInputError

__all__ = ["FOLD_OPTIONS", "cross_validation_split"]

#: converter options of the fold split: name -> (default, help)
FOLD_OPTIONS = {
    "n_folds": (
        3,
        "K of the case-level K-fold split (sklearn KFold(K), no shuffle, in source order); 0 = seeded split",
    ),
    "fold": (
        0,
        "which fold is held out as 'test' in datalist.json (every fold is also written to datalist_fold<k>.json)",
    ),
}


def cross_validation_split(
    case_ids: Sequence[str], n_folds: int, fold: int, val_fraction: float, seed: int
) -> dict[str, list[str]]:
    """``training`` / ``validation`` / ``test`` case ids of fold ``fold`` of a case-level K-fold split.

    ``test`` = the held-out block of :func:`common.data.datalist.kfold_splits` (``KFold(n_folds)`` without shuffling,
    over ``case_ids`` in the given order, as the DiffBoost code). The authors select checkpoints on that same held-out
    fold; here ``validation`` is carved from the remaining cases instead (``val_fraction`` of them, seeded; 0 keeps
    the authors' setting of no separate validation cases) -- a documented deviation. Lists keep the input order.

    Raises:
        BadInputError: a fold index outside ``[0, n_folds)`` or too few cases.
    """
    if not isinstance(fold, int) or not 0 <= fold < n_folds:
        raise BadInputError("fold", f"must be an integer in [0, {n_folds}), got {fold!r}")
    if not 0.0 <= val_fraction < 1.0:
        raise BadInputError("val_fraction", f"must be in [0, 1), got {val_fraction}")
    train, test = kfold_splits(list(case_ids), n_folds)[fold]
    n_val = int(np.floor(val_fraction * len(train) + 0.5))
    if val_fraction > 0 and n_val == 0 and len(train) >= 2:
        n_val = 1
    if len(train) - n_val < 1:
        raise BadInputError("case_ids", f"{len(case_ids)} case(s) leave none for training in fold {fold}")
    chosen = set(np.random.default_rng(seed).permutation(len(train))[:n_val].tolist())
    return {
        "training": [c for i, c in enumerate(train) if i not in chosen],
        "validation": [c for i, c in enumerate(train) if i in chosen],
        "test": list(test),
    }
