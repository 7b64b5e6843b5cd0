"""The project's datalist format: a MONAI Decathlon-style JSON file with one entry per case and a sentence per case.

A datalist is readable by :func:`monai.data.load_decathlon_datalist` (paths are relative to the datalist's folder,
or absolute) and carries the metadata the bundles need::

    {
      "name": "MoNuSeg",                        # dataset name
      "description": "...",                     # free text (where it came from, how it was converted)
      "source_layout": "monuseg-2018",          # the converter / layout it was made from
      "spatial_dims": 2,                        # 2 or 3
      "modality": {"0": "H&E"},                 # channel index -> name (as in MSD dataset.json)
      "labels": {"0": "background", "1": "nucleus"},
      "training":   [{"case_id": "...", "image": "imagesTr/x.png", "label": "labelsTr/x.png",
                      "text": "The nuclei are evenly distributed.", "text_source": "generated"}, ...],
      "validation": [...],                      # same entry format
      "test":       [...]                       # same, "label" optional
    }

Entries may carry extra keys (``text_source`` = "dataset" | "generated", ``fold``, ...). ``unlabelled`` (images
without labels) and any further top-level list of objects are splits too; ``label`` is optional in ``test`` and
``unlabelled``. Other top-level keys are metadata (e.g. ``image_channels``, ``label_mapping`` of the MSD converter).
Caveat inherited from MONAI: :func:`monai.data.load_decathlon_datalist` turns any string value that names an
existing path relative to the datalist folder into an absolute path, so converters never write folders named like a
case id or a text next to the datalist.

This module also holds the deterministic case-level splitting used by every converter (:func:`split_cases`) and a
dependency-free re-implementation of ``sklearn.model_selection.KFold(shuffle=False)`` (:func:`kfold_splits`;
scikit-learn is not a project dependency) used for DiffBoost's 3-fold CV (bundles/diffboost/docs/sources.md §1.3).
"""

from __future__ import annotations

import copy
import json
import math
import os
from collections import Counter
from collections.abc import Mapping, Sequence
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np
from common.errors import BadInputError, format_problems
from common.io.atomic import atomic_path

__all__ = [
    "DATALIST_FILENAME",
    "STANDARD_SPLITS",
    "UNLABELLED_SPLITS",
    "datalist_splits",
    "kfold_splits",
    "load_datalist",
    "read_datalist",
    "split_cases",
    "validate_datalist",
    "write_datalist",
]

#: file name converters give the datalist inside their output folder
DATALIST_FILENAME = "datalist.json"
#: named splits of the format, in this order
STANDARD_SPLITS: tuple[str, ...] = ("training", "validation", "test")
#: splits whose entries may lack a ``label``
UNLABELLED_SPLITS: frozenset[str] = frozenset({"test", "unlabelled"})
#: top-level keys every datalist has (besides the splits)
REQUIRED_TOP_KEYS: tuple[str, ...] = ("name", "description", "source_layout", "spatial_dims", "modality", "labels")
#: keys every entry has (``label`` too, except in :data:`UNLABELLED_SPLITS`)
REQUIRED_ENTRY_KEYS: tuple[str, ...] = ("case_id", "image", "text")


def _is_split(key: str, value: Any) -> bool:
    """A split is a standard split name, ``unlabelled``, or any other top-level list of objects."""
    if key in STANDARD_SPLITS or key in UNLABELLED_SPLITS:
        return True
    return isinstance(value, list) and bool(value) and all(isinstance(v, Mapping) for v in value)


def datalist_splits(datalist: Mapping[str, Any]) -> list[str]:
    """Names of the splits of a datalist document, in file order."""
    return [k for k, v in datalist.items() if _is_split(k, v)]


def _resolve(base: Path, value: Any) -> Any:
    """Join a stored path (or list of paths, for multi-channel images) with ``base``; absolute paths stay."""
    if isinstance(value, list):
        return [_resolve(base, v) for v in value]
    return os.path.normpath(os.path.join(base, value))


