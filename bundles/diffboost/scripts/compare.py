"""Baseline vs DiffBoost on the same test data, side by side (evaluate.json; issue 7 "beyond the paper")."""

from __future__ import annotations

import json
import logging
from os import PathLike
from pathlib import Path
from typing import Any

from common.io.atomic import atomic_write_json, atomic_write_text
from common.io.checkpoints import load_network_weights

__all__ = ["compare_with_baseline", "comparison_table"]

logger = logging.getLogger("diffboost.evaluate")

_METRICS = ("dice", "iou", "hd95")


def _stat(summary: dict[str, Any], metric: str) -> tuple[float | None, float | None]:
    s = summary.get("over_classes", {}).get(metric, {})
    return s.get("mean"), s.get("std")


def comparison_table(boosted: dict[str, Any], baseline: dict[str, Any]) -> str:
    """Markdown table: metric | baseline mean +- std | DiffBoost mean +- std | difference of the means."""

    def fmt(m: float | None, s: float | None) -> str:
        return "-" if m is None else f"{m:.4f} +- {s:.4f}" if s is not None else f"{m:.4f}"

    rows = ["| metric | baseline | DiffBoost | DiffBoost - baseline |", "|---|---|---|---|"]
    for metric in _METRICS:
        (bm, bs), (dm, ds) = _stat(baseline, metric), _stat(boosted, metric)
        diff = "-" if bm is None or dm is None else f"{dm - bm:+.4f}"
        rows.append(f"| {metric} | {fmt(bm, bs)} | {fmt(dm, ds)} | {diff} |")
    rows.append(f"| cases | {baseline.get('n_cases')} | {boosted.get('n_cases')} | |")
    return "\n".join(rows)


def compare_with_baseline(
    baseline_ckpt: str | PathLike,
    network: Any,
    evaluator: Any,
    evaluation: Any,
    boosted_summary: str | PathLike,
    output_dir: str | PathLike,
) -> dict[str, Any] | None:
    """If ``baseline_ckpt`` exists: load it into ``network``, run ``evaluator`` (inference into the baseline folder)
    and ``evaluation`` (its metrics), then write ``comparison.json`` / ``comparison.md`` next to the boosted metrics.

    Returns the comparison, or ``None`` (logged) when there is no baseline checkpoint. evaluate.json declares it
    with ``"_mode_": "callable"`` (a ``functools.partial`` of these arguments) and calls ``"$@comparison()"``.
    """
    ckpt = Path(baseline_ckpt)
    if not ckpt.is_file():
        logger.info("no baseline checkpoint %s: reporting DiffBoost only (train with use_synthetic false)", ckpt)
        return None
    load_network_weights(network, ckpt)
    evaluator.run()
    baseline = evaluation.run()
    boosted = json.loads(Path(boosted_summary).read_text(encoding="utf-8"))
    table = comparison_table(boosted, baseline)
    out = Path(output_dir)
    result = {
        "baseline": {m: dict(zip(("mean", "std"), _stat(baseline, m))) for m in _METRICS},
        "diffboost": {m: dict(zip(("mean", "std"), _stat(boosted, m))) for m in _METRICS},
        "n_cases": boosted.get("n_cases"),
        "baseline_checkpoint": str(ckpt),
    }
    atomic_write_json(out / "comparison.json", result)
    atomic_write_text(out / "comparison.md", "# Baseline vs DiffBoost (same test cases)\n\n" + table + "\n")
    logger.info("baseline vs DiffBoost:\n%s", table)
    print(table, flush=True)
    return result
