"""Tests of common.evaluation: metrics against hand-computed values, report files, overlays, the bundle step."""

from __future__ import annotations

import csv
import json
import math
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import tifffile
import torch
from common.errors import BadInputError
from common.evaluation import (
    CONTOUR_PALETTE,
    PER_CASE_CSV,
    SUMMARY_JSON,
    EvaluationReport,
    SegmentationEvaluation,
    binarize,
    compute_case_metrics,
    cubehelix_colormap,
    evaluate_cases,
    hausdorff_distance_95_torch,
    mask_contour,
    render_overlay,
    resolve_class_names,
    save_overlay,
    select_slice,
    to_label_map,
    window_intensities,
)
from common.evaluation import metrics as metrics_module
from common.io.atomic import atomic_write_bytes
from common.io.images import read_image
from PIL import Image

GREEN, RED = (0, 255, 0), (255, 0, 0)


def square(shape, top, left, size, value=1):
    a = np.zeros(shape, dtype=np.int64)
    a[top : top + size, left : left + size] = value
    return a


# ------------------------------------------------------------------------------------------------ metrics


def test_dice_iou_of_two_overlapping_squares_match_hand_computation():
    gt = square((40, 40), 5, 5, 10)  # 100 pixels
    pred = square((40, 40), 5, 8, 10)  # 100 pixels, overlap 10 x 7 = 70
    (m,) = compute_case_metrics(pred, gt, num_classes=2)
    assert m.dice == pytest.approx(2 * 70 / (100 + 100))
    assert m.iou == pytest.approx(70 / (100 + 100 - 70))
    assert (m.pred_voxels, m.label_voxels, m.empty) == (100, 100, "none")
    # different sizes: A 12x12 = 144, B 6x6 = 36 inside A -> Dice 72/180, IoU 36/144
    (m2,) = compute_case_metrics(torch.from_numpy(square((30, 30), 10, 10, 6)), square((30, 30), 7, 7, 12), 2)
    assert m2.dice == pytest.approx(2 * 36 / 180)
    assert m2.iou == pytest.approx(36 / 144)


@pytest.mark.parametrize("shift_axis", [0, 1])
@pytest.mark.parametrize("shift", [2, 3])
def test_hd95_of_shifted_square_equals_shift(shift_axis, shift):
    gt = square((48, 48), 10, 10, 20)
    pred = np.roll(gt, shift, axis=shift_axis)
    (m,) = compute_case_metrics(pred, gt, num_classes=2)
    assert m.hd95 == pytest.approx(shift, abs=1e-5)


def test_anisotropic_spacing_scales_hd95_along_the_shifted_axis_only():
    gt = square((48, 48), 10, 10, 20)
    shifted_rows = np.roll(gt, 3, axis=0)
    shifted_cols = np.roll(gt, 3, axis=1)
    (rows,) = compute_case_metrics(shifted_rows, gt, 2, spacing=(2.5, 0.5))
    (cols,) = compute_case_metrics(shifted_cols, gt, 2, spacing=(2.5, 0.5))
    assert rows.hd95 == pytest.approx(7.5, abs=1e-5)
    assert cols.hd95 == pytest.approx(1.5, abs=1e-5)
    (iso,) = compute_case_metrics(shifted_rows, gt, 2, spacing=2.0)
    assert iso.hd95 == pytest.approx(6.0, abs=1e-5)


def test_hd95_of_shifted_cube_in_3d_uses_spacing():
    gt = np.zeros((24, 24, 24), dtype=np.int64)
    gt[6:16, 6:16, 6:16] = 1
    pred = np.roll(gt, 2, axis=0)
    (m,) = compute_case_metrics(pred, gt, 2, spacing=(3.0, 1.0, 1.0))
    assert m.hd95 == pytest.approx(6.0, abs=1e-5)
    assert m.dice == pytest.approx(2 * 800 / 2000)


def test_empty_mask_conventions():
    empty = np.zeros((16, 16), dtype=np.int64)
    full = square((16, 16), 4, 4, 5)
    (both,) = compute_case_metrics(empty, empty, 2)
    assert (both.dice, both.iou, both.hd95, both.empty) == (1.0, 1.0, 0.0, "both")
    (no_label,) = compute_case_metrics(full, empty, 2)
    assert (no_label.dice, no_label.iou, no_label.empty) == (0.0, 0.0, "label")
    assert math.isnan(no_label.hd95)
    (no_pred,) = compute_case_metrics(empty, full, 2)
    assert (no_pred.dice, no_pred.iou, no_pred.empty) == (0.0, 0.0, "prediction")
    assert math.isnan(no_pred.hd95)


