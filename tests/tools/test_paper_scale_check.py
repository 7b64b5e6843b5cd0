"""The shipped paper-scale configs run at the papers' sizes on CPU (issue "Paper scale, proven here").

Opt-in (hours on 2 cores, ~8 GB of stand-in weights, up to ~20 GB of memory)::

    .venv/bin/python -m pytest tests/tools/test_paper_scale_check.py --run-paper-scale      # or RUN_PAPER_SCALE=1

``PAPER_SCALE_STANDINS`` names the stand-in folder (written by ``tools/make_standins.py`` when missing; default
``/tmp/diffseg_standins``), ``PAPER_SCALE_OUT`` the output folder (default a temporary one). The work is
``tools/paper_scale_check.py``: every bundle x paper dataset, training for 2 iterations at the paper's batch size (or
the largest that fits) and inference on one full-size case, each record measured. The fast part of this check (every
shipped network built with the official parameter counts) is ``tests/bundles/test_paper_scale_networks.py``, in the
default suite.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from common.utils.bundles import REPO_ROOT, tool_command

REPO = REPO_ROOT

pytestmark = [pytest.mark.paper_scale, pytest.mark.slow]


def test_every_shipped_config_runs_at_paper_size(tmp_path: Path) -> None:
    standins = Path(os.environ.get("PAPER_SCALE_STANDINS", "/tmp/diffseg_standins"))
    out = Path(os.environ.get("PAPER_SCALE_OUT", tmp_path / "paper_scale"))
    r = subprocess.run(
        tool_command("paper_scale_check.py", "--standins", standins, "--out", out, "--make-standins"),
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stdout[-6000:] + r.stderr[-3000:]
    records = json.loads((out / "paper_scale.json").read_text())
    expected = {
        ("textdiff", "monuseg"),
        ("textdiff", "qata"),
        ("cdal", "monuseg"),
        ("cdal", "cxr"),
        ("cdal", "hippocampus"),
        ("textdiffseg", "kits21"),
        ("textdiffseg", "lits"),
        ("textdiffseg", "msd_pancreas"),
        ("textdiffseg", "msd_colon"),
        ("diffboost", "busi"),
        ("diffboost", "spleen_slices"),
        ("diffboost", "prostate_slices"),
    }
    assert {(r["bundle"], r["dataset"]) for r in records} == expected
    for rec in records:
        assert rec["ok"], rec
        if rec["stage"] == "train":
            assert rec["seconds_per_iteration"] > 0 and rec["flops"] > 0 and rec["batch_size"] >= 1
            assert rec["params_trainable"] > 0
        if rec["stage"] == "inference":
            assert rec["seconds_per_case"] > 0 and rec["flops"] > 0
        if rec["flops"]:
            assert 0 < rec["peak_fraction"] < 1.5 and rec["projected_gpu_s"] > 0
    assert (out / "paper_scale.md").read_text().count("\n| ") >= len(records)


@pytest.mark.parametrize("bundle", ["textdiff", "cdal", "textdiffseg", "diffboost"])
def test_validate_bundle_at_paper_scale_without_demo(bundle: str) -> None:
    """``tools/validate_bundle.py`` on the shipped configs alone: the network check builds the paper-scale network
    and runs its inferer with the pretrained parts taken from the stand-ins."""
    standins = Path(os.environ.get("PAPER_SCALE_STANDINS", "/tmp/diffseg_standins"))
    if not (standins / "Bio_ClinicalBERT" / "STANDIN").is_file():
        subprocess.run(tool_command("make_standins.py", standins), check=True)
    r = subprocess.run(
        tool_command("validate_bundle.py", REPO / "bundles" / bundle, "--standins", standins),
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    assert "[PASS] network" in r.stdout and f"VALID: {REPO / 'bundles' / bundle}" in r.stdout
