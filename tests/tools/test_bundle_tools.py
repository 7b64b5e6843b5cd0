"""tools/validate_bundle.py, tools/package_bundle.py and tools/demo.py on the contract's test fixture bundle."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from common.utils.bundles import REPO_ROOT, tool_command

REPO = REPO_ROOT
FIXTURE = REPO / "tests" / "fixtures" / "tiny_seg_bundle"
sys.path.insert(0, str(REPO))

from tools.package_bundle import package_bundle  # noqa: E402
from tools.validate_bundle import main as validate_main  # noqa: E402
from tools.validate_bundle import validate_bundle  # noqa: E402


@pytest.fixture()
def bundle_copy(tmp_path: Path) -> Path:
    dst = tmp_path / "tiny_seg_bundle"
    shutil.copytree(FIXTURE, dst)
    return dst


def _edit_json(path: Path, fn) -> None:
    data = json.loads(path.read_text())
    fn(data)
    path.write_text(json.dumps(data))


def test_fixture_bundle_is_valid(capsys):
    assert validate_main([str(FIXTURE)]) == 0
    out = capsys.readouterr().out
    assert "[FAIL]" not in out and out.count("[PASS]") == 11
    assert "network_def(image): (1, 3, 64, 64) -> (1, 2, 64, 64)" in out


@pytest.mark.parametrize(
    "breakage, expected",
    [
        (lambda b: (b / "LICENSE").unlink(), r"layout: .*missing LICENSE"),
        (lambda b: (b / "configs" / "demo.json").unlink(), r"layout: .*missing configs/demo.json"),
        (
            lambda b: (b / "configs" / "metadata.json").write_text("{not json"),
            r"metadata: .*metadata.json: not valid JSON",
        ),
        (
            lambda b: _edit_json(b / "configs" / "metadata.json", lambda m: m.pop("network_data_format")),
            r"metadata: .*'network_data_format' is a required property",
        ),
        (
            lambda b: _edit_json(b / "configs" / "metadata.json", lambda m: m.update(version="0.2.0")),
            r"metadata: .*version '0.2.0' is not a key of changelog",
        ),
        (
            lambda b: _edit_json(b / "configs" / "inference.json", lambda c: c.update(inferer="@sliding_inferer")),
            r"configs: .*inference.json: reference\(s\) to missing id\(s\) 'inferer' -> '@sliding_inferer'",
        ),
        (
            lambda b: _edit_json(b / "configs" / "train.json", lambda c: c.pop("dataset_dir")),
            r"configs: .*train.json: missing contract key\(s\) \['dataset_dir'\]",
        ),
        (
            lambda b: _edit_json(b / "configs" / "demo.json", lambda c: c.update({"train#nothing#here": 1})),
            r"configs: .*merged with configs/demo.json",
        ),
        (
            lambda b: _edit_json(
                b / "configs" / "metadata.json",
                lambda m: m["network_data_format"]["outputs"]["pred"].update(num_channels=3),
            ),
            r"network: .*gave output \(1, 2, 64, 64\), metadata says \(1, 3, 64, 64\)",
        ),
        (
            lambda b: _edit_json(b / "configs" / "inference.json", lambda c: c["network_def"].update(channels=[8])),
            r"network: .*network_def does not instantiate",
        ),
    ],
    ids=[
        "no-license",
        "no-demo",
        "bad-json",
        "no-data-format",
        "version-not-in-changelog",
        "dangling-ref",
        "missing-contract-key",
        "demo-does-not-merge",
        "wrong-output-channels",
        "network-fails",
    ],
)
def test_broken_bundles_are_rejected_with_clear_messages(bundle_copy, breakage, expected, capsys):
    breakage(bundle_copy)
    report = validate_bundle(bundle_copy)
    assert report.failed
    assert any(__import__("re").search(expected, line) for line in report.lines), str(report)
    assert validate_main([str(bundle_copy)]) == 1
    assert "INVALID" in capsys.readouterr().out


def _strip_editable_and_run(cwd: Path, code: str) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter that cannot import ``common`` from this repository."""
    prelude = (
        "import sys\n"
        "sys.meta_path[:] = [f for f in sys.meta_path if 'editable' not in repr(f).lower()]\n"
        f"sys.path[:] = [p for p in sys.path if p.rstrip('/') != {str(REPO)!r}]\n"
    )
    return subprocess.run([sys.executable, "-c", prelude + code], cwd=cwd, capture_output=True, text=True, timeout=300)


