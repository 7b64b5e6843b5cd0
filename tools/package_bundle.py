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
``packaged_common.modules_used`` and decides the pinned third-party packages. ``configs/metadata.json`` gets the
versions of the installed third-party packages the code imports (``required_packages_version``, ``monai_version``,
``pytorch_version``, ``numpy_version``) and a ``packaged_common`` record (modules copied, modules used, ``common``
version, git commit).

Weights over ``--large-file-mb`` (25 MB, the model zoo's limit) stay in the folder but are left out of the zip and
listed in the package's ``large_files.yml`` with their SHA-256 (``url`` = ``--large-files-url`` + file name, or
empty until you upload them), so ``python -m monai.bundle download_large_files`` fetches and checks them.
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import json
import re
import shutil
import subprocess
import sys
import zipfile
from importlib import metadata as importlib_metadata
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


def _imports_of(py_file: Path, module_name: str) -> tuple[set[str], set[str]]:
    """(``common`` modules, third-party top-level names) imported by ``py_file``."""
    tree = ast.parse(py_file.read_text(encoding="utf-8"), filename=str(py_file))
    package = module_name if py_file.name == "__init__.py" else module_name.rpartition(".")[0]
    common, third = set(), set()
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
            elif name:
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
        mods, names = _imports_of(f, _module_name(f))
        third |= names
        todo.extend(m for s in mods if (m := _module_file(s)) is not None and m not in files)
    return files, third


def scan_bundle(bundle: Path) -> tuple[set[str], set[str]]:
    """``common`` dotted names and third-party names used by the bundle's configs and scripts."""
    common: set[str] = set()
    third: set[str] = set()
    for cfg in (bundle / "configs").glob("*"):
        if cfg.suffix in (".json", ".yaml", ".yml"):
            common |= set(COMMON_REF.findall(cfg.read_text(encoding="utf-8")))
    for py in (bundle / "scripts").rglob("*.py") if (bundle / "scripts").is_dir() else []:
        c, t = _imports_of(py, "scripts." + ".".join(py.relative_to(bundle / "scripts").with_suffix("").parts))
        common |= c
        third |= t
    return common, third


def _versions(names: set[str]) -> dict[str, str]:
    out = {}
    for name in sorted(names):
        dist = DISTRIBUTIONS.get(name, name if name in ALWAYS else None)
        if dist is None:
            continue
        try:
            out[dist] = importlib_metadata.version(dist).split("+")[0]
        except importlib_metadata.PackageNotFoundError:
            continue
    return out


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
                e["url"] = f"{url_base.rstrip('/')}/{path.name}"
            continue
        url = f"{url_base.rstrip('/')}/{path.name}" if url_base else ""
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


def package_bundle(
    bundle: str | Path,
    out: str | Path,
    large_file_mb: float = LARGE_FILE_MB,
    large_files_url: str | None = None,
) -> tuple[Path, Path]:
    """Write the self-contained copy of ``bundle`` under ``out``; return (folder, zip path).

    Files under ``models/`` above ``large_file_mb`` are kept in the folder, left out of the zip and recorded in
    ``large_files.yml`` (SHA-256; ``url`` from ``large_files_url``, a base URL, or empty)."""
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
    seeds, third = scan_bundle(bundle)
    files, third_common = common_closure(seeds)
    carried = sorted(COMMON_DIR.rglob("*.py"))
    for f in carried:
        target = dest / f.relative_to(REPO_ROOT)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(f, target)
    schemas = COMMON_DIR / "schemas"
    if schemas.is_dir():
        shutil.copytree(schemas, dest / "common" / "schemas", dirs_exist_ok=True)

    versions = _versions(third | third_common | set(ALWAYS))
    meta["monai_version"] = versions.pop("monai", meta.get("monai_version"))
    meta["pytorch_version"] = versions.pop("torch", meta.get("pytorch_version"))
    meta["numpy_version"] = versions.pop("numpy", meta.get("numpy_version"))
    meta["required_packages_version"] = {**meta.get("required_packages_version", {}), **versions}
    meta["packaged_common"] = {
        "version": common_version,
        "git_commit": _git_commit(),
        "modules": sorted(_module_name(f) for f in carried),
        "modules_used": sorted(_module_name(f) for f in files),
    }
    (dest / "configs" / "metadata.json").write_text(json.dumps(meta, indent=4) + "\n", encoding="utf-8")

    left_out = set(record_large_files(dest, large_file_mb, large_files_url))
    zip_path = out / f"{name}_v{meta['version']}.zip"
    tmp = zip_path.with_suffix(".zip.tmp")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
        for p in sorted(dest.rglob("*")):
            if p.is_file() and p.relative_to(dest).as_posix() not in left_out:
                zf.write(p, Path(name) / p.relative_to(dest))
    tmp.replace(zip_path)
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
    args = ap.parse_args(argv)
    try:
        dest, zip_path = package_bundle(args.bundle, args.out, args.large_file_mb, args.large_files_url)
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
