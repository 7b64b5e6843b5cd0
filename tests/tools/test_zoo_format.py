"""What the MONAI model zoo's CI checks, reproduced offline with this project's code (the zoo's own scripts run in
the opt-in ``zoo_ci`` test at the end, ``tools/zoo_ci_check.py``).

- pins (``bundles/pinned_requirements.txt``): inside setup.cfg's ranges, resolvable on Python 3.10-3.13 (pip's
  resolver against the registry, metadata only; skipped with the reason where the registry cannot be reached);
- each bundle's metadata: versions = the pins, valid against the zoo's schema (``meta_schema_20240725.json``, kept
  byte for byte) and this collection's stricter one, eval metrics / supported apps / value ranges present;
- JSON formatted as the zoo's pre-commit ``pretty-format-json --autofix --no-sort-keys --indent=4`` leaves it;
- no module-level string after the module docstring (the zoo's ``check-docstring-first``);
- model cards with the zoo template's sections, standing alone inside the package; ``docs/data_license.txt``;
- ``package_bundle --weights``: a flat ``models/model.pt`` that MONAI's ``CheckpointLoader`` loads, a checkpoint of
  another network refused with nothing left behind; ``--zoo-submission``: no file over 1 MB in the pull-request
  folder, the weights in ``large_files.yml`` with their SHA-256, and MONAI's ``download_large_files`` refuses a
  file whose hash differs.
"""

from __future__ import annotations

import ast
import configparser
import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from common.utils.bundles import BUNDLES_DIR, seeded_network_state

REPO = BUNDLES_DIR.parent
sys.path.insert(0, str(REPO))

from tools.package_bundle import PINS_FILE, bundle_requirements, file_sha256, package_bundle, read_pins  # noqa: E402
from tools.zoo_ci_check import serve  # noqa: E402

BUNDLES = ("textdiff", "cdal", "textdiffseg", "diffboost")
ZOO_SCHEMA = REPO / "common" / "schemas" / "meta_schema_20240725.json"
OUR_SCHEMA = REPO / "common" / "schemas" / "bundle_metadata_schema.json"
#: the headings of the zoo's docs/readme_template.md, in its order (h1 = the title)
TEMPLATE_SECTIONS = (
    "### **Authors**",
    "### **Tags**",
    "## **Model Description**",
    "## **Data**",
    "#### **Preprocessing**",
    "## **Performance**",
    "## **Additional Usage Steps**",
    "## **System Configuration**",
    "## **Limitations**",
    "## **Citation Info**",
    "## **References**",
)


def _meta(bundle: str) -> dict:
    return json.loads((BUNDLES_DIR / bundle / "configs" / "metadata.json").read_text(encoding="utf-8"))


# ----------------------------------------------------------------------------------------------------------- pins
def test_pins_lie_in_the_setup_cfg_ranges():
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    ranges = {
        canonicalize_name(r.name): r.specifier
        for r in map(Requirement, filter(None, map(str.strip, cfg["options"]["install_requires"].splitlines())))
    }
    pins = read_pins()
    assert set(pins) == set(ranges), "pin every dependency of setup.cfg, and nothing else"
    for key, (name, version) in pins.items():
        assert ranges[key].contains(version, prereleases=True), f"{name}=={version} outside setup.cfg's {ranges[key]}"


@pytest.mark.slow
@pytest.mark.parametrize("python", ["3.10", "3.11", "3.12", "3.13"])
def test_pins_resolve_for_each_python(python, tmp_path):
    """pip's resolver finds a wheel of every pin for CPython ``python`` on x86-64 Linux (metadata only)."""
    pins = [f"{n}=={v}" for n, v in read_pins().values()]
    platforms = [
        a for p in ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64") for a in ("--platform", p)
    ]
    cmd = [sys.executable, "-m", "pip", "install", "--dry-run", "--quiet", "--ignore-installed", "--no-deps"]
    cmd += ["--only-binary=:all:", "--python-version", python, *platforms, "--target", str(tmp_path / "t"), *pins]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    out = r.stdout + r.stderr
    if r.returncode != 0 and re.search(
        r"NewConnectionError|Temporary failure in name resolution|Network is unreachable|ConnectTimeout", out
    ):
        pytest.skip(f"the package registry cannot be reached from here: {out.strip().splitlines()[-1]}")
    assert r.returncode == 0, f"Python {python}: {out[-2000:]}"


# ------------------------------------------------------------------------------------------------------- metadata
@pytest.mark.parametrize("bundle", BUNDLES)
def test_metadata_versions_are_the_pins_and_valid(bundle):
    import jsonschema

    meta = _meta(bundle)
    _, versions = bundle_requirements(BUNDLES_DIR / bundle)
    assert {k: meta[k] for k in versions} == versions, f"run tools/package_bundle.py's bundle_requirements for {bundle}"
    assert "optional_packages_version" not in meta  # MONAI 1.6: a deprecated name of required_packages_version
    jsonschema.Draft201909Validator(json.loads(ZOO_SCHEMA.read_text())).validate(meta)
    jsonschema.Draft7Validator(json.loads(OUR_SCHEMA.read_text())).validate(meta)
    assert meta["version"] in meta["changelog"]
    assert meta["eval_metrics"] and meta["supported_apps"] == {"monai-label": "0.8"}
    for io_name, entries in meta["network_data_format"].items():
        for key, entry in entries.items():
            if isinstance(entry, dict):
                assert len(entry["value_range"]) == 2, f"{bundle} {io_name}.{key}: value_range"
            else:  # a non-tensor input (the text), described as the zoo schema's string argument
                assert isinstance(entry, str) and entry.startswith("string"), (bundle, key, entry)


