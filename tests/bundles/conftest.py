"""Fixture of every bundle's tests: ``scripts`` is that bundle's package while the module's tests run."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
from common.utils.bundles import BUNDLES_DIR, bundle_scripts


@pytest.fixture(scope="module", autouse=True)
def this_bundles_scripts(request: pytest.FixtureRequest):
    """For a test module under ``tests/bundles/<name>/``, ``scripts`` resolves to ``bundles/<name>/scripts`` while its
    tests run (configs instantiate ``scripts.*`` lazily, also inside module-scoped fixtures); the earlier ``scripts``
    modules and ``sys.path`` are restored afterwards. Modules directly under ``tests/bundles/`` are left alone."""
    name = Path(request.path).parent.name
    active = (BUNDLES_DIR / name / "scripts").is_dir()
    with bundle_scripts(name) if active else contextlib.nullcontext():
        yield
