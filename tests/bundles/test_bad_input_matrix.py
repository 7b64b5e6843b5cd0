"""The bad-input matrix of issue 13: every way a user's dataset can be wrong, against every bundle it applies to.

Each case breaks one thing in a private copy of the demo data of a bundle and runs the bundle's start-of-run check
exactly as ``initialize`` builds it from ``train.json`` + ``demo.json`` (:func:`common.data.integrity.
verify_bundle_dataset`). It asserts what the process would end with (:mod:`common.utils.error_report`): exit code 2,
a last line ``ERROR: ...`` naming the file or case and the problem, and that nothing was written (the data folder is
unchanged, no output or checkpoint folder exists). Two cases per process-level path are run for real at the end
(``python -m monai.bundle run`` of the training): the same exit code and last line, no checkpoint.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from common.data.integrity import verify_bundle_dataset
from common.utils import error_report
from common.utils.bundles import BUNDLES_DIR, bundle_run_command, bundle_run_env, bundle_run_paths
from PIL import Image

#: bundle -> the demo dataset it trains on (tests/conftest.py demo_datalists)
DEMO_DATA = {"textdiff": "monuseg", "cdal": "monuseg", "textdiffseg": "msd", "diffboost": "busi"}
BUNDLES_2D = ("textdiff", "cdal", "diffboost")
ALL = (*BUNDLES_2D, "textdiffseg")


@dataclass
class Data:
    """A private copy of a bundle's demo dataset."""

    datalist: Path
    doc: dict

    @property
    def root(self) -> Path:
        return self.datalist.parent

    def path(self, i: int, key: str = "image", split: str = "training") -> Path:
        p = Path(self.doc[split][i][key])
        return p if p.is_absolute() else (self.root / p).resolve()

    def save_doc(self) -> None:
        self.datalist.write_text(json.dumps(self.doc, indent=2))


def _read(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    if path.name.endswith((".nii", ".nii.gz")):
        img = nib.load(str(path))
        return np.asarray(img.dataobj), img.affine
    return np.asarray(Image.open(path)), None


def _write(path: Path, arr: np.ndarray, affine: np.ndarray | None = None) -> None:
    if path.name.endswith((".nii", ".nii.gz")):
        nib.save(nib.Nifti1Image(arr, np.eye(4) if affine is None else affine), str(path))
    else:
        Image.fromarray(arr).save(path, format="PNG")


def _edit(path: Path, change: Callable[[np.ndarray], np.ndarray]) -> None:
    arr, affine = _read(path)
    _write(path, change(arr.copy()), affine)


def _edit_affine(path: Path, change: Callable[[np.ndarray], np.ndarray]) -> None:
    img = nib.load(str(path))
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj), change(img.affine.copy())), str(path))


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _set_values(arr: np.ndarray, value: int) -> np.ndarray:
    arr[arr > 0] = value
    return arr