def test_zoo_schema_copy_is_unchanged():
    digest = hashlib.sha256(ZOO_SCHEMA.read_bytes()).hexdigest()
    assert digest == "cd64aa8a5904426f6fc6855dabe46af8c742d5bad644b4e9cfb78ebad09ad678"
    assert digest in (ZOO_SCHEMA.parent / "README.md").read_text()
    for b in BUNDLES:
        assert _meta(b)["schema"].endswith("/" + ZOO_SCHEMA.name)


def test_pin_file_is_read_strictly(tmp_path):
    from common.errors import BadInputError

    bad = tmp_path / "pins.txt"
    bad.write_text("torch>=2\n")
    with pytest.raises(BadInputError, match=r"pins.txt:1: expected `package==version`"):
        read_pins(bad)
    assert read_pins(PINS_FILE)["torch"][1]


# --------------------------------------------------------------------------------------------------- file format
def _tracked(pattern: str) -> list[Path]:
    out = subprocess.run(["git", "ls-files", pattern], cwd=REPO, capture_output=True, text=True, check=True).stdout
    return [REPO / p for p in out.split()]


def test_json_is_formatted_as_the_zoo_pre_commit_leaves_it():
    """``pretty-format-json --autofix --no-sort-keys --indent=4`` rewrites a file to ``json.dumps(indent=4)``
    (ASCII escapes, key order kept) + newline; a file it would change fails the zoo's pre-commit."""
    files = _tracked("*.json")
    assert files
    bad = [
        str(p.relative_to(REPO))
        for p in files
        if p.read_text(encoding="utf-8") != json.dumps(json.loads(p.read_text(encoding="utf-8")), indent=4) + "\n"
    ]
    assert not bad, f"reformat with json.dumps(indent=4): {bad}"


def test_no_module_level_string_after_the_docstring():
    """The zoo's ``check-docstring-first``: attribute docstrings at module level read as a second docstring."""
    bad = []
    for p in _tracked("*.py"):
        body = ast.parse(p.read_text(encoding="utf-8")).body
        for node in body[1:]:
            if (
                isinstance(node, ast.Expr)
                and isinstance(node.value, ast.Constant)
                and isinstance(node.value.value, str)
            ):
                bad.append(f"{p.relative_to(REPO)}:{node.lineno}")
    assert not bad, f"use `#:` comments: {bad}"


@pytest.mark.parametrize("bundle", BUNDLES)
def test_model_card_follows_the_zoo_template_and_stands_alone(bundle):
    docs = BUNDLES_DIR / bundle / "docs"
    card = (docs / "README.md").read_text(encoding="utf-8")
    assert card.startswith("# ")
    positions = [card.find("\n" + s + "\n") for s in TEMPLATE_SECTIONS]
    assert all(p >= 0 for p in positions), [s for s, p in zip(TEMPLATE_SECTIONS, positions) if p < 0]
    assert positions == sorted(positions), "sections out of the template's order"
    for target in re.findall(r"\]\(([^)#\s]+)", card):
        if re.match(r"https?://", target):
            continue
        assert (docs / target).resolve().is_relative_to((BUNDLES_DIR / bundle).resolve()), target
        assert (docs / target).exists(), f"{bundle} card links to a missing {target}"
    assert "shared/" not in card and "spec §" not in card
    # commands a user is told to run use module CLIs shipped in the package, not the repository's tools/
    assert not re.search(r"^\s*(\$ )?python (\.\./)*tools/", card, flags=re.M)
    licence = (docs / "data_license.txt").read_text(encoding="utf-8")
    assert "Third Party Licenses" in licence and len(licence) > 400


# --------------------------------------------------------------------------------------------- weights, submission
def _diffboost_weights(path: Path, wrap: bool) -> dict[str, torch.Tensor]:
    state = seeded_network_state("diffboost")
    torch.save({"model": state} if wrap else state, path)
    return state