def test_packaged_bundle_runs_without_this_repository(tmp_path):
    from common.data.converters import get_converter
    from common.data.synthetic import make_monuseg_like

    dest, zip_path = package_bundle(FIXTURE, tmp_path / "pkg")
    meta = json.loads((dest / "configs" / "metadata.json").read_text())
    used = meta["packaged_common"]["modules_used"]
    assert {
        "common",
        "common.transforms.checks",
        "common.data.datalist",
        "common.training.resume",
        "common.evaluation.report",
        "common.io.atomic",
        "common.errors",
    } <= set(used)
    assert "common.text.encoder" not in used  # the scan follows imports
    # ...but the whole package travels: one MONAI Label process serves several bundles with the first `common`
    carried = meta["packaged_common"]["modules"]
    assert set(used) < set(carried) and "common.text.encoder" in carried
    assert all(
        (dest / Path(*m.split("."))).with_suffix(".py").is_file()
        or (dest / Path(*m.split(".")) / "__init__.py").is_file()
        for m in carried
    )
    assert meta["monai_version"].startswith("1.6") and meta["pytorch_version"].startswith("2.")
    assert {"pytorch-ignite", "nibabel", "pillow"} <= set(meta["required_packages_version"])
    with zipfile.ZipFile(zip_path) as zf:
        names = zf.namelist()
    assert zip_path.name == "tiny_seg_bundle_v0.1.0.zip"
    assert (
        all(n.startswith("tiny_seg_bundle/") for n in names) and "tiny_seg_bundle/common/transforms/checks.py" in names
    )

    make_monuseg_like(tmp_path / "raw", n_train=4, n_test=1, size=64, seed=0)
    datalist = get_converter("monuseg").convert(tmp_path / "raw", tmp_path / "data", seed=0)
    code = (
        "from monai.bundle import run\n"
        f"run(config_file=['configs/train.json', 'configs/demo.json'], meta_file='configs/metadata.json',"
        f" logging_file='configs/logging.conf', datalist={str(datalist)!r}, max_epochs=1, "
        f"ckpt_dir={str(tmp_path / 'ck')!r},"
        f" output_dir={str(tmp_path / 'out')!r})\n"
        "import common; print('COMMON_FROM', common.__file__)\n"
    )
    r = _strip_editable_and_run(dest, code)
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"COMMON_FROM {dest / 'common' / '__init__.py'}" in r.stdout
    assert (tmp_path / "ck" / "model.pt").is_file()
    # without the carried code the same bundle cannot run: the test above is not vacuous
    r = _strip_editable_and_run(FIXTURE, "import common.transforms.checks")
    assert r.returncode != 0 and "No module named 'common'" in r.stderr


