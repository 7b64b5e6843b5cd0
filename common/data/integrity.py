"""Check a whole dataset before the first epoch, as nnU-Net's ``verify_dataset_integrity`` does: every case read once,
in parallel, ALL problems of ALL cases reported in one table, the run stopped before any training.

The checks are the bundle's own: the transforms of its preprocessing up to and including its last
:class:`~common.transforms.checks.CheckImageLabeld` (loading with :class:`~common.transforms.checks.CheckedLoadImaged`,
then dimensions, channels, image/label geometry -- shape, spacing, origin, direction --, label values against the
classes, NaN/inf, and text checks placed before it). What a case fails there is what training would fail on it, minutes
or hours later. On top, the dataset-level rule for empty masks (issue 13): a label without foreground is a problem
unless ``allow_empty_masks``; then the empty masks are counted in the log; a training set whose masks are all empty
is an error either way.

- :func:`check_dataset` -- run the checks, return an :class:`IntegrityReport` (never raises for a bad case).
- :func:`require_valid_dataset` -- the ``initialize`` step of every bundle's training and inference configs: logs the
  report and raises one :class:`~common.errors.BadInputError` (exit code 2, see :mod:`common.utils.error_report`) when
  there is any problem; the table is printed above that last line.
- ``tools/verify_dataset.py DATALIST --bundle NAME`` -- the same from the command line.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from common.errors import BadInputError, find_bad_input_error, short_message

__all__ = [
    "STAGE_KEYS",
    "CaseProblem",
    "IntegrityReport",
    "check_dataset",
    "checks_of",
    "require_valid_dataset",
    "verify_bundle_dataset",
]

logger = logging.getLogger(__name__)

EMPTY_MASK = "label has no foreground (every voxel is background)"

#: config ids of a run's data and preprocessing, per stage: what ``initialize`` hands :func:`require_valid_dataset`
STAGE_KEYS: dict[str, tuple[str, str, bool]] = {
    "train": ("train#data", "train#preprocessing", True),
    "inference": ("dataset#data", "preprocessing", False),
}


@dataclass(frozen=True)
class CaseProblem:
    """One row of the report: the case, the file the problem is in (or the case id) and the problem with its fix."""

    case_id: str
    source: str
    problem: str


@dataclass
class IntegrityReport:
    """What :func:`check_dataset` found.

    Attributes:
        n_cases: cases checked.
        problems: one row per failing case (its first problem), in datalist order.
        empty_masks: case ids whose label has no foreground (only cases that passed the checks).
        n_labelled: cases that had a label.
        seconds: wall time of the check.
    """

    n_cases: int
    problems: list[CaseProblem] = field(default_factory=list)
    empty_masks: list[str] = field(default_factory=list)
    n_labelled: int = 0
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def seconds_per_100(self) -> float:
        """Wall time of the check per 100 cases."""
        return 100 * self.seconds / max(1, self.n_cases)

    def table(self, limit: int = 200) -> str:
        """The problems as a Markdown table (``| case | file | problem |``), at most ``limit`` rows."""
        rows = ["| case | file | problem |", "|---|---|---|"]
        for p in self.problems[:limit]:
            problem = p.problem.replace("|", "\\|")
            rows.append(f"| {p.case_id} | {p.source} | {problem} |")
        if len(self.problems) > limit:
            rows.append(f"| ... | ... | {len(self.problems) - limit} more |")
        return "\n".join(rows)


def checks_of(preprocessing: Any) -> Callable[[dict], dict]:
    """The loading and check transforms of ``preprocessing`` (a ``Compose`` or a list of transforms): every transform
    up to and including the last ``CheckImageLabeld``.

    Raises:
        ValueError: the pipeline has no ``CheckImageLabeld`` (nothing to check with).
    """
    from common.transforms.checks import CheckImageLabeld
    from monai.transforms import Compose

    transforms = list(getattr(preprocessing, "transforms", preprocessing))
    flat: list[Any] = []
    for t in transforms:  # nested Compose (e.g. DiffBoost's load_slices inside its preprocessing)
        flat.extend(t.transforms if isinstance(t, Compose) else [t])
    last = max((i for i, t in enumerate(flat) if isinstance(t, CheckImageLabeld)), default=None)
    if last is None:
        raise ValueError("the preprocessing has no CheckImageLabeld: nothing to check the dataset with")
    return Compose(flat[: last + 1])


def _label_key(checks: Any) -> str | None:
    from common.transforms.checks import CheckImageLabeld

    found = [t for t in getattr(checks, "transforms", []) if isinstance(t, CheckImageLabeld)]
    return found[-1].label_key if found else None


def _check_one(checks: Callable[[dict], dict], entry: Mapping[str, Any], label_key: str | None, background: int):
    """``(problem or None, labelled, empty mask)`` of one case."""
    case = str(entry.get("case_id", entry.get("image", "?")))
    try:
        out = checks(dict(entry))
    except Exception as err:  # a bug in a transform is reported too, rather than stopping the whole check
        bad = find_bad_input_error(err)
        if bad is not None:
            return CaseProblem(case, bad.source or case, bad.problem), label_key in entry, False
        return CaseProblem(case, str(entry.get("image", case)), short_message(err)), label_key in entry, False
    if not label_key or label_key not in out:
        return None, False, False
    label = out[label_key]
    empty = bool((label != background).sum() == 0)
    return None, True, empty


def check_dataset(
    entries: Sequence[Mapping[str, Any]],
    checks: Callable[[dict], dict],
    background: int = 0,
    num_workers: int | None = None,
) -> IntegrityReport:
    """Run ``checks`` (see :func:`checks_of`) on every entry in a thread pool; collect, do not raise.

    Args:
        entries: datalist entries (``{"case_id", "image", "label"?, "text"?, ...}``, absolute paths).
        checks: transform chain raising :class:`BadInputError` on a bad case.
        background: the background label value (for empty masks).
        num_workers: threads (default: the CPUs, at most 8; image decoding releases the GIL).
    """
    t0 = time.perf_counter()
    label_key = _label_key(checks)
    workers = num_workers or min(8, os.cpu_count() or 1)
    report = IntegrityReport(n_cases=len(entries))
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        results = list(pool.map(lambda e: _check_one(checks, e, label_key, background), entries))
    for entry, (problem, labelled, empty) in zip(entries, results):
        if problem is not None:
            report.problems.append(problem)
        report.n_labelled += int(labelled)
        if empty:
            report.empty_masks.append(str(entry.get("case_id", entry.get("image"))))
    report.seconds = time.perf_counter() - t0
    return report


def require_valid_dataset(
    entries: Sequence[Mapping[str, Any]],
    preprocessing: Any,
    source: str,
    allow_empty_masks: bool = False,
    training: bool = True,
    num_workers: int | None = None,
    enabled: bool = True,
) -> IntegrityReport | None:
    """The start-of-run check of a bundle config (``initialize``): :func:`check_dataset` with the bundle's own checks,
    then the empty-mask rule, then one error for everything found.

    Args:
        entries: the data the run will use (``train#dataset#data``, ``dataset#data``).
        preprocessing: the run's preprocessing (its checks are :func:`checks_of` it).
        source: what to name in the error (the datalist file).
        allow_empty_masks: accept labels without foreground (counted in the log); otherwise each is a problem.
        training: a training run (a set of labels that are all empty is then an error).
        num_workers: threads of the check.
        enabled: ``False`` skips the check (returns ``None``).

    Raises:
        BadInputError: naming ``source``, how many cases fail and the first problem; the whole table is logged
            (and printed to stderr) just before.
    """
    if not enabled:
        return None
    report = check_dataset(entries, checks_of(preprocessing), num_workers=num_workers)
    if report.empty_masks and not allow_empty_masks:
        empty = set(report.empty_masks)
        for entry in entries:
            case = str(entry.get("case_id", entry.get("image")))
            if case in empty:
                fix = "remove the case or fix the mask, or set allow_empty_masks true to train with empty masks"
                report.problems.append(CaseProblem(case, str(entry.get("label", case)), f"{EMPTY_MASK}; {fix}"))
    logger.info(
        f"dataset check of {source}: {report.n_cases} cases in {report.seconds:.1f} s "
        f"({report.seconds_per_100:.1f} s per 100 cases), {len(report.problems)} with problems, "
        f"{len(report.empty_masks)} empty masks" + (" (allowed)" if allow_empty_masks and report.empty_masks else "")
    )
    if training and report.n_labelled and len(report.empty_masks) == report.n_labelled:
        raise BadInputError(source, f"every one of the {report.n_labelled} training masks is empty: nothing to learn")
    if report.problems:
        import sys

        print(f"\nDataset check of {source}: {len(report.problems)} of {report.n_cases} cases fail\n", file=sys.stderr)
        print(report.table(), file=sys.stderr, flush=True)
        first = report.problems[0]
        raise BadInputError(
            source,
            f"{len(report.problems)} of {report.n_cases} cases fail the dataset check (table above); first: case "
            f"{first.case_id!r}, {first.source}: {first.problem}",
        )
    return report


def verify_bundle_dataset(
    bundle_dir: str | os.PathLike,
    datalist: str | os.PathLike,
    configs: Sequence[str] = (),
    stage: str = "train",
    overrides: Mapping[str, Any] | None = None,
    num_workers: int | None = None,
) -> IntegrityReport:
    """:func:`require_valid_dataset` of a bundle's ``stage`` on ``datalist`` without running anything else (what
    ``tools/verify_dataset.py`` does): the config is the bundle's ``train.json`` or ``inference.json`` with
    ``configs`` (overlay file names under its ``configs/`` or paths) merged on top, as ``monai.bundle run`` stacks
    them; only the data list and the preprocessing are built (no network, no dataset cache).

    Args:
        bundle_dir: the bundle folder (``bundles/<name>`` or a packaged bundle).
        datalist: the datalist JSON to check (``dataset_dir`` becomes its folder).
        configs: overlays (e.g. ``["qata.json"]``, ``["demo.json"]``).
        stage: ``"train"`` (``train#data``) or ``"inference"`` (``dataset#data``).
        overrides: further ``{config id: value}`` (as ``--key value`` on the command line).

    Raises:
        BadInputError: as :func:`require_valid_dataset` (exit code 2 from the command line).
    """
    from pathlib import Path

    from common.utils.bundles import bundle_scripts
    from monai.bundle import ConfigParser

    if stage not in STAGE_KEYS:
        raise ValueError(f"stage must be one of {sorted(STAGE_KEYS)}, got {stage!r}")
    data_id, preprocessing_id, training = STAGE_KEYS[stage]
    bundle_dir, datalist = Path(bundle_dir).resolve(), Path(datalist).resolve()
    if not datalist.is_file():
        raise BadInputError(str(datalist), "no such datalist file")
    files = [bundle_dir / "configs" / ("train.json" if training else "inference.json")]
    files += [Path(c) if Path(c).is_file() else bundle_dir / "configs" / c for c in configs]
    for f in files:
        if not f.is_file():
            raise BadInputError(str(f), "no such config file")
    with bundle_scripts(str(bundle_dir)):  # an absolute folder is used as it is
        parser = ConfigParser()
        parser.read_config([str(f) for f in files])
        parser.update({"bundle_root": str(bundle_dir), "dataset_dir": str(datalist.parent), "datalist": str(datalist)})
        parser.update(dict(overrides or {}))
        entries = parser.get_parsed_content(data_id)
        preprocessing = parser.get_parsed_content(preprocessing_id)
        allow_empty = bool(parser.get("allow_empty_masks", False))
        return require_valid_dataset(
            entries, preprocessing, str(datalist), allow_empty, training=training, num_workers=num_workers
        )
