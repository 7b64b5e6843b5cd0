#!/usr/bin/env python
"""Cost as the input grows: inference time and peak memory of every bundle's PAPER-SCALE network at three sizes.

    python bench/bench_input_size.py --standins DIR --out DIR [--bundles NAME ...] [--steps-cap 2]

Each point is the shipped ``inference.json`` run on one case in its own process (``tools/paper_scale_check.py``'s
child runner: the same instrumentation, FLOP counter included), with freshly initialised weights of the paper-scale
network (``init_weights``) and the stand-ins of ``tools/make_standins.py`` for the pretrained parts:

| bundle | sizes | what should happen |
|---|---|---|
| TextDiff | H&E tiles 256^2, 512^2, 1000^2 | flat: every image is resized to the ADM's 256^2 |
| cDAL | H&E tiles 256^2, 512^2, 1000^2 | flat: resized to 512^2, four 256^2 tiles |
| DiffBoost | ultrasound 256^2, 512^2, 1000^2 | flat: resized to 384^2, one window |
| TextDiffSeg | CT 128^3, 256^3, 512 x 512 x 200 at the training spacing | time ~ number of 96^3 windows, memory flat |

TextDiffSeg's DDIM steps are capped (``--steps-cap``, default 2 of the paper's 10; the record says so): the cost
per window-step does not depend on the step count, and the sliding-window memory does not either. Writes
``OUT/input_size.json`` and ``OUT/input_size.md`` and, with matplotlib (``pip install -e .[bench]``),
``OUT/input_size_<bundle>.png`` (seconds per case and peak RSS against the input's pixel/voxel count).
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import asdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
for p in (str(REPO), str(REPO / "tools")):
    if p not in sys.path:
        sys.path.insert(0, p)

import paper_scale_check as psc  # noqa: E402  (tools/paper_scale_check.py)
from common.io.atomic import atomic_write_json, atomic_write_text  # noqa: E402
from common.utils.profiling import memory_total_gb  # noqa: E402

#: bundle -> (paper-size dataset, the three sizes, inference overlay files, stand-in parts)
SWEEPS: dict[str, tuple[str, list, list[str], list[str]]] = {
    "textdiff": ("monuseg", [256, 512, 1000], [], ["adm", "bert"]),
    "cdal": ("monuseg", [256, 512, 1000], [], []),
    "diffboost": ("busi", [(256, 256), (512, 512), (1000, 1000)], [], []),
    "textdiffseg": ("lits_1.5mm", [(128, 128, 128), (256, 256, 256), (512, 512, 200)], ["configs/lits.json"], ["bert"]),
}


def windows_96(shape: tuple[int, ...], roi: int = 96, overlap: float = 0.5) -> int:
    """Number of sliding windows MONAI's ``sliding_window_inference`` uses for ``shape`` (roi 96^3, overlap 0.5)."""
    interval = int(roi * (1 - overlap))
    return math.prod(1 if s <= roi else math.ceil((s - roi) / interval) + 1 for s in shape)


def sweep_chains(bundles: list[str], steps_cap: int) -> list[psc.Chain]:
    """Per bundle and size: write the weights of the freshly initialised network, then infer one case."""
    chains = []
    for bundle in bundles:
        dataset, sizes, overlay, parts = SWEEPS[bundle]
        for size in sizes:
            label = "x".join(str(s) for s in (size if isinstance(size, tuple) else (size, size)))
            caps = {"num_inference_steps": steps_cap} if bundle == "textdiffseg" else {}
            configs = ["configs/inference.json", *overlay]
            chains.append(
                psc.Chain(
                    bundle,
                    f"{dataset}@{label}",
                    {"name": dataset, "n_train": 1, "n_test": 1, "size": size},
                    parts,
                    [psc.Stage("init_weights", configs), psc.Stage("inference", configs, caps=caps)],
                )
            )
    return chains


def _pixels(dataset_label: str) -> int:
    return math.prod(int(s) for s in dataset_label.split("@")[1].split("x"))


