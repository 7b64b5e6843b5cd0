"""Import a bundle's ``scripts`` package from outside ``monai.bundle run`` without leaking it to other callers.

Every bundle names its code package ``scripts`` (``bundles/<name>/scripts``, importable as ``scripts.*`` when
``monai.bundle run`` puts the bundle folder on ``sys.path``). Tests of several bundles run in one process, and
:mod:`common.standins` builds cDAL and DiffBoost networks from their bundles' code, so a caller makes ``scripts``
resolve to one bundle while it imports (or while its work runs) and then restores what was there before. Only
meaningful in a checkout: a packaged bundle has no ``bundles/`` folder around it.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path

__all__ = ["BUNDLES_DIR", "REPO_ROOT", "bundle_scripts"]

REPO_ROOT = Path(__file__).resolve().parents[2]
"""The checkout's root (``common/`` and ``bundles/`` below it)."""
BUNDLES_DIR = REPO_ROOT / "bundles"
"""``<repo>/bundles``."""


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
