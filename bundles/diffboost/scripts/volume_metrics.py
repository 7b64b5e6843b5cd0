"""Per-case 3D metrics of slice datalists (MSD spleen / prostate): the authors' evaluation unit
(bundles/diffboost/docs/sources.md §6).

The authors predict every positive slice of a case and evaluate the stack of those slices as ONE volume (Dice, HD95
with the voxel spacing). :class:`VolumeEvaluation` does that from the per-slice predictions written by inference:
entries are grouped by ``source_case`` (written by the ``msd_slices`` converter), ordered by ``slice_index`` and
stacked ``(n_slices, H, W)``; the spacing is (slice thickness, in-plane) from the slices' NIfTI affines. Differences
to the authors: the stack is not resized back to the full depth (their z-stretch quirk), so gaps between
non-contiguous positive slices are ignored. Datalists without ``source_case`` (BUSI: one image per case) are skipped,
as the per-image report of ``common.evaluation`` is already per case there.

Output: ``<output_dir>/metrics_per_case.csv`` and ``metrics_summary.json`` (``common.evaluation.EvaluationReport``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from os import PathLike
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from common.data import load_datalist
from common.errors import BadInputError
from common.evaluation.metrics import compute_case_metrics, resolve_class_names
from common.evaluation.report import SUPPORTED_EXTENSIONS, EvaluationReport
from common.io.images import read_image

__all__ = ["VolumeEvaluation"]

logger = logging.getLogger("diffboost.evaluate")


def _stem(path: str | PathLike) -> str:
    name = Path(path).name
    for ext in SUPPORTED_EXTENSIONS:
        if name.lower().endswith(ext):
            return name[: -len(ext)]
    return Path(name).stem


def _slice_thickness(path: str | PathLike) -> float:
    affine = np.asarray(nib.load(str(path)).affine, dtype=np.float64)
    return float(np.linalg.norm(affine[:3, 2]))


class VolumeEvaluation:
    """Stack the per-slice predictions of each source case and compute its 3D metrics (see module docstring).

    Args:
        datalist: the datalist JSON; ``datalist_key`` the split (``test``).
        pred_dir: folder with ``<image name><pred_postfix>.<ext>`` predictions (as inference writes them).
        output_dir: where the per-volume report goes.
        num_classes, class_names: as :func:`common.evaluation.compute_case_metrics`.
        group_key, slice_key: entry keys naming the source case and the slice position.
        skip_if_missing: return ``None`` (logged) when ``pred_dir`` does not exist (e.g. no baseline was trained).
    """

    def __init__(
        self,
        datalist: str | PathLike,
        datalist_key: str,
        pred_dir: str | PathLike,
        output_dir: str | PathLike,
        num_classes: int = 2,
        class_names: Sequence[str] | None = None,
        pred_postfix: str = "_seg",
        group_key: str = "source_case",
        slice_key: str = "slice_index",
        skip_if_missing: bool = False,
    ) -> None:
        self.datalist, self.datalist_key = datalist, datalist_key
        self.pred_dir, self.output_dir = Path(pred_dir), Path(output_dir)
        self.num_classes, self.class_names = int(num_classes), class_names
        self.pred_postfix, self.group_key, self.slice_key = pred_postfix, group_key, slice_key
        self.skip_if_missing = skip_if_missing

    def _prediction(self, entry: dict[str, Any]) -> Path:
        stem = _stem(entry["image"])
        for ext in SUPPORTED_EXTENSIONS:
            p = self.pred_dir / f"{stem}{self.pred_postfix}{ext}"
            if p.is_file():
                return p
        raise BadInputError(
            f"case {entry['case_id']}", f"no prediction '{stem}{self.pred_postfix}.<ext>' in {self.pred_dir}"
        )

    def run(self) -> dict[str, Any] | None:
        if self.skip_if_missing and not self.pred_dir.is_dir():
            logger.info("no predictions in %s: per-volume evaluation skipped", self.pred_dir)
            return None
        entries = load_datalist(self.datalist, self.datalist_key)
        if not all(self.group_key in e and self.slice_key in e for e in entries):
            logger.info("datalist entries have no '%s': per-volume evaluation skipped (2D cases)", self.group_key)
            return None
        groups: dict[str, list[dict[str, Any]]] = {}
        for e in entries:
            groups.setdefault(str(e[self.group_key]), []).append(e)
        names = resolve_class_names(self.num_classes, self.class_names)
        report = EvaluationReport(hd95_unit="mm")
        for case, items in groups.items():
            items.sort(key=lambda e: int(e[self.slice_key]))
            preds, labels, spacing = [], [], None
            for e in items:
                label, sp = read_image(e["label"], "label")
                pred, _ = read_image(self._prediction(e), "prediction")
                if pred.shape != label.shape:
                    raise BadInputError(f"case {e['case_id']}", f"prediction {pred.shape} vs label {label.shape}")
                preds.append(pred.astype(np.int64))
                labels.append(label.astype(np.int64))
                spacing = sp
            z = _slice_thickness(items[0]["label"]) if str(items[0]["label"]).endswith((".nii", ".nii.gz")) else 1.0
            full_spacing = None if spacing is None else (z, *spacing)
            metrics = compute_case_metrics(
                np.stack(preds), np.stack(labels), self.num_classes, full_spacing, names, source=case
            )
            report.add_case(case, metrics, n_slices=len(items))
        report.write(self.output_dir)
        summary = report.summary()
        dice = summary.get("over_classes", {}).get("dice", {}).get("mean")
        logger.info("per-volume Dice over %d cases: %s -> %s", len(groups), dice, self.output_dir)
        return summary