def plot(records: list[psc.Record], out: Path) -> list[Path]:
    """One PNG per bundle: seconds per case (left axis) and peak memory (right axis) against the input size."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("[bench] matplotlib not installed (pip install -e .[bench]): no PNG plots", flush=True)
        return []
    written = []
    for bundle in sorted({r.bundle for r in records}):
        rows = [r for r in records if r.bundle == bundle and r.stage == "inference" and r.ok]
        if not rows:
            continue
        x = [_pixels(r.dataset) for r in rows]
        fig, ax1 = plt.subplots(figsize=(6, 3.6))
        ax1.plot(x, [r.seconds_per_case for r in rows], "o-", color="tab:blue", label="seconds per case")
        ax1.set_xscale("log")
        ax1.set_xlabel("input size (pixels or voxels)")
        ax1.set_ylabel("seconds per case", color="tab:blue")
        ax2 = ax1.twinx()
        ax2.plot(x, [r.peak_rss_mb / 1024 for r in rows], "s--", color="tab:red", label="peak RSS")
        ax2.set_ylabel("peak RSS (GB)", color="tab:red")
        ax2.set_ylim(bottom=0)
        ax1.set_ylim(bottom=0)
        for xi, r in zip(x, rows, strict=True):
            ax1.annotate(
                r.dataset.split("@")[1], (xi, r.seconds_per_case), textcoords="offset points", xytext=(4, 6), fontsize=8
            )
        ax1.set_title(f"{bundle}: paper-scale inference on CPU vs input size")
        fig.tight_layout()
        path = out / f"input_size_{bundle}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written


def update_cards(records: list[psc.Record], plots: list[Path], when: str) -> None:
    """Each bundle's rows (and its plot, copied to ``docs/input_size.png``) into its model card."""
    import shutil

    for bundle in sorted({r.bundle for r in records}):
        docs = REPO / "bundles" / bundle / "docs"
        rows = [r for r in records if r.bundle == bundle]
        text = f"Measured {when} on this CPU ({len([r for r in rows if r.stage == 'inference'])} sizes):\n\n"
        text += table(rows)
        png = next((p for p in plots if p.name == f"input_size_{bundle}.png"), None)
        if png is not None:
            shutil.copyfile(png, docs / "input_size.png")
            text += "\n\n![inference time and peak memory vs input size](input_size.png)"
        if psc.replace_marked_section(docs / "README.md", "input-size", text):
            print(f"[bench] updated {docs / 'README.md'}")


def table(records: list[psc.Record]) -> str:
    """The inference records as a Markdown table (TextDiffSeg rows name their number of windows)."""
    rows = [
        "| bundle | input | s/case | peak RSS MB | GFLOP/case | peak fraction | notes |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in records:
        if r.stage != "inference":
            continue
        size = r.dataset.split("@")[1]
        notes = [f"{k}={v}" for k, v in r.caps.items()]
        if r.bundle == "textdiffseg" and r.ok:
            notes.append(f"{windows_96(tuple(int(s) for s in size.split('x')))} windows of 96^3")
        if not r.ok:
            notes.append(str(r.error))
        rows.append(
            f"| {r.bundle} | {size} | {psc._fmt(r.seconds_per_case, '.1f')} | {psc._fmt(r.peak_rss_mb, '.0f')} | "
            f"{psc._fmt(None if r.flops is None else r.flops / 1e9, '.0f')} | {psc._fmt(r.peak_fraction, '.2f')} | "
            f"{', '.join(notes)} |"
        )
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    """The command line (module docstring); exit code 1 when a run failed."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--standins", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--bundles", nargs="*", default=list(SWEEPS), choices=list(SWEEPS))
    ap.add_argument("--steps-cap", type=int, default=2, help="TextDiffSeg DDIM steps (paper 10)")
    ap.add_argument("--memory-budget-gb", type=float, default=None)
    ap.add_argument("--timeout-min", type=float, default=60.0)
    ap.add_argument("--update-cards", action="store_true", help="write the tables and plots into the model cards")
    args = ap.parse_args(argv)
    args.out = args.out.resolve()
    args.out.mkdir(parents=True, exist_ok=True)
    chains = sweep_chains(args.bundles, args.steps_cap)
    standins = psc.resolve_standins(args.standins.resolve(), {p for c in chains for p in c.standins}, make=False)
    args.standins = args.standins.resolve()
    budget_mb = 1024 * (args.memory_budget_gb or 0.9 * memory_total_gb())
    records: list[psc.Record] = []
    for chain in chains:
        records += psc.run_chain(chain, args, standins, budget_mb)
        atomic_write_json(args.out / "input_size.json", [asdict(r) for r in records])
    text = table(records)
    atomic_write_text(args.out / "input_size.md", text + "\n")
    print("\n" + text)
    plots = plot(records, args.out)
    for p in plots:
        print(f"[bench] plot {p}")
    if args.update_cards:
        import time

        update_cards(records, plots, time.strftime("%Y-%m-%d"))
    return 0 if all(r.ok for r in records) else 1


if __name__ == "__main__":
    sys.exit(main())