def validate_datalist(
    datalist: Mapping[str, Any], source: str | PathLike, base_dir: str | PathLike | None = None
) -> None:
    """Check the structure of a datalist document; raise :class:`BadInputError` naming ``source`` on a problem.

    Args:
        datalist: the parsed JSON document.
        source: the datalist file (used in error messages).
        base_dir: when given, every ``image``/``label`` path (relative to ``base_dir``) must exist.

    Checks: required top-level keys, ``spatial_dims`` in {2, 3}, ``labels`` with a "0" entry, a non-empty
    ``training`` split (an inference-only datalist, whose only splits are non-empty :data:`UNLABELLED_SPLITS`, may
    omit it), every split a list of entries with ``case_id``, ``image``, non-empty ``text`` (and
    ``label`` outside :data:`UNLABELLED_SPLITS`), no case id used twice (within or across splits).
    """
    if not isinstance(datalist, Mapping):
        raise BadInputError(source, f"a datalist must be a JSON object, got {type(datalist).__name__}")
    missing = [k for k in REQUIRED_TOP_KEYS if k not in datalist]
    if missing:
        raise BadInputError(source, f"missing top-level key(s) {missing}; a datalist needs {list(REQUIRED_TOP_KEYS)}")
    if datalist["spatial_dims"] not in (2, 3) or isinstance(datalist["spatial_dims"], bool):
        raise BadInputError(source, f"spatial_dims must be 2 or 3, got {datalist['spatial_dims']!r}")
    for key in ("modality", "labels"):
        if not isinstance(datalist[key], Mapping) or not datalist[key]:
            raise BadInputError(source, f'{key!r} must be a non-empty object like {{"0": "..."}}')
        bad = [k for k in datalist[key] if not str(k).isdigit()]
        if bad:
            raise BadInputError(source, f"{key!r} keys must be integer strings, got {bad}")
    if "0" not in datalist["labels"]:
        raise BadInputError(source, "'labels' must name class \"0\" (background)")
    splits = [k for k, v in datalist.items() if _is_split(k, v)]
    inference_only = bool(splits) and all(k in UNLABELLED_SPLITS for k in splits) and any(datalist[k] for k in splits)
    if "training" not in datalist and not inference_only:
        raise BadInputError(source, "missing split 'training'")
    if "training" in datalist and not datalist["training"]:
        raise BadInputError(source, "split 'training' is empty")
    seen: dict[str, str] = {}
    for split, entries in datalist.items():
        if not _is_split(split, entries):
            continue
        if not isinstance(entries, list):
            raise BadInputError(source, f"split {split!r} must be a list of entries, got {type(entries).__name__}")
        needed = REQUIRED_ENTRY_KEYS if split in UNLABELLED_SPLITS else (*REQUIRED_ENTRY_KEYS, "label")
        for i, entry in enumerate(entries):
            if not isinstance(entry, Mapping):
                raise BadInputError(source, f"split {split!r} entry {i} must be an object, got {entry!r}")
            cid = entry.get("case_id", f"#{i}")
            lacking = [k for k in needed if k not in entry]
            if lacking:
                raise BadInputError(source, f"split {split!r}, case {cid!r}: missing key(s) {lacking}")
            if not isinstance(cid, str) or not cid:
                raise BadInputError(source, f"split {split!r} entry {i}: case_id must be a non-empty string")
            text = entry["text"]
            if not isinstance(text, str) or not text.strip():
                raise BadInputError(source, f"split {split!r}, case {cid!r}: entry without text (empty 'text')")
            if cid in seen:
                raise BadInputError(
                    source,
                    f"duplicate case id {cid!r} (in split {seen[cid]!r} and split {split!r}); case ids must be unique",
                )
            seen[cid] = split
            if base_dir is None:
                continue
            for key in ("image", "label"):
                if key not in entry:
                    continue
                paths = entry[key] if isinstance(entry[key], list) else [entry[key]]
                for p in paths:
                    if not isinstance(p, str):
                        raise BadInputError(source, f"split {split!r}, case {cid!r}: {key} must be a path string")
                    full = _resolve(Path(base_dir), p)
                    if not os.path.isfile(full):
                        raise BadInputError(source, f"split {split!r}, case {cid!r}: {key} file not found: {full}")


