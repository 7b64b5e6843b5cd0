"""DiffBoost data: BUSI and MSD-slice converters with case-level 3-fold splits, and the bundle's data transforms."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from common.data.converters import available_converters, get_converter
from common.data.converters._folds import cross_validation_split
from common.data.converters.msd_slices import organ_modality_prompt, positive_slices
from common.data.synthetic import make_msd_like
from common.data.synthetic_busi import make_busi_like
from common.errors import BadInputError
from common.utils.bundles import bundle_scripts
from PIL import Image

with bundle_scripts("diffboost"):
    from scripts import transforms, volume_metrics


def test_busi_converter_unites_masks_and_writes_three_case_level_folds(tmp_path: Path) -> None:
    cases = make_busi_like(tmp_path / "raw", n_benign=2, n_malignant=7, n_normal=1, size=(40, 48), seed=1)
    assert "busi" in available_converters() and "msd_slices" in available_converters()
    path = get_converter("busi").convert(tmp_path / "raw", tmp_path / "out", classes=["benign", "malignant"])
    doc = json.loads(path.read_text())
    assert doc["spatial_dims"] == 2 and doc["cross_validation"] == {
        "n_folds": 3,
        "fold": 0,
        "scheme": "KFold without shuffle over cases in source order",
    }
    folds = [json.loads((tmp_path / "out" / f"datalist_fold{k}.json").read_text()) for k in range(3)]
    order = [c.case_id for c in cases if c.cls != "normal"]  # normal (empty mask) skipped
    tests = [[e["case_id"] for e in f["test"]] for f in folds]
    assert sum(tests, []) == order  # held-out folds partition the cases, contiguous, in source order (KFold)
    assert [len(t) for t in tests] == [3, 3, 3]
    for f in folds:
        ids = [e["case_id"] for s in ("training", "validation", "test") for e in f[s]]
        assert sorted(ids) == sorted(order) and len(f["validation"]) == 1
    assert doc["test"] == folds[0]["test"]
    # images: grayscale at the original size; masks 0/1, the union of _mask and _mask_1 (case 3 has two lesions)
    entry = next(
        e for f in folds for s in ("training", "validation", "test") for e in f[s] if e["case_id"] == "malignant_003"
    )
    img = np.asarray(Image.open(tmp_path / "out" / entry["image"]))
    lbl = np.asarray(Image.open(tmp_path / "out" / entry["label"]))
    assert img.shape == (40, 48) and lbl.shape == (40, 48) and set(np.unique(lbl)) == {0, 1}
    raw = cases[[c.case_id for c in cases].index("malignant_003")]
    union = np.zeros((40, 48), bool)
    for m in raw.masks:
        union |= np.asarray(Image.open(m)) > 0
    assert len(raw.masks) == 2 and np.array_equal(lbl > 0, union)
    assert entry["text"] == "Breast, Ultrasound"


def test_busi_converter_rejects_size_mismatch_and_missing_masks(tmp_path: Path) -> None:
    cases = make_busi_like(tmp_path / "raw", n_benign=0, n_malignant=3, n_normal=0, size=(32, 32))
    Image.fromarray(np.zeros((20, 20), np.uint8)).save(cases[1].masks[0])
    with pytest.raises(BadInputError, match=r"malignant \(2\)_mask.png: mask size \(20, 20\) \(W, H\) differs"):
        get_converter("busi").convert(tmp_path / "raw", tmp_path / "out")
    for m in cases[1].masks:
        m.unlink()
    with pytest.raises(BadInputError, match=r"malignant \(2\).png: image without a mask"):
        get_converter("busi").convert(tmp_path / "raw", tmp_path / "out")
    with pytest.raises(BadInputError, match="unknown BUSI class"):
        get_converter("busi").convert(tmp_path / "raw", tmp_path / "out", classes=["cyst"])


def test_msd_slice_converter_keeps_positive_t2_slices_with_merged_zones_and_case_level_folds(tmp_path: Path) -> None:
    cases = make_msd_like(tmp_path / "raw", n_train=6, n_test=0, n_channels=2, shape_range=(20, 24), seed=2)
    with pytest.raises(BadInputError, match="choose with channels"):
        get_converter("msd_slices").convert(tmp_path / "raw", tmp_path / "bad")
    path = get_converter("msd_slices").convert(
        tmp_path / "raw", tmp_path / "out", channels=[0], binary=True, label_names={"1": "prostate"}
    )
    doc = json.loads(path.read_text())
    assert doc["spatial_dims"] == 2 and doc["labels"] == {"0": "background", "1": "prostate"}
    assert doc["modality"] == {"0": "T2"} and doc["image_channels"] == [0]
    entries = [e for s in ("training", "validation", "test") for e in doc[s]]
    assert entries[0]["text"] == "SynthKidney, MRI"
    # exactly the positive slices of every case (>20 px at 384^2), labels merged to {0, 1}
    by_case: dict[str, list[int]] = {}
    for e in entries:
        by_case.setdefault(e["source_case"], []).append(e["slice_index"])
    for c in cases:
        full = np.asarray(nib.load(str(c.label)).dataobj)
        assert sorted(by_case.get(c.case_id, [])) == positive_slices(full)
    e = entries[0]
    img = nib.load(str(tmp_path / "out" / e["image"]))
    lbl = np.asarray(nib.load(str(tmp_path / "out" / e["label"])).dataobj)
    vol = next(c for c in cases if c.case_id == e["source_case"])
    t2 = np.asarray(nib.load(str(vol.image)).dataobj)[:, :, e["slice_index"], 0]
    assert img.shape == t2.shape and np.allclose(np.asarray(img.dataobj), t2) and set(np.unique(lbl)) <= {0, 1}
    assert np.allclose(img.affine[:3, :3], vol.affine[:3, :3])  # in-plane spacing kept
    # folds are over cases: all slices of a case are in one split
    for k in range(3):
        f = json.loads((tmp_path / "out" / f"datalist_fold{k}.json").read_text())
        where = {}
        for s in ("training", "validation", "test"):
            for e in f[s]:
                assert where.setdefault(e["source_case"], s) == s


def test_fold_split_and_prompt_helpers() -> None:
    ids = [f"c{i}" for i in range(10)]
    split = cross_validation_split(ids, 3, 2, val_fraction=0.0, seed=0)
    assert split == {"training": ids[:7], "validation": [], "test": ids[7:]}
    with pytest.raises(BadInputError, match="fold: must be an integer in"):
        cross_validation_split(ids, 3, 3, 0.1, 0)
    assert organ_modality_prompt("Spleen", ["CT"]) == "Spleen, CT"
    assert organ_modality_prompt("Task05_Prostate", ["T2"]) == "Prostate, MRI"
    small = np.zeros((10, 10, 3), np.uint8)
    small[4:6, 4:6, 1] = 1  # 4 px -> ~5900 px at 384^2: positive; slice 0 and 2 empty
    assert positive_slices(small) == [1] and positive_slices(small, slice_size=10, min_foreground=4) == []


def test_percentile_scaling_joint_minmax_and_synthetic_loading(tmp_path: Path) -> None:
    x = torch.arange(1000, dtype=torch.float32).reshape(1, 10, 100) - 600.0  # CT-like with values below -256
    out = transforms.PercentileScaled(keys="image")({"image": x})["image"]
    assert float(out.min()) == -1.0 and float(out.max()) == 1.0
    assert torch.all(out[x <= -256] == -1.0)  # floor at -256
    const = transforms.PercentileScaled(keys="image")({"image": torch.ones(1, 4, 4)})["image"]
    assert torch.all(const == -1.0)
    d = transforms.JointMinMaxd(keys=["image", "image_syn"])(
        {"image": torch.tensor([[0.0, 2.0]]), "image_syn": torch.tensor([[4.0, 1.0]])}
    )
    assert torch.allclose(d["image"], torch.tensor([[-1.0, 0.0]])) and torch.allclose(
        d["image_syn"], torch.tensor([[1.0, -0.5]])
    )
    assert "image_syn" not in transforms.JointMinMaxd()({"image": torch.zeros(1, 2)})  # baseline: real only
    # synthetic images: manifest -> per-case lists; random choice; size check
    syn = tmp_path / "syn"
    for i in range(3):
        (syn / "a").mkdir(parents=True, exist_ok=True)
        nib.save(
            nib.Nifti1Image(np.full((8, 8), float(i), np.float32), np.eye(4)), str(syn / "a" / f"a_syn{i:03d}.nii.gz")
        )
    (syn / "manifest.json").write_text(
        json.dumps({"images": [{"case_id": "a", "file": f"a/a_syn{i:03d}.nii.gz"} for i in range(3)]})
    )
    entries = transforms.attach_synthetic([{"case_id": "a"}], syn)
    assert len(entries[0]["synthetic"]) == 3
    assert transforms.attach_synthetic([{"case_id": "a"}], tmp_path / "none", enabled=False) == [{"case_id": "a"}]
    with pytest.raises(BadInputError, match="case b: 0 synthetic image"):
        transforms.attach_synthetic([{"case_id": "b"}], syn)
    with pytest.raises(BadInputError, match="manifest.json: synthesis manifest not found; run configs/synthesize.json"):
        transforms.attach_synthetic([{"case_id": "a"}], tmp_path / "none")
    loader = transforms.LoadSyntheticd()
    loader.set_random_state(0)
    seen = {float(loader({**entries[0], "image": torch.zeros(1, 8, 8)})["image_syn"].mean()) for _ in range(30)}
    assert seen == {0.0, 1.0, 2.0}
    with pytest.raises(BadInputError, match="synthetic image size"):
        loader({**entries[0], "image": torch.zeros(1, 16, 16)})


def test_volume_evaluation_stacks_the_slices_of_each_source_case(tmp_path: Path) -> None:
    make_msd_like(tmp_path / "raw", n_train=6, n_test=0, shape_range=(20, 22), seed=4)
    path = get_converter("msd_slices").convert(tmp_path / "raw", tmp_path / "dl", binary=True)
    test = json.loads(path.read_text())["test"]
    preds = tmp_path / "pred"
    preds.mkdir()
    for i, e in enumerate(test):  # perfect predictions, except one slice of the first case left empty
        img = nib.load(str(tmp_path / "dl" / e["label"]))
        data = np.asarray(img.dataobj) * (0 if i == 0 else 1)
        nib.save(nib.Nifti1Image(data.astype(np.uint8), img.affine), str(preds / f"{e['case_id']}_seg.nii.gz"))
    summary = volume_metrics.VolumeEvaluation(path, "test", preds, tmp_path / "vol", class_names=["kidney"]).run()
    rows = list(csv.DictReader((tmp_path / "vol" / "metrics_per_case.csv").open()))
    cases = sorted({e["source_case"] for e in test})
    assert [r["case_id"] for r in rows] == cases and summary["n_cases"] == len(cases)
    n_slices = {c: sum(e["source_case"] == c for e in test) for c in cases}
    assert all(int(r["n_slices"]) == n_slices[r["case_id"]] for r in rows)
    first = next(r for r in rows if r["case_id"] == test[0]["source_case"])
    assert 0 < float(first["dice"]) < 1 and all(float(r["dice"]) == 1.0 for r in rows if r is not first)
    # 2D datasets (no source_case) are skipped; a missing baseline folder too
    busi = tmp_path / "busi"
    make_busi_like(busi / "raw", n_benign=0, n_malignant=3, n_normal=0, size=(24, 24))
    bpath = get_converter("busi").convert(busi / "raw", busi / "dl")
    assert volume_metrics.VolumeEvaluation(bpath, "test", preds, tmp_path / "v2").run() is None
    assert (
        volume_metrics.VolumeEvaluation(path, "test", tmp_path / "none", tmp_path / "v3", skip_if_missing=True).run()
        is None
    )