def test_multiclass_metrics_are_per_foreground_class_with_names():
    gt = square((32, 32), 2, 2, 8, value=1) + square((32, 32), 20, 20, 8, value=2)
    pred = square((32, 32), 2, 2, 8, value=1)  # class 2 missed
    res = compute_case_metrics(pred, gt, 3, class_names=["background", "anterior", "posterior"])
    assert [(m.class_index, m.class_name) for m in res] == [(1, "anterior"), (2, "posterior")]
    assert res[0].dice == 1.0 and res[0].hd95 == 0.0
    assert res[1].dice == 0.0 and res[1].empty == "prediction"
    assert resolve_class_names(3) == ["class_1", "class_2"]
    with pytest.raises(BadInputError, match="class_names"):
        resolve_class_names(3, ["a"])


def ball(shape, centre, radii):
    grid = np.meshgrid(*[np.arange(s) for s in shape], indexing="ij")
    return sum(((g - c) / r) ** 2 for g, c, r in zip(grid, centre, radii)) <= 1.0


def test_mask_boundary_matches_scipy_definition():
    ring = metrics_module.mask_boundary(torch.from_numpy(square((9, 9), 2, 2, 5).astype(bool)))
    expected = square((9, 9), 2, 2, 5) - square((9, 9), 3, 3, 3)
    np.testing.assert_array_equal(ring.numpy(), expected.astype(bool))
    cube = np.zeros((5, 5, 5), bool)
    cube[1:4, 1:4, 1:4] = True
    assert metrics_module.mask_boundary(torch.from_numpy(cube)).sum() == 26  # all but the centre voxel


def test_torch_hd95_fallback_matches_monai(monkeypatch):
    rng = np.random.default_rng(7)
    pairs = [
        (ball((40, 44), (20, 20), (12, 9)), ball((40, 44), (23, 26), (8, 14)), None),
        (
            ball((40, 44), (20, 20), (12, 9)),
            ball((40, 44), (18, 15), (5, 5)) | ball((40, 44), (5, 38), (3, 3)),
            (0.7, 2.0),
        ),
        (ball((16, 20, 20), (8, 9, 10), (5, 7, 6)), ball((16, 20, 20), (9, 11, 9), (4, 6, 8)), (2.5, 0.8, 1.1)),
        (rng.random((20, 24)) > 0.6, rng.random((20, 24)) > 0.7, (1.0, 1.5)),
    ]
    for a, b, spacing in pairs:
        a, b = torch.from_numpy(a), torch.from_numpy(b)
        assert hausdorff_distance_95_torch(a, b, spacing) == pytest.approx(
            metrics_module._hd95(a, b, spacing), rel=1e-5
        )
    # without SciPy the package still computes HD95 (torch path)
    monkeypatch.setattr(metrics_module, "_HAS_SCIPY_NDIMAGE", False)
    gt = square((48, 48), 10, 10, 20)
    (m,) = compute_case_metrics(np.roll(gt, 4, axis=1), gt, 2, spacing=(1.0, 0.5))
    assert m.hd95 == pytest.approx(2.0)


def test_metric_input_errors_name_the_source():
    with pytest.raises(BadInputError, match="case_7: prediction shape"):
        compute_case_metrics(np.zeros((4, 5)), np.zeros((4, 6)), 2, source="case_7")
    with pytest.raises(BadInputError, match="spacing"):
        compute_case_metrics(np.zeros((4, 5)), np.zeros((4, 5)), 2, spacing=(1.0, 1.0, 1.0))
    with pytest.raises(BadInputError, match="not below num_classes=2"):
        compute_case_metrics(np.full((4, 5), 2), np.zeros((4, 5)), 2, source="c")


