#!/usr/bin/env python
"""The main job: synthetic data, then every bundle trained briefly, inferred and evaluated on CPU.

    python tools/demo.py [--out demo_output] [--bundles textdiff cdal ...] [--bundles-dir bundles]

1. Writes small synthetic datasets in the official layouts (MoNuSeg tif + XML; an MSD task folder with
   dataset.json and NIfTI volumes) with ``common.data.synthetic`` and converts them with the real converters
   (``common.data.converters``) into ``<out>/data/<dataset>/datalist.json``.
2. For every bundle folder with a ``configs/demo.json`` (or the ones named with ``--bundles``): runs
   ``python -m monai.bundle run`` for training, inference and evaluation, each with ``configs/demo.json`` merged
   on top, ``dataset_dir`` pointed at the demo dataset the bundle names in its ``demo.json`` (key
   ``demo_dataset``), and ``output_dir``/``ckpt_dir`` under ``<out>/<bundle>/``. Each step runs in its own process;
   its wall time and peak resident memory (``os.wait4``) are recorded and its output logged to
   ``<out>/<bundle>/<step>.log``. A bundle whose training needs earlier stages (DiffBoost: ControlNet fine-tune,
   synthesis, the baseline segmenter) lists them in its ``demo.json`` as ``demo_stages_before_train``
   (``[{"name", "configs", "overrides"}]``, each run with ``demo.json`` on top); they count as training time.
3. Prints the summary table (bundle, Dice, IoU, train s, infer s/case, peak RSS) and writes it as
   ``<out>/summary.md`` and ``<out>/summary.json``. Overlays are in ``<out>/<bundle>/eval/overlays/``.

A failing bundle is reported in the table (with the tail of its log) and makes the exit code 1; the others still run.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

STEPS = (
    ("train", ["configs/train.json", "configs/demo.json"]),
    ("infer", ["configs/inference.json", "configs/demo.json"]),
    ("evaluate", ["configs/inference.json", "configs/evaluate.json", "configs/demo.json"]),
)


@dataclass
class StepResult:
    seconds: float
    peak_rss_mb: float
    returncode: int
    log: str


@dataclass
class BundleResult:
    bundle: str
    dataset: str = ""
    dice: float | None = None
    iou: float | None = None
    train_s: float | None = None
    infer_s_per_case: float | None = None
    peak_rss_mb: float | None = None
    status: str = "ok"
    steps: dict[str, StepResult] = field(default_factory=dict)


def prepare_demo_data(data_dir: Path, seed: int = 0) -> dict[str, Path]:
    """Write the synthetic datasets in their official layouts and convert them; return ``{name: datalist}``."""
    from common.data.converters import get_converter
    from common.data.synthetic import make_monuseg_like, make_msd_like

    data_dir.mkdir(parents=True, exist_ok=True)
    raw = data_dir / "raw"
    out: dict[str, Path] = {}
    make_monuseg_like(raw / "monuseg", n_train=16, n_test=4, size=128, seed=seed)
    out["monuseg"] = get_converter("monuseg").convert(raw / "monuseg", data_dir / "monuseg", seed=seed)
    make_msd_like(raw / "msd", n_train=12, n_test=2, shape_range=(32, 40), seed=seed)
    out["msd"] = get_converter("msd").convert(raw / "msd", data_dir / "msd", seed=seed)
    from common.data.synthetic_busi import make_busi_like  # 2D grayscale ultrasound (DiffBoost demo)

    make_busi_like(raw / "busi", n_benign=1, n_malignant=15, n_normal=1, size=(80, 96), seed=seed)
    out["busi"] = get_converter("busi").convert(raw / "busi", data_dir / "busi", seed=seed)
    return out


def discover_bundles(bundles_dir: Path, names: list[str] | None) -> list[Path]:
    found = (
        sorted(p for p in bundles_dir.iterdir() if (p / "configs" / "demo.json").is_file())
        if bundles_dir.is_dir()
        else []
    )
    if names:
        by_name = {p.name: p for p in found}
        missing = [n for n in names if n not in by_name]
        if missing:
            raise SystemExit(f"error: no bundle with configs/demo.json named {missing} under {bundles_dir}")
        found = [by_name[n] for n in names]
    return found


def run_step(bundle: Path, configs: list[str], overrides: dict[str, str], log_path: Path) -> StepResult:
    """Run one ``monai.bundle run`` in a child process; measure wall time and the child's peak RSS."""
    from common.utils.bundles import bundle_run_command, bundle_run_env

    cmd = bundle_run_command(configs, overrides)
    env = bundle_run_env()
    log_path.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with open(log_path, "w") as log:
        log.write("$ " + " ".join(cmd) + "\n")
        log.flush()
        proc = subprocess.Popen(cmd, cwd=bundle, stdout=log, stderr=subprocess.STDOUT, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    rc = os.waitstatus_to_exitcode(status)
    proc.returncode = rc
    return StepResult(seconds, usage.ru_maxrss / 1024.0, rc, str(log_path))


def _tail(path: str, n: int = 15) -> str:
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return ""


def run_bundle(bundle: Path, datalists: dict[str, Path], out: Path) -> BundleResult:
    from common.utils.bundles import bundle_run_paths

    demo_cfg = json.loads((bundle / "configs" / "demo.json").read_text())
    dataset = demo_cfg.get("demo_dataset", "monuseg")
    res = BundleResult(bundle.name, dataset)
    if dataset not in datalists:
        res.status = f"unknown demo_dataset {dataset!r} (have {sorted(datalists)})"
        return res
    work = out / bundle.name
    overrides = bundle_run_paths(datalists[dataset], work)
    stages = [
        (s["name"], [*s["configs"], "configs/demo.json"], {k: repr(v) for k, v in s.get("overrides", {}).items()})
        for s in demo_cfg.get("demo_stages_before_train", [])
    ]
    for step, configs, extra in [*stages, *((name, cfgs, {}) for name, cfgs in STEPS)]:
        print(f"[demo] {bundle.name}: {step} ...", flush=True)
        r = run_step(bundle, configs, {**overrides, **extra}, work / f"{step}.log")
        res.steps[step] = r
        print(
            f"[demo] {bundle.name}: {step} {'ok' if r.returncode == 0 else 'FAILED'} in {r.seconds:.1f} s, "
            f"peak RSS {r.peak_rss_mb:.0f} MB",
            flush=True,
        )
        if r.returncode != 0:
            res.status = f"{step} failed (exit {r.returncode}), see {r.log}"
            print(_tail(r.log), flush=True)
            break
    res.peak_rss_mb = max((s.peak_rss_mb for s in res.steps.values()), default=None)
    if "train" in res.steps:
        res.train_s = res.steps["train"].seconds + sum(res.steps[name].seconds for name, _, _ in stages)
    summary_path = work / "eval" / "metrics_summary.json"
    if res.status == "ok" and summary_path.is_file():
        summary = json.loads(summary_path.read_text())
        overall = summary.get("over_classes", summary)
        res.dice = overall.get("dice", {}).get("mean")
        res.iou = overall.get("iou", {}).get("mean")
        n_cases = summary.get("n_cases") or 1
        if "infer" in res.steps:
            res.infer_s_per_case = res.steps["infer"].seconds / n_cases
    elif res.status == "ok":
        res.status = f"no {summary_path} written by evaluate"
    return res


def _fmt(v: float | None, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def summary_table(results: list[BundleResult]) -> str:
    rows = [
        "| bundle | dataset | Dice | IoU | train s | infer s/case | peak RSS MB | status |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        rows.append(
            f"| {r.bundle} | {r.dataset} | {_fmt(r.dice, '.3f')} | {_fmt(r.iou, '.3f')} | {_fmt(r.train_s, '.1f')} | "
            f"{_fmt(r.infer_s_per_case, '.2f')} | {_fmt(r.peak_rss_mb, '.0f')} | {r.status} |"
        )
    if not results:
        rows.append("| (no bundle with configs/demo.json yet) | | | | | | | |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(REPO_ROOT / "demo_output"), type=Path)
    ap.add_argument("--bundles", nargs="*", default=None, help="bundle names (default: all with configs/demo.json)")
    ap.add_argument("--bundles-dir", default=str(REPO_ROOT / "bundles"), type=Path)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    out: Path = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    bundles = discover_bundles(args.bundles_dir.resolve(), args.bundles)
    t0 = time.perf_counter()
    print(f"[demo] writing synthetic data in the official layouts under {out / 'data'}", flush=True)
    datalists = prepare_demo_data(out / "data", seed=args.seed)
    for name, path in datalists.items():
        print(f"[demo]   {name}: {path}")
    print(f"[demo] {len(bundles)} bundle(s): {', '.join(b.name for b in bundles) or 'none yet'}", flush=True)
    results = [run_bundle(b, datalists, out) for b in bundles]

    table = summary_table(results)
    (out / "summary.md").write_text(
        f"# Demo summary\n\nSynthetic data, CPU, {time.strftime('%Y-%m-%d %H:%M')}, "
        f"total {time.perf_counter() - t0:.0f} s\n\n{table}\n"
    )
    (out / "summary.json").write_text(json.dumps([asdict(r) for r in results], indent=2))
    print("\n" + table)
    print(f"\n[demo] summary: {out / 'summary.md'}; overlays: {out}/<bundle>/eval/overlays/")
    return 0 if all(r.status == "ok" for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
