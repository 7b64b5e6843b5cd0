#!/usr/bin/env python
"""DiffBoost speed and memory: AttentionUnet training steps with the patch-mix loader vs real-only, and synthesis.

Part ``seg`` (same run, same data, same network): the train.json data pipeline (CacheDataset of the real slices,
then :class:`LoadSyntheticd` + :class:`JointMinMaxd` for DiffBoost) and :class:`PatchMixIteration`; reports per
training step (data loading + mask + forward/backward + AdamW) for

- ``real-only``   -- the baseline (``use_synthetic: false``),
- ``input-mix``   -- the paper's Alg. 1: the same network compute as real-only, plus loading a synthetic image and
                     the mask: the cost of the patch-mix LOADER (goal: <= 5 % over real-only),
- ``output-mix``  -- the authors' code (default): two forward passes, so about 2x the network compute by design,

and the loader alone (batches/s with and without synthetic images).

Part ``synth``: images/s of :class:`ControlNetSampler` with the tiny SD parts at demo size (64 px, 4 DDIM steps,
CFG 9, batch 2) and the peak resident memory of that process (each part runs in its own process, so the peak is its
own; on CUDA also ``torch.cuda.max_memory_allocated``).

    python bench/bench_diffboost.py [--part seg|synth|all] [--size 128] [--batch 4] [--steps 20] [--threads 2]
        [--channels 16 32 64 128 128 256] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

REPO = Path(__file__).resolve().parents[1]
BUNDLE = REPO / "bundles" / "diffboost"
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(BUNDLE))

import nibabel as nib  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _part_setup(args: argparse.Namespace, prefix: str, *modules: str) -> tuple:
    """The device, a new temporary folder and the bundle's ``scripts.<module>`` modules of one bench part."""
    scripts = [importlib.import_module(f"scripts.{m}") for m in modules]
    return (torch.device(args.device), Path(tempfile.mkdtemp(prefix=prefix)), *scripts)