def test_to_label_map_and_binarize():
    prob = np.array([[0.2, 0.5], [0.51, 1.0]], dtype=np.float32)
    np.testing.assert_array_equal(binarize(prob), [[0, 0], [1, 1]])  # strictly greater than 0.5
    np.testing.assert_array_equal(to_label_map(torch.from_numpy(prob)), [[0, 0], [1, 1]])
    np.testing.assert_array_equal(to_label_map(prob, threshold=0.1), [[1, 1], [1, 1]])
    onehot = np.stack([np.array([[1, 0], [0, 0]]), np.array([[0, 1], [0, 0]]), np.array([[0, 0], [1, 1]])])
    np.testing.assert_array_equal(to_label_map(onehot, channel_dim=0), [[0, 1], [2, 2]])
    np.testing.assert_array_equal(to_label_map(prob[None], channel_dim=0), [[0, 0], [1, 1]])
    assert to_label_map(np.array([[0.0, 2.0]]), num_classes=3).dtype == np.int32
    with pytest.raises(BadInputError, match="pred.nii.gz: float values"):
        to_label_map(np.array([[0.5, 3.2]]), source="pred.nii.gz")
    with pytest.raises(BadInputError, match="negative"):
        to_label_map(np.array([[-1, 0]]))


# ------------------------------------------------------------------------------------------------ report


def test_report_csv_and_summary_match_rows(tmp_path):
    report = EvaluationReport(hd95_unit="mm")
    report.add_row("a", "c1", 0.8, 0.6, 2.0, class_index=1, uncertainty_mean=0.1)
    report.add_row("a", "c2", 0.4, 0.3, float("nan"), class_index=2, uncertainty_mean=0.1)
    report.add_row("b", "c1", 0.6, 0.5, 4.0, class_index=1, uncertainty_mean=0.3)
    report.add_row("b", "c2", 1.0, 1.0, 0.0, class_index=2, uncertainty_mean=0.3)
    paths = report.write(tmp_path)
    assert sorted(os.listdir(tmp_path)) == [PER_CASE_CSV, SUMMARY_JSON]  # no temporary files left

    with open(paths["per_case"], newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["case_id"] for r in rows] == ["a", "a", "b", "b"]
    assert float(rows[0]["dice"]) == 0.8 and rows[1]["hd95"] == "nan" and rows[3]["uncertainty_mean"] == "0.3"

    text = paths["summary"].read_text()
    summary = json.loads(text, parse_constant=lambda c: pytest.fail(f"non-strict JSON constant {c}"))
    c1, c2 = summary["per_class"]["c1"], summary["per_class"]["c2"]
    assert c1["dice"] == {
        "mean": pytest.approx(0.7),
        "std": pytest.approx(0.1),
        "median": pytest.approx(0.7),
        "n": 2,
        "n_nan": 0,
    }
    assert c2["hd95"] == {"mean": 0.0, "std": 0.0, "median": 0.0, "n": 1, "n_nan": 1}
    # over classes: per-case means a = 0.6, b = 0.8 (dice); hd95 a = 2 (NaN ignored), b = 2
    assert summary["over_classes"]["dice"]["mean"] == pytest.approx(0.7)
    assert summary["over_classes"]["dice"]["std"] == pytest.approx(0.1)
    assert summary["over_classes"]["hd95"] == {"mean": 2.0, "std": 0.0, "median": 2.0, "n": 2, "n_nan": 0}
    assert summary["mean_of_class_means"]["dice"] == pytest.approx((0.7 + 0.7) / 2)
    assert summary["metrics"] == ["dice", "iou", "hd95", "uncertainty_mean"]
    assert summary["per_class"]["c1"]["uncertainty_mean"]["mean"] == pytest.approx(0.2)
    assert summary["n_cases"] == 2 and summary["hd95_unit"] == "mm"
    assert summary == report.summary()

    with pytest.raises(BadInputError, match="b: class 'c1' evaluated twice"):
        report.add_row("b", "c1", 1.0, 1.0, 0.0)


def test_report_all_nan_metric_gives_null_statistics(tmp_path):
    report = EvaluationReport()
    report.add_row("a", "c1", 0.0, 0.0, float("nan"))
    summary = json.loads(report.write(tmp_path)["summary"].read_text())
    assert summary["per_class"]["c1"]["hd95"] == {"mean": None, "std": None, "median": None, "n": 0, "n_nan": 1}
    assert summary["over_classes"]["hd95"]["n_nan"] == 1


