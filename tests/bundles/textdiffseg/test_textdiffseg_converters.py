"""KiTS21 and LiTS converters (TextDiffSeg datasets): synthetic data in the official layouts -> datalist."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from common.data.converters import available_converters, get_converter
from common.data.datalist import load_datalist
from common.data.synthetic_ct import make_kits21_like, make_lits_like
from common.errors import BadInputError


def _save(path: Path, arr: np.ndarray, affine: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(arr, affine), str(path))


def test_converters_are_registered():
    names = available_converters()
    assert "kits21" in names and "lits" in names


def test_kits21_layout_to_datalist(tmp_path):
    src = make_kits21_like(tmp_path / "kits21", n_labelled=6, n_test=1)
    path = get_converter("kits21").convert(src, tmp_path / "out", seed=0)  # repository root accepted
    doc = json.loads(path.read_text())
    assert doc["labels"] == {"0": "background", "1": "kidney", "2": "kidney tumor", "3": "kidney cyst"}
    n = sum(len(doc[k]) for k in ("training", "validation", "test"))
    assert n == 6 and len(doc["test"]) == 1 and len(doc["unlabelled"]) == 1
    case = load_datalist(path, "training")[0]
    assert Path(case["image"]).name == "imaging.nii.gz" and Path(case["label"]).name == "aggregated_MAJ_seg.nii.gz"
    texts = [c["text"] for c in doc["training"] + doc["validation"] + doc["test"]]
    assert all(t.startswith("CT of the abdomen showing") for t in texts)
    assert any("kidney cyst" in t for t in texts) and any("kidney tumor" in t for t in texts)
    assert all(("right" in t) or ("left" in t) or ("both sides" in t) for t in texts)
    # the data folder itself works too, and another aggregation is selectable
    get_converter("kits21").convert(src / "data", tmp_path / "out2")
    with pytest.raises(BadInputError, match="aggregated_AND_seg"):
        get_converter("kits21").convert(src, tmp_path / "out3", segmentation="aggregated_AND_seg")


def test_kits21_geometry_mismatch_is_named(tmp_path):
    src = make_kits21_like(tmp_path / "kits21", n_labelled=2, n_test=0)
    seg = src / "data" / "case_00001" / "aggregated_MAJ_seg.nii.gz"
    nii = nib.load(str(seg))
    aff = nii.affine.copy()
    aff[0, 3] += 5.0
    _save(seg, np.asarray(nii.dataobj), aff)
    with pytest.raises(BadInputError, match=r"case_00001.*differ in affine"):
        get_converter("kits21").convert(src, tmp_path / "out")


def test_lits_layout_to_datalist(tmp_path):
    src = make_lits_like(tmp_path / "lits", n_labelled=6, n_test=2)
    path = get_converter("lits").convert(src, tmp_path / "out", seed=1)
    doc = json.loads(path.read_text())
    assert doc["labels"] == {"0": "background", "1": "liver", "2": "liver tumor"}
    ids = sorted(c["case_id"] for k in ("training", "validation", "test") for c in doc[k])
    assert ids == sorted(f"volume-{i}" for i in range(6))
    assert sorted(c["case_id"] for c in doc["unlabelled"]) == ["test-volume-0", "test-volume-1"]
    assert all("liver" in c["text"] for c in doc["training"])
    load_datalist(path, "test")


def test_lits_missing_segmentation_is_named(tmp_path):
    src = make_lits_like(tmp_path / "lits", n_labelled=2, n_test=0)
    next(src.glob("*/segmentation-1.nii")).unlink()
    with pytest.raises(BadInputError, match=r"volume-1\.nii.*no segmentation-1"):
        get_converter("lits").convert(src, tmp_path / "out")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(BadInputError, match="expected layout"):
        get_converter("lits").convert(empty, tmp_path / "out2")
