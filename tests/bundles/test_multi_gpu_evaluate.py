"""Every bundle's ``configs/multi_gpu_evaluate.json`` (the model zoo's convention) infers and evaluates under
``torchrun --nproc_per_node=2`` (gloo, CPU) with the same predictions and metrics as one process.

Per bundle: seeded weights of its demo-size ``network_def`` as ``models/model.pt``; ``inference.json +
evaluate.json + demo.json`` in one process, then with ``multi_gpu_evaluate.json`` on top under torchrun, on the
training split of the tiny demo dataset (2-3 cases: at least one per rank). Checks: both exit 0, the same
prediction files, identical per-case metrics (``metrics_per_case.csv``) and summary means (rank 0 evaluates every
case once). DiffBoost's baseline comparison is a one-process step (not in the overlay), so its files are not
compared.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from common.utils.bundles import BUNDLES_DIR, bundle_run_command, bundle_run_env, bundle_run_paths, seeded_network_state

pytestmark = pytest.mark.slow

#: bundle -> demo dataset
BUNDLES = {"textdiff": "monuseg", "cdal": "monuseg", "textdiffseg": "msd", "diffboost": "busi"}


def _run(cmd: list[str], bundle: str) -> None:
    env = bundle_run_env(OMP_NUM_THREADS="1")
    r = subprocess.run(cmd, cwd=BUNDLES_DIR / bundle, env=env, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, (r.stdout + r.stderr)[-5000:]


def _per_case(out: Path) -> list[dict[str, str]]:
    with open(out / "metrics_per_case.csv", newline="") as fh:
        return sorted(csv.DictReader(fh), key=lambda row: (row["case_id"], row.get("class", "")))


@pytest.mark.parametrize("bundle", list(BUNDLES))
def test_two_ranks_give_the_one_process_metrics(bundle, demo_datalists, tmp_path):
    models = tmp_path / "models"
    models.mkdir()
    state = seeded_network_state(bundle, ("inference.json", "demo.json"))
    for name in ["model.pt"] + (["model_baseline.pt"] if bundle == "diffboost" else []):
        torch.save(state, models / name)

    configs = ["configs/inference.json", "configs/evaluate.json"]
    one, two = tmp_path / "one", tmp_path / "two"
    for out, extra in ((one, []), (two, ["configs/multi_gpu_evaluate.json"])):
        paths = {**bundle_run_paths(demo_datalists[BUNDLES[bundle]], tmp_path, output=out.name), "split": "training"}
        cmd = bundle_run_command([*configs, *extra, "configs/demo.json"], paths)
        if extra:
            torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes=1"]
            cmd = [*torchrun, "--nproc_per_node=2", *cmd[1:]]
        _run(cmd, bundle)

    def predictions(out: Path) -> list[str]:
        return sorted(
            p.name for p in out.iterdir() if p.is_file() and not p.name.startswith(("metrics", "config", "comparison"))
        )

    assert predictions(one) and predictions(one) == predictions(two)
    n = len({row["case_id"] for row in _per_case(one)})
    assert n >= 2, "at least one case per rank"
    assert _per_case(one) == _per_case(two)
    s1 = json.loads((one / "metrics_summary.json").read_text())
    s2 = json.loads((two / "metrics_summary.json").read_text())
    assert s1["n_cases"] == s2["n_cases"] == n
    assert s1["mean_of_class_means"] == s2["mean_of_class_means"]