def test_atomic_write_keeps_old_file_when_replace_fails(tmp_path, monkeypatch):
    target = tmp_path / "x.json"
    atomic_write_bytes(target, b'"old"')  # a .json file is re-read as JSON before it counts

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        atomic_write_bytes(target, b'"new"')
    assert target.read_bytes() == b'"old"'
    assert os.listdir(tmp_path) == ["x.json"]


def save_png(path: Path, array: np.ndarray) -> str:
    Image.fromarray(array).save(path)
    return str(path)


def save_nifti(path: Path, array_dhw: np.ndarray, zooms_xyz=(1.0, 1.0, 1.0)) -> str:
    """Store a (D, H, W) array as NIfTI (x, y, z) = (W, H, D), the way MONAI writes volumes."""
    img = nib.Nifti1Image(np.ascontiguousarray(array_dhw.transpose(2, 1, 0)), np.diag([*zooms_xyz, 1.0]))
    img.header.set_zooms(zooms_xyz)
    nib.save(img, str(path))
    return str(path)


def test_evaluate_cases_png_writes_report_and_overlays(tmp_path):
    rng = np.random.default_rng(0)
    image = (rng.random((40, 48)) * 255).astype(np.uint8)
    gt = square((40, 48), 8, 10, 16).astype(np.uint8) * 255  # 0 / 255 mask
    pred = np.roll(square((40, 48), 8, 10, 16), 3, axis=1).astype(np.uint8)  # 0 / 1 mask
    unc = (rng.random((40, 48)) * 0.5).astype(np.float32)
    np.save(tmp_path / "unc.npy", unc)
    cases = [
        {
            "case_id": "img/1",
            "image": save_png(tmp_path / "i1.png", image),
            "label": save_png(tmp_path / "l1.png", gt),
            "pred": save_png(tmp_path / "p1.png", pred),
            "uncertainty": str(tmp_path / "unc.npy"),
        },
        {
            "image": save_png(tmp_path / "i2.png", image),
            "label": save_png(tmp_path / "l2.png", gt),
            "pred": save_png(tmp_path / "p2.png", (gt > 0).astype(np.uint8)),
        },
    ]
    out = tmp_path / "eval"
    summary = evaluate_cases(cases, num_classes=2, out_dir=out, class_names=["nucleus"], overlay_min_size=None)

    expected = compute_case_metrics(pred, gt > 0, 2)[0]
    with open(out / PER_CASE_CSV, newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["case_id"], r["class"]) for r in rows] == [("img/1", "nucleus"), ("l2", "nucleus")]
    assert float(rows[0]["dice"]) == pytest.approx(expected.dice) == pytest.approx(2 * 208 / 512)
    assert float(rows[0]["hd95"]) == pytest.approx(3.0)
    assert float(rows[0]["uncertainty_mean"]) == pytest.approx(float(unc.mean()), rel=1e-6)
    assert rows[1]["uncertainty_mean"] == "" and float(rows[1]["dice"]) == 1.0
    assert summary["per_class"]["nucleus"]["dice"]["mean"] == pytest.approx((expected.dice + 1.0) / 2)
    assert summary["hd95_unit"] == "voxel"
    assert summary == json.loads((out / SUMMARY_JSON).read_text())

    with_unc = np.asarray(Image.open(out / "overlays" / "img_1.png"))
    without = np.asarray(Image.open(out / "overlays" / "l2.png"))
    assert with_unc.shape == (40, 2 * 48 + 32, 3)
    assert without.shape == (40, 48, 3)
    # GT contour (top-left corner of the GT square) green, predicted contour (its right edge) red
    assert tuple(with_unc[8, 10]) == GREEN
    assert tuple(with_unc[15, 10 + 16 + 3 - 1]) == RED


