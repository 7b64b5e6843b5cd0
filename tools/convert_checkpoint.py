#!/usr/bin/env python
"""Convert third-party checkpoints into the weights our bundles load (``.pt``).

    python tools/convert_checkpoint.py generative --network CONFIG.json#network_def --src old.pt --dst models/model.pt
    python tools/convert_checkpoint.py --list

A wrapper of ``python -m common.io.convert_checkpoint`` (:mod:`common.io.convert_checkpoint`, the same command line,
which also runs inside a packaged bundle): it puts the repository root on ``sys.path`` and calls its ``main``, which
imports the bundle converter modules (``common.io.convert_checkpoint.CONVERTER_MODULES``,
``bundles.<name>.scripts.convert``).

``generative``: a checkpoint of the frozen ``monai-generative`` package (DiffusionModelUNet, AutoencoderKL,
ControlNet, ...) into the MONAI core class built from ``--network`` (a bundle config file and the id of the network
definition in it, or a JSON file with a ``_target_`` component). Every old key must map to a new one and every new
key must be filled; otherwise the tool stops with the list of keys (see ``common.io.checkpoints``).

Bundles register their own converters (authors' released weights) with ``@register_checkpoint_converter``; they
appear here as further sub-commands.
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from common.io.convert_checkpoint import main  # noqa: E402

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