@pytest.mark.slow
def test_demo_trains_infers_and_evaluates_the_fixture_bundle(tmp_path):
    r = subprocess.run(
        tool_command("demo.py", "--bundles-dir", FIXTURE.parent, "--bundles", "tiny_seg_bundle", "--out", tmp_path),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    (res,) = json.loads((tmp_path / "summary.json").read_text())
    assert res["status"] == "ok" and set(res["steps"]) == {"train", "infer", "evaluate"}
    # brief CPU training on the synthetic data must beat the all-foreground guess (nuclei cover < 25 %)
    assert res["dice"] > 0.6 and 0 < res["iou"] <= res["dice"]
    assert res["train_s"] > 0 and res["infer_s_per_case"] > 0 and res["peak_rss_mb"] > 50
    assert "| tiny_seg_bundle | monuseg |" in (tmp_path / "summary.md").read_text()
    overlays = list((tmp_path / "tiny_seg_bundle" / "eval" / "overlays").glob("*.png"))
    preds = list((tmp_path / "tiny_seg_bundle" / "eval").glob("*_seg.png"))
    assert len(overlays) == len(preds) == 4


def test_demo_without_bundles_still_writes_data_and_an_empty_table(tmp_path):
    empty = tmp_path / "no_bundles"
    empty.mkdir()
    sys.path.insert(0, str(REPO / "tools"))
    from tools import demo

    assert demo.main(["--bundles-dir", str(empty), "--out", str(tmp_path / "out")]) == 0
    assert (tmp_path / "out" / "data" / "monuseg" / "datalist.json").is_file()
    assert (tmp_path / "out" / "data" / "msd" / "datalist.json").is_file()
    assert "no bundle with configs/demo.json yet" in (tmp_path / "out" / "summary.md").read_text()


def test_weights_over_the_size_limit_go_to_large_files_yml(bundle_copy, tmp_path):
    """A weight file above the limit stays in the folder, is left out of the zip and is listed in large_files.yml
    with its SHA-256 and the given URL; smaller files stay in the zip."""
    import hashlib

    import yaml

    models = bundle_copy / "models"
    models.mkdir(exist_ok=True)
    (models / "big.pt").write_bytes(b"x" * 300_000)
    (models / "small.pt").write_bytes(b"y" * 1_000)
    dest, zip_path = package_bundle(
        bundle_copy, tmp_path / "pkg", large_file_mb=0.1, large_files_url="https://example.org/weights/"
    )
    with zipfile.ZipFile(zip_path) as zf:
        names = set(zf.namelist())
    assert "tiny_seg_bundle/models/small.pt" in names and "tiny_seg_bundle/models/big.pt" not in names
    assert (dest / "models" / "big.pt").is_file()
    listed = yaml.safe_load((dest / "large_files.yml").read_text())["large_files"]
    entry = next(e for e in listed if e["path"] == "models/big.pt")
    assert entry["url"] == "https://example.org/weights/tiny_seg_bundle/big.pt" and entry["hash_type"] == "sha256"
    assert entry["hash_val"] == hashlib.sha256(b"x" * 300_000).hexdigest()
    assert not any(e["path"] == "models/small.pt" for e in listed)
    assert "tiny_seg_bundle/large_files.yml" in names


def test_listed_large_files_keep_their_url_and_training_state_is_not_packaged(bundle_copy, tmp_path):
    """A weight already in large_files.yml (an official download) keeps its URL and gains its hash; resume
    checkpoints, archived runs and caches under models/ are not packaged."""
    import hashlib

    import yaml

    models = bundle_copy / "models"
    (models / "checkpoints").mkdir(parents=True)
    (models / "checkpoints" / "checkpoint_epoch=3.pt").write_bytes(b"c" * 300_000)
    (models / "previous_run_1").mkdir()
    (models / "previous_run_1" / "checkpoint_epoch=1.pt").write_bytes(b"p" * 10)
    (models / "pretrained.pt").write_bytes(b"w" * 300_000)
    (bundle_copy / "large_files.yml").write_text(
        "# official parts\nlarge_files:\n  - path: models/pretrained.pt\n    url: https://example.org/official.pt\n"
        "    hash_val: null\n    hash_type: sha256\n"
    )
    dest, zip_path = package_bundle(bundle_copy, tmp_path / "pkg", large_file_mb=0.1, large_files_url="https://x.org/")
    listed = yaml.safe_load((dest / "large_files.yml").read_text())["large_files"]
    assert listed == [
        {
            "path": "models/pretrained.pt",
            "url": "https://example.org/official.pt",
            "hash_val": hashlib.sha256(b"w" * 300_000).hexdigest(),
            "hash_type": "sha256",
        }
    ]
    assert (dest / "large_files.yml").read_text().startswith("# official parts")
    assert not (dest / "models" / "checkpoints").exists() and not (dest / "models" / "previous_run_1").exists()
    with zipfile.ZipFile(zip_path) as zf:
        assert not [n for n in zf.namelist() if "/models/checkpoints" in n or "previous_run" in n]
