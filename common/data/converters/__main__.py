"""Command line of :mod:`common.data.converters`: a dataset in its official release layout -> ``DST/datalist.json``.

Runs from the source repository and from a packaged bundle (the bundle folder, where ``common`` is importable)::

    python -m common.data.converters --list
    python -m common.data.converters monuseg "/data/MoNuSeg" /data/monuseg_converted --val-fraction 0.2
    python -m common.data.converters msd /data/Task05_Prostate /data/prostate --option channels=[0] --option binary=true
    python -m common.data.converters msd /data/Task07_Pancreas /data/pancreas --option 'label_mapping={"2": 1}'

``--option KEY=VALUE`` passes a converter-specific option; VALUE is parsed as JSON when it is valid JSON (numbers,
true/false, lists, objects), else kept as a string. ``--list`` shows the converters, their accepted layouts and
options. Bad input (wrong folder layout, broken files) ends with exit code 2 and a one-paragraph message naming the
file and the problem, no traceback. The source repository's ``tools/convert_dataset.py`` is a wrapper of
:func:`main` with the same command line.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from common.data.converters import available_converters, get_converter
from common.data.datalist import datalist_splits, load_datalist, read_datalist
from common.errors import BadInputError

__all__ = ["build_parser", "describe_converters", "main", "parse_option"]

#: the program name shown in help and usage messages when run with ``python -m``
MODULE_PROG = "python -m common.data.converters"


def parse_option(text: str) -> tuple[str, Any]:
    """``"key=value"`` -> ``("key", json.loads(value))`` (or the raw string when it is not JSON)."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key.strip(), json.loads(value)
    except json.JSONDecodeError:
        return key.strip(), value


def describe_converters() -> str:
    """Text of ``--list``: every converter with its layout and options."""
    lines = []
    for name in available_converters():
        conv = get_converter(name)
        lines.append(f"{name}: {conv.description}")
        lines.append("  layout:")
        lines.extend(f"  {line}" for line in conv.expected_layout.splitlines())
        lines.append("  options (--option KEY=VALUE):")
        for key, default in conv.option_defaults().items():
            lines.append(f"    {key} = {default!r}")
    return "\n".join(lines)


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    """The argument parser; ``prog`` is the program name in messages (default: the name of the running script)."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Convert an official dataset release into a datalist JSON (common.data.converters).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("name", nargs="?", help="converter name (see --list)")
    parser.add_argument("src", nargs="?", type=Path, help="the dataset folder as released")
    parser.add_argument("dst", nargs="?", type=Path, help="output folder (datalist.json is written there)")
    parser.add_argument("--list", action="store_true", help="list the converters, their layouts and options")
    parser.add_argument("--seed", type=int, default=None, help="split seed (default 0)")
    parser.add_argument("--val-fraction", type=float, default=None, help="validation fraction of the non-test cases")
    parser.add_argument("--test-fraction", type=float, default=None, help="test fraction of the labelled cases")
    parser.add_argument("--text-file", type=Path, default=None, help="JSON/CSV table image name -> sentence")
    parser.add_argument(
        "--option",
        "-o",
        action="append",
        type=parse_option,
        default=[],
        metavar="KEY=VALUE",
        help="converter-specific option (repeatable), VALUE parsed as JSON when possible",
    )
    return parser


def main(argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    """Run the command line on ``argv`` (default ``sys.argv[1:]``); returns the exit code (0, or 2 on bad input)."""
    parser = build_parser(prog)
    args = parser.parse_args(None if argv is None else list(argv))
    if args.list:
        print(describe_converters())
        return 0
    if not (args.name and args.src and args.dst):
        parser.error("NAME, SRC and DST are required (or use --list)")
    options: dict[str, Any] = dict(args.option)
    for key, value in (
        ("seed", args.seed),
        ("val_fraction", args.val_fraction),
        ("test_fraction", args.test_fraction),
        ("text_file", args.text_file),
    ):
        if value is not None:
            options[key] = str(value) if isinstance(value, Path) else value
    try:
        path = get_converter(args.name).convert(args.src, args.dst, **options)
        doc = read_datalist(path)
        counts = {k: len(doc[k]) for k in datalist_splits(doc)}
        for split in counts:  # re-read with file checks: what a bundle will do
            load_datalist(path, split, allow_empty=True)
    except BadInputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {path}: " + ", ".join(f"{k} {n}" for k, n in counts.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main(prog=MODULE_PROG))