def test_evaluate_cases_nifti_3d_uses_label_spacing_and_picks_slice(tmp_path):
    gt = np.zeros((10, 20, 20), dtype=np.uint8)
    gt[3:7, 5:15, 5:15] = 1
    gt[5, 2:18, 2:18] = 1  # slice 5 has the largest GT area
    pred = np.roll(gt, 2, axis=0)  # shift of 2 slices along z
    image = np.random.default_rng(1).normal(size=gt.shape).astype(np.float32)
    case = {
        "label": save_nifti(tmp_path / "c1.nii.gz", gt, zooms_xyz=(0.8, 0.8, 2.5)),
        "pred": save_nifti(tmp_path / "c1_seg.nii.gz", pred, zooms_xyz=(0.8, 0.8, 2.5)),
        "image": save_nifti(tmp_path / "c1_img.nii.gz", image, zooms_xyz=(0.8, 0.8, 2.5)),
    }
    arr, spacing = read_image(case["label"])
    np.testing.assert_array_equal(arr, gt)
    assert spacing == pytest.approx((2.5, 0.8, 0.8))

    summary = evaluate_cases([case], num_classes=2, out_dir=tmp_path / "eval", overlay_min_size=None)
    expected = compute_case_metrics(pred, gt, 2, spacing=(2.5, 0.8, 0.8))[0]
    assert summary["hd95_unit"] == "mm"
    assert summary["per_class"]["class_1"]["hd95"]["mean"] == pytest.approx(expected.hd95)
    assert expected.hd95 == pytest.approx(5.0)  # 2 slices x 2.5 mm
    assert os.listdir(tmp_path / "eval" / "overlays") == ["c1_slice5.png"]
    with Image.open(tmp_path / "eval" / "overlays" / "c1_slice5.png") as im:
        assert im.size == (20, 20) and im.text["slice"].startswith("5")


def test_mismatched_shapes_raise_naming_both_files(tmp_path):
    label = save_png(tmp_path / "label_a.png", square((20, 20), 2, 2, 5).astype(np.uint8))
    pred = save_png(tmp_path / "pred_a.png", square((20, 24), 2, 2, 5).astype(np.uint8))
    with pytest.raises(BadInputError) as err:
        evaluate_cases([{"label": label, "pred": pred}], num_classes=2, out_dir=tmp_path / "eval")
    assert "pred_a.png" in str(err.value) and "label_a.png" in str(err.value)
    assert "(20, 24)" in str(err.value) and "(20, 20)" in str(err.value)
    assert not (tmp_path / "eval" / SUMMARY_JSON).exists()

    tifffile.imwrite(tmp_path / "unc.tif", np.zeros((10, 10), np.float32))
    with pytest.raises(BadInputError, match=r"unc.tif and .*label_a.png: uncertainty shape"):
        evaluate_cases([{"label": label, "pred": label, "uncertainty": str(tmp_path / "unc.tif")}], 2, tmp_path)
    with pytest.raises(BadInputError, match="missing.png: prediction file not found"):
        evaluate_cases([{"label": label, "pred": str(tmp_path / "missing.png")}], 2, tmp_path)


def test_segmentation_evaluation_as_bundle_step(tmp_path):
    from monai.bundle import ConfigParser

    data, preds = tmp_path / "data", tmp_path / "preds"
    data.mkdir()
    gt = np.zeros((6, 12, 12), np.uint8)
    gt[2:4, 3:9, 3:9] = 1
    for name in ("a", "b"):
        save_nifti(data / f"{name}.nii.gz", gt.astype(np.float32))
        save_nifti(data / f"{name}_label.nii.gz", gt)
    (preds / "a").mkdir(parents=True)
    save_nifti(preds / "a" / "a_seg.nii.gz", gt)  # SaveImage(separate_folder=True) layout
    save_nifti(preds / "b_seg.nii.gz", np.zeros_like(gt))  # flat layout, empty prediction
    datalist = {
        "test": [
            {"image": "data/a.nii.gz", "label": "data/a_label.nii.gz"},
            {"image": "data/b.nii.gz", "label": "data/b_label.nii.gz"},
        ]
    }
    (tmp_path / "datalist.json").write_text(json.dumps(datalist))

    parser = ConfigParser(
        {
            "evaluator": {
                "_target_": "common.evaluation.SegmentationEvaluation",
                "datalist_or_cases": str(tmp_path / "datalist.json"),
                "pred_dir": str(preds),
                "output_dir": str(tmp_path / "eval"),
                "num_classes": 2,
                "class_names": ["tumour"],
            },
            "run": ["$@evaluator.run()"],
        }
    )
    (summary,) = parser.get_parsed_content("run")
    assert summary["n_cases"] == 2
    assert summary["per_class"]["tumour"]["dice"]["mean"] == pytest.approx(0.5)
    assert summary["per_class"]["tumour"]["hd95"]["n_nan"] == 1
    with open(tmp_path / "eval" / PER_CASE_CSV, newline="") as f:
        assert [r["case_id"] for r in csv.DictReader(f)] == ["a", "b"]  # image names
    assert sorted(os.listdir(tmp_path / "eval" / "overlays")) == ["a_slice2.png", "b_slice2.png"]

    missing = SegmentationEvaluation(str(tmp_path / "datalist.json"), tmp_path / "nowhere", tmp_path / "e2", 2)
    with pytest.raises(BadInputError, match="a: no prediction 'a_seg"):
        missing.run()
    with pytest.raises(BadInputError, match="no 'validation' section"):
        SegmentationEvaluation(
            str(tmp_path / "datalist.json"), preds, tmp_path / "e3", 2, datalist_key="validation"
        ).run()


