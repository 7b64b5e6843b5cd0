#!/usr/bin/env python
"""Package a bundle as a self-contained folder + zip that runs with only the pip dependencies installed.

    python tools/package_bundle.py bundles/<name> --out DIR

Writes ``DIR/<name>/`` and ``DIR/<name>_v<version>.zip`` (top-level folder ``<name>/``, as the model zoo packs).
The whole ``common`` package (Python files and schemas) is copied into ``DIR/<name>/common/``; ``monai.bundle run``
puts the bundle folder on ``sys.path``, so ``common.*`` resolves to the copy. All of it, not only the modules this
bundle uses: a MONAI Label server loads several bundles into ONE process and only reloads their ``scripts``
packages between them, so the ``common`` imported first (by whichever bundle) must serve every other bundle too
(a bundle-specific subset failed there with ``No module named 'scripts.adaptive_norm'``). The bundle's configs and
``scripts/`` are still scanned for the ``common`` modules they use (transitively): that closure is recorded as
``packaged_common.modules_used`` and checks the packages the bundle declares. ``configs/metadata.json`` gets the
pinned versions (below) and a ``packaged_common`` record (modules copied, modules used, ``common`` version, git
commit).

Versions: ``monai_version``, ``pytorch_version``, ``numpy_version`` and the packages the code imports come from
``bundles/pinned_requirements.txt`` (the versions the suite runs with on Python 3.10, the model zoo's CI Python), not
from whatever this interpreter has installed: ``required_packages_version`` lists what the bundle's runs need; the
packages used for one optional input format only (:data:`OPTIONAL`) are left out, since the zoo's CI installs every
pin with ``==``.

Weights: ``--weights CKPT`` (a trained ``model.pt``, flat or ``{"model": state_dict}``) becomes the package's
``models/model.pt`` as a flat state dict -- the zoo's form, which ``CheckpointLoader`` and ``ckpt_export`` load --
after a child interpreter rooted at the package has loaded it strictly into ``inference.json``'s ``network_def``.
Weights over ``--large-file-mb`` (25 MB, the model zoo's limit) stay in the folder but are left out of the zip and
listed in the package's ``large_files.yml`` with their SHA-256 (``url`` = ``--large-files-url`` + ``<name>/<file>``, or
empty until you upload them), so ``python -m monai.bundle download_large_files`` fetches them and refuses a file
whose hash differs.

``--zoo-submission DIR`` also writes what a model-zoo pull request adds (see :func:`write_zoo_submission`):
``DIR/models/<name>/`` without the large files, ``DIR/large_files/`` (to upload at ``--large-files-url``) and
``DIR/<name>_bundle_custom_data.md``, the lines for the zoo's ``ci/bundle_custom_data.py`` with their reasons --
found by running MONAI's ``verify_net_in_out`` and ``ckpt_export`` on the package as the zoo's
``ci/verify_bundle.py`` calls them.
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
COMMON_DIR = REPO_ROOT / "common"

#: top-level import name -> distribution name, for the packages a bundle may import
DISTRIBUTIONS = {
    "torch": "torch",
    "monai": "monai",
    "numpy": "numpy",
    "transformers": "transformers",
    "diffusers": "diffusers",
    "nibabel": "nibabel",
    "SimpleITK": "SimpleITK",
    "PIL": "pillow",
    "tifffile": "tifffile",
    "ignite": "pytorch-ignite",
    "einops": "einops",
    "safetensors": "safetensors",
    "tensorboard": "tensorboard",
    "yaml": "pyyaml",
    "tqdm": "tqdm",
    "jsonschema": "jsonschema",
    "fire": "fire",
}
#: packages every bundle needs at run time even if no scanned file imports them by name
ALWAYS = ("monai", "torch", "numpy", "einops", "fire", "pytorch-ignite", "nibabel")
#: distributions the code imports for one optional feature only: not pinned in the metadata (the zoo's CI installs
#: every pin with ``==``, and MONAI 1.6 reads ``optional_packages_version`` as a deprecated name of
#: ``required_packages_version``), each with the feature that needs it
OPTIONAL = {
    "SimpleITK": "reading DICOM / MetaImage / NRRD inputs",
    "tifffile": "reading TIFF images (MoNuSeg's raw release)",
    "safetensors": "reading .safetensors weights",
    "jsonschema": "monai.bundle verify_metadata",
    "pyyaml": "YAML configs and large_files.yml",
    "tqdm": "progress bars",
}
#: words in a config that need a distribution no scanned file imports (MONAI imports it for the config's component)
CONFIG_FEATURES = {"TensorBoard": "tensorboard", "MLFlow": "mlflow"}
PINS_FILE = REPO_ROOT / "bundles" / "pinned_requirements.txt"
EXCLUDE_DIRS = {"eval", "logs", "runs", "__pycache__", ".pytest_cache"}
#: training state under models/ that a package does not ship (resume checkpoints with optimiser and RNG state,
#: archived runs, cached frozen features, the demo's tiny random Stable Diffusion)
EXCLUDE_MODEL_DIRS = ("checkpoints", "previous_run_", "feature_cache", "tiny_sd", "synthetic")


def _ignored(folder: str, names: list[str]) -> list[str]:
    in_models = Path(folder).name == "models"
    return [
        n for n in names if n in EXCLUDE_DIRS or n.endswith(".pyc") or (in_models and n.startswith(EXCLUDE_MODEL_DIRS))
    ]


COMMON_REF = re.compile(r"\bcommon(?:\.\w+)+")
#: the model zoo keeps files above this size out of the bundle zip (large_files.yml instead)
LARGE_FILE_MB = 25.0
#: ... and none above this size in its git repository (its pre-commit ``check-added-large-files --maxkb=1024``)
ZOO_COMMITTED_FILE_MB = 1.0


def _module_file(dotted: str) -> Path | None:
    """File of the longest importable prefix of ``dotted`` inside ``common`` (``common.a.B`` -> common/a.py)."""
    parts = dotted.split(".")
    for n in range(len(parts), 0, -1):
        base = REPO_ROOT.joinpath(*parts[:n])
        if base.with_suffix(".py").is_file():
            return base.with_suffix(".py")
        if (base / "__init__.py").is_file():
            return base / "__init__.py"
    return None


def _module_level_nodes(tree: ast.AST):
    """The nodes of ``tree`` outside function bodies (imports there run when the module is imported)."""
    todo = [tree]
    while todo:
        node = todo.pop()
        yield node
        todo.extend(c for c in ast.iter_child_nodes(node) if not isinstance(c, (ast.FunctionDef, ast.AsyncFunctionDef)))


def _imports_of(py_file: Path, module_name: str, lazy_third_party: bool = True) -> tuple[set[str], set[str]]:
    """(``common`` modules, third-party top-level names) imported by ``py_file``. ``lazy_third_party=False``
    counts only the third-party imports outside functions (a shared module's lazy imports serve one feature)."""
    tree = ast.parse(py_file.read_text(encoding="utf-8"), filename=str(py_file))
    package = module_name if py_file.name == "__init__.py" else module_name.rpartition(".")[0]
    common, third = set(), set()
    module_level = {id(n) for n in _module_level_nodes(tree)}
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            names = [mod] + [f"{mod}.{a.name}" for a in node.names]
        for name in names:
            if name == "common" or name.startswith("common."):
                common.add(name)
            elif name and (lazy_third_party or id(node) in module_level):
                third.add(name.split(".")[0])
    return common, third


def _module_name(path: Path) -> str:
    rel = path.relative_to(REPO_ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def common_closure(seeds: set[str]) -> tuple[set[Path], set[str]]:
    """All ``common`` files needed by the dotted names in ``seeds``, and the third-party names they import."""
    files: set[Path] = set()
    third: set[str] = set()
    todo = [f for s in seeds if (f := _module_file(s)) is not None]
    while todo:
        f = todo.pop()
        if f in files:
            continue
        files.add(f)
        # every package __init__ above the module runs on import
        for parent in f.parents:
            if parent == REPO_ROOT:
                break
            init = parent / "__init__.py"
            if init.is_file() and init not in files:
                todo.append(init)
        mods, names = _imports_of(f, _module_name(f), lazy_third_party=False)
        third |= names
        todo.extend(m for s in mods if (m := _module_file(s)) is not None and m not in files)
    return files, third


def scan_bundle(bundle: Path) -> tuple[set[str], set[str]]:
    """``common`` dotted names and third-party names used by the bundle's configs and scripts."""
    common: set[str] = set()
    third: set[str] = set()
    for cfg in (bundle / "configs").glob("*"):
        if cfg.suffix in (".json", ".yaml", ".yml"):
            text = cfg.read_text(encoding="utf-8")
            common |= set(COMMON_REF.findall(text))
            third |= {name for word, name in CONFIG_FEATURES.items() if word in text}
    for py in (bundle / "scripts").rglob("*.py") if (bundle / "scripts").is_dir() else []:
        c, t = _imports_of(py, "scripts." + ".".join(py.relative_to(bundle / "scripts").with_suffix("").parts))
        common |= c
        third |= t
    return common, third


def _canonical(dist: str) -> str:
    return re.sub(r"[-_.]+", "-", dist).lower()


def read_pins(path: Path = PINS_FILE) -> dict[str, tuple[str, str]]:
    """``pkg==version`` lines of ``path`` -> {canonical name: (name as written, version)}."""
    from common.errors import BadInputError

    pins: dict[str, tuple[str, str]] = {}
    for n, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        m = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([0-9][0-9A-Za-z.+!-]*)", line)
        if m is None:
            raise BadInputError(f"{path}:{n}", f"expected `package==version`, got {raw!r}")
        pins[_canonical(m.group(1))] = (m.group(1), m.group(2))
    return pins


def _versions(names: set[str], pins: dict[str, tuple[str, str]]) -> dict[str, str]:
    """Pinned version of each distribution behind the import names ``names`` (unknown names are skipped)."""
    from common.errors import BadInputError

    out = {}
    for name in sorted(names):
        dist = DISTRIBUTIONS.get(name, name if name in ALWAYS else None)
        if dist is None:
            continue
        if _canonical(dist) not in pins:
            raise BadInputError(PINS_FILE, f"the bundle imports {name!r} ({dist}) but no version of it is pinned here")
        out[dist] = pins[_canonical(dist)][1]
    return out


def bundle_requirements(bundle: Path) -> tuple[set[Path], dict]:
    """(the ``common`` files the bundle uses, the version keys of its metadata: ``monai_version``,
    ``pytorch_version``, ``numpy_version`` and ``required_packages_version``).

    Which packages: those the bundle's ``configs/metadata.json`` lists in ``required_packages_version`` (its author
    knows which features it uses), checked against the scan: every package imported by the bundle's scripts, by the
    module level of the ``common`` modules it uses or named by its configs must be listed (or be MONAI, PyTorch,
    NumPy or one of :data:`OPTIONAL`). Versions: :data:`PINS_FILE`."""
    from common.errors import BadInputError

    meta_path = bundle / "configs" / "metadata.json"
    declared = set(json.loads(meta_path.read_text(encoding="utf-8")).get("required_packages_version", {}))
    seeds, third = scan_bundle(bundle)
    files, third_common = common_closure(seeds)
    pins = read_pins()
    scanned = set(_versions(third | third_common | set(ALWAYS), pins))
    missing = sorted(scanned - declared - {"monai", "torch", "numpy"} - set(OPTIONAL))
    if missing:
        raise BadInputError(meta_path, f"the bundle imports {missing} but required_packages_version does not list them")
    unpinned = sorted(d for d in declared | {"monai", "torch", "numpy"} if _canonical(d) not in pins)
    if unpinned:
        raise BadInputError(PINS_FILE, f"{meta_path} needs {unpinned}, which are not pinned here")
    versions = {d: pins[_canonical(d)][1] for d in sorted(declared | {"monai", "torch", "numpy"})}
    return files, {
        "monai_version": versions.pop("monai"),
        "pytorch_version": versions.pop("torch"),
        "numpy_version": versions.pop("numpy"),
        "required_packages_version": {k: v for k, v in versions.items() if k not in OPTIONAL},
    }


def _git_commit() -> str:
    try:
        return subprocess.run(
            ["git", "-C", str(REPO_ROOT), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def file_sha256(path: Path) -> str:
    """SHA-256 hex digest of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def record_large_files(dest: Path, limit_mb: float, url_base: str | None) -> list[str]:
    """List the files in ``dest/models`` larger than ``limit_mb`` in ``dest/large_files.yml``; return their
    bundle-relative paths (to be left out of the zip). An entry already listed for the same path keeps its ``url``
    (e.g. the official download of a pretrained part) and gets the file's SHA-256 if it had none."""
    import yaml

    large = (
        sorted(p for p in (dest / "models").iterdir() if p.is_file() and p.stat().st_size > limit_mb * 1024 * 1024)
        if (dest / "models").is_dir()
        else []
    )
    if not large:
        return []
    yml = dest / "large_files.yml"
    text = yml.read_text(encoding="utf-8") if yml.is_file() else ""
    entries = (yaml.safe_load(text) or {}).get("large_files") or []
    listed = {e.get("path"): e for e in entries}
    for path in large:
        r = path.relative_to(dest).as_posix()
        if r in listed:
            e = listed[r]
            if not e.get("hash_val"):
                e["hash_val"], e["hash_type"] = file_sha256(path), "sha256"
            if not e.get("url") and url_base:
                e["url"] = f"{url_base.rstrip('/')}/{dest.name}/{path.name}"
            continue
        url = f"{url_base.rstrip('/')}/{dest.name}/{path.name}" if url_base else ""
        entries.append({"path": r, "url": url, "hash_val": file_sha256(path), "hash_type": "sha256"})
    rel = [p.relative_to(dest).as_posix() for p in large]
    header = [ln for ln in text.splitlines() if ln.startswith("#")]
    header.append(
        f"# Added by tools/package_bundle.py: files over {limit_mb:g} MB are not in the zip"
        + ("." if url_base else "; upload them and fill in `url`.")
    )
    yml.write_text(
        "\n".join(header) + "\n" + yaml.safe_dump({"large_files": entries}, sort_keys=False), encoding="utf-8"
    )
    return rel


#: run in a child interpreter whose working directory is the package: ``common`` and ``scripts`` resolve to the
#: package's copies, as under ``monai.bundle run`` (``bundle_root`` first on ``sys.path``)
_PACKAGE_PRELUDE = (
    "import sys\n"
    "sys.meta_path[:] = [f for f in sys.meta_path if 'editable' not in repr(f).lower()]\n"
    "sys.path[:] = ['.'] + [p for p in sys.path if p not in ('', {repo!r})]\n"
)
_LOAD_WEIGHTS = """
from monai.bundle import ConfigParser
from common.io.checkpoints import load_network_weights
p = ConfigParser(); p.read_config('configs/inference.json'); p.read_meta('configs/metadata.json')
p['bundle_root'] = '.'
net = p.get_parsed_content('network_def')
load_network_weights(net, 'models/model.pt', key=None, strict=True)
print(f'{sum(t.numel() for t in net.state_dict().values())} values loaded strictly into network_def')
"""
#: the two network checks of the zoo's ``ci/verify_bundle.py`` (full mode), called as it calls them
_ZOO_NETWORK_CHECKS = {
    "exclude_verify_shape_list": (
        "from monai.bundle import verify_net_in_out\n"
        "verify_net_in_out(net_id='network_def', meta_file='configs/metadata.json',"
        " config_file='configs/inference.json', bundle_root='.')\n"
    ),
    "exclude_verify_torchscript_list": (
        "import os, tempfile\nfrom monai.bundle import ckpt_export\n"
        "out = os.path.join(tempfile.mkdtemp(), 'verify_model.ts')\n"
        "ckpt_export(net_id='network_def', filepath=out, ckpt_file='models/model.pt',"
        " meta_file='configs/metadata.json', config_file='configs/inference.json', bundle_root='.')\n"
    ),
}
_FORWARD_SIGNATURE = """
import inspect
from monai.bundle import ConfigParser
p = ConfigParser(); p.read_config('configs/inference.json'); p['bundle_root'] = '.'
cls = type(p.get_parsed_content('network_def'))
print(f"{cls.__name__}.forward{inspect.signature(cls.forward)}")
"""


def run_in_package(dest: Path, code: str, timeout: int = 1800, **env_extra: str) -> subprocess.CompletedProcess:
    """Run Python ``code`` in a child interpreter rooted at the package folder ``dest`` (this repository is not
    importable there), offline (``HF_HUB_OFFLINE``), with ``env_extra`` added to its environment."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONUNBUFFERED="1", **env_extra)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p and Path(p).resolve() != REPO_ROOT
    )
    prelude = _PACKAGE_PRELUDE.format(repo=str(REPO_ROOT))
    return subprocess.run(
        [sys.executable, "-c", prelude + code], cwd=dest, capture_output=True, text=True, timeout=timeout, env=env
    )


def install_weights(dest: Path, weights: str | Path) -> Path:
    """Write ``weights`` (flat or ``{"model": state_dict}``, read with ``weights_only=True``) as the package's flat
    ``models/model.pt`` and check, in a child interpreter rooted at the package, that it loads strictly into
    ``inference.json``'s ``network_def``. A file that does not fit is removed again and the error names it."""
    from common.errors import BadInputError
    from common.io.atomic import atomic_torch_save
    from common.io.checkpoints import load_state_dict_file

    state = load_state_dict_file(weights)
    target = atomic_torch_save(dict(state), dest / "models" / "model.pt")
    r = run_in_package(dest, _LOAD_WEIGHTS)
    if r.returncode != 0:
        target.unlink()
        raise BadInputError(weights, f"does not load into the bundle's network_def: {_last_line(r.stderr)}")
    return target


def _last_line(text: str) -> str:
    """The last error line of a traceback (``SomethingError: ...``), else the last line."""
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    errors = [i for i, ln in enumerate(lines) if re.match(r"^[\w.]*(Error|Exception)\b", ln)]
    if not errors:
        return (lines or ["(no output)"])[-1][:400]
    i = errors[-1]
    line = lines[i]
    if line.endswith(":") and i + 1 < len(lines):  # TorchScript puts its message on the next line
        line += " " + lines[i + 1]
    return line[:400]


def zoo_ci_exclusions(dest: Path) -> dict[str, str]:
    """The zoo CI lists (``ci/bundle_custom_data.py``) this package must be in, each with its reason: MONAI's
    ``verify_net_in_out`` and ``ckpt_export`` are run on the package exactly as the zoo's ``verify_bundle.py`` calls
    them (``network_def`` of ``inference.json`` without overrides); a check that fails puts the bundle on that list.
    ``ckpt_export`` needs ``models/model.pt``."""
    signature = run_in_package(dest, _FORWARD_SIGNATURE)
    forward = signature.stdout.strip().splitlines()[-1] if signature.returncode == 0 else "forward (not inspected)"
    out = {}
    for list_name, code in _ZOO_NETWORK_CHECKS.items():
        r = run_in_package(dest, code)
        if r.returncode != 0:
            out[list_name] = f"{forward}: {_last_line(r.stderr)}"
    return out


def _ignore_listed(root: Path, listed: set[str]):
    """``shutil.copytree`` ignore function leaving out the ``root``-relative paths in ``listed``."""

    def ignore(folder: str, names: list[str]) -> list[str]:
        return [n for n in names if (Path(folder) / n).relative_to(root).as_posix() in listed]

    return ignore


def write_zoo_submission(dest: Path, submission: Path, large_files: set[str], meta: dict) -> Path:
    """Write what a model-zoo pull request for the package ``dest`` adds under ``submission``:

    - ``models/<name>/``: the package folder without the files of ``large_files.yml`` (the zoo keeps them out);
    - ``large_files/<name>/<file>``: those files, to upload at the ``url`` written in ``large_files.yml``;
    - ``<name>_bundle_custom_data.md``: the names to add to the lists of the zoo's ``ci/bundle_custom_data.py``,
      each with the reason (:func:`zoo_ci_exclusions`), and the same as JSON in ``<name>_bundle_custom_data.json``.

    Returns the markdown file."""
    from common.io.atomic import atomic_write_json, atomic_write_text

    name = dest.name
    folder = submission / "models" / name
    if folder.exists():
        shutil.rmtree(folder)
    shutil.copytree(dest, folder, ignore=_ignore_listed(dest, large_files))
    for rel in sorted(large_files):
        (submission / "large_files" / name).mkdir(parents=True, exist_ok=True)
        shutil.copy2(dest / rel, submission / "large_files" / name / Path(rel).name)
    exclusions = zoo_ci_exclusions(dest)
    lines = [
        f"# {name} v{meta['version']}: additions to the model zoo's ci/bundle_custom_data.py",
        "",
        "Found by running MONAI's `verify_net_in_out` and `ckpt_export` on the package as the zoo's",
        "`ci/verify_bundle.py` (full mode) calls them; each failing check puts the bundle on its exclusion list.",
        "",
    ]
    if not exclusions:
        lines.append("None: every network check of the zoo's CI passes on this package.")
    for list_name, reason in exclusions.items():
        lines += [f'- `{list_name}`: add `"{name}"`', f"  - reason: {reason}"]
    atomic_write_json(submission / f"{name}_bundle_custom_data.json", exclusions)
    return atomic_write_text(submission / f"{name}_bundle_custom_data.md", "\n".join(lines) + "\n")


def package_bundle(
    bundle: str | Path,
    out: str | Path,
    large_file_mb: float = LARGE_FILE_MB,
    large_files_url: str | None = None,
    weights: str | Path | None = None,
    zoo_submission: str | Path | None = None,
) -> tuple[Path, Path]:
    """Write the self-contained copy of ``bundle`` under ``out``; return (folder, zip path).

    ``weights`` becomes the flat ``models/model.pt`` (:func:`install_weights`). Files under ``models/`` above
    ``large_file_mb`` are kept in the folder, left out of the zip and recorded in ``large_files.yml`` (SHA-256;
    ``url`` from ``large_files_url``, a base URL, or empty). ``zoo_submission``: also write the pull-request folder
    (:func:`write_zoo_submission`); it needs ``models/model.pt``, moves every model file over 1 MB (the zoo's git
    limit) to ``large_files.yml`` and needs ``large_files_url`` for them."""
    from common import __version__ as common_version
    from common.errors import BadInputError

    bundle, out = Path(bundle).resolve(), Path(out).resolve()
    meta_path = bundle / "configs" / "metadata.json"
    if not meta_path.is_file():
        raise BadInputError(meta_path, "not found: is this a bundle folder?")
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    name = bundle.name
    dest = out / name
    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(bundle, dest, ignore=_ignored)
    files, versions = bundle_requirements(bundle)
    carried = sorted(COMMON_DIR.rglob("*.py"))
    for f in carried:
        target = dest / f.relative_to(REPO_ROOT)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(f, target)
    schemas = COMMON_DIR / "schemas"
    if schemas.is_dir():
        shutil.copytree(schemas, dest / "common" / "schemas", dirs_exist_ok=True)

    meta.update(versions)
    meta.pop("optional_packages_version", None)
    meta["packaged_common"] = {
        "version": common_version,
        "git_commit": _git_commit(),
        "modules": sorted(_module_name(f) for f in carried),
        "modules_used": sorted(_module_name(f) for f in files),
    }
    (dest / "configs" / "metadata.json").write_text(json.dumps(meta, indent=4) + "\n", encoding="utf-8")

    if weights is not None:
        install_weights(dest, weights)
    if zoo_submission is not None and not (dest / "models" / "model.pt").is_file():
        raise BadInputError(dest / "models" / "model.pt", "a zoo submission ships trained weights: pass --weights")
    if zoo_submission is not None:
        large_file_mb = min(large_file_mb, ZOO_COMMITTED_FILE_MB)
    left_out = set(record_large_files(dest, large_file_mb, large_files_url))
    if zoo_submission is not None and left_out and not large_files_url:
        raise BadInputError(
            f"{name}: {', '.join(sorted(left_out))}",
            f"over {large_file_mb:g} MB: a zoo submission needs --large-files-url, where these files will be hosted",
        )
    zip_path = out / f"{name}_v{meta['version']}.zip"
    tmp = zip_path.with_suffix(".zip.tmp")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
        for p in sorted(dest.rglob("*")):
            if p.is_file() and p.relative_to(dest).as_posix() not in left_out:
                zf.write(p, Path(name) / p.relative_to(dest))
    tmp.replace(zip_path)
    if zoo_submission is not None:
        write_zoo_submission(dest, Path(zoo_submission).resolve(), left_out, meta)
    return dest, zip_path


def main(argv: list[str] | None = None) -> int:
    if str(REPO_ROOT) not in sys.path:
        sys.path.insert(0, str(REPO_ROOT))
    from common.errors import BadInputError

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("bundle")
    ap.add_argument("--out", required=True)
    ap.add_argument(
        "--large-file-mb",
        type=float,
        default=LARGE_FILE_MB,
        help="weights above this size go to large_files.yml instead of the zip (default %(default)s)",
    )
    ap.add_argument(
        "--large-files-url",
        default=None,
        help="base URL where the large files will be hosted (written into large_files.yml)",
    )
    ap.add_argument("--weights", default=None, help="trained checkpoint to ship as the flat models/model.pt")
    ap.add_argument(
        "--zoo-submission",
        default=None,
        metavar="DIR",
        help="also write DIR/models/<name>/, DIR/large_files/ and the ci/bundle_custom_data.py additions",
    )
    args = ap.parse_args(argv)
    try:
        dest, zip_path = package_bundle(
            args.bundle, args.out, args.large_file_mb, args.large_files_url, args.weights, args.zoo_submission
        )
    except BadInputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    meta = json.loads((dest / "configs" / "metadata.json").read_text())
    print(f"bundle folder: {dest}\nzip: {zip_path}")
    print(
        f"common modules used by the bundle: {', '.join(meta['packaged_common']['modules_used']) or '(none)'} "
        f"({len(meta['packaged_common']['modules'])} carried)"
    )
    print(f"required packages: {meta['required_packages_version']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
