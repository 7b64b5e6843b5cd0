"""Dataset converters (common.data.converters): registry, MoNuSeg and MSD layouts via the synthetic generator,
texts consistent with the labels, geometry, error messages, command line."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import common.data.converters as registry
import nibabel as nib
import numpy as np
import pytest
import tifffile
from common.data.converters import available_converters, get_converter, register_converter
from common.data.converters.base import DatasetConverter
from common.data.converters.monuseg import MONUSEG_TEST_FOLDER, MONUSEG_TRAIN_FOLDER, read_aperio_polygons
from common.data.datalist import REQUIRED_TOP_KEYS, load_datalist, read_datalist
from common.data.describe import count_components_2d, describe_nuclei_mask
from common.data.synthetic import make_monuseg_like, make_msd_like
from common.errors import BadInputError
from common.utils.bundles import REPO_ROOT
from monai.data import load_decathlon_datalist
from monai.transforms import MapLabelValue
from PIL import Image

REPO = REPO_ROOT
LVIT = {
    "even": "The nuclei are evenly distributed.",
    "sparse": "The nuclei are sparsely distributed.",
    "irregular": "The nuclei are irregularly distributed.",
    "around": "The nuclei density is higher around.",
}


def _polygon_area(pts: np.ndarray) -> float:
    x, y = pts[:, 0], pts[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1))))


# ------------------------------------------------------------------------------------------------ registry


def test_registry_lists_builtin_converters_and_rejects_unknown_names() -> None:
    names = available_converters()
    assert {"monuseg", "msd"} <= set(names) and all(names.values())
    assert isinstance(get_converter("msd"), DatasetConverter)
    with pytest.raises(BadInputError) as err:
        get_converter("kits99")
    assert "kits99: unknown dataset converter" in str(err.value) and "monuseg" in str(err.value)


def test_new_converter_is_one_decorated_class(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))

    @register_converter("toy")
    class ToyConverter(DatasetConverter):
        description = "toy"
        expected_layout = "  cases/<id>.png"

        def check_layout(self, src, options):
            if not (src / "cases").is_dir():
                raise self.layout_error(src / "cases", "missing folder")
            return sorted((src / "cases").glob("*.png"))

        def build(self, layout, dst, **options):
            entries = [{"case_id": p.stem, "image": str(p), "label": str(p), "text": "a toy."} for p in layout]
            header = ("toy", "", "toy", 2, {"0": "x"}, {"0": "background"})  # the datalist's required keys
            return {**dict(zip(REQUIRED_TOP_KEYS, header, strict=True)), "training": entries}

    assert "toy" in available_converters() and ToyConverter.name == "toy"
    with pytest.raises(BadInputError, match="cases: missing folder; expected layout:\n  cases/<id>.png"):
        get_converter("toy").convert(tmp_path, tmp_path / "out")
    (tmp_path / "cases").mkdir()
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "cases" / "1.png")  # converters read what they list
    assert load_datalist(get_converter("toy").convert(tmp_path, tmp_path / "out"))[0]["case_id"] == "1"
    with pytest.raises(BadInputError, match="unknown option\\(s\\) \\['colour'\\]"):
        get_converter("toy").convert(tmp_path, tmp_path / "out", colour="red")
    with pytest.raises(ValueError, match="already taken"):
        register_converter("toy")(type("Other", (ToyConverter,), {}))


# ------------------------------------------------------------------------------------------------ MoNuSeg


@pytest.fixture
def monuseg_src(tmp_path: Path):
    cases = make_monuseg_like(tmp_path / "src", n_train=6, n_test=2, size=96, seed=1)
    return tmp_path / "src", cases


def test_monuseg_end_to_end(monuseg_src, tmp_path: Path) -> None:
    src, cases = monuseg_src
    path = get_converter("monuseg").convert(src, tmp_path / "out", seed=0, val_fraction=0.2)
    doc = read_datalist(path, check_files=True)
    assert doc["spatial_dims"] == 2 and doc["labels"] == {"0": "background", "1": "nucleus"}
    train, val, test = (load_datalist(path, s) for s in ("training", "validation", "test"))
    assert (len(train), len(val), len(test)) == (5, 1, 2)
    by_id = {c.case_id: c for c in cases}
    assert {e["case_id"] for e in train + val} == {c.case_id for c in cases if c.release == "training"}
    assert {e["case_id"] for e in test} == {c.case_id for c in cases if c.release == "test"}
    assert all(e["image"].startswith(str(tmp_path / "out" / "imagesTs")) for e in test)
    for entry in train + val + test:
        truth = by_id[entry["case_id"]]
        image = np.asarray(Image.open(entry["image"]))
        mask = np.asarray(Image.open(entry["label"]))
        np.testing.assert_array_equal(image, tifffile.imread(truth.image))  # pixels unchanged
        assert mask.shape == image.shape[:2] == (96, 96) and mask.dtype == np.uint8
        assert set(np.unique(mask).tolist()) == {0, 1}
        polygons = read_aperio_polygons(truth.annotation)
        assert entry["n_nuclei"] == len(polygons) == truth.n_nuclei
        area = sum(_polygon_area(p) for _, p in polygons)  # nuclei do not overlap
        assert abs(int(mask.sum()) - area) < 0.35 * area
        inside, outside = image[mask == 1].mean(0), image[mask == 0].mean(0)
        assert inside[1] < outside[1] - 60  # purple nuclei on pink background
        expected = LVIT.get(truth.pattern, f"The nuclei density in the {truth.pattern} is high.")
        assert entry["text"] == expected and entry["text_source"] == "generated"
    theirs = load_decathlon_datalist(path, data_list_key="validation")
    assert theirs[0]["image"] == val[0]["image"] and theirs[0]["text"] == val[0]["text"]


def test_monuseg_accepts_the_training_release_alone_and_detailed_text(monuseg_src, tmp_path: Path) -> None:
    src, cases = monuseg_src
    path = get_converter("monuseg").convert(
        src / MONUSEG_TRAIN_FOLDER, tmp_path / "out", val_fraction=0.2, test_fraction=0.2, text_style="detailed"
    )
    entries = [e for s in ("training", "validation", "test") for e in load_datalist(path, s)]
    assert len(load_datalist(path, "test")) == 1  # carved from the training release
    assert len(entries) == 6 and all(e["image"].startswith(str(tmp_path / "out" / "imagesTr")) for e in entries)
    for e in entries:
        assert e["text"].startswith(f"There are {e['n_nuclei']} nuclei covering ")
    with pytest.raises(BadInputError, match="only the test release was given"):
        get_converter("monuseg").convert(src / MONUSEG_TEST_FOLDER, tmp_path / "out2")


@pytest.mark.parametrize("fmt", ["json", "csv"])
def test_monuseg_text_file(monuseg_src, tmp_path: Path, fmt: str) -> None:
    src, cases = monuseg_src
    texts = {f"{c.case_id}.png": f"Sentence for {c.case_id[8:12]}." for c in cases}
    table = tmp_path / f"texts.{fmt}"

    def write(rows: dict) -> None:
        if fmt == "json":
            table.write_text(json.dumps(rows))
        else:
            table.write_text("Image,Description\n" + "".join(f"{k},{v}\n" for k, v in rows.items()))

    write(texts)
    path = get_converter("monuseg").convert(src, tmp_path / "out", text_file=str(table))
    for e in load_datalist(path, "training") + load_datalist(path, "test"):
        assert e["text"] == texts[e["case_id"] + ".png"] and e["text_source"] == "dataset"
    write(dict(list(texts.items())[1:]))
    with pytest.raises(BadInputError) as err:
        get_converter("monuseg").convert(src, tmp_path / "out3", text_file=str(table))
    assert str(table) in str(err.value) and f"no text for case '{cases[0].case_id}'" in str(err.value)


def test_monuseg_layout_and_file_errors_name_the_file(monuseg_src, tmp_path: Path) -> None:
    src, cases = monuseg_src
    conv = get_converter("monuseg")
    train_dir = src / MONUSEG_TRAIN_FOLDER
    first = cases[0]

    bad = tmp_path / "no_ann"
    shutil.copytree(src, bad)
    shutil.rmtree(bad / MONUSEG_TRAIN_FOLDER / "Annotations")
    with pytest.raises(BadInputError) as err:
        conv.convert(bad, tmp_path / "o1")
    assert f"{bad / MONUSEG_TRAIN_FOLDER / 'Annotations'}: missing folder; expected layout:" in str(err.value)

    (tmp_path / "unrelated").mkdir()
    with pytest.raises(BadInputError, match="unrelated/MoNuSeg 2018 Training Data: missing training-release folder"):
        conv.convert(tmp_path / "unrelated", tmp_path / "o")

    (train_dir / "Annotations" / f"{first.case_id}.xml").rename(tmp_path / "moved.xml")
    with pytest.raises(BadInputError) as err:
        conv.convert(src, tmp_path / "o2")
    assert f"Annotations/{first.case_id}.xml: annotation missing for image" in str(err.value)
    assert str(first.image) in str(err.value)
    (tmp_path / "moved.xml").rename(first.annotation)

    first.annotation.write_text("<Annotations><Annotation><Regions><Region Id='1'>")
    with pytest.raises(BadInputError, match=f"{first.case_id}.xml: unparsable annotation XML"):
        conv.convert(src, tmp_path / "o3")

    first.annotation.write_text(
        "<Annotations><Annotation><Regions><Region Id='7'><Vertices><Vertex X='10' Y='10'/><Vertex X='150' Y='12'/>"
        "<Vertex X='20' Y='30'/></Vertices></Region></Regions></Annotation></Annotations>"
    )
    with pytest.raises(BadInputError) as err:
        conv.convert(src, tmp_path / "o4")
    assert str(first.annotation) in str(err.value) and "region 7: polygon outside the 96x96 image" in str(err.value)

    tifffile.imwrite(first.image, np.zeros((96, 96), np.uint8))
    with pytest.raises(BadInputError, match=f"{first.case_id}.tif: image is not 8-bit RGB: shape \\(96, 96\\)"):
        conv.convert(src, tmp_path / "o5")
    assert not (tmp_path / "o5" / "datalist.json").exists()


# ------------------------------------------------------------------------------------------------ MSD


def _expected_phrases(case) -> list[str]:
    sides = case.kidney_sides
    phrases = ["the kidney on both sides" if len(sides) == 2 else f"the {sides[0]} kidney"]
    if case.tumour_side:
        phrases.append(f"a kidney tumour on the {case.tumour_side}")
    if case.cyst_side:
        phrases.append(f"a kidney cyst on the {case.cyst_side}")
    return phrases


def test_msd_end_to_end_texts_follow_the_labels_and_the_affine(tmp_path: Path) -> None:
    cases = make_msd_like(tmp_path / "src", n_train=8, n_test=2, n_classes=4, seed=3)
    task = tmp_path / "src" / "Task90_SynthKidney"
    path = get_converter("msd").convert(task, tmp_path / "out", seed=0)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["datalist.json"]  # nothing copied
    doc = read_datalist(path, check_files=True)
    assert doc["modality"] == {"0": "CT"} and doc["spatial_dims"] == 3
    assert doc["labels"] == {"0": "background", "1": "kidney", "2": "kidney tumour", "3": "kidney cyst"}
    assert "label_mapping" not in doc and "image_channels" not in doc
    split = {s: load_datalist(path, s) for s in ("training", "validation", "test", "unlabelled")}
    assert [len(v) for v in split.values()] == [6, 1, 1, 2]
    by_id = {c.case_id: c for c in cases}
    seen_sides = set()
    for entry in split["training"] + split["validation"] + split["test"]:
        truth = by_id[entry["case_id"]]
        assert Path(entry["image"]) == truth.image.resolve() and Path(entry["label"]) == truth.label.resolve()
        assert not Path(json.loads(path.read_text())["training"][0]["image"]).is_absolute()
        img = nib.load(entry["image"])
        assert img.shape == truth.shape
        np.testing.assert_allclose(img.affine, truth.affine)
        assert entry["text"].startswith("CT of the abdomen showing ") and entry["text"].endswith(".")
        for phrase in _expected_phrases(truth):
            assert phrase in entry["text"], (entry["text"], truth)
        opposite = {"left": "right", "right": "left"}
        if truth.tumour_side:
            assert f"tumour on the {opposite[truth.tumour_side]}" not in entry["text"]
        seen_sides.add((truth.affine[0, 0] > 0, truth.kidney_sides))
    assert {s[0] for s in seen_sides} == {True, False}  # both x orientations were exercised
    assert [e["text"] for e in split["unlabelled"]] == ["CT of the abdomen."] * 2
    assert all("label" not in e for e in split["unlabelled"])
    theirs = load_decathlon_datalist(path, data_list_key="training")
    assert [e["label"] for e in theirs] == [e["label"] for e in split["training"]]


def test_msd_channel_selection_and_label_merging(tmp_path: Path) -> None:
    cases = make_msd_like(tmp_path / "src", n_train=4, n_test=0, n_classes=3, n_channels=2, seed=0)
    # a parent folder holding one task folder is accepted too
    path = get_converter("msd").convert(
        tmp_path / "src",
        tmp_path / "out",
        channels=[0],
        binary=True,
        label_names={"1": "kidney region"},
        val_fraction=0.0,
        test_fraction=0.0,
    )
    doc = read_datalist(path)
    assert doc["modality"] == {"0": "T2"} and doc["image_channels"] == [0]
    assert doc["labels"] == {"0": "background", "1": "kidney region"}
    assert doc["label_mapping"] == {"orig_labels": [2], "target_labels": [1]}
    assert doc["source_labels"] == {"0": "background", "1": "kidney", "2": "kidney tumour"}
    entries = load_datalist(path)
    assert len(entries) == 4
    for e in entries:
        assert e["text"].startswith("T2-weighted MRI of the abdomen showing the ") and "tumour" not in e["text"]
    merge = MapLabelValue(doc["label_mapping"]["orig_labels"], doc["label_mapping"]["target_labels"])
    label = np.asarray(nib.load(cases[0].label).dataobj)
    assert set(np.unique(np.asarray(merge(label))).tolist()) <= {0, 1}
    merged = get_converter("msd").convert(
        tmp_path / "src", tmp_path / "out2", label_mapping={"2": 1}, test_fraction=0.0
    )
    assert read_datalist(merged)["labels"] == {"0": "background", "1": "kidney and kidney tumour"}
    with pytest.raises(BadInputError, match="channels: invalid channel\\(s\\) \\[2\\]: the images have 2 channel"):
        get_converter("msd").convert(tmp_path / "src", tmp_path / "out3", channels=[2])
    with pytest.raises(BadInputError, match="label 5 is not in dataset.json labels"):
        get_converter("msd").convert(tmp_path / "src", tmp_path / "out4", label_mapping={"5": 1})


def test_msd_ignores_macos_resource_files(tmp_path: Path) -> None:
    make_msd_like(tmp_path / "src", n_train=3, n_test=2, seed=0)
    task = tmp_path / "src" / "Task90_SynthKidney"
    for sub in ("imagesTr", "labelsTr", "imagesTs"):
        (task / sub / "._kidney_000.nii.gz").write_bytes(b"\x00\x05\x16\x07 AppleDouble")
    meta = json.loads((task / "dataset.json").read_text())
    del meta["test"]  # imagesTs is then listed from the folder
    (task / "dataset.json").write_text(json.dumps(meta))
    path = get_converter("msd").convert(task, tmp_path / "out", val_fraction=0.0, test_fraction=0.0)
    assert [e["case_id"] for e in load_datalist(path, "unlabelled")] == ["kidney_003", "kidney_004"]
    assert len(load_datalist(path)) == 3


def test_msd_errors_name_the_files(tmp_path: Path) -> None:
    cases = make_msd_like(tmp_path / "src", n_train=3, n_test=0, seed=0)
    task = tmp_path / "src" / "Task90_SynthKidney"
    conv = get_converter("msd")

    empty = tmp_path / "Task01_Empty"
    (empty / "imagesTr").mkdir(parents=True)
    with pytest.raises(BadInputError) as err:
        conv.convert(empty, tmp_path / "o")
    assert f"{empty / 'dataset.json'}: missing dataset.json; expected layout:" in str(err.value)

    lbl = cases[1].label
    original = lbl.read_bytes()
    nib.save(nib.Nifti1Image(np.zeros((5, 6, 7), np.uint8), cases[1].affine), lbl)
    with pytest.raises(BadInputError) as err:
        conv.convert(task, tmp_path / "o")
    assert str(cases[1].image) in str(err.value) and str(lbl) in str(err.value) and "differ in shape" in str(err.value)

    shifted = cases[1].affine.copy()
    shifted[0, 3] += 5.0
    nib.save(nib.Nifti1Image(np.zeros(cases[1].shape, np.uint8), shifted), lbl)
    with pytest.raises(BadInputError, match="differ in affine"):
        conv.convert(task, tmp_path / "o")

    bad = np.zeros(cases[1].shape, np.uint8)
    bad[0, 0, 0] = 7
    nib.save(nib.Nifti1Image(bad, cases[1].affine), lbl)
    with pytest.raises(BadInputError, match=f"{lbl.name}: label values \\[7\\] are not in dataset.json labels"):
        conv.convert(task, tmp_path / "o")
    lbl.write_bytes(original)

    cases[2].image.unlink()
    with pytest.raises(BadInputError, match=f"{cases[2].image.name}: image listed in .*dataset.json not found"):
        conv.convert(task, tmp_path / "o")

    meta = json.loads((task / "dataset.json").read_text())
    meta["numTraining"] = 10
    (task / "dataset.json").write_text(json.dumps(meta))
    with pytest.raises(BadInputError, match="numTraining is 10 but 'training' lists 3 cases"):
        conv.convert(task, tmp_path / "o")
    (task / "dataset.json").write_text("{")
    with pytest.raises(BadInputError, match="dataset.json: not a valid JSON file"):
        conv.convert(task, tmp_path / "o")
    assert not (tmp_path / "o" / "datalist.json").exists()


# ------------------------------------------------------------------------------------------------ CLI


def test_cli_list_success_and_error_without_traceback(tmp_path: Path) -> None:
    tool = str(REPO / "tools" / "convert_dataset.py")
    listed = subprocess.run([sys.executable, tool, "--list"], capture_output=True, text=True, timeout=60)
    assert listed.returncode == 0 and "monuseg:" in listed.stdout and "msd:" in listed.stdout
    bad = subprocess.run(
        [sys.executable, tool, "monuseg", str(tmp_path / "nowhere"), str(tmp_path / "out")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert bad.stderr.startswith(f"error: {tmp_path / 'nowhere'}: source folder not found; expected layout:")

    spec = importlib.util.spec_from_file_location("convert_dataset_cli", tool)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    main = module.main
    make_msd_like(tmp_path / "src", n_train=4, n_test=1, seed=0)
    rc = main(
        [
            "msd",
            str(tmp_path / "src"),
            str(tmp_path / "out"),
            "--seed",
            "2",
            "--test-fraction",
            "0.25",
            "-o",
            "side_reference=none",
            "-o",
            "region=belly",
        ]
    )
    assert rc == 0
    entries = load_datalist(tmp_path / "out" / "datalist.json")
    assert all(e["text"].startswith("CT of the belly showing the kidney") for e in entries)
    assert all("left" not in e["text"] and "right" not in e["text"] for e in entries)
    assert main(["msd", str(tmp_path / "src"), str(tmp_path / "o2"), "-o", "bogus=1"]) == 2


def test_describe_nuclei_uses_the_lvit_vocabulary_and_counts_components() -> None:
    mask = np.zeros((64, 64), np.uint8)
    mask[2:14, 36:48] = 1
    mask[16:28, 50:62] = 1
    mask[2:12, 52:62] = 1
    assert describe_nuclei_mask(mask) == "The nuclei density in the upper right is high."
    assert describe_nuclei_mask(mask, style="detailed") == (
        "There are 3 nuclei covering 9% of the image. The nuclei density in the upper right is high."
    )
    assert describe_nuclei_mask(np.flipud(mask)) == "The nuclei density in the lower right is high."
    assert describe_nuclei_mask(mask[:, ::-1]) == "The nuclei density in the upper left is high."


def _bfs_components(mask: np.ndarray) -> int:
    seen, n = np.zeros_like(mask, bool), 0
    for start in zip(*np.nonzero(mask), strict=True):
        if seen[start]:
            continue
        n += 1
        stack = [start]
        seen[start] = True
        while stack:
            r, c = stack.pop()
            for rr, cc in ((r + 1, c), (r - 1, c), (r, c + 1), (r, c - 1)):
                if 0 <= rr < mask.shape[0] and 0 <= cc < mask.shape[1] and mask[rr, cc] and not seen[rr, cc]:
                    seen[rr, cc] = True
                    stack.append((rr, cc))
    return n


def test_count_components_matches_a_flood_fill() -> None:
    rng = np.random.default_rng(0)
    for density in (0.2, 0.45, 0.6):
        mask = rng.uniform(size=(40, 50)) < density
        assert count_components_2d(mask) == _bfs_components(mask)
    spiral = np.zeros((21, 21), bool)  # one long thin component
    spiral[1, 1:20] = spiral[1:20, 19] = spiral[19, 1:20] = spiral[3:20, 1] = spiral[3, 1:18] = True
    assert count_components_2d(spiral) == _bfs_components(spiral) == 1
    assert count_components_2d(np.zeros((4, 4))) == 0


def _write_msd_task(root: Path, labels: dict[str, str], values: list[int], n_cases: int = 3) -> Path:
    """A tiny MSD task whose labels hold ``values`` (e.g. one >= 256, stored as int16 NIfTI)."""
    task = root / "Task77_Wide"
    (task / "imagesTr").mkdir(parents=True)
    (task / "labelsTr").mkdir(parents=True)
    training = []
    for i in range(n_cases):
        img = np.random.default_rng(i).random((8, 8, 3)).astype(np.float32)
        lbl = np.zeros((8, 8, 3), np.int16)
        for j, v in enumerate(values):
            lbl[1 + 3 * j : 3 + 3 * j, 2:6, 1] = v
        nib.save(nib.Nifti1Image(img, np.eye(4)), task / "imagesTr" / f"wide_{i}.nii.gz")
        nib.save(nib.Nifti1Image(lbl, np.eye(4)), task / "labelsTr" / f"wide_{i}.nii.gz")
        training.append({"image": f"./imagesTr/wide_{i}.nii.gz", "label": f"./labelsTr/wide_{i}.nii.gz"})
    meta = {"name": "Wide", "modality": {"0": "CT"}, "labels": labels, "numTraining": n_cases, "training": training}
    (task / "dataset.json").write_text(json.dumps(meta))
    return task


def test_msd_slices_keeps_label_values_of_256_and_above(tmp_path: Path) -> None:
    """msd and msd_slices share one label parser: a value >= 256 needs int32, never a uint8 overflow (300 -> 44)."""
    task = _write_msd_task(tmp_path, {"0": "background", "1": "organ", "300": "lesion"}, [1, 300])
    path = get_converter("msd_slices").convert(task, tmp_path / "slices")
    doc = json.loads(path.read_text())
    assert doc["labels"] == {"0": "background", "1": "organ", "300": "lesion"}
    entries = [e for s in ("training", "validation", "test") for e in doc[s]]
    assert len(entries) == 3 and all(e["slice_index"] == 1 for e in entries)
    for e in entries:
        lbl = np.asarray(nib.load(str(tmp_path / "slices" / e["label"])).dataobj)
        assert set(np.unique(lbl).tolist()) == {0, 1, 300}
    # merging into a target >= 256 survives too; the 3D converter parses the same way
    merged = get_converter("msd_slices").convert(task, tmp_path / "merged", label_mapping={"1": 300})
    e = json.loads(merged.read_text())["training"][0]
    assert set(np.unique(np.asarray(nib.load(str(tmp_path / "merged" / e["label"])).dataobj)).tolist()) == {0, 300}
    doc3d = read_datalist(get_converter("msd").convert(task, tmp_path / "vol", label_mapping={"1": 300}))
    assert doc3d["label_mapping"] == {"orig_labels": [1], "target_labels": [300]}
    assert doc3d["labels"] == {"0": "background", "300": "organ and lesion"}


# ------------------------------------------------------------------------------------------------ your own folder
def _own_2d(root: Path, n: int = 5, labels: bool = True, size=(40, 32)) -> Path:
    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True)
    if labels:
        (root / "labels").mkdir()
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (*size[::-1], 3), dtype=np.uint8)).save(root / "images" / f"img{i}.png")
        if labels:
            m = np.zeros(size[::-1], np.uint8)
            m[5:15, 5:20] = 1
            Image.fromarray(m).save(root / "labels" / f"img{i}.png")
    return root


def test_folder_of_unlabelled_images_is_an_inference_only_datalist(tmp_path):
    src = _own_2d(tmp_path / "mine", labels=False)
    path = get_converter("folder").convert(src, tmp_path / "out", text="Dense nuclei.")
    doc = read_datalist(path)
    assert "training" not in doc and [e["case_id"] for e in doc["test"]] == [f"img{i}" for i in range(5)]
    cases = load_datalist(path, "test")
    assert all(Path(c["image"]).is_file() and c["text"] == "Dense nuclei." and "label" not in c for c in cases)
    assert doc["spatial_dims"] == 2 and doc["labels"] == {"0": "background", "1": "foreground"}


def test_folder_with_labels_splits_and_texts_come_from_a_file(tmp_path):
    src = _own_2d(tmp_path / "mine", n=10)
    texts = tmp_path / "texts.csv"
    texts.write_text("image,text\n" + "".join(f"img{i}.png,Case {i} text.\n" for i in range(10)))
    path = get_converter("folder").convert(
        src, tmp_path / "out", text_file=str(texts), val_fraction=0.2, label_names=["nucleus"], modality="histology"
    )
    doc = read_datalist(path)
    assert (len(doc["training"]), len(doc["validation"]), len(doc["test"])) == (6, 2, 2)
    case = load_datalist(path, "training")[0]
    assert Path(case["label"]).is_file() and case["text"] == f"Case {case['case_id'][3:]} text."
    texts.write_text("image,text\n" + "".join(f"img{i}.png,Case {i} text.\n" for i in range(9)))
    with pytest.raises(BadInputError, match="no text for case 'img9'"):  # the file misses img9 and no text given
        get_converter("folder").convert(src, tmp_path / "out2", text_file=str(texts))
    path = get_converter("folder").convert(src, tmp_path / "out3", text_file=str(texts), text="Fallback.")
    by_id = {e["case_id"]: e for s in ("training", "validation", "test") for e in read_datalist(path)[s]}
    assert by_id["img9"]["text"] == "Fallback." and by_id["img3"]["text"] == "Case 3 text."
    Image.fromarray(np.zeros((32, 40, 3), np.uint8)).save(src / "images" / "img0.jpg")
    with pytest.raises(BadInputError, match="img0.png: same case name 'img0' as img0.jpg"):
        get_converter("folder").convert(src, tmp_path / "out4", text="x")
    assert doc["labels"] == {"0": "background", "1": "nucleus"} and doc["modality"] == {"0": "histology"}


def test_folder_tiff_becomes_png_that_the_bundles_read(tmp_path):
    """Issue 13 defect 12: the folder converter accepted .tif, which no bundle could load; TIFF images and masks are
    now written as PNG with the same pixels, read by the bundles' own loader; a float TIFF is refused by name."""
    from common.transforms.checks import CheckedLoadImaged

    src = tmp_path / "mine"
    (src / "images").mkdir(parents=True)
    (src / "labels").mkdir()
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 255, (30, 44, 3), dtype=np.uint8)
    grey16 = rng.integers(0, 65535, (30, 44), dtype=np.uint16)
    mask = np.zeros((30, 44), np.uint8)
    mask[4:12, 6:30] = 1
    tifffile.imwrite(src / "images" / "a.tif", rgb)
    tifffile.imwrite(src / "images" / "b.tiff", grey16)
    for c in ("a", "b"):
        tifffile.imwrite(src / "labels" / f"{c}.tif", mask)
    path = get_converter("folder").convert(src, tmp_path / "out", text="x", split="test")
    cases = {c["case_id"]: c for c in load_datalist(path, "test")}
    assert {Path(c["image"]).suffix for c in cases.values()} == {".png"}
    np.testing.assert_array_equal(np.asarray(Image.open(cases["a"]["image"])), rgb)
    np.testing.assert_array_equal(np.asarray(Image.open(cases["b"]["image"])), grey16)
    loaded = CheckedLoadImaged(keys=["image", "label"], ensure_channel_first=True)(cases["a"])
    assert tuple(loaded["image"].shape) == (3, 44, 30) and int(loaded["label"].max()) == 1
    tifffile.imwrite(src / "images" / "a.tif", rng.random((30, 44)).astype(np.float32))
    with pytest.raises(BadInputError, match="a.tif: TIFF of shape \\(30, 44\\) and type float32 has no PNG"):
        get_converter("folder").convert(src, tmp_path / "out2", text="x")


