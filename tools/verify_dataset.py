#!/usr/bin/env python
"""Check a dataset against a bundle before training or inference, as nnU-Net's ``verify_dataset_integrity`` does.

    python tools/verify_dataset.py /data/monuseg/datalist.json --bundle textdiff
    python tools/verify_dataset.py /data/qata/datalist.json --bundle textdiff --config qata.json
    python tools/verify_dataset.py /data/kits/datalist.json --bundle textdiffseg --config kits21.json --stage inference
    python tools/verify_dataset.py DATALIST --bundle cdal --set allow_empty_masks=true

Every case is read once, in parallel, through the bundle's own loading and check transforms (the check ``initialize``
runs at the start of every training and inference run, :func:`common.data.integrity.require_valid_dataset`):
missing or unreadable files, channels, dimensions, image/label geometry (shape, spacing, origin, direction), label
values against the classes, empty masks, NaN/inf, texts. ALL problems of ALL cases are printed in one table
(case, file, problem with its fix). Exit code 0 when the dataset is usable, 2 when it is not (the last line says
why), 1 for a bug. ``--bundle`` is a folder name under ``bundles/`` or the path of a (packaged) bundle folder.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from common.data.converters.__main__ import parse_option  # noqa: E402
from common.data.integrity import STAGE_KEYS, verify_bundle_dataset  # noqa: E402
from common.utils import error_report  # noqa: E402
from common.utils.bundles import BUNDLES_DIR  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Check every case of a datalist against a bundle's input checks.")
    parser.add_argument("datalist", help="the datalist JSON (tools/convert_dataset.py writes it)")
    parser.add_argument("--bundle", required=True, help="bundle name under bundles/ or the path of a bundle folder")
    parser.add_argument(
        "--config", action="append", default=[], help="overlay under the bundle's configs/ (or a path), repeatable"
    )
    parser.add_argument("--stage", choices=sorted(STAGE_KEYS), default="train", help="the run to check for")
    parser.add_argument(
        "--set", action="append", default=[], type=parse_option, metavar="KEY=VALUE", help="config override (JSON)"
    )
    parser.add_argument("--workers", type=int, default=None, help="threads (default: CPUs, at most 8)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    error_report.install()  # a bug: the traceback, then the error on the last line, exit code 1
    import logging

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    bundle = Path(args.bundle) if Path(args.bundle).is_dir() else BUNDLES_DIR / args.bundle
    if not (bundle / "configs").is_dir():
        known = sorted(p.name for p in BUNDLES_DIR.iterdir() if (p / "configs").is_dir())
        print(f"ERROR: {args.bundle}: not a bundle folder (known: {', '.join(known)})", file=sys.stderr)
        return 2
    try:
        report = verify_bundle_dataset(bundle, args.datalist, args.config, args.stage, dict(args.set), args.workers)
    except Exception as err:  # the table is printed already; the problem, not a traceback, is what the user reads
        if error_report.exit_code(err) != error_report.EXIT_BAD_INPUT:
            raise  # a bug: the traceback, then the last line (error_report's hook)
        print(error_report.last_line(err), file=sys.stderr, flush=True)
        return error_report.EXIT_BAD_INPUT
    empty = f", {len(report.empty_masks)} empty masks (allowed)" if report.empty_masks else ""
    print(
        f"OK: {args.datalist}: {report.n_cases} cases pass the {bundle.name} {args.stage} checks{empty} "
        f"({report.seconds:.1f} s, {report.seconds_per_100:.1f} s per 100 cases)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
