#!/usr/bin/env python
"""Sampling time per image of cDAL (T=4 posterior steps) vs a 100-step DDPM sampler of the SAME generator.

    python bench/bench_cdal_sampling.py [--preset paper|demo] [--size 256] [--ddpm-steps 100] [--repeats 2]
                                        [--samples 1] [--device cpu|cuda] [--json out.json]

Both samplers run the identical network (``scripts.networks.CDALGenerator``, MoNuSeg configuration for
``--preset paper``: 41.7 M parameters) in the same process, on the same input, with ``torch.no_grad()``:

- cDAL: ``x_T ~ N(0, I)``, ``T = 4`` steps of ``G(x, t, I, z)`` + MONAI ``DDPMScheduler.step`` (``cdal_vp`` schedule);
- DDPM-100: the same loop with ``DDPMScheduler(num_train_timesteps=100, schedule="cdal_vp")`` (100 steps), i.e. what
  a SegDiff-style sampler with T = 100 costs with this network.

"Per image" = ``--samples`` samples of one ``--size``-pixel tile (the official MoNuSeg inference is 4 tiles x 5 samples,
i.e. 20x the single-sample time for both samplers, so the ratio is the same). Reports the median wall time over
``--repeats`` (after one warm-up), the ratio, and the peak memory: CUDA ``max_memory_allocated`` on GPU, the
process's peak resident set size (``ru_maxrss``) on CPU. Untrained weights: the timing does not depend on them.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bundles" / "cdal"))
sys.path.insert(0, str(REPO))

from common.standins import cdal_standin_config  # noqa: E402
from scripts.inferer import sample_label_maps  # noqa: E402
from scripts.networks import CDALGenerator  # noqa: E402
from scripts.schedule import CDALSchedule  # noqa: E402

#: ``CDALGenerator`` kwargs (``--size`` replaces ``image_size``): the bundle's network_def of train.json (MoNuSeg:
#: nf 64, ch_mult 1,1,1,2,2,4,4, 2 res blocks, attention 16/8, encoder 5x1, nz 100) and of demo.json on top of it
PRESETS = {
    "paper": cdal_standin_config(),
    "demo": cdal_standin_config([REPO / "bundles" / "cdal" / "configs" / "demo.json"]),
}


def _time(fn, repeats: int, device: torch.device, warmup: bool = True) -> list[float]:
    if warmup:
        fn()
    out = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        out.append(time.perf_counter() - t0)
    return out


def _peak_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", choices=sorted(PRESETS), default="paper")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--cdal-steps", type=int, default=4)
    ap.add_argument("--ddpm-steps", type=int, default=100)
    ap.add_argument("--samples", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--no-warmup-ddpm", action="store_true", help="skip the warm-up run of the long sampler (CPU)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)

    device = torch.device(args.device)
    torch.manual_seed(0)
    net = CDALGenerator(**{**PRESETS[args.preset], "image_size": args.size}).to(device).eval()
    image = torch.randn(1, 3, args.size, args.size, device=device)
    result = {
        "preset": args.preset,
        "size": args.size,
        "samples": args.samples,
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "threads": torch.get_num_threads(),
        "parameters_m": sum(p.numel() for p in net.parameters()) / 1e6,
    }
    for name, steps in (("cdal", args.cdal_steps), ("ddpm", args.ddpm_steps)):
        schedule = CDALSchedule(steps)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        gen = torch.Generator(device=device).manual_seed(0)
        times = _time(
            lambda: sample_label_maps(net, schedule, image, args.samples, gen),
            args.repeats,
            device,
            warmup=not (name == "ddpm" and args.no_warmup_ddpm),
        )
        result[f"{name}_steps"] = steps
        result[f"{name}_s_per_image"] = statistics.median(times)
        result[f"{name}_peak_mb"] = _peak_mb(device)
        print(
            f"{name:5s} T={steps:3d}: {statistics.median(times):.3f} s/image (runs {[round(t, 3) for t in times]}), "
            f"peak {result[f'{name}_peak_mb']:.0f} MB",
            flush=True,
        )
    result["speedup"] = result["ddpm_s_per_image"] / result["cdal_s_per_image"]
    print(
        f"speed-up cDAL vs DDPM-{args.ddpm_steps}: {result['speedup']:.1f}x ({result['parameters_m']:.2f} M "
        "parameters, "
        f"{args.size}px, {result['device_name']}, {result['threads']} threads)"
    )
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
