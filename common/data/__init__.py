"""Datasets: the datalist format, converters from official release layouts, text from masks, synthetic data.

- :mod:`common.data.datalist` -- MONAI Decathlon-style datalist JSON with a sentence per case; seeded splits, K-fold.
- :mod:`common.data.converters` -- registry of converters (``monuseg``, ``msd``, ...) writing such datalists.
- :mod:`common.data.describe` -- per-case sentence generated from a label mask when the dataset has no text.
- :mod:`common.data.synthetic` -- small deterministic datasets written in the official layouts (tests, demos).

Command line: ``tools/convert_dataset.py NAME SRC DST`` and ``tools/make_synthetic_data.py LAYOUT DST``.
"""

from common.data.converters import available_converters, get_converter, register_converter
from common.data.datalist import (
    DATALIST_FILENAME,
    datalist_splits,
    kfold_splits,
    load_datalist,
    read_datalist,
    split_cases,
    validate_datalist,
    write_datalist,
)

__all__ = [
    "DATALIST_FILENAME",
    "available_converters",
    "datalist_splits",
    "get_converter",
    "kfold_splits",
    "load_datalist",
    "read_datalist",
    "register_converter",
    "split_cases",
    "validate_datalist",
    "write_datalist",
]
