#!/usr/bin/env python
"""Write a small synthetic dataset in an official release layout (for tests, demos and trying a converter).

    python tools/make_synthetic_data.py monuseg /tmp/synth_monuseg --n-train 6 --n-test 2 --size 128
    python tools/make_synthetic_data.py msd /tmp/synth_msd --n-train 6 --n-test 2 --n-classes 3 --shape-range 32,48
    python tools/make_synthetic_data.py busi /tmp/synth_busi --n-malignant 6 --size 64,64
    python tools/make_synthetic_data.py LAYOUT --help          # that layout's options
    python tools/convert_dataset.py monuseg /tmp/synth_monuseg /tmp/synth_monuseg_datalist

Layouts: :data:`common.data.synthetic.SYNTHETIC_LAYOUTS` (MoNuSeg, MSD, BUSI, QaTa-COV19, the CXR lung masks,
KiTS21, LiTS). Each layout's options are its generator's keyword arguments (``n_train`` -> ``--n-train``; a tuple
is written ``a,b``), with the generator's defaults, so every layout takes exactly what its generator takes.
"""

from __future__ import annotations

import argparse
import inspect
import sys
import typing
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from common.data.synthetic import SYNTHETIC_LAYOUTS, synthetic_generator  # noqa: E402


def _parse_as(hint: Any) -> tuple[Any, str]:
    """(argparse ``type`` callable, metavar) for a generator parameter's type hint."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if typing.get_origin(hint) in (typing.Union, getattr(__import__("types"), "UnionType", None)) and len(args) == 1:
        return _parse_as(args[0])
    if typing.get_origin(hint) is tuple:
        item = float if float in typing.get_args(hint) else int
        return (lambda text: tuple(item(v) for v in text.split(","))), "A,B,..."
    if hint is bool:
        return (lambda text: text.lower() in ("1", "true", "yes")), "true|false"
    if hint in (int, float, str):
        return hint, hint.__name__.upper()
    return str, "VALUE"


def _generator_options(generator: Any) -> list[tuple[str, Any, Any, str]]:
    """``[(name, default, parse, metavar)]`` of the generator's keyword parameters after ``dst``."""
    func = generator.func if hasattr(generator, "func") else generator  # functools.partial
    hints = typing.get_type_hints(func)
    out = []
    for name, param in inspect.signature(generator).parameters.items():
        if name == "dst" or param.default is inspect.Parameter.empty:
            continue
        parse, metavar = _parse_as(hints.get(name, str))
        out.append((name, param.default, parse, metavar))
    return out


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Write a synthetic dataset in an official release layout.")
    layouts = parser.add_subparsers(dest="layout", required=True, metavar="LAYOUT", help=", ".join(SYNTHETIC_LAYOUTS))
    for layout in SYNTHETIC_LAYOUTS:
        generator = synthetic_generator(layout)
        doc = (inspect.getdoc(generator) or "").split("\n\n")[0].replace("\n", " ")
        sub = layouts.add_parser(layout, help=doc, description=doc)
        sub.add_argument("dst", type=Path, help="output folder")
        for name, default, parse, metavar in _generator_options(generator):
            shown = ",".join(map(str, default)) if isinstance(default, tuple) else default
            sub.add_argument(
                f"--{name.replace('_', '-')}",
                dest=name,
                type=parse,
                default=default,
                metavar=metavar,
                help=f"default {shown}",
            )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = vars(build_parser().parse_args(argv))
    layout, dst = args.pop("layout"), args.pop("dst")
    try:
        made = synthetic_generator(layout)(dst, **args)
    except (ValueError, TypeError) as err:
        print(f"error: {layout}: {err}", file=sys.stderr)
        return 2
    count = f"{len(made)} " if isinstance(made, list) else ""
    print(f"wrote {count}synthetic {layout} cases under {dst}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
