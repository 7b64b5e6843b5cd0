"""In-training validation as the model zoo's CONTRIBUTING asks for it (``validate#evaluator``, ``validate#handlers``,
``validate#dataset#data``, ``validate#key_metric``, a ``ValidationHandler`` whose ``interval`` is ``val_interval``).

cDAL, TextDiffSeg and DiffBoost train for a fixed number of epochs and keep the final weights (the papers' recipe),
so their ``val_interval`` is 0 by default and the handler is disabled; ``--val_interval N`` validates every N epochs
on the datalist's ``validation`` split and keeps the best-Dice weights beside the final ones. TextDiff validates
every epoch by default (its best-Dice weights are its ``model.pt``).

Each case trains one epoch with ``val_interval 1`` on the tiny synthetic datasets: the validation Dice is logged and
lies in [0, 1], and the best-Dice file holds exactly the weights of that epoch, i.e. the final weights (for cDAL on
Hippocampus the EMA weights, which are the final ones there).
"""

from __future__ import annotations

import re
import subprocess

import pytest
import torch
from common.utils.bundles import BUNDLES_DIR, bundle_run_command, bundle_run_env, bundle_run_paths, bundle_scripts
from monai.bundle import ConfigParser

#: id -> (bundle, demo dataset, configs before demo.json, extra overrides, best-Dice file, final file)
CASES = {
    "cdal": ("cdal", "monuseg", ["train.json", "demo.json"], {"batch_size": 2}, "model_best.pt", "model.pt"),
    "cdal-hippocampus-ema": (
        "cdal",
        "msd",
        ["train.json", "hippocampus.json", "demo_hippocampus.json"],
        {},
        "model_best.pt",
        "model.pt",
    ),
    "textdiffseg": ("textdiffseg", "msd", ["train.json", "demo.json"], {}, "model_best.pt", "model.pt"),
    "diffboost": (
        "diffboost",
        "busi",
        ["train.json", "demo.json"],
        {"use_synthetic": False},
        "baseline_best.pt",
        "model_baseline.pt",
    ),
}

#: the bundles whose paper keeps the final weights: validation is off unless asked for
OFF_BY_DEFAULT = ("cdal", "textdiffseg", "diffboost")


def _parser(bundle: str, configs: list[str], **overrides) -> ConfigParser:
    parser = ConfigParser()
    parser.read_config([str(BUNDLES_DIR / bundle / "configs" / c) for c in configs])
    parser.update({"bundle_root": str(BUNDLES_DIR / bundle), **overrides})
    return parser


@pytest.mark.parametrize("bundle", ["textdiff", *OFF_BY_DEFAULT])
def test_validate_section_has_the_zoo_keys(bundle):
    parser = _parser(bundle, ["train.json"])
    for key in ("validate#evaluator", "validate#handlers", "validate#dataset", "validate#dataset#data"):
        assert key in parser, f"{bundle}: {key} missing"
    assert "validate#key_metric" in parser and parser["validate#evaluator#key_val_metric"] == "@validate#key_metric"
    handlers = [h for h in parser["train#handlers"] if h["_target_"] == "ValidationHandler"]
    assert len(handlers) == 1 and handlers[0]["interval"] == "@val_interval", handlers
    assert "val_interval" in parser


@pytest.mark.parametrize("bundle", OFF_BY_DEFAULT)
def test_validation_is_off_by_default_and_on_when_asked(bundle, demo_datalists, tmp_path):
    _, dataset, configs, extra, _, _ = CASES[bundle]
    paths = bundle_run_paths(demo_datalists[dataset], tmp_path)
    with bundle_scripts(bundle):
        for interval, expected in ((0, 0), (2, 1)):
            parser = _parser(bundle, configs, **paths, **extra, val_interval=interval)
            found = [h for h in parser.get_parsed_content("train#handlers") if type(h).__name__ == "ValidationHandler"]
            assert len(found) == expected, (interval, found)
            if found:
                assert found[0].interval == interval


@pytest.mark.slow
@pytest.mark.parametrize("case", list(CASES))
def test_training_validates_and_keeps_the_best_weights(case, demo_datalists, tmp_path):
    bundle, dataset, configs, extra, best_file, final_file = CASES[case]
    paths = bundle_run_paths(demo_datalists[dataset], tmp_path)
    overrides = {**paths, **extra, "max_epochs": 1, "val_interval": 1}
    cmd = bundle_run_command([f"configs/{c}" for c in configs], overrides)
    r = subprocess.run(cmd, cwd=BUNDLES_DIR / bundle, env=bundle_run_env(), capture_output=True, text=True, timeout=600)
    log = r.stdout + r.stderr
    assert r.returncode == 0, log[-4000:]

    dice = [float(v) for v in re.findall(r"val_mean_dice: ([-0-9.e]+)", log)]
    assert dice and all(0.0 <= d <= 1.0 for d in dice), dice

    best = torch.load(tmp_path / "models" / best_file, map_location="cpu", weights_only=True)
    final = torch.load(tmp_path / "models" / final_file, map_location="cpu", weights_only=True)
    assert all(isinstance(v, torch.Tensor) for v in best.values()), "best-Dice weights are a flat state dict"
    with bundle_scripts(bundle):
        net = _parser(bundle, configs, **overrides).get_parsed_content("network_def")
    net.load_state_dict(best, strict=True)
    assert best.keys() == final.keys()
    assert all(torch.equal(best[k], final[k]) for k in best), "after one epoch the best weights are the final weights"
