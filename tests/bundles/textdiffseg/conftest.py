"""Fixture of the TextDiffSeg bundle tests."""

from __future__ import annotations

import pytest

from common.utils.bundles import bundle_scripts


@pytest.fixture(scope="module")
def textdiffseg_scripts():
    """``scripts`` resolves to bundles/textdiffseg/scripts while a module's tests run (configs instantiate
    ``scripts.*`` lazily), then the earlier ``scripts`` modules and sys.path are restored. Modules that build the
    bundle's configs use it with ``pytestmark = pytest.mark.usefixtures("textdiffseg_scripts")``."""
    with bundle_scripts("textdiffseg"):
        yield