def test_converters_read_every_listed_file(tmp_path):
    """Issue 13 defect 12: a truncated volume or image passed conversion; now every listed file is read."""
    src = _own_2d(tmp_path / "mine", n=4)
    for i in (1, 3):
        data = (src / "images" / f"img{i}.png").read_bytes()
        (src / "images" / f"img{i}.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(BadInputError) as info:
        get_converter("folder").convert(src, tmp_path / "out", text="x")
    message = str(info.value)
    assert "2 of 8 listed files do not read" in message and "img1.png" in message and "img3.png" in message
    assert not (tmp_path / "out" / "datalist.json").exists()
    make_msd_like(tmp_path / "raw", n_train=2, n_test=0, shape_range=(16, 18), seed=0)
    task = next((tmp_path / "raw").iterdir())
    volume = sorted((task / "imagesTr").glob("*.nii.gz"))[0]
    volume.write_bytes(volume.read_bytes()[:-400])
    with pytest.raises(BadInputError, match=f"{volume.name}: .*1 of 4 listed files do not read"):
        get_converter("msd").convert(task, tmp_path / "msd")


def test_folder_3d_pairs_and_bad_input_is_named(tmp_path):
    conv = get_converter("folder")
    src = tmp_path / "vol"
    (src / "images").mkdir(parents=True)
    (src / "labels").mkdir()
    aff = np.diag([1.5, 1.5, 2.0, 1.0])
    for i in range(3):
        nib.save(nib.Nifti1Image(np.zeros((8, 8, 6), np.float32), aff), str(src / "images" / f"ct{i}.nii.gz"))
        nib.save(nib.Nifti1Image(np.ones((8, 8, 6), np.uint8), aff), str(src / "labels" / f"ct{i}.nii.gz"))
    doc = read_datalist(conv.convert(src, tmp_path / "o3", text="CT.", split="test"))
    assert doc["spatial_dims"] == 3 and len(doc["test"]) == 3 and all("label" in e for e in doc["test"])
    with pytest.raises(BadInputError, match="every case needs a text"):
        conv.convert(src, tmp_path / "o4")
    nib.save(nib.Nifti1Image(np.ones((8, 8, 5), np.uint8), aff), str(src / "labels" / "ct1.nii.gz"))
    with pytest.raises(BadInputError, match="ct1.nii.gz.*differ in shape"):
        conv.convert(src, tmp_path / "o5", text="CT.")
    (src / "labels" / "ct1.nii.gz").unlink()
    with pytest.raises(BadInputError, match="ct1.nii.gz: image without a label"):
        conv.convert(src, tmp_path / "o6", text="CT.")
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(src / "images" / "x.png")
    with pytest.raises(BadInputError, match="mixes 2D images and 3D"):
        conv.convert(src, tmp_path / "o7", text="CT.")
    (tmp_path / "empty").mkdir()
    with pytest.raises(BadInputError, match="missing images folder"):
        conv.convert(tmp_path / "empty", tmp_path / "o8", text="CT.")
