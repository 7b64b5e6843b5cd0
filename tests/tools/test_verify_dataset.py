"""``tools/verify_dataset.py`` (issue 13): the start-of-run dataset check of every bundle from the command line, all
problems of all cases in one table, exit code 2 with the problem on the last line, 0 for a usable dataset."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from common.data.integrity import verify_bundle_dataset
from common.errors import BadInputError
from common.utils.bundles import bundle_run_env, tool_command
from monai.data import load_decathlon_datalist

#: bundle -> the demo dataset it trains on (tests/conftest.py demo_datalists)
DEMO_DATA = {"textdiff": "monuseg", "cdal": "monuseg", "textdiffseg": "msd", "diffboost": "busi"}


def _copy(datalist: Path, dst: Path) -> Path:
    """A private copy of the session's demo data (datalist folder and the raw files it points to)."""
    shutil.copytree(datalist.parent.parent, dst)
    return dst / datalist.parent.name / datalist.name


def _first_training_label(datalist: Path) -> Path:
    return Path(load_decathlon_datalist(str(datalist), data_list_key="training")[0]["label"])


@pytest.mark.parametrize("bundle", sorted(DEMO_DATA))
@pytest.mark.parametrize("stage", ["train", "inference"])
def test_demo_data_passes_every_bundle_and_stage(bundle, stage, demo_datalists):
    # DiffBoost's training set includes the synthesis stage's images: checked here as its baseline (real data only)
    overrides = {"use_synthetic": False} if bundle == "diffboost" else {}
    report = verify_bundle_dataset(
        f"bundles/{bundle}", demo_datalists[DEMO_DATA[bundle]], ["demo.json"], stage, overrides
    )
    assert report.ok and report.n_cases > 0


@pytest.mark.parametrize("bundle", ["cdal", "textdiffseg"])
def test_an_empty_mask_and_a_broken_image_are_both_reported(bundle, demo_datalists, tmp_path):
    datalist = _copy(demo_datalists[DEMO_DATA[bundle]], tmp_path / "data")
    entries = load_decathlon_datalist(str(datalist), data_list_key="training")
    Path(entries[1]["image"]).write_bytes(b"not an image")
    label = Path(entries[0]["label"])
    if bundle == "textdiffseg":
        import nibabel as nib

        img = nib.load(str(label))
        nib.save(nib.Nifti1Image(np.zeros(img.shape, np.uint8), img.affine), str(label))
    else:
        from PIL import Image

        Image.fromarray(np.zeros_like(np.asarray(Image.open(label)))).save(label)
    with pytest.raises(BadInputError, match=r"2 of \d+ cases fail") as info:
        verify_bundle_dataset(f"bundles/{bundle}", datalist, ["demo.json"])
    assert str(datalist) in str(info.value)
    with pytest.raises(BadInputError, match=r"1 of \d+ cases fail"):  # empty masks allowed: the broken image stays
        verify_bundle_dataset(f"bundles/{bundle}", datalist, ["demo.json"], overrides={"allow_empty_masks": True})


def _verify(*args: object) -> subprocess.CompletedProcess:
    """``tools/verify_dataset.py ARGS`` in a child process (offline, this checkout's ``common``)."""
    return subprocess.run(
        tool_command("verify_dataset.py", *args), capture_output=True, text=True, env=bundle_run_env(), timeout=300
    )


def test_command_line_exit_codes_and_last_line(demo_datalists, tmp_path):
    datalist = _copy(demo_datalists["monuseg"], tmp_path / "data")
    ok = _verify(datalist, "--bundle", "cdal", "--config", "demo.json")
    assert ok.returncode == 0, ok.stderr[-2000:]
    assert ok.stdout.strip().splitlines()[-1].startswith(f"OK: {datalist}:")
    label = _first_training_label(datalist)
    label.write_bytes(b"\x89PNG truncated")
    bad = _verify(datalist, "--bundle", "cdal", "--config", "demo.json")
    assert bad.returncode == 2, bad.stderr[-2000:]
    last = bad.stderr.strip().splitlines()[-1]
    assert last.startswith(f"ERROR: {datalist}: 1 of") and label.name in last and "Traceback" not in bad.stderr
    assert f"| {label.stem} | {label} |" in bad.stderr  # the table row: case, file, problem
    unknown = _verify(datalist, "--bundle", "nosuch")
    assert unknown.returncode == 2 and "nosuch: not a bundle folder" in unknown.stderr.strip().splitlines()[-1]
    json.loads(datalist.read_text())  # the check never rewrites the datalist


def test_textdiffseg_label_values_outside_the_classes_name_the_file(demo_datalists, tmp_path):
    """Issue 13 defect 4: a value outside the dataset's classes (and its label_orig mapping) is refused up front,
    with class prompts (the demo) and without, naming the label file and the value."""
    import nibabel as nib

    datalist = _copy(demo_datalists["msd"], tmp_path / "data")
    label = _first_training_label(datalist)
    img = nib.load(str(label))
    data = np.asarray(img.dataobj).astype(np.uint8)
    data[data > 0] = 5
    nib.save(nib.Nifti1Image(data, img.affine), str(label))
    for overrides in ({}, {"class_prompts": []}):
        with pytest.raises(BadInputError) as info:
            verify_bundle_dataset("bundles/textdiffseg", datalist, ["demo.json"], overrides=overrides)
        message = str(info.value)
        assert f"{label}: " in message and "[5]" in message, message
    # a label_orig mapping makes its source values valid (MSD Pancreas' 2 -> 1 style merge)
    report = verify_bundle_dataset(
        "bundles/textdiffseg", datalist, ["demo.json"], overrides={"label_orig": [5], "label_target": [1]}
    )
    assert report.ok