def write_datalist(path: str | PathLike, datalist: Mapping[str, Any], check_files: bool = True) -> Path:
    """Validate ``datalist`` and write it atomically as JSON (indent 2) to ``path``; return the path.

    Args:
        path: destination ``.json`` file; relative entry paths are interpreted relative to its folder.
        datalist: the document (see module docstring).
        check_files: also require every referenced image/label file to exist.
    """
    path = Path(path)
    validate_datalist(datalist, path, base_dir=path.parent if check_files else None)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(datalist, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return path


def read_datalist(path: str | PathLike, check_files: bool = False) -> dict[str, Any]:
    """Read and validate a whole datalist document (paths as stored). Use it for the metadata (labels, modality)."""
    path = Path(path)
    if not path.is_file():
        raise BadInputError(path, "datalist file not found")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise BadInputError(path, f"not a valid JSON file ({err})") from None
    validate_datalist(doc, path, base_dir=path.parent if check_files else None)
    return doc


def load_datalist(
    path: str | PathLike, split: str = "training", check_files: bool = True, allow_empty: bool = False
) -> list[dict[str, Any]]:
    """Entries of one split with absolute ``image``/``label`` paths (the format MONAI datasets take).

    Args:
        path: the datalist JSON file.
        split: ``training``, ``validation``, ``test`` or another list key of the file.
        check_files: raise if an image/label file of this split is missing (names the case id and the path).
        allow_empty: return ``[]`` for an empty split instead of raising.

    Returns:
        list of dicts ``{"case_id", "image", "label"?, "text", ...}`` (copies; extra keys kept).

    Raises:
        BadInputError: naming the datalist file and the problem (missing split, missing keys, entry without text,
        file not found, duplicate case ids, malformed JSON).
    """
    path = Path(path)
    doc = read_datalist(path, check_files=False)
    if split not in doc or not _is_split(split, doc[split]):
        splits = datalist_splits(doc)
        raise BadInputError(path, f"missing split {split!r}; the file has splits {splits}")
    entries = copy.deepcopy(doc[split])
    if not entries and not allow_empty:
        raise BadInputError(path, f"split {split!r} is empty")
    base = path.resolve().parent
    missing: list[str] = []
    for entry in entries:
        for key in ("image", "label"):
            if key in entry:
                entry[key] = _resolve(base, entry[key])
                if check_files:
                    for p in entry[key] if isinstance(entry[key], list) else [entry[key]]:
                        if not os.path.isfile(p):
                            missing.append(f"case {entry['case_id']!r}: {key} file not found: {p}")
    if len(missing) == 1:
        raise BadInputError(path, f"split {split!r}, {missing[0]}")
    if missing:  # every missing file in one message (a moved folder is one fix, not one rerun per case)
        raise BadInputError(path, f"split {split!r}: {len(missing)} files not found: {format_problems(missing)}")
    return entries


def _unique_sorted(case_ids: Sequence[str], what: str) -> list[str]:
    ids = [str(c) for c in case_ids]
    dupes = sorted(c for c, k in Counter(ids).items() if k > 1)
    if dupes:
        raise BadInputError(what, f"duplicate case ids {dupes[:10]}")
    return sorted(ids)


def split_cases(
    case_ids: Sequence[str], val_fraction: float = 0.1, test_fraction: float = 0.0, seed: int = 0
) -> dict[str, list[str]]:
    """Deterministic seeded case-level split into ``training`` / ``validation`` / ``test``.

    The ids are sorted first (so the result does not depend on the input order), shuffled with
    ``numpy.random.default_rng(seed)``, then ``n_test = floor(test_fraction * n)`` cases go to test and
    ``n_val = round_half_up(val_fraction * (n - n_test))`` of the REST to validation
    (bundles/textdiffseg/docs/sources.md §1.1:
    KiTS21 300 -> 216/24/60, Pancreas 281 -> 202/23/56, LiTS 131 -> 94/11/26, Colon 126 -> 91/10/25 with 0.1/0.2).
    A non-zero fraction always yields at least one case as long as one case stays for training.
    Each returned list is sorted.

    Raises:
        BadInputError: fractions outside [0, 1), duplicate ids, or no case left for training.
    """
    for name, frac in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0.0 <= frac < 1.0:
            raise BadInputError(name, f"must be in [0, 1), got {frac}")
    ids = _unique_sorted(case_ids, "case_ids")
    n = len(ids)
    n_test = math.floor(test_fraction * n + 1e-9)
    if test_fraction > 0 and n_test == 0 and n >= 2:
        n_test = 1
    n_val = math.floor(val_fraction * (n - n_test) + 0.5 + 1e-9)
    if val_fraction > 0 and n_val == 0 and n - n_test >= 2:
        n_val = 1
    if n - n_test - n_val < 1:
        raise BadInputError(
            "case_ids",
            f"{n} case(s) leave none for training with val_fraction={val_fraction}, test_fraction={test_fraction}",
        )
    order = np.random.default_rng(seed).permutation(n)
    shuffled = [ids[i] for i in order]
    return {
        "training": sorted(shuffled[n_test + n_val :]),
        "validation": sorted(shuffled[n_test : n_test + n_val]),
        "test": sorted(shuffled[:n_test]),
    }


def kfold_splits(case_ids: Sequence[str], n_folds: int) -> list[tuple[list[str], list[str]]]:
    """Case-level K-fold partition in the given order without shuffling, as ``sklearn KFold(n_splits)`` does.

    Written here because scikit-learn is not a dependency. Fold ``k`` holds out a contiguous block of the list; the
    first ``n % n_folds`` blocks have one case more (bundles/diffboost/docs/sources.md §1.3: ``KFold(n_splits=3)`` over
    dataset.json order).

    Returns:
        ``n_folds`` pairs ``(train_ids, held_out_ids)``, both in the input order.
    """
    ids = [str(c) for c in case_ids]
    if len(set(ids)) != len(ids):
        _unique_sorted(ids, "case_ids")
    if not isinstance(n_folds, int) or n_folds < 2:
        raise BadInputError("n_folds", f"must be an integer >= 2, got {n_folds!r}")
    if n_folds > len(ids):
        raise BadInputError("n_folds", f"cannot split {len(ids)} case(s) into {n_folds} folds")
    sizes = [len(ids) // n_folds + (1 if k < len(ids) % n_folds else 0) for k in range(n_folds)]
    folds, start = [], 0
    for size in sizes:
        held = ids[start : start + size]
        folds.append((ids[:start] + ids[start + size :], held))
        start += size
    return folds