# ------------------------------------------------------------------------------------------------ overlay


def test_overlay_contour_colours_and_uncertainty_panel():
    image = np.linspace(0.0, 500.0, 30 * 40).reshape(30, 40)
    gt = square((30, 40), 5, 5, 10)
    pred = square((30, 40), 12, 20, 10)
    rgb = render_overlay(image, gt, pred)
    assert rgb.shape == (30, 40, 3) and rgb.dtype == np.uint8
    assert tuple(rgb[5, 5]) == GREEN and tuple(rgb[14, 9]) == GREEN  # GT corner and left edge
    assert tuple(rgb[12, 20]) == RED and tuple(rgb[21, 29]) == RED  # pred corners
    grey = window_intensities(image)
    assert tuple(rgb[9, 9]) == (grey[9, 9],) * 3  # inside the masks: the windowed grey image
    assert tuple(rgb[25, 2]) == (grey[25, 2],) * 3

    unc = np.zeros((30, 40))
    unc[20:, 30:] = 1.0
    both = render_overlay(image, gt, pred, uncertainty=unc, legend_width=24)
    assert both.shape == (30, 40 + 40 + 24, 3)
    np.testing.assert_array_equal(both[:, :40], rgb)
    hot, cold = both[25, 40 + 35], both[2, 40 + 2]
    assert int(hot.astype(int).sum()) > int(cold.astype(int).sum())  # bright end of the map = high uncertainty
    assert not (hot[0] == hot[1] == hot[2])  # a colour, not grey
    legend = both[:, 80:]
    assert (legend != 255).any()


def test_overlay_rgb_image_kept_and_multiclass_palette():
    rgb_image = np.zeros((20, 20, 3), np.uint8)
    rgb_image[..., 2] = 77
    gt = square((20, 20), 2, 2, 5, value=1) + square((20, 20), 10, 10, 6, value=2)
    out = render_overlay(rgb_image, gt, gt * 0, num_classes=3)
    assert tuple(out[0, 0]) == (0, 0, 77)
    assert tuple(out[2, 2]) == CONTOUR_PALETTE[0][0]
    assert tuple(out[10, 10]) == CONTOUR_PALETTE[1][0]


def test_mask_contour_is_one_pixel_ring():
    ring = mask_contour(square((10, 10), 2, 2, 5).astype(bool))
    assert ring.sum() == 16 and not ring[4, 4] and ring[2, 4] and ring[6, 6]
    edge = mask_contour(np.ones((4, 4), bool))  # touching the border: border pixels are contour
    assert edge.sum() == 12


def test_select_slice_prefers_ground_truth_then_prediction():
    gt = np.zeros((6, 8, 8), int)
    gt[1, 2:4, 2:4] = 1
    gt[4, 1:7, 1:7] = 2
    pred = np.zeros_like(gt)
    pred[2, :, :] = 1
    assert select_slice(gt, pred) == 4
    assert select_slice(np.zeros_like(gt), pred) == 2
    assert select_slice(np.zeros_like(gt), np.zeros_like(gt)) == 3