def _nifti_2d(d: Data) -> str:
    """A 2D image where the 3D bundle expects a volume."""
    path = d.path(0)
    arr, affine = _read(path)
    _write(path, np.ascontiguousarray(arr[..., arr.shape[-1] // 2]), affine)
    return path.name


def _nifti_in_2d_bundle(d: Data) -> str:
    path = d.root / "volume.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((16, 16, 8), np.float32), np.eye(4)), str(path))
    d.doc["training"][0]["image"] = path.name
    d.save_doc()
    return path.name


def _grey_for_rgb(d: Data) -> str:
    path = d.path(0)
    _edit(path, lambda a: a[..., 0] if a.ndim == 3 else a)
    return path.name


def _rgb_label(d: Data) -> str:
    """A colour mask (2D) / a 3-channel label volume (3D)."""
    path = d.path(0, "label")
    _edit(path, lambda a: np.stack([a] * 3, axis=-1) if a.ndim in (2, 3) else np.repeat(a[..., :1], 3, axis=-1))
    return path.name


def _shape_mismatch(d: Data) -> str:
    path = d.path(0, "label")
    _edit(path, lambda a: np.ascontiguousarray(a[:-4]))
    return path.name


def _doc_edit(change: Callable[[dict], None], needle: str) -> Callable[[Data], str]:
    def mutate(d: Data) -> str:
        change(d.doc)
        d.save_doc()
        return needle if needle != "<datalist>" else str(d.datalist)

    return mutate


def _file_edit(key: str, change: Callable[[Path], None], i: int = 0) -> Callable[[Data], str]:
    def mutate(d: Data) -> str:
        path = d.path(i, key)
        change(path)
        return path.name

    return mutate


def _two_bad(d: Data) -> str:
    _truncate(d.path(0))
    _edit(d.path(1, "label"), lambda a: _set_values(a, 9))
    return "2 of"


def _all_empty(d: Data) -> str:
    for i in range(len(d.doc["training"])):
        _edit(d.path(i, "label"), np.zeros_like)
    return str(d.datalist)


def _empty_case(d: Data) -> str:
    _edit(d.path(0, "label"), np.zeros_like)
    return d.doc["training"][0]["case_id"]


@dataclass(frozen=True)
class Case:
    name: str
    bundles: tuple[str, ...]
    mutate: Callable[[Data], str]  # breaks the data, returns what the last line must name
    problem: str  # regex the last line must match (the problem)
    overrides: tuple[tuple[str, object], ...] = ()


CASES = [
    Case("image file missing", ALL, _file_edit("image", Path.unlink), "not found"),
    Case("label file missing", ALL, _file_edit("label", Path.unlink), "not found"),
    Case("image truncated", ALL, _file_edit("image", _truncate), "truncated|corrupt|cannot read"),
    Case("label truncated", ALL, _file_edit("label", _truncate), "truncated|corrupt|cannot read"),
    Case("image is not an image", ALL, _file_edit("image", lambda p: p.write_bytes(b"<html>")), "cannot read"),
    Case("label is an empty file", ALL, _file_edit("label", lambda p: p.write_bytes(b"")), "empty|cannot read"),
    Case(
        "label value outside the classes",
        ALL,
        _file_edit("label", lambda p: _edit(p, lambda a: _set_values(a, 7))),
        r"\[7\]",
    ),
    Case("image and label sizes differ", ALL, _shape_mismatch, "shape|size"),
    Case("multi-channel label", ALL, _rgb_label, "channel"),
    # DiffBoost's own check needs a lesion in every mask (BUSI 'normal' images are not in its training set)
    Case("an empty mask", ALL, _empty_case, "no foreground.*(allow_empty_masks|lesion/organ is required)"),
    Case(
        "every mask empty",
        ALL,
        _all_empty,
        "every one of the .* masks is empty|lesion/organ is required",
        (("allow_empty_masks", True),),
    ),
    Case("two bad cases", ALL, _two_bad, r"2 of \d+ cases fail the dataset check"),
    Case(
        "datalist is not JSON",
        ALL,
        lambda d: (d.datalist.write_text("{broken"), str(d.datalist))[1],
        "not a valid JSON file",
    ),
    Case("datalist lacks the split", ALL, _doc_edit(lambda doc: doc.pop("training"), "<datalist>"), "missing split"),
    Case(
        "duplicate case ids",
        ALL,
        _doc_edit(lambda doc: doc["training"].append(dict(doc["training"][0])), "<datalist>"),
        "duplicate case id",
    ),
    Case(
        "entry without image",
        ALL,
        _doc_edit(lambda doc: doc["training"][0].pop("image"), "<datalist>"),
        r"missing key\(s\) \['image'\]",
    ),
    Case(
        "entry without text",
        ALL,
        _doc_edit(lambda doc: doc["training"][0].pop("text"), "<datalist>"),
        r"missing key\(s\) \['text'\]",
    ),
    Case(
        "empty text",
        ALL,
        _doc_edit(lambda doc: doc["training"][0].update(text="  "), "<datalist>"),
        "entry without text",
    ),
    Case(
        "text is a number",
        ALL,
        _doc_edit(lambda doc: doc["training"][0].update(text=42), "<datalist>"),
        "entry without text",
    ),
    Case("a volume for a 2D bundle", BUNDLES_2D, _nifti_in_2d_bundle, "expected a 2D image.*got a 3D"),
    Case("grey image for an RGB bundle", ("textdiff", "cdal"), _grey_for_rgb, "channel"),
    Case("a 2D image for a 3D bundle", ("textdiffseg",), _nifti_2d, "expected a 3D volume.*got a 2D"),
    Case(
        "NaN in the image",
        ("textdiffseg",),
        _file_edit("image", lambda p: _edit(p, lambda a: np.where(a > a.mean(), np.nan, a).astype(np.float32))),
        "NaN",
    ),
    Case(
        "inf in the image",
        ("textdiffseg",),
        _file_edit("image", lambda p: _edit(p, lambda a: np.where(a > a.mean(), np.inf, a).astype(np.float32))),
        "inf",
    ),
    Case(
        "fractional label values",
        ("textdiffseg",),
        _file_edit("label", lambda p: _edit(p, lambda a: a.astype(np.float32) * 0.5)),
        "integer|whole",
    ),
    Case(
        "NaN in the label",
        ("textdiffseg",),
        _file_edit("label", lambda p: _edit(p, lambda a: np.where(a > 0, np.nan, a).astype(np.float32))),
        "NaN",
    ),
    Case(
        "image and label spacing differ",
        ("textdiffseg",),
        _file_edit("label", lambda p: _edit_affine(p, lambda m: m @ np.diag([1.5, 1.0, 1.0, 1.0]))),
        "spacing",
    ),
    Case(
        "image and label origins differ",
        ("textdiffseg",),
        _file_edit("label", lambda p: _edit_affine(p, lambda m: m + _shift())),
        "origin",
    ),
    Case(
        "image and label directions differ",
        ("textdiffseg",),
        _file_edit("label", lambda p: _edit_affine(p, lambda m: m @ np.diag([-1.0, 1.0, 1.0, 1.0]))),
        "direction|orientation",
    ),
    Case(
        "label with a 4th axis",
        ("textdiffseg",),
        _file_edit("label", lambda p: _edit(p, lambda a: np.stack([a, a], axis=-1))),
        "channel|dimension|expected|voxel grid",
    ),
]


def _shift() -> np.ndarray:
    m = np.zeros((4, 4))
    m[:3, 3] = 25.0
    return m


MATRIX = [pytest.param(c, b, id=f"{b}-{c.name.replace(' ', '_')}") for c in CASES for b in c.bundles]


def _private_copy(demo_datalists: dict[str, Path], bundle: str, dst: Path) -> Data:
    source = demo_datalists[DEMO_DATA[bundle]]
    shutil.copytree(source.parent.parent, dst)  # the datalist folder and the raw files it may point into
    datalist = dst / source.parent.name / source.name
    return Data(datalist, json.loads(datalist.read_text()))


def _snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*")}


def _overrides(bundle: str, work: Path, extra: tuple[tuple[str, object], ...]) -> dict[str, object]:
    out: dict[str, object] = {"output_dir": str(work / "eval"), "ckpt_dir": str(work / "models"), **dict(extra)}
    if bundle == "diffboost":
        out["use_synthetic"] = False  # its baseline: the boosted run checks the synthesis stage's images too
    return out


def test_the_matrix_is_at_least_thirty_cases():
    assert len(CASES) >= 30 and len(MATRIX) >= 90


@pytest.mark.parametrize(("case", "bundle"), MATRIX)
def test_bad_input_ends_with_exit_2_and_the_problem_on_the_last_line(case, bundle, demo_datalists, tmp_path):
    data = _private_copy(demo_datalists, bundle, tmp_path / "data")
    needle = case.mutate(data)
    before = _snapshot(tmp_path / "data")
    work = tmp_path / "work"
    with pytest.raises(Exception) as info:  # noqa: B017 - what counts is how the process would end
        verify_bundle_dataset(
            BUNDLES_DIR / bundle, data.datalist, ["demo.json"], "train", _overrides(bundle, work, case.overrides)
        )
    err = info.value
    last = error_report.last_line(err)
    assert error_report.exit_code(err) == error_report.EXIT_BAD_INPUT, f"exit {error_report.exit_code(err)}: {last}"
    assert last.startswith("ERROR: ") and needle in last, f"{needle!r} not named: {last}"
    assert re.search(case.problem, last), f"problem {case.problem!r} not stated: {last}"
    assert _snapshot(tmp_path / "data") == before, "the check wrote into the data folder"
    assert not work.exists(), "the check wrote outputs"


def _train(bundle: str, datalist: Path, work: Path) -> subprocess.CompletedProcess:
    overrides = {**bundle_run_paths(datalist, work), **_overrides(bundle, work, ()), "max_epochs": 1}
    cmd = bundle_run_command(["configs/train.json", "configs/demo.json"], overrides)
    return subprocess.run(
        cmd, cwd=BUNDLES_DIR / bundle, env=bundle_run_env(), capture_output=True, text=True, timeout=600
    )


@pytest.mark.parametrize(
    ("bundle", "case_name"), [("textdiffseg", "label value outside the classes"), ("diffboost", "image truncated")]
)
def test_the_bundle_run_ends_the_same_way(bundle, case_name, demo_datalists, tmp_path):
    """The two bundles that failed inside CacheDataset with exit 134: a real training run ends with exit 2, the same
    last line as the check, and no checkpoint or model file."""
    case = next(c for c in CASES if c.name == case_name)
    data = _private_copy(demo_datalists, bundle, tmp_path / "data")
    case.mutate(data)
    with pytest.raises(Exception) as info:  # noqa: B017
        verify_bundle_dataset(
            BUNDLES_DIR / bundle, data.datalist, ["demo.json"], "train", _overrides(bundle, tmp_path / "x", ())
        )
    expected = error_report.last_line(info.value)
    work = tmp_path / "work"
    r = _train(bundle, data.datalist, work)
    lines = (r.stdout + r.stderr).strip().splitlines()
    assert r.returncode == 2, "\n".join(lines[-30:])
    assert lines[-1] == expected
    written = [p for p in (work / "models").rglob("*") if p.is_file()] if (work / "models").exists() else []
    assert not [p for p in written if p.suffix in (".pt", ".safetensors")], written
