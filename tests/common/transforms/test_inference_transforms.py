"""``common.transforms.inference.PathSafeSpacingd``: Spacingd's result on the data MONAI Label sends (with its
``image_path`` string beside the image), and the entry kept unchanged."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import torch
from common.transforms.inference import PathSafeSpacingd
from monai.transforms import LoadImaged, Spacingd


def _nifti(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "ct.nii.gz"
    nib.save(nib.Nifti1Image(rng.random((12, 10, 8)).astype(np.float32), np.diag([0.8, 0.8, 2.5, 1.0])), str(path))
    return path


def test_same_result_as_spacingd_and_the_path_entry_survives(tmp_path):
    path = _nifti(tmp_path)
    loaded = LoadImaged("image", image_only=False, ensure_channel_first=True)({"image": str(path)})
    ref = Spacingd("image", pixdim=(1.5, 1.5, 2.0), mode="bilinear")(dict(loaded))
    monai_label_data = {**loaded, "image_path": str(path), "device": "cpu"}  # what BasicInferTask passes on
    out = PathSafeSpacingd("image", pixdim=(1.5, 1.5, 2.0), mode="bilinear")(monai_label_data)
    assert out["image_path"] == str(path) and out["device"] == "cpu"
    assert out["image"].shape == ref["image"].shape and torch.allclose(out["image"], ref["image"])
    assert torch.allclose(out["image"].affine, ref["image"].affine)
    assert out["image_meta_dict"]["filename_or_obj"] == str(path)  # dict entries are still updated


def test_inverse_restores_the_input_grid(tmp_path):
    path = _nifti(tmp_path)
    t = PathSafeSpacingd("image", pixdim=(1.6, 1.6, 2.0), mode="nearest")
    data = {**LoadImaged("image", ensure_channel_first=True)({"image": str(path)}), "image_path": str(path)}
    out = t(data)
    assert out["image"].shape[1:] != data["image"].shape[1:]
    back = t.inverse(out)
    assert back["image"].shape == data["image"].shape and back["image_path"] == str(path)
