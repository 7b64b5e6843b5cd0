"""DiffBoost bundle end to end: validate_bundle, then one process running the stages the demo declares
(``demo_stages_before_train``: ControlNet fine-tune -> synthesis -> baseline AttentionUnet), the boosted
AttentionUnet and evaluate (baseline vs DiffBoost side by side) via monai.bundle, each stage config stacked on
``train.json``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from common.data.converters import get_converter
from common.data.synthetic_busi import make_busi_like
from common.utils.bundles import REPO_ROOT, bundle_run_paths, tool_command

REPO = REPO_ROOT
BUNDLE = REPO / "bundles" / "diffboost"


def _env() -> dict[str, str]:
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join([str(REPO)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    return env


def test_validate_bundle_passes() -> None:
    """validate_bundle parses every config alone and with demo.json merged, and runs network_def at 384^2."""
    proc = subprocess.run(
        tool_command("validate_bundle.py", BUNDLE), capture_output=True, text=True, env=_env(), timeout=300
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "VALID: " in proc.stdout and "[PASS] configs: train.json + demo.json" in proc.stdout
    assert (
        "(1, 1, 384, 384) -> (1, 2, 384, 384), 2,742,830 parameters" in proc.stdout
    )  # bundles/diffboost/docs/sources.md §4: 2.74 M


RUN_ALL = """
import json, sys
from monai.bundle import run
ov = json.loads(sys.argv[1])
meta = "configs/metadata.json"
for stage in json.load(open("configs/demo.json"))["demo_stages_before_train"]:
    print("=== stage", stage["name"], flush=True)
    run(config_file=[*stage["configs"], "configs/demo.json"], meta_file=meta, logging_file="configs/logging.conf",
        **{**ov, **stage.get("overrides", {})})
run(config_file=["configs/train.json", "configs/demo.json"], meta_file=meta, logging_file="configs/logging.conf", **ov)
run(config_file=["configs/inference.json", "configs/evaluate.json", "configs/demo.json"], meta_file=meta,
    logging_file="configs/logging.conf", **ov)
"""


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("diffboost_e2e")
    make_busi_like(work / "raw", n_benign=0, n_malignant=6, n_normal=0, size=(48, 56), seed=3)
    datalist = get_converter("busi").convert(work / "raw", work / "data", val_fraction=0.0)
    overrides = {
        **bundle_run_paths(datalist, work),
        "image_size": 32,
        "channels": [4, 8, 16],
        "strides": [2, 2],
        "max_epochs": 2,
        "mix_patch_size": 8,
        "controlnet_epochs": 1,
        "synthesis_steps": 1,
    }
    proc = subprocess.run(
        [sys.executable, "-c", RUN_ALL, json.dumps(overrides)],
        cwd=BUNDLE,
        capture_output=True,
        text=True,
        env=_env(),
        timeout=600,
    )
    (work / "run.log").write_text(proc.stdout + proc.stderr)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    return work


def test_demo_pipeline_runs_all_stages_and_writes_every_artifact(demo_run: Path) -> None:
    models = demo_run / "models"
    for f in ("controlnet.pt", "model.pt", "model_baseline.pt", "tiny_sd/model_index.json"):
        assert (models / f).is_file(), f
    manifest = json.loads((models / "synthetic" / "manifest.json").read_text())
    training = json.loads((demo_run / "data" / "datalist.json").read_text())["training"]
    assert len(manifest["images"]) == 2 * len(training) == 8  # num_synthetic 2 per training slice (4 of 6 cases)
    rec = manifest["images"][0]
    assert {"case_id", "prompt", "seed", "augmentation_text", "source_image", "sampler"} <= set(rec)
    assert rec["prompt"] == "Breast, Ultrasound" and manifest["provenance"]["edge_detector"] == "sobel"
    log = (demo_run / "run.log").read_text()
    assert "=== stage train_controlnet" in log and "=== stage synthesize" in log and "=== stage train_baseline" in log
    assert "case 4/4" in log  # synthesis progress


def test_evaluate_reports_baseline_and_diffboost_side_by_side(demo_run: Path) -> None:
    ev = demo_run / "eval"
    test_ids = [e["case_id"] for e in json.loads((demo_run / "data" / "datalist.json").read_text())["test"]]
    for cid in test_ids:
        assert (ev / f"{cid}_seg.png").is_file() and (ev / "baseline" / f"{cid}_seg.png").is_file()
    summary = json.loads((ev / "metrics_summary.json").read_text())
    assert summary["n_cases"] == len(test_ids) == 2
    comparison = json.loads((ev / "comparison.json").read_text())
    assert set(comparison) >= {"baseline", "diffboost"} and comparison["n_cases"] == 2
    assert comparison["diffboost"]["dice"]["mean"] == pytest.approx(summary["over_classes"]["dice"]["mean"])
    table = (ev / "comparison.md").read_text()
    assert "| metric | baseline | DiffBoost | DiffBoost - baseline |" in table and "| dice |" in table
