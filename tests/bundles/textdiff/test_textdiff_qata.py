"""QaTa-COV19 / LViT-layout converter, the stdlib .xlsx reader, and synthetic QaTa-layout data
(bundles/textdiff/docs/sources.md §1)."""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest
from common.data.converters import available_converters, get_converter
from common.data.converters.qata import read_lvit_text_table
from common.data.datalist import load_datalist
from common.data.synthetic_qata import make_qata_like
from common.data.xlsx import read_xlsx_rows, write_xlsx_table
from common.errors import BadInputError
from PIL import Image


def test_xlsx_round_trip_and_errors(tmp_path):
    path = write_xlsx_table(
        tmp_path / "t.xlsx",
        ["Image", "Description"],
        [
            ["mask_covid_1.png", "Bilateral pulmonary infection, two infected areas & more <x>."],
            ["mask_covid_2.png", "Unilateral pulmonary infection, one infected area, lower left lung."],
        ],
    )
    assert read_xlsx_rows(path)[1] == [
        "mask_covid_1.png",
        "Bilateral pulmonary infection, two infected areas & more <x>.",
    ]
    assert read_lvit_text_table(path)["mask_covid_2"].startswith("Unilateral")
    # inline strings and numbers, as other writers produce
    sheet = (
        '<worksheet xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main"><sheetData>'
        '<row r="1"><c r="A1" t="inlineStr"><is><t>Image</t></is></c><c r="B1" '
        't="inlineStr"><is><t>Description</t></is></c></row>'
        '<row r="2"><c r="A2" t="inlineStr"><is><t>a.png</t></is></c><c '
        'r="C2"><v>3</v></c></row></sheetData></worksheet>'
    )
    other = tmp_path / "inline.xlsx"
    with zipfile.ZipFile(other, "w") as z:
        z.writestr("xl/worksheets/sheet1.xml", sheet)
    assert read_xlsx_rows(other) == [["Image", "Description"], ["a.png", "", "3"]]
    (tmp_path / "bad.xlsx").write_text("not a zip")
    with pytest.raises(BadInputError, match="bad.xlsx: not an .xlsx file"):
        read_xlsx_rows(tmp_path / "bad.xlsx")


@pytest.mark.parametrize("text_format", ["xlsx", "csv"])
def test_qata_converter_on_synthetic_lvit_layout(tmp_path, text_format):
    cases = make_qata_like(tmp_path / "raw", n_train=4, n_val=2, n_test=2, size=48, seed=1, text_format=text_format)
    assert "qata" in available_converters()
    path = get_converter("qata").convert(tmp_path / "raw", tmp_path / "out")
    doc = json.loads(path.read_text())
    assert [len(doc[s]) for s in ("training", "validation", "test")] == [4, 2, 2]
    assert doc["labels"] == {"0": "background", "1": "lesion"}
    truth = {c.image.stem: c for c in cases}
    for entry in load_datalist(path, "test"):
        c = truth[entry["case_id"]]
        assert entry["text"] == c.text and entry["text_source"] == "dataset"
        img = np.asarray(Image.open(entry["image"]))
        lbl = np.asarray(Image.open(entry["label"]))
        assert img.shape == (48, 48, 3) and np.array_equal(img[..., 0], img[..., 2])  # grayscale -> 3 channels
        assert set(np.unique(lbl)) <= {0, 1} and np.array_equal(lbl, np.asarray(Image.open(c.mask)) > 0)
        # the sentence describes the generated lesions: each named zone/side has foreground there
        for zone, side in c.areas:
            cols = slice(0, 24) if side == "right" else slice(24, 48)  # patient's right lung = image left
            rows = {"upper": slice(8, 22), "middle": slice(17, 31), "lower": slice(26, 40)}[zone]
            assert lbl[rows, cols].any(), (zone, side, c.text)
        assert c.text.startswith("Bilateral" if len({s for _, s in c.areas}) == 2 else "Unilateral")


def test_qata_converter_errors_name_the_file(tmp_path):
    make_qata_like(tmp_path / "raw", n_train=3, n_val=0, n_test=1, size=32, seed=0)
    # without Val_Folder the validation split comes from Train_Folder
    doc = json.loads(get_converter("qata").convert(tmp_path / "raw", tmp_path / "o1", val_fraction=0.34).read_text())
    assert len(doc["training"]) == 2 and len(doc["validation"]) == 1
    (tmp_path / "raw" / "Test_Folder" / "Test_text.xlsx").unlink()
    with pytest.raises(BadInputError, match=r"Test_text.xlsx: text table missing"):
        get_converter("qata").convert(tmp_path / "raw", tmp_path / "o2")
    write_xlsx_table(
        tmp_path / "raw" / "Test_Folder" / "Test_text.xlsx", ["Image", "Description"], [["other.png", "x"]]
    )
    with pytest.raises(BadInputError, match=r"no description for mask_covid_20001.png"):
        get_converter("qata").convert(tmp_path / "raw", tmp_path / "o3")
    next((tmp_path / "raw" / "Train_Folder" / "labelcol").iterdir()).unlink()
    with pytest.raises(BadInputError, match=r"mask_covid_\d+.png: mask missing"):
        get_converter("qata").convert(tmp_path / "raw", tmp_path / "o4")
    with pytest.raises(BadInputError, match="Train_Folder: missing training folder"):
        get_converter("qata").convert(tmp_path / "raw" / "Test_Folder", tmp_path / "o5")


def test_label_efficient_subset_is_seeded_and_recorded(tmp_path):
    from common.data.subsets import select_training_subset, write_training_subset

    cases = [{"case_id": f"c{i}"} for i in range(30)]
    a = select_training_subset(cases, 5, seed=40)
    assert write_training_subset(a, 40, tmp_path / "train_cases.json")
    assert a == select_training_subset(cases, 5, seed=40) and len(a) == 5
    assert a != select_training_subset(cases, 5, seed=41)
    assert [c["case_id"] for c in a] == sorted((c["case_id"] for c in a), key=lambda s: int(s[1:]))  # datalist order
    assert json.loads((tmp_path / "train_cases.json").read_text())["case_ids"] == [c["case_id"] for c in a]
    assert select_training_subset(cases, None) == cases
    with pytest.raises(BadInputError, match="asked for 31 training cases but the training split has 30"):
        select_training_subset(cases, 31)
