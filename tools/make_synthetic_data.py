#!/usr/bin/env python
"""Write a small synthetic dataset in an official release layout (for tests and demos).

    python tools/make_synthetic_data.py monuseg /tmp/synth_monuseg --n-train 6 --n-test 2 --size 128
    python tools/make_synthetic_data.py msd /tmp/synth_msd --n-train 6 --n-test 2 --n-classes 3
    python tools/convert_dataset.py monuseg /tmp/synth_monuseg /tmp/synth_monuseg_datalist

Layouts: ``monuseg`` (``MoNuSeg 2018 Training Data/{Tissue Images,Annotations}`` + ``MoNuSegTestData``) and
``msd`` (``Task90_SynthKidney/{dataset.json,imagesTr,labelsTr,imagesTs}``); see :mod:`common.data.synthetic`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from common.data.synthetic import SYNTHETIC_LAYOUTS, make_synthetic_dataset  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write a synthetic dataset in an official release layout.")
    parser.add_argument("layout", choices=sorted(SYNTHETIC_LAYOUTS), help="which release layout to imitate")
    parser.add_argument("dst", type=Path, help="output folder")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n-train", type=int, default=6, help="labelled (training-release) cases")
    parser.add_argument("--n-test", type=int, default=2, help="test-release (monuseg) / imagesTs (msd) cases")
    parser.add_argument("--size", type=int, default=128, help="monuseg: image side in pixels (1000 = real size)")
    parser.add_argument("--n-classes", type=int, default=3, help="msd: 2, 3 or 4 classes incl. background")
    parser.add_argument("--n-channels", type=int, default=1, help="msd: 1 (CT) or 2 (4D T2+ADC)")
    parser.add_argument("--min-size", type=int, default=32, help="msd: smallest axis length")
    parser.add_argument("--max-size", type=int, default=48, help="msd: largest axis length")
    args = parser.parse_args(argv)
    common = {"n_train": args.n_train, "n_test": args.n_test, "seed": args.seed}
    if args.layout == "monuseg":
        options = {**common, "size": args.size}
    else:
        options = {
            **common,
            "n_classes": args.n_classes,
            "n_channels": args.n_channels,
            "shape_range": (args.min_size, args.max_size),
        }
    try:
        cases = make_synthetic_dataset(args.layout, args.dst, **options)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {len(cases)} synthetic {args.layout} cases under {args.dst}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
