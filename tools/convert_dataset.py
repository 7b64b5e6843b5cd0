#!/usr/bin/env python
"""Convert a dataset in its official release layout into the project's datalist (``DST/datalist.json``).

    python tools/convert_dataset.py --list
    python tools/convert_dataset.py monuseg "/data/MoNuSeg" /data/monuseg_converted --val-fraction 0.2
    python tools/convert_dataset.py msd /data/Task05_Prostate /data/prostate --option channels=[0] --option binary=true
    python tools/convert_dataset.py msd /data/Task07_Pancreas /data/pancreas --option 'label_mapping={"2": 1}'

A wrapper of ``python -m common.data.converters`` (:mod:`common.data.converters.__main__`, the same command line,
which also runs inside a packaged bundle): it puts the repository root on ``sys.path`` and calls its ``main``.
``--option KEY=VALUE`` passes a converter-specific option; VALUE is parsed as JSON when it is valid JSON (numbers,
true/false, lists, objects), else kept as a string. ``--list`` shows the converters, their accepted layouts and
options. Bad input (wrong folder layout, broken files) ends with exit code 2 and a one-paragraph message naming the
file and the problem, no traceback.
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from common.data.converters.__main__ import build_parser, describe_converters, main, parse_option  # noqa: E402

__all__ = ["build_parser", "describe_converters", "main", "parse_option"]

if __name__ == "__main__":
    sys.exit(main())
