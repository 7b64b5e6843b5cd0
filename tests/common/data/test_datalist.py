"""Datalist format (common.data.datalist): round trip, MONAI compatibility, error messages, splits, K-fold."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from common.data.datalist import (
    datalist_splits,
    kfold_splits,
    load_datalist,
    read_datalist,
    split_cases,
    write_datalist,
)
from common.errors import BadInputError
from monai.data import load_decathlon_datalist


def _entry(case: str, with_label: bool = True) -> dict:
    entry = {"case_id": case, "image": f"images/{case}.png", "text": f"text of {case}.", "text_source": "generated"}
    if with_label:
        entry["label"] = f"labels/{case}.png"
    return entry


def _make_files(root: Path, cases: list[str]) -> None:
    for sub in ("images", "labels"):
        (root / sub).mkdir(parents=True, exist_ok=True)
        for c in cases:
            (root / sub / f"{c}.png").write_bytes(b"x")


def _doc(train=("a", "b"), val=("c",), test=("d",)) -> dict:
    return {
        "name": "toy",
        "description": "toy datalist",
        "source_layout": "test",
        "spatial_dims": 2,
        "modality": {"0": "H&E"},
        "labels": {"0": "background", "1": "nucleus"},
        "training": [_entry(c) for c in train],
        "validation": [_entry(c) for c in val],
        "test": [_entry(c, with_label=False) for c in test],
    }


@pytest.fixture
def datalist_file(tmp_path: Path) -> Path:
    _make_files(tmp_path, ["a", "b", "c", "d"])
    return write_datalist(tmp_path / "datalist.json", _doc())


def test_round_trip_absolute_paths_and_extra_keys(datalist_file: Path, tmp_path: Path) -> None:
    train = load_datalist(datalist_file, "training")
    assert [e["case_id"] for e in train] == ["a", "b"]
    assert train[0]["image"] == str(tmp_path / "images" / "a.png")
    assert train[0]["label"] == str(tmp_path / "labels" / "a.png")
    assert train[0]["text"] == "text of a." and train[0]["text_source"] == "generated"
    test = load_datalist(datalist_file, "test")
    assert "label" not in test[0] and test[0]["image"] == str(tmp_path / "images" / "d.png")
    # the file stores relative paths; nothing temporary is left next to it
    assert json.loads(datalist_file.read_text())["training"][0]["image"] == "images/a.png"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["datalist.json", "images", "labels"]
    assert datalist_splits(read_datalist(datalist_file)) == ["training", "validation", "test"]


def test_monai_reads_the_same_paths(datalist_file: Path) -> None:
    for split in ("training", "validation", "test"):
        ours = load_datalist(datalist_file, split)
        theirs = load_decathlon_datalist(datalist_file, data_list_key=split)
        assert [(e["image"], e.get("label")) for e in ours] == [(e["image"], e.get("label")) for e in theirs]
        assert [e["text"] for e in ours] == [e["text"] for e in theirs]


def test_absolute_paths_are_kept(tmp_path: Path) -> None:
    _make_files(tmp_path / "elsewhere", ["a"])
    doc = _doc(train=("a",), val=(), test=())
    doc["training"][0]["image"] = str(tmp_path / "elsewhere" / "images" / "a.png")
    doc["training"][0]["label"] = str(tmp_path / "elsewhere" / "labels" / "a.png")
    path = write_datalist(tmp_path / "sub" / "dl.json", doc)
    assert load_datalist(path)[0]["image"] == str(tmp_path / "elsewhere" / "images" / "a.png")
    assert load_datalist(path, "validation", allow_empty=True) == []
    with pytest.raises(BadInputError, match="split 'validation' is empty"):
        load_datalist(path, "validation")


def test_missing_split_names_file_and_available_splits(datalist_file: Path) -> None:
    with pytest.raises(BadInputError) as err:
        load_datalist(datalist_file, "fold3")
    assert str(datalist_file) in str(err.value) and "missing split 'fold3'" in str(err.value)
    assert "'training', 'validation', 'test'" in str(err.value)


def test_missing_file_names_case_and_path(datalist_file: Path, tmp_path: Path) -> None:
    (tmp_path / "labels" / "b.png").unlink()
    with pytest.raises(BadInputError) as err:
        load_datalist(datalist_file, "training")
    msg = str(err.value)
    assert msg.startswith(str(datalist_file)) and "case 'b'" in msg and str(tmp_path / "labels" / "b.png") in msg
    assert len(load_datalist(datalist_file, "training", check_files=False)) == 2
    assert len(load_datalist(datalist_file, "validation")) == 1  # other splits unaffected


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda d: d.pop("training"), "missing split 'training'"),
        (lambda d: d.pop("labels"), "missing top-level key(s) ['labels']"),
        (lambda d: d.update(spatial_dims=4), "spatial_dims must be 2 or 3"),
        (lambda d: d["training"][1].pop("text"), "case 'b': missing key(s) ['text']"),
        (lambda d: d["training"][1].update(text="  "), "case 'b': entry without text"),
        (lambda d: d["training"][0].pop("label"), "case 'a': missing key(s) ['label']"),
        (lambda d: d["validation"].append(_entry("a")), "duplicate case id 'a'"),
        (lambda d: d["test"].append(_entry("b", with_label=False)), "duplicate case id 'b'"),
        (lambda d: d.update(labels={"1": "x"}), 'must name class "0"'),
        (lambda d: d.update(training=[]), "split 'training' is empty"),
    ],
)
def test_invalid_documents_are_rejected_by_load_and_write(tmp_path: Path, mutate, message: str) -> None:
    _make_files(tmp_path, ["a", "b", "c", "d"])
    doc = _doc()
    mutate(doc)
    path = tmp_path / "datalist.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(BadInputError) as err:
        load_datalist(path, "training", check_files=False)
    assert str(path) in str(err.value) and message in str(err.value)
    target = tmp_path / "new.json"
    with pytest.raises(BadInputError, match=__import__("re").escape(message)):
        write_datalist(target, doc)
    assert not target.exists()


def test_write_checks_files_relative_to_destination(tmp_path: Path) -> None:
    _make_files(tmp_path / "data", ["a", "b", "c", "d"])
    with pytest.raises(BadInputError, match="case 'a': image file not found"):
        write_datalist(tmp_path / "datalist.json", _doc())  # files are under data/, not next to the datalist
    assert write_datalist(tmp_path / "data" / "datalist.json", _doc()).is_file()


def test_malformed_json_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "broken.json"
    path.write_text("{not json")
    with pytest.raises(BadInputError, match="broken.json: not a valid JSON file"):
        load_datalist(path)
    with pytest.raises(BadInputError, match="datalist file not found"):
        load_datalist(tmp_path / "absent.json")


def test_split_cases_deterministic_sorted_and_disjoint() -> None:
    ids = [f"case_{i:03d}" for i in range(50)]
    a = split_cases(ids, val_fraction=0.1, test_fraction=0.2, seed=3)
    b = split_cases(list(reversed(ids)), val_fraction=0.1, test_fraction=0.2, seed=3)
    assert a == b  # input order does not matter
    assert [len(a[k]) for k in ("training", "validation", "test")] == [36, 4, 10]
    assert sorted(a["training"] + a["validation"] + a["test"]) == ids
    assert all(a[k] == sorted(a[k]) for k in a)
    assert split_cases(ids, 0.1, 0.2, seed=4) != a


@pytest.mark.parametrize(
    "n, expected", [(300, (216, 24, 60)), (281, (202, 23, 56)), (131, (94, 11, 26)), (126, (91, 10, 25))]
)
def test_split_sizes_match_the_textdiffseg_spec(n: int, expected: tuple[int, int, int]) -> None:
    split = split_cases([str(i) for i in range(n)], val_fraction=0.1, test_fraction=0.2, seed=0)
    assert (len(split["training"]), len(split["validation"]), len(split["test"])) == expected


def test_split_cases_small_and_bad_inputs() -> None:
    assert split_cases(["a", "b", "c"], 0.2, 0.0, 0) == split_cases(["c", "b", "a"], 0.2, 0.0, 0)
    assert [len(v) for v in split_cases(["a", "b", "c"], 0.2, 0.0, 0).values()] == [2, 1, 0]
    assert [len(v) for v in split_cases(["a"], 0.2, 0.0, 0).values()] == [1, 0, 0]
    with pytest.raises(BadInputError, match="duplicate case ids \\['a'\\]"):
        split_cases(["a", "a", "b"], 0.2)
    with pytest.raises(BadInputError, match="val_fraction: must be in"):
        split_cases(["a", "b"], 1.0)
    with pytest.raises(BadInputError, match="none for training"):
        split_cases(["a", "b"], 0.5, 0.5)


def test_kfold_matches_sklearn_kfold_without_shuffle() -> None:
    # expected values = sklearn.model_selection.KFold(n_splits=3).split(range(10)) / range(7)
    ids = [f"c{i}" for i in range(10)]
    folds = kfold_splits(ids, 3)
    assert [held for _, held in folds] == [ids[0:4], ids[4:7], ids[7:10]]
    assert folds[1][0] == ids[0:4] + ids[7:10]
    assert [len(h) for _, h in kfold_splits([str(i) for i in range(7)], 3)] == [3, 2, 2]
    order = ["z", "a", "m", "b"]  # dataset.json order is kept, no sorting
    assert [h for _, h in kfold_splits(order, 2)] == [["z", "a"], ["m", "b"]]
    with pytest.raises(BadInputError, match="cannot split 2 case"):
        kfold_splits(["a", "b"], 3)
    with pytest.raises(BadInputError, match="n_folds"):
        kfold_splits(["a", "b"], 1)
    with pytest.raises(BadInputError, match="duplicate"):
        kfold_splits(["a", "a", "b"], 2)


def test_every_missing_file_of_a_split_is_named_at_once(tmp_path: Path) -> None:
    _make_files(tmp_path, ["a", "b"])
    path = tmp_path / "datalist.json"
    path.write_text(json.dumps(_doc()))
    (tmp_path / "images" / "a.png").unlink()
    (tmp_path / "labels" / "b.png").unlink()
    with pytest.raises(BadInputError) as err:
        load_datalist(path, "training")
    message = str(err.value)
    assert "split 'training': 2 files not found" in message
    assert "case 'a': image file not found" in message and "case 'b': label file not found" in message
