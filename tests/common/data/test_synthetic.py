"""Synthetic data in the official layouts (common.data.synthetic): determinism, structure, intensities, the command
line, and learnability through the real converter + datalist + MONAI loading."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from xml.etree import ElementTree

import nibabel as nib
import numpy as np
import pytest
import tifffile
import torch
from common.data.converters import get_converter
from common.data.converters.monuseg import (
    MONUSEG_TEST_FOLDER,
    MONUSEG_TRAIN_FOLDER,
    rasterize_polygons,
    read_aperio_polygons,
)
from common.data.datalist import load_datalist
from common.data.describe import nuclei_pattern
from common.data.synthetic import DEFAULT_NUCLEI_PATTERNS, make_monuseg_like, make_msd_like
from common.utils.bundles import REPO_ROOT

REPO = REPO_ROOT


def test_monuseg_like_layout_and_determinism(tmp_path: Path) -> None:
    a = make_monuseg_like(tmp_path / "a", n_train=4, n_test=2, size=128, seed=7)
    b = make_monuseg_like(tmp_path / "b", n_train=4, n_test=2, size=128, seed=7)
    c = make_monuseg_like(tmp_path / "c", n_train=4, n_test=2, size=128, seed=8)
    train_dir = tmp_path / "a" / MONUSEG_TRAIN_FOLDER
    assert sorted(p.name for p in (train_dir / "Tissue Images").iterdir()) == [f"{x.case_id}.tif" for x in a[:4]]
    assert sorted(p.name for p in (train_dir / "Annotations").iterdir()) == [f"{x.case_id}.xml" for x in a[:4]]
    assert len(list((tmp_path / "a" / MONUSEG_TEST_FOLDER).iterdir())) == 4  # tif + xml side by side
    assert [x.pattern for x in a] == list(DEFAULT_NUCLEI_PATTERNS[:4]) + list(DEFAULT_NUCLEI_PATTERNS[3:5])
    for x, y, z in zip(a, b, c, strict=True):
        img_x, img_z = tifffile.imread(x.image), tifffile.imread(z.image)
        np.testing.assert_array_equal(img_x, tifffile.imread(y.image))
        assert x.annotation.read_bytes() == y.annotation.read_bytes()
        assert img_x.shape == (128, 128, 3) and img_x.dtype == np.uint8
        assert not np.array_equal(img_x, img_z)
        root = ElementTree.parse(x.annotation).getroot()
        assert root.tag == "Annotations" and len(root.findall("./Annotation/Regions/Region")) == x.n_nuclei
        polygons = read_aperio_polygons(x.annotation)
        assert all(p.min() >= 0 and p.max() <= 128 for _, p in polygons)
        mask = rasterize_polygons(polygons, (128, 128), x.annotation)
        assert nuclei_pattern(mask) == x.pattern  # the intended position is what a describer measures
        nuclei, stroma = img_x[mask == 1].astype(float), img_x[mask == 0].astype(float)
        assert nuclei.mean(0)[0] < stroma.mean(0)[0] - 80  # purple (low red/green) vs pink
        assert nuclei.std(0).mean() > 8 and stroma.std(0).mean() > 4  # textured, noisy


def test_monuseg_like_every_pattern_and_full_size(tmp_path: Path) -> None:
    cases = make_monuseg_like(tmp_path / "p", n_train=len(DEFAULT_NUCLEI_PATTERNS), n_test=0, size=96, seed=11)
    assert not (tmp_path / "p" / MONUSEG_TEST_FOLDER).exists()
    for case in cases:
        mask = rasterize_polygons(read_aperio_polygons(case.annotation), (96, 96), case.annotation)
        assert nuclei_pattern(mask) == case.pattern
    (big,) = make_monuseg_like(tmp_path / "big", n_train=1, n_test=0, size=1000, seed=0)
    assert tifffile.imread(big.image).shape == (1000, 1000, 3) and big.n_nuclei > 150
    radii = [np.ptp(p[:, 0]) / 2 for _, p in read_aperio_polygons(big.annotation)]
    assert 5 < np.median(radii) < 15


def test_msd_like_layout_geometry_and_intensities(tmp_path: Path) -> None:
    cases = make_msd_like(tmp_path / "a", n_train=4, n_test=1, n_classes=4, seed=2)
    again = make_msd_like(tmp_path / "b", n_train=4, n_test=1, n_classes=4, seed=2)
    task = tmp_path / "a" / "Task90_SynthKidney"
    meta = json.loads((task / "dataset.json").read_text())
    assert meta["numTraining"] == 4 and meta["labels"]["3"] == "kidney cyst" and meta["modality"] == {"0": "CT"}
    assert meta["training"][0] == {"image": "./imagesTr/kidney_000.nii.gz", "label": "./labelsTr/kidney_000.nii.gz"}
    assert meta["test"] == ["./imagesTs/kidney_004.nii.gz"] and cases[4].label is None
    for case, twin in zip(cases, again, strict=True):
        img = nib.load(case.image)
        data = np.asarray(img.dataobj)
        np.testing.assert_array_equal(data, np.asarray(nib.load(twin.image).dataobj))
        assert all(32 <= s <= 48 for s in img.shape) and img.shape == case.shape and data.dtype == np.int16
        np.testing.assert_allclose(np.abs(np.diag(img.affine)[:3]), [1.5, 1.5, 2.0])
        np.testing.assert_allclose(img.affine, case.affine)
        assert np.sign(img.affine[0, 0]) == (1 if int(case.case_id[-3:]) % 2 == 0 else -1)
        if case.label is None:
            continue
        label = np.asarray(nib.load(case.label).dataobj)
        np.testing.assert_allclose(nib.load(case.label).affine, img.affine)
        assert label.dtype == np.uint8 and set(np.unique(label)) <= {0, 1, 2, 3}
        body = data[(label == 0) & (data > -500)].mean()
        kidney = data[label == 1].mean()
        assert kidney > body + 80 and data[label == 0].std() > 10
        if case.tumour_side:
            assert abs(data[label == 2].mean() - kidney) > 40
        # patient side from the affine: world x > FOV centre is the patient's right (RAS+)
        x = img.affine[0, 0] * np.nonzero(label == 1)[0] + img.affine[0, 3]
        mid = img.affine[0, 0] * (case.shape[0] - 1) / 2 + img.affine[0, 3]
        assert {("right" if v > mid else "left") for v in x} == set(case.kidney_sides)
    four_d = make_msd_like(tmp_path / "c", n_train=1, n_test=0, n_channels=2, n_classes=2, seed=0)
    assert nib.load(four_d[0].image).ndim == 4 and nib.load(four_d[0].image).shape[3] == 2
    with pytest.raises(ValueError, match="n_classes must be 2, 3 or 4"):
        make_msd_like(tmp_path / "d", n_classes=5)


def test_make_synthetic_data_cli(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("make_synthetic_data_cli", REPO / "tools" / "make_synthetic_data.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main(["msd", str(tmp_path / "m"), "--n-train", "2", "--n-test", "0", "--shape-range", "32,33"]) == 0
    assert len(list((tmp_path / "m" / "Task90_SynthKidney" / "labelsTr").glob("*.nii.gz"))) == 2
    assert module.main(["monuseg", str(tmp_path / "n"), "--n-train", "2", "--n-test", "1", "--size", "64"]) == 0
    path = get_converter("monuseg").convert(tmp_path / "n", tmp_path / "out", val_fraction=0.0)
    assert len(load_datalist(path)) == 2 and len(load_datalist(path, "test")) == 1
    assert module.main(["msd", str(tmp_path / "x"), "--n-classes", "9"]) == 2


#: layout -> the smallest options of its generator (``--name value``)
SMALL_LAYOUTS = {
    "monuseg": ["--n-train", "2", "--n-test", "1", "--size", "48"],
    "msd": ["--n-train", "2", "--n-test", "0", "--shape-range", "24,26"],
    "busi": ["--n-benign", "1", "--n-malignant", "3", "--n-normal", "1", "--size", "48,40"],
    "qata": ["--n-train", "2", "--n-val", "1", "--n-test", "1", "--size", "48"],
    "cxr_lungs": ["--n-montgomery", "1", "--n-shenzhen", "2"],
    "kits21": ["--n-labelled", "2", "--n-test", "0", "--shape-range", "24,26"],
    "lits": ["--n-labelled", "2", "--n-test", "0", "--shape-range", "24,26"],
}


@pytest.mark.parametrize("layout", list(SMALL_LAYOUTS))
def test_every_synthetic_layout_from_the_cli_converts(layout: str, tmp_path: Path) -> None:
    """Each layout's CLI options are its generator's (``busi`` used to crash on ``--n-train``); the dataset it
    writes converts with the converter of the same name into a datalist whose files exist."""
    spec = importlib.util.spec_from_file_location("make_synthetic_data_cli", REPO / "tools" / "make_synthetic_data.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main([layout, str(tmp_path / "raw"), *SMALL_LAYOUTS[layout]]) == 0
    path = get_converter(layout).convert(tmp_path / "raw", tmp_path / "out", seed=0)
    entries = [e for split in ("training", "validation", "test") for e in load_datalist(path, split, allow_empty=True)]
    assert len(entries) >= 2 and all(Path(e["image"]).is_file() for e in entries)


def test_synthetic_monuseg_is_learnable_by_a_tiny_unet(tmp_path: Path) -> None:
    """generate -> real converter -> datalist -> MONAI loading -> tiny UNet; held-out Dice beats trivial guesses."""
    from monai.losses import DiceCELoss
    from monai.networks.nets import UNet
    from monai.transforms import Compose, EnsureChannelFirstd, LoadImaged, ScaleIntensityRanged

    make_monuseg_like(tmp_path / "src", n_train=8, n_test=3, size=96, seed=5)
    path = get_converter("monuseg").convert(tmp_path / "src", tmp_path / "out", val_fraction=0.0)
    load = Compose(
        [
            LoadImaged(["image", "label"]),
            EnsureChannelFirstd(["image", "label"]),
            ScaleIntensityRanged("image", 0, 255, 0, 1),
        ]
    )

    def stack(split: str) -> tuple[torch.Tensor, torch.Tensor]:
        items = [load(e) for e in load_datalist(path, split)]
        return (
            torch.stack([torch.as_tensor(i["image"]) for i in items]).float(),
            torch.stack([torch.as_tensor(i["label"]) for i in items]).float(),
        )

    x_train, y_train = stack("training")
    x_test, y_test = stack("test")
    assert x_train.shape == (8, 3, 96, 96) and set(y_train.unique().tolist()) == {0.0, 1.0}
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        torch.manual_seed(0)
        gen = torch.Generator().manual_seed(0)
        net = UNet(2, 3, 1, channels=(8, 16, 32), strides=(2, 2), num_res_units=1)
        opt = torch.optim.Adam(net.parameters(), 3e-3)
        loss_fn = DiceCELoss(sigmoid=True)
        for it in range(150):
            idx = torch.randint(0, len(x_train), (8,), generator=gen)
            r, c = torch.randint(0, 96 - 48 + 1, (2,), generator=gen).tolist()
            xb, yb = x_train[idx, :, r : r + 48, c : c + 48], y_train[idx, :, r : r + 48, c : c + 48]
            if it % 2:
                xb, yb = xb.flip(-1), yb.flip(-1)
            loss = loss_fn(net(xb), yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
        net.eval()
        with torch.no_grad():
            pred = (net(x_test) > 0).float()
    finally:
        torch.set_num_threads(threads)
    dice = float(2 * (pred * y_test).sum() / (pred.sum() + y_test.sum()))
    fg = float(y_test.mean())
    all_foreground_dice = 2 * fg / (1 + fg)  # the empty guess scores 0
    assert dice > all_foreground_dice + 0.15 and dice > 0.6, (dice, all_foreground_dice)