def _make_data(folder: Path, n: int, size: int, n_syn: int = 3) -> list[dict]:
    from PIL import Image

    rng = np.random.default_rng(0)
    entries = []
    for i in range(n):
        img = (rng.random((size, size)) * 255).astype(np.uint8)
        lbl = np.zeros((size, size), np.uint8)
        lbl[size // 4 : size // 2, size // 3 : size // 2 + i % 5] = 1
        (folder / "syn").mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(folder / f"c{i}.png")
        Image.fromarray(lbl).save(folder / f"c{i}_l.png")
        syn = []
        for k in range(n_syn):
            p = folder / "syn" / f"c{i}_{k}.nii"
            nib.save(nib.Nifti1Image(rng.uniform(-1, 1, (size, size)).astype(np.float32), np.eye(4)), str(p))
            syn.append(str(p))
        entries.append(
            {
                "case_id": f"c{i}",
                "image": str(folder / f"c{i}.png"),
                "label": str(folder / f"c{i}_l.png"),
                "synthetic": syn,
            }
        )
    return entries


def bench_seg(args: argparse.Namespace) -> dict:
    from monai.data import CacheDataset, DataLoader
    from monai.losses import DiceCELoss
    from monai.networks.nets import AttentionUnet
    from monai.transforms import Compose, EnsureTyped, LoadImaged

    device, tmp, transforms, mixing = _part_setup(args, "bench_diffboost_", "transforms", "mixing")
    entries = _make_data(tmp, args.cases, args.size)

    def loader(synthetic: bool) -> DataLoader:
        t = [LoadImaged(keys=["image", "label"], ensure_channel_first=True), transforms.PercentileScaled(keys="image")]
        if synthetic:
            t += [transforms.LoadSyntheticd(), transforms.JointMinMaxd(keys=["image", "image_syn"])]
        else:
            t += [transforms.JointMinMaxd(keys=["image"])]
        t += [EnsureTyped(keys=["image", "label", "image_syn"], track_meta=False, allow_missing_keys=True)]
        data = entries if synthetic else [{k: v for k, v in e.items() if k != "synthetic"} for e in entries]
        ds = CacheDataset(data, Compose(t), cache_rate=1.0, num_workers=0, progress=False)
        return DataLoader(ds, batch_size=args.batch, shuffle=True, num_workers=0)

    results: dict = {"size": args.size, "batch": args.batch, "device": str(device), "channels": args.channels}
    # loader alone
    for name, syn in (("real-only", False), ("patch-mix", True)):
        dl = loader(syn)
        next(iter(dl))
        t0, n = time.perf_counter(), 0
        for _ in range(3):
            for _b in dl:
                n += 1
        results[f"loader_{name}_batches_per_s"] = n / (time.perf_counter() - t0)
    # training steps, interleaved (one step of each variant per round) so that load from other processes on a
    # shared machine affects the variants alike; medians over the rounds
    strides = [2] * (len(args.channels) - 1)
    variants = {}
    for name, mode, syn in (("real-only", "none", False), ("input-mix", "input", True), ("output-mix", "output", True)):
        torch.manual_seed(0)
        net = AttentionUnet(spatial_dims=2, in_channels=1, out_channels=2, channels=args.channels, strides=strides)
        net = net.to(device)
        engine = SimpleNamespace(
            network=net,
            optimizer=torch.optim.AdamW(net.parameters(), lr=1e-3),
            loss_function=DiceCELoss(include_background=False, to_onehot_y=True, softmax=True),
            state=SimpleNamespace(device=device),
        )
        step = mixing.PatchMixIteration(mode, alpha=0.6, patch_size=max(1, args.size // 6))
        variants[name] = (engine, step, loader(syn), [])

    def batches(dl):
        while True:
            yield from dl

    streams = {name: batches(v[2]) for name, v in variants.items()}
    for name, (engine, step, _, _) in variants.items():  # warm-up
        step(engine, next(streams[name]))
    for _ in range(args.steps):
        for name, (engine, step, _, times) in variants.items():
            t0 = time.perf_counter()
            step(engine, next(streams[name]))
            if device.type == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
    for name, (_, _, _, times) in variants.items():
        results[f"step_s_{name}"] = float(np.median(times))
    base = results["step_s_real-only"]
    results["input_mix_overhead_pct"] = 100.0 * (results["step_s_input-mix"] / base - 1.0)
    results["output_mix_ratio"] = results["step_s_output-mix"] / base
    results["peak_rss_mb"] = _peak_rss_mb()
    return results


def bench_synth(args: argparse.Namespace) -> dict:
    device, folder, sd_parts, synthesis = _part_setup(args, "bench_tiny_sd_", "sd_parts", "synthesis")
    sd_parts.build_tiny_sd_parts(folder)
    parts = sd_parts.load_sd_parts(str(folder), device=device)
    cn = sd_parts.make_controlnet(parts.unet, (16, 32)).to(device)
    sampler = synthesis.ControlNetSampler(parts, cn, num_inference_steps=args.synth_steps, device=device)
    edge = torch.rand(1, args.synth_size, args.synth_size)
    sampler.sample(edge, "Breast, Ultrasound", [0, 1], [0, 1])  # warm-up
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    n_calls, batch = 5, 2
    t0 = time.perf_counter()
    for i in range(n_calls):
        sampler.sample(edge, "Breast, Ultrasound", list(range(i * batch, (i + 1) * batch)), list(range(batch)))
    dt = time.perf_counter() - t0
    out = {
        "synth_size": args.synth_size,
        "synth_steps": args.synth_steps,
        "guidance_scale": 9.0,
        "batch": batch,
        "images_per_s": n_calls * batch / dt,
        "peak_rss_mb": _peak_rss_mb(),
        "device": str(device),
    }
    if device.type == "cuda":
        out["cuda_peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--part", choices=("seg", "synth", "all"), default="all")
    ap.add_argument("--size", type=int, default=128, help="slice size of the segmentation bench (paper: 384)")
    ap.add_argument("--batch", type=int, default=4, help="batch of the segmentation bench (paper: 8)")
    ap.add_argument("--cases", type=int, default=16)
    ap.add_argument("--steps", type=int, default=20, help="timed training steps per variant")
    ap.add_argument("--channels", type=int, nargs="+", default=[16, 32, 64, 128, 128, 256])
    ap.add_argument("--synth-size", type=int, default=64)
    ap.add_argument("--synth-steps", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--json", action="store_true", help="print one JSON line (used for the per-part subprocesses)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.part == "all":
        results = {}
        for part in ("seg", "synth"):
            rest, given = [], list(argv if argv is not None else sys.argv[1:])
            while given:
                a = given.pop(0)
                if a == "--part":
                    given.pop(0)
                elif a != "--json":
                    rest.append(a)
            cmd = [sys.executable, __file__, "--part", part, "--json", *rest]
            out = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ), check=True)
            results[part] = json.loads(out.stdout.strip().splitlines()[-1])
    else:
        results = {args.part: bench_seg(args) if args.part == "seg" else bench_synth(args)}
        if args.json:
            print(json.dumps(results[args.part]))
            return 0
    if "seg" in results:
        r = results["seg"]
        print(f"AttentionUnet {r['size']}^2, batch {r['batch']}, channels {r['channels']}, {r['device']}:")
        print(
            f"  loader: real-only {r['loader_real-only_batches_per_s']:.1f} batches/s, "
            f"patch-mix {r['loader_patch-mix_batches_per_s']:.1f} batches/s"
        )
        print(
            f"  step: real-only {r['step_s_real-only'] * 1e3:.1f} ms, input-mix {r['step_s_input-mix'] * 1e3:.1f} ms "
            f"({r['input_mix_overhead_pct']:+.1f} %), output-mix {r['step_s_output-mix'] * 1e3:.1f} ms "
            f"(x{r['output_mix_ratio']:.2f}); peak RSS {r['peak_rss_mb']:.0f} MB"
        )
    if "synth" in results:
        r = results["synth"]
        extra = f", CUDA peak {r['cuda_peak_mb']:.0f} MB" if "cuda_peak_mb" in r else ""
        print(
            f"synthesis (tiny SD + ControlNet, {r['synth_size']}^2, {r['synth_steps']} DDIM steps, CFG 9, batch "
            f"{r['batch']}, {r['device']}): {r['images_per_s']:.2f} images/s, peak RSS {r['peak_rss_mb']:.0f} MB{extra}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
