"""The TextDiff bundle (bundles/textdiff): paper-scale config, demo training, text as an input, checkpoint reload,
inference + evaluation end to end (one `monai.bundle run`), and bad inputs with clear messages."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from common.errors import BadInputError
from common.utils.bundles import REPO_ROOT, bundle_run_command, bundle_run_env, bundle_run_paths
from PIL import Image

REPO = REPO_ROOT
BUNDLE = REPO / "bundles" / "textdiff"
CONFIGS = BUNDLE / "configs"


def _parser(files: list[str], **overrides):
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config([str(CONFIGS / f) for f in files])
    parser.update({"bundle_root": str(BUNDLE), **overrides})
    return parser


@pytest.fixture(scope="module")
def demo_data(tmp_path_factory) -> Path:
    from common.data.converters import get_converter
    from common.data.synthetic import make_monuseg_like

    root = tmp_path_factory.mktemp("textdiff_data")
    make_monuseg_like(root / "raw", n_train=10, n_test=2, size=64, seed=0)
    return get_converter("monuseg").convert(root / "raw", root / "monuseg", seed=0, val_fraction=0.2)


@pytest.fixture(scope="module")
def trained(demo_data, tmp_path_factory):
    """Train the demo configuration once (feature cache on, as demo.json) and record the iteration losses."""
    from ignite.engine import Events

    work = tmp_path_factory.mktemp("textdiff_run")
    overrides = {**bundle_run_paths(demo_data, work), "max_epochs": 10}
    parser = _parser(["train.json", "demo.json"], **overrides)
    parser.get_parsed_content("initialize")
    trainer = parser.get_parsed_content("train#trainer")
    losses: list[float] = []
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: losses.append(float(e.state.output[0]["loss"])))
    trainer.run()
    return {"work": work, "losses": losses, "overrides": overrides, "network": parser.get_parsed_content("network")}


def test_paper_scale_config_head_has_9p68m_parameters():
    parser = _parser(["train.json"])
    assert parser["image_size"] == 256 and parser["steps"] == [50, 150, 250] and parser["blocks"] == [6, 8, 12, 16]
    assert parser["learning_rate"] == 1e-4 and parser["batch_size"] == 1 and parser["seed"] == 40
    assert parser["num_train_cases"] == 5 and parser["max_epochs"] == 100 and parser["text_max_length"] == 10
    head = parser.get_parsed_content("network_def")
    assert sum(p.numel() for p in head.parameters() if p.requires_grad) == 9_683_234
    inf = _parser(["inference.json"])
    assert inf["default_text"] is None and inf["num_samples"] == 1


def test_training_lowers_the_loss(trained):
    losses = trained["losses"]
    n = max(3, len(losses) // 5)
    assert np.mean(losses[-n:]) < 0.6 * np.mean(losses[:n]), losses
    models = trained["work"] / "models"
    assert (models / "model.pt").is_file() and (models / "model_last.pt").is_file()
    record = json.loads((trained["work"] / "eval" / "train_cases.json").read_text())
    assert record["num_cases"] == 8  # all training cases in the demo (num_train_cases null)


def _inference_objects(trained, **extra):
    parser = _parser(["inference.json", "demo.json"], **trained["overrides"], **extra)
    parser.get_parsed_content("initialize")  # loads model.pt
    return parser


def test_text_changes_the_mask_and_reload_is_identical(trained, demo_data):
    parser = _inference_objects(trained)
    network, inferer = parser.get_parsed_content("network"), parser.get_parsed_content("inferer")
    network.eval()
    case = json.loads(demo_data.read_text())["test"][0]
    batch = parser.get_parsed_content("preprocessing")({**case, "image": str(demo_data.parent / case["image"])})
    image = batch["image"][None]
    with torch.no_grad():
        p_upper = inferer(image, network, texts=["The nuclei density in the upper left is high."])
        p_sparse = inferer(image, network, texts=["The nuclei are sparsely distributed."])
    mask_a, mask_b = p_upper.argmax(1), p_sparse.argmax(1)
    assert (mask_a != mask_b).any(), "two different reports gave the same mask"
    # the final checkpoint (model_last.pt) reloaded into a fresh network gives exactly the trained network's outputs
    from common.io.checkpoints import load_network_weights

    reloaded = load_network_weights(
        parser.get_parsed_content("network_def"), trained["work"] / "models" / "model_last.pt"
    )
    trained_net = trained["network"].eval()
    with torch.no_grad():
        text = ["The nuclei are evenly distributed."]
        assert torch.equal(inferer(image, trained_net, texts=text), inferer(image, reloaded.eval(), texts=text))


def test_inference_and_evaluation_end_to_end(trained, demo_data):
    out = trained["work"] / "infer"
    paths = bundle_run_paths(demo_data, trained["work"], output="infer")
    cmd = bundle_run_command(["configs/inference.json", "configs/evaluate.json", "configs/demo.json"], paths)
    r = subprocess.run(
        cmd, cwd=BUNDLE, env=bundle_run_env(OMP_NUM_THREADS="1"), capture_output=True, text=True, timeout=300
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    cases = json.loads(demo_data.read_text())["test"]
    for case in cases:
        seg = np.asarray(Image.open(out / f"{case['case_id']}_seg.png"))
        label = np.asarray(Image.open(demo_data.parent / case["label"]))
        assert seg.shape == label.shape and set(np.unique(seg)) <= {0, 1}
        unc = tifffile.imread(out / f"{case['case_id']}_uncertainty.tif")  # K = 2 draws in the demo
        assert unc.shape == label.shape and unc.dtype == np.float32  # unscaled variance of p(fg): in [0, 0.25]
        assert np.isfinite(unc).all() and unc.min() >= 0.0 and unc.max() <= 0.25
        assert not (out / f"{case['case_id']}_uncertainty.png").exists()
    summary = json.loads((out / "metrics_summary.json").read_text())
    dice = summary["per_class"]["nucleus"]["dice"]["mean"]
    fg = [np.asarray(Image.open(demo_data.parent / c["label"])).mean() for c in cases]
    all_foreground = float(np.mean([2 * f / (1 + f) for f in fg]))
    assert dice > all_foreground + 0.2, (dice, all_foreground)
    assert (out / "overlays").is_dir() and (out / "metrics_per_case.csv").is_file()


def _assert_bad_input(fn, pattern: str) -> None:
    """``fn`` fails with a BadInputError matching ``pattern`` (MONAI's Compose wraps it in a RuntimeError chain)."""
    import re

    from common.errors import find_bad_input_error

    with pytest.raises(Exception) as info:
        fn()
    err = find_bad_input_error(info.value)
    assert err is not None and re.search(pattern, str(err)), repr(info.value)


def test_bad_inputs_have_clear_messages(trained, demo_data, tmp_path):
    from common.io.checkpoints import load_network_weights

    parser = _inference_objects(trained)
    pre = parser.get_parsed_content("preprocessing")
    case = json.loads(demo_data.read_text())["test"][0]
    image_path = demo_data.parent / case["image"]
    # wrong channels: a grayscale PNG
    grey = tmp_path / "grey.png"
    Image.fromarray(np.asarray(Image.open(image_path).convert("L"))).save(grey)
    _assert_bad_input(
        lambda: pre({**case, "image": str(grey)}), r"grey.png: expected 3 channel\(s\) in the image, got 1"
    )
    # missing text without default_text (the paper-scale default): names the case and the fix
    strict = _inference_objects(trained, default_text=None)
    _assert_bad_input(
        lambda: strict.get_parsed_content("preprocessing")({"case_id": "c9", "image": str(image_path)}),
        r"case c9: no report text for this case.*default_text",
    )
    with pytest.raises(BadInputError, match=r"case c9: no report text for this case"):
        strict.get_parsed_content("inferer")(torch.zeros(1, 3, 64, 64), trained["network"], case_ids=["c9"])
    # corrupt and foreign checkpoints
    good = trained["work"] / "models" / "model.pt"
    bad = tmp_path / "model.pt"
    bad.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    net = parser.get_parsed_content("network_def")
    with pytest.raises(BadInputError, match=r"model.pt.*(truncated|corrupt)"):
        load_network_weights(net, bad)
    full_scale = _parser(["inference.json"]).get_parsed_content("network_def")
    with pytest.raises(BadInputError, match="do not fit the network"):
        load_network_weights(full_scale, good)
    # the paper-scale UNet checkpoint missing: names the file
    small = _parser(
        ["inference.json"],
        adm_checkpoint=str(tmp_path / "256x256_diffusion_uncond.pt"),
        unet_model_channels=32,
        unet_channel_mult=[1, 1, 2],
        unet_num_res_blocks=1,
        unet_attention_resolutions=[16],
        unet_num_head_channels=32,
    )
    _assert_bad_input(
        lambda: small.get_parsed_content("diffusion_unet_def"),
        r"256x256_diffusion_uncond.pt: guided-diffusion checkpoint not found.*openaipublic",
    )


def test_training_preprocessing_with_augmentation(demo_data, tmp_path):
    """Without the feature cache the paper's augmentation runs (rot90 + flip / rotation / nothing), jointly."""

    def train_parser(use_feature_cache: bool):
        paths = dict(dataset_dir=str(demo_data.parent), datalist=str(demo_data), output_dir=str(tmp_path))
        return _parser(["train.json", "demo.json"], **paths, use_feature_cache=use_feature_cache)

    parser = train_parser(use_feature_cache=False)
    pre = parser.get_parsed_content("train#preprocessing")
    names = [type(t).__name__ for t in pre.transforms]
    assert "OneOf" in names and names.index("OneOf") < names.index("ScaleIntensityRanged")  # zero fill = black
    data = parser.get_parsed_content("train#data")
    assert len(data) == 8
    from monai.utils import set_determinism

    set_determinism(0)
    outs = [pre(dict(data[0])) for _ in range(6)]
    for o in outs:
        assert o["image"].shape == (3, 64, 64) and o["label"].shape == (1, 64, 64)
        assert set(torch.unique(o["label"]).tolist()) <= {0.0, 1.0}
        assert -1.0 <= float(o["image"].min()) and float(o["image"].max()) <= 1.0
    assert len({o["image"].sum().item() for o in outs}) > 1  # augmentation is random
    set_determinism(None)
    cached = train_parser(use_feature_cache=True).get_parsed_content("train#preprocessing")
    assert "OneOf" not in [type(t).__name__ for t in cached.transforms]  # cached features: no augmentation


def test_validate_bundle_with_the_demo_override():
    """Layout, metadata schema, every config alone and merged, and the network check through the inferer (the
    paper-scale check needs the 2.2 GB guided-diffusion checkpoint, so the demo override is used here)."""
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    from tools.validate_bundle import validate_bundle

    report = validate_bundle(BUNDLE, override="configs/demo.json")
    assert not report.failed, str(report)
    assert "[PASS] network: inferer(image, network_def)" in str(report)


def test_training_set_smaller_than_one_batch_is_a_named_error(demo_data, tmp_path):
    """drop_last with fewer cases than batch_size (or a torchrun rank's smaller share) gives an empty epoch, which
    ignite only warns about: the bundle refuses it with a message naming the loader, the cases and the batch size."""
    parser = _parser(
        ["train.json", "demo.json"], **bundle_run_paths(demo_data, tmp_path), num_train_cases=1, batch_size=2
    )
    _assert_bad_input(
        lambda: parser.get_parsed_content("train#trainer"),
        r"train#dataloader: the data loader yields no batch: 1 case\(s\).*batch_size 2",
    )
