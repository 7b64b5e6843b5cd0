"""Import a bundle's ``scripts`` package from outside ``monai.bundle run`` without leaking it to other callers.

Every bundle names its code package ``scripts`` (``bundles/<name>/scripts``, importable as ``scripts.*`` when
``monai.bundle run`` puts the bundle folder on ``sys.path``). Tests of several bundles run in one process, and
:mod:`common.standins` builds cDAL and DiffBoost networks from their bundles' code, so a caller makes ``scripts``
resolve to one bundle while it imports (or while its work runs) and then restores what was there before. Only
meaningful in a checkout: a packaged bundle has no ``bundles/`` folder around it.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

__all__ = [
    "BUNDLES_DIR",
    "REPO_ROOT",
    "bundle_run_command",
    "bundle_run_env",
    "bundle_run_paths",
    "bundle_scripts",
    "seeded_network_state",
    "tool_command",
]

#: The checkout's root (``common/`` and ``bundles/`` below it).
REPO_ROOT = Path(__file__).resolve().parents[2]
#: ``<repo>/bundles``.
BUNDLES_DIR = REPO_ROOT / "bundles"


def _is_scripts_module(name: str) -> bool:
    return name == "scripts" or name.startswith("scripts.")


@contextlib.contextmanager
def bundle_scripts(name: str) -> Iterator[Path]:
    """Let ``import scripts.*`` resolve to ``bundles/<name>/scripts`` inside the ``with`` block.

    On entry the ``scripts`` / ``scripts.*`` modules already loaded (another bundle's) are taken out of
    ``sys.modules`` and the bundle folder is put first on ``sys.path``; on exit the bundle's ``scripts`` modules are
    dropped, the earlier ones put back and the ``sys.path`` entry removed, even if the block raised. Modules
    imported inside the block stay usable afterwards through the names bound to them.

    Args:
        name: the bundle folder name under ``bundles/`` (``"cdal"``, ``"textdiffseg"``, ...).

    Yields:
        The bundle folder (``bundles/<name>``).

    Raises:
        FileNotFoundError: if ``bundles/<name>/scripts`` does not exist.
    """
    bundle = BUNDLES_DIR / name
    if not (bundle / "scripts").is_dir():
        raise FileNotFoundError(f"{bundle / 'scripts'}: no such bundle scripts folder (bundle name {name!r})")
    saved = {k: sys.modules.pop(k) for k in list(sys.modules) if _is_scripts_module(k)}
    entry = str(bundle)
    sys.path.insert(0, entry)
    try:
        yield bundle
    finally:
        if entry in sys.path:
            sys.path.remove(entry)
        for k in [k for k in sys.modules if _is_scripts_module(k)]:
            del sys.modules[k]
        sys.modules.update(saved)


def bundle_run_command(
    configs: Sequence[str], overrides: Mapping[str, object] | None = None, meta_file: str = "configs/metadata.json"
) -> list[str]:
    """``python -m monai.bundle run`` of the stacked ``configs`` (paths relative to the bundle folder, the child's
    working directory) with ``--key value`` overrides (values as given; strings are passed unchanged)."""
    cmd = [sys.executable, "-m", "monai.bundle", "run"]
    cmd += ["--config_file", "[" + ",".join(f"'{c}'" for c in configs) + "]", "--meta_file", meta_file]
    for key, value in (overrides or {}).items():
        cmd += [f"--{key}", str(value)]
    return cmd


def bundle_run_paths(datalist: str | os.PathLike, work: str | os.PathLike, output: str = "eval") -> dict[str, str]:
    """The path overrides of a bundle run on ``datalist``: ``dataset_dir`` (its folder), ``datalist``, ``output_dir``
    (``work/<output>``) and ``ckpt_dir`` (``work/models``), as strings."""
    datalist, work = Path(datalist), Path(work)
    return {
        "dataset_dir": str(datalist.parent),
        "datalist": str(datalist),
        "output_dir": str(work / output),
        "ckpt_dir": str(work / "models"),
    }


def seeded_network_state(name: str, configs: Sequence[str] = ("inference.json",), seed: int = 0) -> dict:
    """The state dict of bundle ``name``'s ``network_def`` built from ``configs`` (file names under its
    ``configs/``, merged in order) right after ``torch.manual_seed(seed)``: the same weights on every call, for
    packaging, export and CI checks that need a ``models/model.pt`` but not a trained one (what the model zoo's CI
    writes as fake weights). The global RNG state is left as it was.

    Returns:
        ``{parameter or buffer name: tensor}`` (CPU), loadable with ``strict=True`` into that ``network_def``.
    """
    import torch
    from monai.bundle import ConfigParser

    with bundle_scripts(name) as bundle, torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        parser = ConfigParser()
        parser.read_config([str(bundle / "configs" / c) for c in configs])
        parser["bundle_root"] = str(bundle)
        return {k: v.detach().cpu() for k, v in parser.get_parsed_content("network_def").state_dict().items()}


def tool_command(script: str, *args: object) -> list[str]:
    """``python tools/<script> ARGS`` of this checkout (each argument as ``str``), e.g. for ``subprocess.run``."""
    return [sys.executable, str(REPO_ROOT / "tools" / script), *(str(a) for a in args)]


def bundle_run_env(**extra: str) -> dict[str, str]:
    """The environment of a ``monai.bundle run`` child: offline Hugging Face, unbuffered output, this checkout's
    ``common`` first on ``PYTHONPATH`` (before any inherited entries), plus ``extra`` variables."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONUNBUFFERED="1", **extra)
    inherited = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p and p != str(REPO_ROOT)]
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), *inherited])
    return env
