"""The cDAL bundle end to end: contract validation, train -> infer -> evaluate through ``python -m monai.bundle run``
on a tiny synthetic MoNuSeg set, outputs (mask + uncertainty beside it), and bad input through the configs."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from common.errors import BadInputError, find_bad_input_error
from common.utils.bundles import REPO_ROOT, bundle_run_command, bundle_run_env, bundle_run_paths, bundle_scripts
from PIL import Image

REPO = REPO_ROOT
BUNDLE = REPO / "bundles" / "cdal"


@pytest.fixture
def cdal_scripts():
    """Let ``scripts`` resolve to bundles/cdal/scripts during the test (every bundle names its package ``scripts``)."""
    with bundle_scripts("cdal"):
        yield


def test_bundle_validates_against_the_contract(cdal_scripts):
    from tools.validate_bundle import validate_bundle

    report = validate_bundle(BUNDLE, override="configs/demo.json")
    assert not report.failed, str(report)
    assert "(1, 3, 256, 256) -> (1, 2, 256, 256)" in str(report)


@pytest.fixture(scope="module")
def monuseg_tiny(tmp_path_factory) -> Path:
    from common.data.converters import get_converter
    from common.data.synthetic import make_monuseg_like

    root = tmp_path_factory.mktemp("cdal_data")
    make_monuseg_like(root / "raw", n_train=4, n_test=2, size=64, seed=0)
    return get_converter("monuseg").convert(root / "raw", root / "monuseg", seed=0, val_fraction=0.0)


def _run(configs: list[str], work: Path, datalist: Path, extra: dict[str, str]) -> subprocess.CompletedProcess:
    cmd = bundle_run_command(configs, {**bundle_run_paths(datalist, work), **extra})
    return subprocess.run(
        cmd, cwd=BUNDLE, capture_output=True, text=True, env=bundle_run_env(OMP_NUM_THREADS="1"), timeout=300
    )


def test_train_infer_evaluate_through_monai_bundle_run(monuseg_tiny, tmp_path):
    small = {
        "image_size": "64",
        "resize_to": "64",
        "max_epochs": "2",
        "batch_size": "2",
        "num_samples": "2",
        "save_interval": "1",
    }
    r = _run(["configs/train.json", "configs/demo.json"], tmp_path, monuseg_tiny, small)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    ckpts = sorted((tmp_path / "models" / "checkpoints").glob("checkpoint_epoch=*.pt"))
    assert [p.name for p in ckpts] == ["checkpoint_epoch=1.pt", "checkpoint_epoch=2.pt"]
    state = torch.load(ckpts[-1], weights_only=True)
    assert {"model", "discriminator", "optimizer_g", "optimizer_d", "lr_scheduler_g", "lr_scheduler_d", "ema"} <= set(
        state
    )
    assert (tmp_path / "models" / "model.pt").is_file()

    r = _run(["configs/inference.json", "configs/evaluate.json", "configs/demo.json"], tmp_path, monuseg_tiny, small)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    datalist = json.loads(monuseg_tiny.read_text())
    import tifffile

    for case in datalist["test"]:
        seg = np.asarray(Image.open(tmp_path / "eval" / f"{case['case_id']}_seg.png"))
        lab = np.asarray(Image.open(monuseg_tiny.parent / case["label"]))
        assert seg.shape == lab.shape and set(np.unique(seg)) <= {0, 1}
        unc = tifffile.imread(tmp_path / "eval" / f"{case['case_id']}_uncertainty.tif")
        assert unc.shape == lab.shape and unc.dtype == np.float32 and 0 <= unc.min() and unc.max() <= 0.25
    summary = json.loads((tmp_path / "eval" / "metrics_summary.json").read_text())
    assert summary["n_cases"] == 2 and summary["over_classes"]["dice"]["mean"] is not None


def test_bad_inputs_through_the_bundle_configs(tmp_path, cdal_scripts):
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config([str(BUNDLE / "configs" / "inference.json"), str(BUNDLE / "configs" / "demo.json")])
    parser["bundle_root"] = str(BUNDLE)
    pre = parser.get_parsed_content("preprocessing")
    gray = tmp_path / "gray.png"
    Image.fromarray(np.zeros((64, 64), np.uint8)).save(gray)
    with pytest.raises(Exception) as exc:
        pre({"image": str(gray), "case_id": "gray"})
    err = find_bad_input_error(exc.value)
    assert isinstance(err, BadInputError) and "gray.png" in str(err) and "expected 3 channel(s)" in str(err)
    with pytest.raises(Exception) as exc:
        pre({"image": str(tmp_path / "missing.png"), "case_id": "m"})
    assert "image file not found" in str(find_bad_input_error(exc.value))
    # a checkpoint of another configuration is refused with the mismatching keys named
    from common.io.atomic import atomic_torch_save
    from common.io.checkpoints import load_network_weights

    net = parser.get_parsed_content("network_def")
    other = ConfigParser()
    other.read_config([str(BUNDLE / "configs" / "inference.json"), str(BUNDLE / "configs" / "demo.json")])
    other["bundle_root"] = str(BUNDLE)
    other["num_channels"] = 32
    atomic_torch_save({"model": other.get_parsed_content("network_def").state_dict()}, tmp_path / "model.pt")
    with pytest.raises(BadInputError, match="model.pt: weights do not fit the network CDALGenerator"):
        load_network_weights(net, tmp_path / "model.pt")
