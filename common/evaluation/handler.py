"""An ignite handler that runs a bundle's evaluation inside its evaluator, so that MONAI's metric handlers see it.

``evaluate.json`` used to run ``evaluator.run()`` and then ``evaluation.run()`` (:class:`SegmentationEvaluation`:
the written predictions against the labels). Run as this handler at the evaluator's ``EPOCH_COMPLETED`` instead,
the evaluation's summary lands in ``engine.state.metrics``, where the handlers attached after it read it: the
``MLFlowHandler`` that ``python -m monai.bundle run ... --tracking mlflow`` appends to the evaluator's ``handlers``
logs ``mean_dice``, ``dice_<class>``, ... into the tracking store, and ``StatsHandler`` prints them.
"""

from __future__ import annotations

import math
import re
from typing import Any

__all__ = ["EvaluationHandler", "summary_metrics"]


def summary_metrics(summary: dict[str, Any]) -> dict[str, float]:
    """Flat scalars of a :meth:`EvaluationReport.summary`: ``mean_<metric>`` (mean of the class means) and
    ``<metric>_<class>`` (class means, the class name with ``_`` for spaces); metrics without a value (e.g. HD95 of
    all-empty cases) are left out."""
    out: dict[str, float] = {}
    for metric, value in (summary.get("mean_of_class_means") or {}).items():
        if value is not None and math.isfinite(value):
            out[f"mean_{metric}"] = float(value)
    for cls, metrics in (summary.get("per_class") or {}).items():
        for metric, stats in metrics.items():
            mean = stats.get("mean") if isinstance(stats, dict) else None
            if mean is not None and math.isfinite(mean):
                out[f"{metric}_{_key(cls)}"] = float(mean)
    return out


def _key(name: str) -> str:
    """A metric-name-safe class name (``"liver tumour"`` -> ``"liver_tumour"``)."""
    return re.sub(r"[^\w.\-]+", "_", str(name)).strip("_") or "class"


class EvaluationHandler:
    """Run ``evaluation`` (``run() -> summary dict``) when the attached evaluator completes an epoch and put
    :func:`summary_metrics` of its summary into ``engine.state.metrics``. Attach it before the handlers that report
    metrics (in ``evaluate.json`` it is the first of ``handlers``; MONAI's tracking handlers are appended after).
    Under ``torch.distributed`` (``multi_gpu_evaluate.json``: each rank infers its share of the cases) every rank
    waits at a barrier until all predictions are written, then rank 0 alone evaluates all of them.

    Args:
        evaluation: e.g. :class:`common.evaluation.report.SegmentationEvaluation`.
    """

    def __init__(self, evaluation: Any) -> None:
        self.evaluation = evaluation
        self.summary: dict[str, Any] | None = None

    def attach(self, engine: Any) -> None:
        from ignite.engine import Events

        engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def __call__(self, engine: Any) -> None:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():  # multi_gpu_evaluate.json: each rank wrote its share
            dist.barrier()  # every rank's predictions are on disk
            if dist.get_rank() != 0:
                return  # rank 0 evaluates all cases once
        self.summary = self.evaluation.run()
        engine.state.metrics.update(summary_metrics(self.summary))