def test_save_overlay_3d_names_slice_and_2d_without_uncertainty(tmp_path):
    vol = np.zeros((5, 16, 16), int)
    vol[3, 4:12, 4:12] = 1
    path = save_overlay(tmp_path / "case.png", None, vol, vol, uncertainty=np.ones(vol.shape))
    assert path.name == "case_slice3.png"
    with Image.open(path) as im:
        assert im.size == (16 + 16 + 32, 16)
        assert im.text["slice"].startswith("3")
        assert tuple(np.asarray(im)[4, 4]) == RED  # identical contours: prediction drawn last
    flat = save_overlay(tmp_path / "flat.png", np.zeros((16, 16)), vol[3], vol[3])
    assert flat.name == "flat.png" and Image.open(flat).size == (16, 16)
    assert sorted(os.listdir(tmp_path)) == ["case_slice3.png", "flat.png"]
    with pytest.raises(BadInputError, match="differs"):
        save_overlay(tmp_path / "bad.png", np.zeros((4, 16, 16)), vol, vol)


def test_window_and_colormap():
    a = np.arange(1000, dtype=float)
    a[0], a[-1] = -1e6, 1e6  # outliers beyond the 1st / 99th percentiles
    w = window_intensities(a)
    assert w[0] == 0 and w[-1] == 255 and w[500] == pytest.approx(128, abs=2)
    assert not window_intensities(np.full((3, 3), 5.0)).any()
    rgb = cubehelix_colormap(np.linspace(0, 1, 64)).astype(float)
    luma = rgb @ np.array([0.299, 0.587, 0.114])
    assert np.all(np.diff(luma) > -1.0)  # lightness grows monotonically (up to rounding)
    assert luma[-1] - luma[0] > 150


def test_small_overlays_are_enlarged_with_thin_contours(tmp_path):
    gt = np.zeros((32, 40), np.uint8)
    gt[8:16, 8:16] = 1
    image = np.random.default_rng(0).random((32, 40, 3))
    path = save_overlay(tmp_path / "small.png", image, gt, gt, min_display_size=100)
    with Image.open(path) as im:
        rgb = np.asarray(im.convert("RGB"))
        assert "4x" in im.info.get("scale", "")
    assert rgb.shape == (128, 160, 3)  # factor ceil(100 / 32) = 4
    # the contour is drawn after enlarging: one display pixel wide on the square's boundary, interior untouched
    red = np.all(rgb == (255, 0, 0), axis=-1)
    assert red[32, 32:64].all() and not red[33, 34:62].any()
    plain = save_overlay(tmp_path / "plain.png", image, gt, gt)
    with Image.open(plain) as im:
        assert im.size == (40, 32)


def test_evaluate_cases_enlarges_small_overlays_by_default(tmp_path):
    gt = square((40, 48), 8, 10, 16).astype(np.uint8)
    label, pred = save_png(tmp_path / "l.png", gt), save_png(tmp_path / "p.png", gt)
    evaluate_cases([{"label": label, "pred": pred, "case_id": "c"}], num_classes=2, out_dir=tmp_path / "eval")
    with Image.open(tmp_path / "eval" / "overlays" / "c.png") as im:
        assert im.size == (48 * 7, 40 * 7)  # ceil(256 / 40) = 7


def test_segmentation_evaluation_picks_up_uncertainty_files_beside_predictions(tmp_path):
    gt = square((20, 24), 4, 4, 8).astype(np.uint8)
    (tmp_path / "data").mkdir()
    save_png(tmp_path / "data" / "a.png", gt)
    save_png(tmp_path / "data" / "a_label.png", gt)
    (tmp_path / "preds").mkdir()
    save_png(tmp_path / "preds" / "a_seg.png", gt)
    tifffile.imwrite(tmp_path / "preds" / "a_uncertainty.tif", np.full((20, 24), 0.25, np.float32))
    (tmp_path / "datalist.json").write_text(
        json.dumps({"test": [{"image": "data/a.png", "label": "data/a_label.png"}]})
    )
    ev = SegmentationEvaluation(str(tmp_path / "datalist.json"), tmp_path / "preds", tmp_path / "eval", 2)
    (case,) = ev.cases()
    assert case["uncertainty"] == str(tmp_path / "preds" / "a_uncertainty.tif")
    ev.run()
    with open(tmp_path / "eval" / PER_CASE_CSV, newline="") as f:
        (row,) = list(csv.DictReader(f))
    assert float(row["uncertainty_mean"]) == pytest.approx(0.25)
    with Image.open(tmp_path / "eval" / "overlays" / "a.png") as im:
        assert im.size[0] > 2 * im.size[1]  # image panel + uncertainty panel side by side
