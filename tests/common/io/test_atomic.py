"""Tests of common.io.atomic: outputs appear complete or not at all, temp files never linger."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
import torch
from common.io.atomic import (
    atomic_path,
    atomic_torch_save,
    atomic_write_json,
    atomic_write_text,
    is_temp_path,
    temp_path_for,
)
from common.io.savers import AtomicSaveImage, AtomicSaveImaged
from monai.data import MetaTensor, NibabelWriter
from PIL import Image


def _files(folder):
    return sorted(p.name for p in folder.rglob("*") if p.is_file())


def test_temp_name_is_hidden_in_same_folder_and_keeps_extension(tmp_path):
    for name, ext in [("case_01.seg.nii.gz", ".nii.gz"), ("model.pt", ".pt"), ("report.csv", ".csv")]:
        tmp = temp_path_for(tmp_path / name)
        assert tmp.parent == tmp_path and tmp.name.startswith(".") and tmp.name.endswith(ext)
        assert is_temp_path(tmp) and not is_temp_path(tmp_path / name)
    assert temp_path_for(tmp_path / "a.pt") != temp_path_for(tmp_path / "a.pt")  # unique per call


def test_atomic_path_replaces_on_success(tmp_path):
    target = tmp_path / "sub" / "out.txt"  # parent folder is created
    with atomic_path(target) as tmp:
        tmp.write_text("first")
        assert not target.exists()  # invisible until the body finished
    assert target.read_text() == "first"
    with atomic_path(target) as tmp:
        tmp.write_text("second")
    assert target.read_text() == "second"
    assert _files(tmp_path) == ["out.txt"]


def test_atomic_path_error_keeps_previous_and_removes_temp(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("previous")
    with pytest.raises(RuntimeError, match="disk full"):
        with atomic_path(target) as tmp:
            tmp.write_text("half wri")
            raise RuntimeError("disk full")
    assert target.read_text() == "previous"
    assert _files(tmp_path) == ["out.txt"]


def test_atomic_path_nothing_written_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing was written"):
        with atomic_path(tmp_path / "x.txt"):
            pass
    assert _files(tmp_path) == []


def test_write_text_json_and_unserialisable_json(tmp_path):
    atomic_write_text(tmp_path / "a.txt", "héllo")
    assert (tmp_path / "a.txt").read_text(encoding="utf-8") == "héllo"
    atomic_write_json(tmp_path / "s.json", {"dice": 0.91, "cases": [1, 2]})
    assert json.loads((tmp_path / "s.json").read_text()) == {"dice": 0.91, "cases": [1, 2]}
    with pytest.raises(TypeError):
        atomic_write_json(tmp_path / "bad.json", {"x": object()})
    assert not (tmp_path / "bad.json").exists() and _files(tmp_path) == ["a.txt", "s.json"]


def test_atomic_torch_save_roundtrip_weights_only(tmp_path):
    obj = {"model": {"w": torch.arange(4.0)}, "epoch": 3}
    atomic_torch_save(obj, tmp_path / "ck.pt")
    back = torch.load(tmp_path / "ck.pt", weights_only=True)
    assert torch.equal(back["model"]["w"], obj["model"]["w"]) and back["epoch"] == 3
    assert _files(tmp_path) == ["ck.pt"]


def _pred(filename: str, shape=(1, 10, 9, 4)) -> MetaTensor:
    data = torch.arange(int(np.prod(shape)), dtype=torch.float32).reshape(shape) % 3
    return MetaTensor(data, affine=torch.diag(torch.tensor([0.8, 0.8, 2.0, 1.0])), meta={"filename_or_obj": filename})


def _saver(folder, **kwargs) -> AtomicSaveImaged:
    """``AtomicSaveImaged`` of ``pred`` as uint8 into ``folder``, quiet."""
    return AtomicSaveImaged(keys="pred", output_dir=str(folder), output_dtype=np.uint8, print_log=False, **kwargs)


def test_atomic_save_imaged_writes_final_file_only(tmp_path):
    saver = _saver(tmp_path, output_postfix="seg", output_ext=".nii.gz", separate_folder=False, resample=False)
    pred = _pred("/data/case_05.nii.gz")
    out = saver({"pred": pred})
    assert out["pred"] is pred
    assert _files(tmp_path) == ["case_05_seg.nii.gz"]
    img = nib.load(str(tmp_path / "case_05_seg.nii.gz"))
    assert np.array_equal(np.asarray(img.dataobj), pred[0].numpy().astype(np.uint8))
    assert np.allclose(img.affine, np.diag([0.8, 0.8, 2.0, 1.0]))


def test_atomic_save_imaged_separate_folder_and_png(tmp_path):
    saver = _saver(tmp_path, output_postfix="mask", output_ext=".png", separate_folder=True, scale=255)
    saver({"pred": _pred("/data/slice_02.png", shape=(1, 12, 8))})
    assert _files(tmp_path) == ["slice_02_mask.png"]
    assert (tmp_path / "slice_02" / "slice_02_mask.png").exists()
    assert Image.open(tmp_path / "slice_02" / "slice_02_mask.png").size == (12, 8)


def test_writer_failure_leaves_no_partial_output(tmp_path, monkeypatch):
    target = tmp_path / "case_06_seg.nii.gz"
    target.write_bytes(b"previous complete file")

    def broken_write(self, filename_or_obj, verbose=True, **kwargs):
        with open(filename_or_obj, "wb") as f:  # starts writing, then dies
            f.write(b"\x1f\x8b partial")
        raise OSError("killed while writing")

    monkeypatch.setattr(NibabelWriter, "write", broken_write)
    saver = AtomicSaveImage(  # the NIfTI writer only (with ITK installed MONAI would fall back to ITKWriter)
        output_dir=str(tmp_path),
        output_postfix="seg",
        output_ext=".nii.gz",
        separate_folder=False,
        print_log=False,
        writer=NibabelWriter,
    )
    with pytest.raises(RuntimeError, match="cannot find a suitable writer"):
        saver(_pred("/data/case_06.nii.gz"))
    assert target.read_bytes() == b"previous complete file"
    assert _files(tmp_path) == ["case_06_seg.nii.gz"]


def test_atomic_save_imaged_from_bundle_config(tmp_path):
    from monai.bundle import ConfigParser

    cfg = {
        "saver": {
            "_target_": "common.io.savers.AtomicSaveImaged",
            "keys": "pred",
            "output_dir": str(tmp_path),
            "output_postfix": "seg",
            "separate_folder": False,
            "print_log": False,
        }
    }
    saver = ConfigParser(cfg).get_parsed_content("saver")
    saver({"pred": _pred("/data/case_07.nii.gz")})
    assert _files(tmp_path) == ["case_07_seg.nii.gz"]
