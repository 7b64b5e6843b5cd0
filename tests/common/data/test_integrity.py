"""The start-of-run dataset check (issue 13): all problems of all cases in one table, empty masks refused unless
allowed (then counted), an all-empty training set refused either way, one BadInputError naming the datalist."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from common.data.integrity import check_dataset, checks_of, require_valid_dataset
from common.errors import BadInputError
from common.transforms.checks import CheckedLoadImaged, CheckImageLabeld
from monai.transforms import Compose, RandFlipd
from PIL import Image


def _case(root: Path, i: int, empty: bool = False) -> dict:
    img = (np.random.default_rng(i).random((24, 20)) * 255).astype(np.uint8)
    lab = np.zeros((24, 20), np.uint8)
    if not empty:
        lab[5:12, 4:9] = 1
    Image.fromarray(img).save(root / f"img{i}.png")
    Image.fromarray(lab).save(root / f"lab{i}.png")
    return {"case_id": f"c{i}", "image": str(root / f"img{i}.png"), "label": str(root / f"lab{i}.png")}


def _pipeline() -> Compose:
    return Compose(
        [
            CheckedLoadImaged(keys=["image", "label"], ensure_channel_first=True),
            CheckImageLabeld(keys=["image", "label"], spatial_dims=2, image_channels=1, label_values=[0, 1]),
            RandFlipd(keys=["image", "label"], prob=0.5),
        ]
    )


def test_every_bad_case_is_one_row_and_the_error_names_the_datalist(tmp_path, capsys):
    entries = [_case(tmp_path, i) for i in range(5)]
    (tmp_path / "img1.png").write_bytes(b"broken")
    Image.fromarray(np.full((24, 20), 3, np.uint8)).save(tmp_path / "lab3.png")  # label value 3
    checks = checks_of(_pipeline())
    assert len(checks.transforms) == 2, "stops at the last CheckImageLabeld (nothing random)"
    report = check_dataset(entries, checks)
    assert [p.case_id for p in report.problems] == ["c1", "c3"]
    assert "img1.png" in report.problems[0].source and "[3]" in report.problems[1].problem
    with pytest.raises(BadInputError) as info:
        require_valid_dataset(entries, _pipeline(), "data/datalist.json")
    assert str(info.value).startswith("data/datalist.json: 2 of 5 cases fail") and "'c1'" in str(info.value)
    table = capsys.readouterr().err
    assert "| c1 |" in table and "| c3 |" in table


def test_empty_masks_refused_unless_allowed_and_all_empty_refused_always(tmp_path):
    entries = [_case(tmp_path, i, empty=i in (0, 2)) for i in range(4)]
    with pytest.raises(BadInputError, match="2 of 4 cases fail") as info:
        require_valid_dataset(entries, _pipeline(), "dl.json")
    assert "allow_empty_masks" in str(info.value)
    report = require_valid_dataset(entries, _pipeline(), "dl.json", allow_empty_masks=True)
    assert report.empty_masks == ["c0", "c2"] and report.ok
    all_empty = [_case(tmp_path / "e", i, empty=True) for i in range(3)] if (tmp_path / "e").mkdir() is None else []
    with pytest.raises(BadInputError, match="every one of the 3 training masks is empty"):
        require_valid_dataset(all_empty, _pipeline(), "dl.json", allow_empty_masks=True)
    # inference data (no labels) and a disabled check pass
    images_only = Compose(
        [
            CheckedLoadImaged(keys="image", ensure_channel_first=True),
            CheckImageLabeld(keys=["image", "label"], spatial_dims=2, image_channels=1),
        ]
    )
    inference = [{k: e[k] for k in ("case_id", "image")} for e in entries]
    assert require_valid_dataset(inference, images_only, "x", training=False).ok
    assert require_valid_dataset(entries, _pipeline(), "dl.json", enabled=False) is None
