"""Per-case metric tables, summary statistics, and the evaluation step shared by the four bundles.

- :class:`EvaluationReport` collects one row per (case, foreground class) and writes ``metrics_per_case.csv`` and
  ``metrics_summary.json`` atomically.
- :func:`evaluate_cases` reads prediction / label (/ image / uncertainty) files, checks them, computes the metrics of
  :mod:`common.evaluation.metrics` with the label file's voxel spacing, writes the report and overlay pictures.
- :class:`SegmentationEvaluation` wraps :func:`evaluate_cases` for a MONAI bundle config
  (``"run": ["$@evaluator.run()"]``), finding each prediction in ``pred_dir`` by its image name + ``pred_postfix``.

Summary statistics (``metrics_summary.json``), for every metric (``dice``, ``iou``, ``hd95`` and numeric extra
columns such as ``uncertainty_mean``):

- ``per_class[<class>][<metric>]``: ``mean``, ``std`` (population, ddof=0, as numpy / nnU-Net), ``median``,
  ``n`` (finite values used), ``n_nan`` (NaN values excluded, e.g. HD95 when one mask is empty) over the cases.
- ``over_classes[<metric>]``: the same statistics over cases of the per-case mean over the foreground classes
  (NaN classes ignored; a case whose classes are all NaN counts in ``n_nan``). For one class it equals per_class.
- ``mean_of_class_means[<metric>]``: the mean of the per-class means (classes with no finite value are skipped).

Undefined statistics (no finite value) are written as ``null``, so the file is strict JSON.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
import warnings
from collections.abc import Iterable, Mapping, Sequence
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np
from common.errors import BadInputError
from common.evaluation.metrics import (
    EMPTY_BOTH,
    EMPTY_LABEL,
    EMPTY_PREDICTION,
    ClassMetrics,
    compute_case_metrics,
    resolve_class_names,
    to_label_map,
)
from common.evaluation.overlay import palette_description, save_overlay
from common.io.atomic import atomic_write_bytes
from common.io.images import read_image

__all__ = [
    "PER_CASE_CSV",
    "SUMMARY_JSON",
    "OVERLAY_DIR",
    "SUPPORTED_EXTENSIONS",
    "EvaluationReport",
    "evaluate_cases",
    "map_label_values",
    "SegmentationEvaluation",
]

PER_CASE_CSV = "metrics_per_case.csv"
SUMMARY_JSON = "metrics_summary.json"
#: overlays of smaller slices are enlarged (nearest neighbour) so contours are visible
OVERLAY_MIN_DISPLAY_SIZE = 256
#: file name postfix of the per-case uncertainty maps written by sampling bundles (bundles/README.md)
UNCERTAINTY_POSTFIX = "_uncertainty"
OVERLAY_DIR = "overlays"
#: file types of predictions / labels, in the order predictions are searched for (:func:`common.io.images.read_image`).
SUPPORTED_EXTENSIONS = (".nii.gz", ".nii", ".png", ".tif", ".tiff", ".npy")

METRIC_COLUMNS = ("dice", "iou", "hd95")
BASE_COLUMNS = ("case_id", "class_index", "class", *METRIC_COLUMNS, "pred_voxels", "label_voxels", "empty")

CONVENTIONS = {
    EMPTY_BOTH: "label and prediction empty: dice 1, iou 1, hd95 0",
    EMPTY_LABEL: "label empty, prediction not: dice 0, iou 0, hd95 NaN (excluded from means, counted in n_nan)",
    EMPTY_PREDICTION: "prediction empty, label not: dice 0, iou 0, hd95 NaN (excluded from means, counted in n_nan)",
    "hd95": "95th-percentile symmetric Hausdorff distance between mask boundaries (MONAI definition)",
    "std": "population standard deviation (ddof=0)",
}


def _stats(values: Sequence[float]) -> dict[str, float | int | None]:
    """mean, std (ddof=0), median, n (finite values), n_nan (non-finite values) of a list of numbers."""
    a = np.asarray([np.nan if v is None else v for v in values], dtype=np.float64)
    finite = a[np.isfinite(a)]
    if finite.size == 0:
        return {"mean": None, "std": None, "median": None, "n": 0, "n_nan": int(a.size)}
    return {
        "mean": float(finite.mean()),
        "std": float(finite.std()),
        "median": float(np.median(finite)),
        "n": int(finite.size),
        "n_nan": int(a.size - finite.size),
    }


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, (bool, np.bool_))


def _json_safe(obj: Any) -> Any:
    """Replace NaN / inf by None and numpy scalars by Python numbers, recursively."""
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(obj) else None
    return obj


class EvaluationReport:
    """Per-case, per-class metric rows and their summary.

    Args:
        hd95_unit: unit of the HD95 column, written into the summary (``"mm"``, ``"voxel"`` or ``"mixed"``).

    Example::

        report = EvaluationReport()
        report.add_case("case_01", compute_case_metrics(pred, label, num_classes=2), uncertainty_mean=0.12)
        summary = report.summary()  # summary["per_class"]["class_1"]["dice"]["mean"]
        report.write("eval/")       # eval/metrics_per_case.csv, eval/metrics_summary.json
    """

    def __init__(self, hd95_unit: str = "mm") -> None:
        self.hd95_unit = hd95_unit
        self._rows: list[dict[str, Any]] = []
        self._keys: set[tuple[str, str]] = set()
        self.extra: dict[str, Any] = {}

    @property
    def rows(self) -> list[dict[str, Any]]:
        """The rows added so far (column -> value), in insertion order."""
        return [dict(r) for r in self._rows]

    @property
    def columns(self) -> list[str]:
        """The base columns followed by extra columns in order of first appearance."""
        cols = list(BASE_COLUMNS)
        for row in self._rows:
            cols.extend(k for k in row if k not in cols)
        return cols

    def add_row(
        self,
        case_id: str,
        class_name: str,
        dice: float,
        iou: float,
        hd95: float,
        class_index: int | None = None,
        **extra: Any,
    ) -> None:
        """Add one (case, class) row; ``extra`` are further columns (e.g. ``uncertainty_mean=0.1``).

        Raises:
            BadInputError: when the (case, class) pair was added before (e.g. a duplicated datalist entry).
        """
        key = (str(case_id), str(class_name))
        if key in self._keys:
            raise BadInputError(str(case_id), f"class '{class_name}' evaluated twice; case ids must be unique")
        clash = set(extra) & {"case_id", "class", "class_index", *METRIC_COLUMNS}
        if clash:
            raise BadInputError(str(case_id), f"extra columns {sorted(clash)} clash with the metric columns")
        self._keys.add(key)
        row: dict[str, Any] = {"case_id": str(case_id), "class_index": class_index, "class": str(class_name)}
        row.update(dice=float(dice), iou=float(iou), hd95=float(hd95))
        row.update(extra)
        self._rows.append(row)

    def add_case(self, case_id: str, metrics: Sequence[ClassMetrics], **extra: Any) -> None:
        """Add the rows of one case (one per :class:`ClassMetrics`); ``extra`` columns are repeated on each row."""
        for m in metrics:
            self.add_row(
                case_id,
                m.class_name,
                m.dice,
                m.iou,
                m.hd95,
                class_index=m.class_index,
                pred_voxels=m.pred_voxels,
                label_voxels=m.label_voxels,
                empty=m.empty,
                **extra,
            )

    def metric_columns(self) -> list[str]:
        """dice, iou, hd95 and the extra columns whose values are all numbers (or None)."""
        skip = set(BASE_COLUMNS)
        numeric = []
        for col in self.columns:
            if col in skip:
                continue
            values = [r.get(col) for r in self._rows]
            if values and all(v is None or _is_number(v) for v in values) and any(v is not None for v in values):
                numeric.append(col)
        return [*METRIC_COLUMNS, *numeric]

    def summary(self) -> dict[str, Any]:
        """Statistics per class, over classes, and the mean of class means (see the module docstring)."""
        metrics = self.metric_columns()
        classes = list(dict.fromkeys(r["class"] for r in self._rows))
        cases = list(dict.fromkeys(r["case_id"] for r in self._rows))
        per_class = {
            c: {m: _stats([r.get(m) for r in self._rows if r["class"] == c]) for m in metrics} for c in classes
        }
        over_classes: dict[str, Any] = {}
        for m in metrics:
            case_means = []
            for case in cases:
                vals = np.asarray(
                    [np.nan if r.get(m) is None else r[m] for r in self._rows if r["case_id"] == case], np.float64
                )
                finite = vals[np.isfinite(vals)]
                case_means.append(float(finite.mean()) if finite.size else float("nan"))
            over_classes[m] = _stats(case_means)
        mean_of_means = {}
        for m in metrics:
            means = [per_class[c][m]["mean"] for c in classes if per_class[c][m]["mean"] is not None]
            mean_of_means[m] = float(np.mean(means)) if means else None
        return _json_safe(
            {
                "n_cases": len(cases),
                "classes": classes,
                "metrics": metrics,
                "hd95_unit": self.hd95_unit,
                "conventions": CONVENTIONS,
                "per_class": per_class,
                "over_classes": over_classes,
                "mean_of_class_means": mean_of_means,
                **self.extra,
            }
        )

    def to_csv(self) -> str:
        """The per-case table as CSV text (NaN written as ``nan``, missing values empty)."""
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=self.columns, restval="", lineterminator="\n")
        writer.writeheader()
        for row in self._rows:
            writer.writerow({k: ("" if v is None else v) for k, v in row.items()})
        return buffer.getvalue()

    def write(self, out_dir: str | PathLike) -> dict[str, Path]:
        """Write ``metrics_per_case.csv`` and ``metrics_summary.json`` into ``out_dir`` atomically.

        Returns:
            ``{"per_case": csv path, "summary": json path}``.
        """
        out = Path(out_dir)
        csv_path = atomic_write_bytes(out / PER_CASE_CSV, self.to_csv().encode("utf-8"))
        text = json.dumps(self.summary(), indent=2, allow_nan=False) + "\n"
        json_path = atomic_write_bytes(out / SUMMARY_JSON, text.encode("utf-8"))
        return {"per_case": csv_path, "summary": json_path}


# ----------------------------------------------------------------------------------------------------------------
# file reading


def _extension(path: Path) -> str:
    name = path.name.lower()
    for ext in SUPPORTED_EXTENSIONS:
        if name.endswith(ext):
            return ext
    return path.suffix.lower()


def _stem(path: str | PathLike) -> str:
    p = Path(path)
    ext = _extension(p)
    return p.name[: -len(ext)] if ext and p.name.lower().endswith(ext) else p.stem


def _label_map_from_file(a: np.ndarray, num_classes: int, path: Path, threshold: float) -> np.ndarray:
    """Label map of a label / prediction file: RGB with equal channels -> one channel; binary 0/255 masks -> 0/1."""
    if a.ndim == 3 and a.shape[-1] in (3, 4) and np.issubdtype(a.dtype, np.integer) and _extension(path) == ".png":
        if not np.array_equal(a[..., 0], a[..., 1]) or not np.array_equal(a[..., 0], a[..., 2]):
            raise BadInputError(path, "a colour PNG is not a label map; save labels as a grey or palette PNG")
        a = a[..., 0]
    if num_classes == 2 and (a.dtype == np.bool_ or np.issubdtype(a.dtype, np.integer)):
        values = np.unique(a)
        full = 1 if a.dtype == np.bool_ else np.iinfo(a.dtype).max
        if values.size <= 2 and values.max() in (255, full) and (values.size == 1 or values[0] == 0):
            # binary masks stored as 0 / 255 (or 0 / the dtype's maximum): foreground = the non-zero value
            a = a > 0
    return to_label_map(a, num_classes=num_classes, threshold=threshold, source=str(path))


def map_label_values(label: np.ndarray, mapping: Mapping[int, int]) -> np.ndarray:
    """``label`` with every value ``v`` listed in ``mapping`` replaced by ``mapping[v]`` (simultaneously, so
    ``{1: 2, 2: 1}`` swaps); other values unchanged."""
    out = label.copy()
    for src, dst in mapping.items():
        out[label == int(src)] = int(dst)
    return out


def _safe_name(case_id: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", case_id).strip("._") or "case"


def evaluate_cases(
    cases: Iterable[Mapping[str, Any]],
    num_classes: int,
    out_dir: str | PathLike,
    class_names: Sequence[str] | None = None,
    overlay: bool = True,
    pred_key: str = "pred",
    label_key: str = "label",
    image_key: str = "image",
    uncertainty_key: str = "uncertainty",
    case_id_key: str = "case_id",
    threshold: float = 0.5,
    overlay_min_size: int | None = OVERLAY_MIN_DISPLAY_SIZE,
    label_mapping: Mapping[int, int] | None = None,
) -> dict[str, Any]:
    """Evaluate prediction files against label files and write the report (and overlays) into ``out_dir``.

    Args:
        cases: dicts with file paths: ``pred`` and ``label`` (required), ``image`` and ``uncertainty`` (optional,
            used for overlays / the ``uncertainty_mean`` column), ``case_id`` (optional; default: the label file
            name without extension).
        num_classes: number of classes including the background (2 for binary segmentation).
        out_dir: output folder: ``metrics_per_case.csv``, ``metrics_summary.json``, ``overlays/<case>.png``
            (3D: ``overlays/<case>_slice<k>.png``).
        class_names: foreground class names (or all names with the background first).
        overlay: write overlay pictures.
        pred_key, label_key, image_key, uncertainty_key, case_id_key: the dict keys.
        threshold: threshold for predictions stored as probabilities in [0, 1] (binary tasks).
        overlay_min_size: overlays of smaller slices are enlarged (nearest neighbour) to at least this size;
            ``None`` keeps the native size.
        label_mapping: ``{value in the label file: class}`` applied to the ground truth before the metrics, the
            same merge as the training transforms' ``MapLabelValued`` (e.g. TextDiffSeg's MSD Pancreas:
            ``{1: 1, 2: 1}``, pancreas and tumour as one class, paper section 3.1); values not listed are kept.

    Label maps: integer (or integer-valued float) files. For ``num_classes == 2`` a mask stored as 0 / 255 is read
    as 0 / 1, and a prediction stored as probabilities in [0, 1] is thresholded (``> threshold``).
    Metrics use the label file's voxel spacing (NIfTI), so HD95 is in mm; for PNG / TIFF / NPY labels it is in
    pixels (``hd95_unit`` in the summary: ``"mm"``, ``"voxel"`` or ``"mixed"``).

    Returns:
        the summary dict written to ``metrics_summary.json``.

    Raises:
        BadInputError: a missing key or file, a prediction / image / uncertainty whose shape differs from its
            label (the message names both files), out-of-range labels, or no cases at all.
    """
    names = resolve_class_names(num_classes, class_names)
    out = Path(out_dir)
    report = EvaluationReport()
    units: set[str] = set()
    n = 0
    for index, case in enumerate(cases):
        n += 1
        if not isinstance(case, Mapping):
            raise BadInputError(f"case {index}", f"expected a dict with '{pred_key}' and '{label_key}' paths")
        for key in (pred_key, label_key):
            if not case.get(key):
                raise BadInputError(
                    str(case.get(case_id_key) or f"case {index}"), f"no '{key}' file path in {dict(case)}"
                )
        label_path, pred_path = Path(case[label_key]), Path(case[pred_key])
        case_id = str(case.get(case_id_key) or _stem(label_path))

        label_raw, spacing = read_image(label_path, "label")
        if label_mapping:
            label_raw = map_label_values(label_raw, label_mapping)
        pred_raw, pred_spacing = read_image(pred_path, "prediction")
        label = _label_map_from_file(label_raw, num_classes, label_path, threshold)
        pred = _label_map_from_file(pred_raw, num_classes, pred_path, threshold)
        if pred.shape != label.shape:
            raise BadInputError(
                f"{pred_path} and {label_path}",
                f"prediction shape {pred.shape} differs from label shape {label.shape} (case {case_id}); "
                "save predictions at the label's size",
            )
        if spacing is not None and pred_spacing is not None and not np.allclose(spacing, pred_spacing, rtol=1e-3):
            warnings.warn(
                f"{case_id}: prediction spacing {pred_spacing} differs from label spacing {spacing}; "
                "the label's spacing is used",
                stacklevel=2,
            )
        units.add("mm" if spacing is not None else "voxel")
        metrics = compute_case_metrics(pred, label, num_classes, spacing, names, source=case_id)

        extra: dict[str, Any] = {"spacing": "" if spacing is None else "x".join(f"{s:g}" for s in spacing)}
        uncertainty = None
        if case.get(uncertainty_key):
            unc_path = Path(case[uncertainty_key])
            uncertainty = read_image(unc_path, "uncertainty")[0].astype(np.float64)
            if uncertainty.shape != label.shape:
                raise BadInputError(
                    f"{unc_path} and {label_path}",
                    f"uncertainty shape {uncertainty.shape} differs from label shape {label.shape} (case {case_id})",
                )
            extra["uncertainty_mean"] = float(np.mean(uncertainty))
        report.add_case(case_id, metrics, **extra)

        if overlay:
            image = None
            if case.get(image_key):
                image_path = Path(case[image_key])
                image = read_image(image_path)[0]
                if image.shape[: label.ndim] != label.shape or image.ndim > label.ndim + (label.ndim == 2):
                    raise BadInputError(
                        f"{image_path} and {label_path}",
                        f"image shape {image.shape} does not match label shape {label.shape} (case {case_id})",
                    )
            save_overlay(
                out / OVERLAY_DIR / f"{_safe_name(case_id)}.png",
                image,
                label,
                pred,
                num_classes=num_classes,
                uncertainty=uncertainty,
                min_display_size=overlay_min_size,
                source=case_id,
            )
    if n == 0:
        raise BadInputError("cases", "no cases to evaluate")
    report.hd95_unit = units.pop() if len(units) == 1 else "mixed"
    if overlay:
        report.extra["overlay_palette"] = palette_description(num_classes, names)
    report.write(out)
    return report.summary()


# ----------------------------------------------------------------------------------------------------------------
# bundle step


class SegmentationEvaluation:
    """Evaluation step for a MONAI bundle: predictions in ``pred_dir`` vs the labels of a datalist.

    Args:
        datalist_or_cases: a datalist JSON file (MONAI / Decathlon style: ``{"test": [{"image": ..., "label":
            ...}, ...]}`` or a plain list), or a list of such dicts. Relative paths are resolved against
            ``base_dir`` (default: the JSON file's folder, or the current folder for a list). Case ids are the
            entry's ``case_id`` / ``id``, else the image file name without extension (else the label's).
        pred_dir: folder with the predictions. A case's prediction is its ``pred`` path if given, else the file
            ``<image name><pred_postfix><ext>`` directly in ``pred_dir`` or in ``pred_dir/<image name>/``
            (MONAI ``SaveImage`` with ``separate_folder`` True or False), ``ext`` one of
            :data:`SUPPORTED_EXTENSIONS`. Exactly one match is required.
        output_dir: where the report and overlays go (see :func:`evaluate_cases`).
        num_classes: number of classes including the background.
        class_names: foreground class names (or all names with the background first).
        pred_postfix: postfix of the prediction file names (``SaveImage(output_postfix=...)``).
        overlay: write overlay pictures.
        datalist_key: the datalist section to evaluate.
        base_dir: folder for relative paths.

    Bundle config (``configs/evaluate.json``)::

        "evaluator": {
            "_target_": "common.evaluation.SegmentationEvaluation",
            "datalist_or_cases": "$@bundle_root + '/configs/datalist.json'",
            "pred_dir": "@output_dir",
            "output_dir": "$@output_dir + '/evaluation'",
            "num_classes": 2,
            "class_names": ["nucleus"]
        },
        "run": ["$@evaluator.run()"]

    run with ``python -m monai.bundle run --config_file configs/evaluate.json``.
    """

    def __init__(
        self,
        datalist_or_cases: str | PathLike | Sequence[Mapping[str, Any]],
        pred_dir: str | PathLike,
        output_dir: str | PathLike,
        num_classes: int,
        class_names: Sequence[str] | None = None,
        pred_postfix: str = "_seg",
        overlay: bool = True,
        datalist_key: str = "test",
        base_dir: str | PathLike | None = None,
        label_mapping: Mapping[int, int] | None = None,
    ) -> None:
        self.datalist_or_cases = datalist_or_cases
        self.pred_dir = Path(pred_dir)
        self.output_dir = Path(output_dir)
        self.num_classes = int(num_classes)
        self.class_names = None if class_names is None else list(class_names)
        self.pred_postfix = pred_postfix
        self.overlay = overlay
        self.datalist_key = datalist_key
        self.base_dir = None if base_dir is None else Path(base_dir)
        self.label_mapping = dict(label_mapping) if label_mapping else None

    def _entries(self) -> tuple[list[Any], Path, str]:
        src = self.datalist_or_cases
        if isinstance(src, (str, PathLike)):
            path = Path(src)
            if not path.is_file():
                raise BadInputError(path, "datalist file not found")
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                raise BadInputError(path, f"cannot read the datalist JSON ({exc})") from exc
            if isinstance(data, dict):
                if self.datalist_key not in data:
                    raise BadInputError(
                        path, f"no '{self.datalist_key}' section; found {sorted(data)}; set datalist_key"
                    )
                data = data[self.datalist_key]
            if not isinstance(data, list):
                raise BadInputError(path, f"'{self.datalist_key}' must be a list of cases")
            return data, self.base_dir or path.parent, str(path)
        return list(src), self.base_dir or Path.cwd(), "datalist_or_cases"

    def _find_prediction(self, name: str, case_id: str) -> Path:
        found = []
        for folder in (self.pred_dir, self.pred_dir / name):
            for ext in SUPPORTED_EXTENSIONS:
                candidate = folder / f"{name}{self.pred_postfix}{ext}"
                if candidate.is_file():
                    found.append(candidate)
        if not found:
            raise BadInputError(
                case_id,
                f"no prediction '{name}{self.pred_postfix}.<ext>' in {self.pred_dir} or {self.pred_dir / name}; "
                "run inference first or check pred_postfix",
            )
        if len(found) > 1:
            raise BadInputError(case_id, f"several predictions match: {[str(f) for f in found]}; keep one")
        return found[0]

    def cases(self) -> list[dict[str, Any]]:
        """The cases with absolute paths and their prediction file."""
        entries, base, source = self._entries()
        resolved = []
        for index, entry in enumerate(entries):
            if not isinstance(entry, Mapping) or not entry.get("label"):
                raise BadInputError(source, f"case {index} has no 'label' path; cannot evaluate it: {entry!r}")
            case = dict(entry)
            for key in ("image", "label", "pred", "uncertainty"):
                if case.get(key):
                    p = Path(case[key])
                    case[key] = str(p if p.is_absolute() else base / p)
            ref = case.get("image") or case["label"]
            case["case_id"] = str(case.get("case_id") or case.get("id") or _stem(ref))
            if not case.get("pred"):
                case["pred"] = str(self._find_prediction(_stem(ref), str(case["case_id"])))
            if not case.get("uncertainty"):
                # the bundle contract: sampling methods write <case>_uncertainty.<ext> beside <case>_seg.<ext>
                pred = Path(case["pred"])
                stem = pred.name[: pred.name.rfind(self.pred_postfix)] if self.pred_postfix in pred.name else None
                found = sorted(pred.parent.glob(f"{stem}{UNCERTAINTY_POSTFIX}.*")) if stem else []
                if len(found) == 1:
                    case["uncertainty"] = str(found[0])
            resolved.append(case)
        return resolved

    def run(self) -> dict[str, Any]:
        """Evaluate all cases; returns the summary (also written to ``output_dir/metrics_summary.json``)."""
        return evaluate_cases(
            self.cases(),
            self.num_classes,
            self.output_dir,
            class_names=self.class_names,
            overlay=self.overlay,
            label_mapping=self.label_mapping,
        )

    __call__ = run
