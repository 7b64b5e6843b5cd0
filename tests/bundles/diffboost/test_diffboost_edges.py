"""scripts.edges: HED network, Sobel fallback, Scharr label outline, their union (DiffBoost's ControlNet hint)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from common.errors import BadInputError
from common.utils.bundles import REPO_ROOT, bundle_scripts

with bundle_scripts("diffboost"):
    from scripts.edges import EdgeDetector, EdgeMapd, HEDNetwork, conditioning_edge_map, label_outline, sobel_edges


def _square_label(size: int = 32, lo: int = 10, hi: int = 20) -> torch.Tensor:
    y = torch.zeros(1, size, size)
    y[:, lo:hi, lo:hi] = 1
    return y


def test_label_outline_is_a_two_pixel_ring_on_both_sides_of_the_boundary() -> None:
    y = _square_label()
    b = label_outline(y)
    assert b.shape == (1, 32, 32) and set(torch.unique(b).tolist()) <= {0.0, 1.0}
    # inner ring (first pixel inside) and outer ring (first pixel outside) are outline; centre and far away are not
    assert b[0, 10, 15] == 1 and b[0, 9, 15] == 1 and b[0, 15, 10] == 1 and b[0, 15, 9] == 1
    assert b[0, 15, 15] == 0 and b[0, 11, 15] == 0 and b[0, 2, 2] == 0 and b[0, 8, 15] == 0
    # a mask touching the image border has no outline along the border ('symm' padding)
    full = torch.ones(1, 16, 16)
    assert label_outline(full).sum() == 0
    # multi-class labels: every change of class is outline, batch shape kept
    y2 = y.clone()
    y2[:, 14:16, 14:16] = 2
    assert label_outline(y2.unsqueeze(0)).shape == (1, 1, 32, 32)
    assert label_outline(y2)[0, 14, 14] == 1


def test_sobel_fallback_is_soft_in_unit_range_and_zero_on_constant_images() -> None:
    img = torch.zeros(1, 32, 32)
    img[:, :, 16:] = 1.0
    e = sobel_edges(img)
    assert e.shape == (1, 32, 32) and float(e.min()) >= 0 and float(e.max()) <= 1
    assert e[0, 10, 15:17].min() > 0.5 and e[0, 10, 3] < 0.05  # strong at the step, ~0 in flat regions
    assert 0 < float(e[0, 10, 13]) < 1  # soft: no threshold
    assert sobel_edges(torch.full((1, 16, 16), 3.0)).abs().max() == 0
    assert sobel_edges(torch.rand(2, 3, 24, 24)).shape == (2, 1, 24, 24)


def test_conditioning_edge_map_unites_image_edges_and_outline_and_checks_sizes() -> None:
    torch.manual_seed(0)
    img = torch.rand(1, 32, 32) * 2 - 1
    y = _square_label()
    e_img = conditioning_edge_map(img, None)
    e = conditioning_edge_map(img, y)
    assert e.shape == (1, 32, 32) and float(e.min()) >= 0 and float(e.max()) <= 1
    outline = label_outline(y) > 0
    assert torch.all(e[outline] == 1)  # outline pixels saturate
    assert torch.allclose(e[~outline], e_img[~outline])  # elsewhere it is the image's edge map
    batch = conditioning_edge_map(img.expand(3, 1, 32, 32), y.expand(3, 1, 32, 32))
    assert batch.shape == (3, 1, 32, 32)
    with pytest.raises(BadInputError, match="case_7: image and label differ in size"):
        conditioning_edge_map(img, torch.zeros(1, 30, 32), source="case_7")
    with pytest.raises(BadInputError, match="expected an image"):
        conditioning_edge_map(torch.zeros(32, 32), None)


def test_hed_network_shapes_and_loading_annotator_state_dicts(tmp_path: Path) -> None:
    torch.manual_seed(0)
    net = HEDNetwork().eval().requires_grad_(False)
    out = net(torch.rand(2, 3, 37, 45))
    assert out.shape == (2, 1, 37, 45) and float(out.min()) >= 0 and float(out.max()) <= 1
    # the annotator file stores keys 'moduleVggOne.0.weight' ...: renamed to 'net*' on load
    path = tmp_path / "network-bsds500.pth"
    torch.save({k.replace("net", "module", 1): v for k, v in net.state_dict().items()}, path)
    detector = EdgeDetector(hed_weights=path)
    assert detector.kind == "hed"
    gray = torch.rand(1, 1, 24, 24)
    assert torch.allclose(detector(gray), net(gray.expand(-1, 3, -1, -1)), atol=1e-6)
    bad = tmp_path / "other.pth"
    torch.save({"conv.weight": torch.zeros(1)}, bad)
    with pytest.raises(BadInputError, match="other.pth: weights do not fit the network HEDNetwork"):
        EdgeDetector(hed_weights=bad)
    with pytest.raises(BadInputError, match="HED weights file not found"):
        EdgeDetector(hed_weights=tmp_path / "missing.pth")
    assert EdgeDetector().kind == "sobel"


def test_edge_mapd_adds_the_hint_and_names_the_case() -> None:
    t = EdgeMapd(keys=("image", "label"), edge_key="edge")
    d = t({"case_id": "c1", "image": torch.rand(1, 16, 16) * 2 - 1, "label": _square_label(16, 4, 9)})
    assert d["edge"].shape == (1, 16, 16) and d["edge"].dtype == torch.float32
    with pytest.raises(BadInputError, match="case c2"):
        t({"case_id": "c2", "image": torch.rand(1, 16, 16), "label": torch.zeros(1, 8, 8)})


def _diffboost_config(*names: str) -> dict:
    import json

    cfg: dict = {}
    for n in names:
        cfg.update(json.loads((REPO_ROOT / "bundles/diffboost/configs" / n).read_text()))
    return cfg


def _edge_weights_module():
    import importlib.util

    path = REPO_ROOT / "bundles/diffboost/scripts/edge_weights.py"
    spec = importlib.util.spec_from_file_location("diffboost_edge_weights", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("stage", ["train_controlnet.json", "synthesize.json"])
def test_paper_scale_configs_default_to_hed_and_stop_when_the_weights_are_missing(tmp_path: Path, stage: str) -> None:
    """bundles/diffboost/docs/sources.md §1.2/§8: HED soft edges at paper scale; a missing file is a named error with
    the download source."""
    from monai.bundle import ConfigParser

    parser = ConfigParser(_diffboost_config("train.json", stage))  # a stage stacked on train.json
    parser["bundle_root"] = str(tmp_path)
    hed = parser.get_parsed_content("hed_weights")
    assert hed == f"{tmp_path}/models/network-bsds500.pth"
    assert parser["hed_weights_check"] == {
        "_target_": "scripts.edge_weights.require_hed_weights",
        "path": "@hed_weights",
    }
    # checked before anything is loaded (after the error report is installed)
    assert parser["initialize"][:2] == ["$error_report.install()", "$@hed_weights_check"]
    if stage == "train_controlnet.json":  # also when multi_gpu_train.json replaces `initialize` (torchrun)
        assert parser["train"]["trainer"]["_requires_"] == "@hed_weights_check"
    edge_weights = _edge_weights_module()
    with pytest.raises(BadInputError) as err:
        edge_weights.require_hed_weights(hed)
    msg = str(err.value)
    assert msg.startswith(f"{hed}: HED weights file not found (network-bsds500.pth")
    assert edge_weights.HED_WEIGHTS_URL in msg and "hed_weights null uses the Sobel fallback" in msg
    # the common edge transform does not fall back to Sobel for a configured but missing file either
    with pytest.raises(BadInputError, match="HED weights file not found"):
        EdgeMapd(keys=("image", "label"), hed_weights=hed)
    # the demo overlay switches to the documented Sobel fallback; an existing file passes the check
    demo = ConfigParser(_diffboost_config("train.json", stage, "demo.json"))
    assert demo.get_parsed_content("hed_weights") is None and edge_weights.require_hed_weights(None) is None
    assert EdgeDetector(None).kind == "sobel"
    (tmp_path / "models").mkdir()
    Path(hed).write_bytes(b"x")
    assert edge_weights.require_hed_weights(hed) == hed


def test_large_files_lists_the_hed_weights_and_controlnet_epochs_follow_the_code_for_busi() -> None:
    """large_files.yml names the HED source; bundles/diffboost/docs/sources.md §2.3/§9: the code's breast schedule (1600
    epochs, batch 32)."""
    text = (REPO_ROOT / "bundles/diffboost/large_files.yml").read_text()
    assert 'path: "models/network-bsds500.pth"' in text
    assert 'url: "https://huggingface.co/lllyasviel/Annotators/resolve/main/network-bsds500.pth"' in text
    cfg = _diffboost_config("train.json", "train_controlnet.json")
    assert cfg["dataset_dir"].endswith("busi") and cfg["controlnet_epochs"] == 1600
    assert cfg["controlnet_batch_size"] == 32