@pytest.mark.slow
def test_weights_become_a_flat_model_pt_and_a_zoo_submission(tmp_path):
    from common.errors import BadInputError
    from ignite.engine import Engine
    from monai.bundle import ConfigParser
    from monai.handlers import CheckpointLoader

    state = _diffboost_weights(tmp_path / "trained.pt", wrap=True)
    (tmp_path / "submission" / "large_files").mkdir(parents=True)
    server, url = serve(tmp_path / "submission" / "large_files")
    try:
        dest, _ = package_bundle(
            BUNDLES_DIR / "diffboost",
            tmp_path / "pkg",
            weights=tmp_path / "trained.pt",
            large_files_url=url,
            zoo_submission=tmp_path / "submission",
        )
        flat = torch.load(dest / "models" / "model.pt", weights_only=True)
        assert flat.keys() == state.keys() and all(torch.equal(flat[k], state[k]) for k in state)
        # MONAI's CheckpointLoader (what the zoo's and MONAI Label's workflows use) loads the flat file
        p = ConfigParser()
        p.read_config(str(dest / "configs" / "inference.json"))
        p["bundle_root"] = str(dest)
        net = p.get_parsed_content("network_def")
        CheckpointLoader(load_path=str(dest / "models" / "model.pt"), load_dict={"model": net})(
            Engine(lambda e, b: None)
        )
        assert all(torch.equal(v, state[k]) for k, v in net.state_dict().items())

        sub = tmp_path / "submission"
        files = [p for p in (sub / "models" / "diffboost").rglob("*") if p.is_file()]
        assert files and max(p.stat().st_size for p in files) <= 1024 * 1024, "the zoo's git takes no file over 1 MB"
        assert not (sub / "models" / "diffboost" / "models" / "model.pt").exists()
        import yaml

        entries = yaml.safe_load((sub / "models" / "diffboost" / "large_files.yml").read_text())["large_files"]
        ours = [e for e in entries if e["path"] == "models/model.pt"]
        shipped = sub / "large_files" / "diffboost" / "model.pt"
        assert ours == [
            {
                "path": "models/model.pt",
                "url": url + "diffboost/model.pt",
                "hash_val": file_sha256(shipped),
                "hash_type": "sha256",
            }
        ]
        assert json.loads((sub / "diffboost_bundle_custom_data.json").read_text()) == {}  # AttentionUnet passes both
        assert "None: every network check" in (sub / "diffboost_bundle_custom_data.md").read_text()

        # MONAI's download_large_files fetches the file and checks it; a tampered upload is refused
        from monai.bundle import download_large_files

        target = sub / "models" / "diffboost"
        _only_our_entry(target)
        download_large_files(bundle_path=str(target))
        assert file_sha256(target / "models" / "model.pt") == file_sha256(shipped)
        (target / "models" / "model.pt").unlink()
        tampered = bytearray(shipped.read_bytes())
        tampered[len(tampered) // 2] ^= 0xFF  # one byte changed
        shipped.write_bytes(bytes(tampered))
        from monai.apps.utils import HashCheckError

        with pytest.raises(HashCheckError, match="sha256 hash check of downloaded file failed"):
            download_large_files(bundle_path=str(target))
        assert not (target / "models" / "model.pt").exists(), "a file that fails its hash is not kept"
    finally:
        server.shutdown()

    # a checkpoint of another network is refused, naming the file, and no model.pt is left
    torch.save({"model": {"conv.weight": torch.zeros(3, 3)}}, tmp_path / "other.pt")
    with pytest.raises(BadInputError, match=r"other.pt: does not load into the bundle's network_def"):
        package_bundle(BUNDLES_DIR / "diffboost", tmp_path / "pkg2", weights=tmp_path / "other.pt")
    assert not (tmp_path / "pkg2" / "diffboost" / "models" / "model.pt").exists()
    # a zoo submission without weights, or with large weights and nowhere to host them, is refused
    with pytest.raises(BadInputError, match="pass --weights"):
        package_bundle(BUNDLES_DIR / "diffboost", tmp_path / "pkg3", zoo_submission=tmp_path / "sub3")
    with pytest.raises(BadInputError, match="needs --large-files-url"):
        package_bundle(
            BUNDLES_DIR / "diffboost",
            tmp_path / "pkg4",
            weights=tmp_path / "trained.pt",
            zoo_submission=tmp_path / "s4",
        )


def _only_our_entry(bundle: Path) -> None:
    """Keep only the entries served here (the third-party HED weights cannot be downloaded offline)."""
    import yaml

    yml = bundle / "large_files.yml"
    entries = yaml.safe_load(yml.read_text())["large_files"]
    yml.write_text(yaml.safe_dump({"large_files": [e for e in entries if e["path"] == "models/model.pt"]}))


# ------------------------------------------------------------------------------------------- the zoo's own CI
@pytest.mark.zoo_ci
def test_the_model_zoo_ci_passes_on_every_package(tmp_path):
    zoo, hooks = os.environ.get("ZOO_REPO"), os.environ.get("ZOO_HOOKS")
    python = os.environ.get("ZOO_PYTHON", str(REPO / ".zoo-ci-venv" / "bin" / "python"))
    if not (zoo and hooks and Path(python).exists()):
        pytest.fail("set ZOO_REPO, ZOO_HOOKS and ZOO_PYTHON (or run tools/setup_zoo_ci_env.sh)")
    cmd = [sys.executable, str(REPO / "tools" / "zoo_ci_check.py"), "--zoo", zoo, "--hooks", hooks]
    cmd += ["--work", str(tmp_path), "--python", python]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=5400)
    assert r.returncode == 0, r.stdout[-6000:] + r.stderr[-3000:]
