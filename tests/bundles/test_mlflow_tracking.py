"""``python -m monai.bundle run ... --tracking mlflow`` (MONAI's built-in experiment tracking, its default settings)
records every bundle's training and evaluation in a local MLflow store: the runs finish, the trainer's parameters
and ``train_loss`` land in the training run, the evaluation's Dice (``common.evaluation.EvaluationHandler`` inside
the evaluator) in the evaluation run.

MLflow 3.13+ refuses a plain file store; a local SQLite file is the local store (MONAI's own default under
``output_dir``). The store here is passed as ``--tracking_uri`` so both runs share it.
"""

from __future__ import annotations

import math
import subprocess

import pytest
from common.utils.bundles import BUNDLES_DIR, bundle_run_command, bundle_run_env, bundle_run_paths

mlflow = pytest.importorskip("mlflow", reason="MLflow is in the `test` extra (mlflow-skinny + sqlalchemy + alembic)")

pytestmark = pytest.mark.slow

#: bundle -> (demo dataset, train config stack, extra train overrides)
BUNDLES = {
    "textdiff": ("monuseg", ["configs/train.json"], {}),
    "cdal": ("monuseg", ["configs/train.json"], {"batch_size": 2}),
    "textdiffseg": ("msd", ["configs/train.json"], {}),
    "diffboost": ("busi", ["configs/train.json"], {"use_synthetic": False, "model_name": "model.pt"}),
}


def _run(bundle: str, configs: list[str], overrides: dict) -> None:
    cmd = bundle_run_command([*configs, "configs/demo.json"], overrides)
    r = subprocess.run(cmd, cwd=BUNDLES_DIR / bundle, env=bundle_run_env(), capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]


@pytest.mark.parametrize("bundle", list(BUNDLES))
def test_tracking_mlflow_records_training_and_evaluation(bundle, demo_datalists, tmp_path):
    dataset, train_configs, extra = BUNDLES[bundle]
    store = f"sqlite:///{tmp_path / 'mlruns.db'}"
    tracking = {"tracking": "mlflow", "tracking_uri": store, "experiment_name": f"test_{bundle}"}
    paths = bundle_run_paths(demo_datalists[dataset], tmp_path)
    _run(bundle, train_configs, {**paths, "max_epochs": 1, **extra, **tracking})
    _run(bundle, ["configs/inference.json", "configs/evaluate.json"], {**paths, **tracking})

    client = mlflow.MlflowClient(tracking_uri=store)
    experiment = client.get_experiment_by_name(f"test_{bundle}")
    runs = client.search_runs([experiment.experiment_id], order_by=["attributes.start_time ASC"])
    assert [r.info.status for r in runs] == ["FINISHED", "FINISHED"], [r.info.run_name for r in runs]
    train, evaluation = runs
    assert train.data.params["max_epochs"] == "1"
    assert math.isfinite(train.data.metrics["train_loss"])
    dice = evaluation.data.metrics["mean_dice"]
    assert 0.0 <= dice <= 1.0
    assert any(k.startswith("dice_") for k in evaluation.data.metrics), sorted(evaluation.data.metrics)
