"""Evaluation shared by the four bundles: per-case Dice / IoU / HD95, report files, overlay pictures.

- :mod:`common.evaluation.metrics` -- per-case, per-class Dice, IoU, HD95 (MONAI) with empty-mask conventions,
  and conversions of probability / one-hot maps to label maps.
- :mod:`common.evaluation.report` -- :class:`EvaluationReport` (``metrics_per_case.csv``, ``metrics_summary.json``),
  :func:`evaluate_cases` (files in, report + overlays out) and :class:`SegmentationEvaluation` (bundle step).
- :mod:`common.evaluation.overlay` -- overlay PNGs (contours, uncertainty heat map) with numpy and Pillow only.
- :mod:`common.evaluation.handler` -- :class:`EvaluationHandler`: the evaluation inside the evaluator run, its
  summary in ``engine.state.metrics`` (for ``--tracking mlflow``).
"""

from common.evaluation.handler import EvaluationHandler, summary_metrics
from common.evaluation.metrics import (
    ClassMetrics,
    binarize,
    compute_case_metrics,
    hausdorff_distance_95_torch,
    resolve_class_names,
    to_label_map,
)
from common.evaluation.overlay import (
    CONTOUR_PALETTE,
    cubehelix_colormap,
    mask_contour,
    palette_description,
    render_overlay,
    save_overlay,
    select_slice,
    window_intensities,
)
from common.evaluation.report import (
    PER_CASE_CSV,
    SUMMARY_JSON,
    EvaluationReport,
    SegmentationEvaluation,
    evaluate_cases,
)

__all__ = [
    "EvaluationHandler",
    "summary_metrics",
    "ClassMetrics",
    "binarize",
    "to_label_map",
    "resolve_class_names",
    "compute_case_metrics",
    "hausdorff_distance_95_torch",
    "CONTOUR_PALETTE",
    "cubehelix_colormap",
    "mask_contour",
    "palette_description",
    "render_overlay",
    "save_overlay",
    "select_slice",
    "window_intensities",
    "PER_CASE_CSV",
    "SUMMARY_JSON",
    "EvaluationReport",
    "SegmentationEvaluation",
    "evaluate_cases",
]
