#!/usr/bin/env python
"""TextDiffSeg speed / memory bench, all in one run (issue 6, "Beyond the paper").

    python bench/bench_textdiffseg.py [--device cpu|cuda] [--ddpm-steps 1000] [--out bench_textdiffseg.json]

Measures, with the paper-scale network of ``bundles/textdiffseg/configs/inference.json`` (3 classes, LiTS):

1. **Denoiser FLOPs and time per window, latent vs voxel space.** The latent denoiser is MONAI's
   ``DiffusionModelUNet`` (channels 16/32/64, attention at the two deepest levels) on concat(z_l(t), z_it) =
   2 x 12^3. "The same UNet in voxel space" has the same channels, blocks and attention levels on
   concat(noisy one-hot label, image) = (N + 1) x 96^3 -> N x 96^3 (a Diff-UNet-style voxel diffusion). FLOPs of one
   forward are counted with ``torch.utils.flop_counter.FlopCounterMode`` on the ``meta`` device (no compute, so
   the 96^3 voxel UNet, whose attention has 48^3 = 110 592 tokens, is counted exactly). Time is measured for the
   latent UNet at 12^3 and, for the voxel UNet, at 96^3 only on CUDA; on CPU the voxel UNet is timed at 48^3 and
   scaled to 96^3 by the FLOP ratio (said in the output).
2. **Sampling time per window, DDIM-10 vs DDPM-1000**: the reverse chain in the latent space (denoiser calls +
   scheduler steps) with MONAI ``DDIMScheduler`` (10 steps) and ``DDPMScheduler`` (1000 steps), and the whole
   window (image encoder + text fusion + chain + label decoder) for both.
3. **Peak memory of one 96^3 window** (whole pipeline, DDIM-10, no gradients): CUDA ``max_memory_allocated`` or,
   on CPU, the increase of the process' peak RSS.

Writes a JSON file and prints a Markdown table (copied into ``bundles/textdiffseg/docs/README.md``).
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import sys
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

REPO = Path(__file__).resolve().parents[1]
BUNDLE = REPO / "bundles" / "textdiffseg"
for p in (str(REPO), str(BUNDLE)):
    if p not in sys.path:
        sys.path.insert(0, p)

from common.inferers.ddim_sliding_window import DDIMSlidingWindowInferer  # noqa: E402
from monai.bundle import ConfigParser  # noqa: E402
from monai.networks.nets import DiffusionModelUNet  # noqa: E402
from monai.networks.schedulers import DDIMScheduler, DDPMScheduler  # noqa: E402


def build_network(device: torch.device):
    p = ConfigParser()
    p.read_config(str(BUNDLE / "configs" / "inference.json"))
    p["device"] = f"$torch.device('{device}')"
    return p.get_parsed_content("network_def").to(device).eval(), p


def voxel_unet(n_classes: int, denoiser: DiffusionModelUNet, flash: bool = False) -> DiffusionModelUNet:
    """The latent denoiser's architecture on (N + 1) voxel channels -> N (``flash``: SDPA attention, for timing)."""
    return DiffusionModelUNet(
        spatial_dims=3,
        in_channels=n_classes + 1,
        out_channels=n_classes,
        num_res_blocks=2,
        channels=(16, 32, 64),
        attention_levels=(False, True, True),
        norm_num_groups=4,
        num_head_channels=(16, 32, 64),
        with_conditioning=False,
        use_flash_attention=flash,
    )


def count_flops(model_fn, *shapes) -> int:
    model = model_fn().to("meta")
    xs = [torch.empty(s, device="meta") for s in shapes]
    t = torch.zeros(shapes[0][0], dtype=torch.long, device="meta")
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(*xs, t)
    return int(counter.get_total_flops())


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timeit(fn, device: torch.device, repeat: int = 3, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t)
    return min(times)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--ddpm-steps", type=int, default=1000)
    ap.add_argument("--out", default="bench_textdiffseg.json")
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    torch.manual_seed(0)
    net, parser = build_network(device)
    n_classes = net.num_classes
    res: dict = {
        "device": str(device),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "machine": platform.processor() or platform.machine(),
        "num_classes": n_classes,
    }
    if device.type == "cuda":
        res["gpu"] = torch.cuda.get_device_name(device)

    window = torch.rand(1, 1, 96, 96, 96, device=device)
    ctx = torch.randn(1, 12, net.fusion.context_dim, device=device)
    mask = torch.ones(1, 12, dtype=torch.bool, device=device)
    ddim = DDIMSlidingWindowInferer(
        96,
        scheduler=DDIMScheduler(1000, schedule="cosine", clip_sample=False),
        num_inference_steps=10,
        standardise_latent=True,
    )
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    # 3. (run first: CPU peak RSS only grows) peak memory of one 96^3 window (DDIM-10, whole pipeline)
    with torch.no_grad():
        if device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
            base = torch.cuda.memory_allocated(device)
            ddim(window, net, context=ctx, context_mask=mask)
            res["peak_memory_mb"] = (torch.cuda.max_memory_allocated(device) - base) / 2**20
            res["peak_memory_kind"] = "CUDA max_memory_allocated above the resident weights/inputs"
        else:
            ddim(window, net, context=ctx, context_mask=mask)
            res["peak_memory_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0 - rss0
            res["peak_memory_kind"] = "CPU: increase of the process' peak RSS over the loaded network"
    # 1. FLOPs and time of one denoiser forward, latent vs voxel space
    lat = (1, 2, 12, 12, 12)
    vox = (1, n_classes + 1, 96, 96, 96)
    res["latent_unet_gflops"] = count_flops(lambda: voxel_unet(1, net.denoiser), lat) / 1e9
    res["voxel_unet_gflops"] = count_flops(lambda: voxel_unet(n_classes, net.denoiser), vox) / 1e9
    res["flop_ratio_voxel_over_latent"] = res["voxel_unet_gflops"] / res["latent_unet_gflops"]
    x_lat = torch.randn(lat, device=device)
    t1 = torch.tensor([500], device=device)
    with torch.no_grad():
        res["latent_unet_s"] = timeit(lambda: net.denoiser(x_lat, t1), device, repeat=5)
        vnet = voxel_unet(n_classes, net.denoiser, flash=True).to(device).eval()
        if device.type == "cuda":
            x_vox = torch.randn(vox, device=device)
            res["voxel_unet_s"] = timeit(lambda: vnet(x_vox, t1), device, repeat=3)
            res["voxel_unet_timing"] = "measured at 96^3"
        else:
            half = (1, n_classes + 1, 48, 48, 48)
            x_half = torch.randn(half, device=device)
            t_half = timeit(lambda: vnet(x_half, t1), device, repeat=1)
            f_half = count_flops(lambda: voxel_unet(n_classes, net.denoiser), half)
            res["voxel_unet_s_at_48"] = t_half
            res["voxel_unet_s"] = t_half * (res["voxel_unet_gflops"] * 1e9) / f_half
            res["voxel_unet_timing"] = "CPU: measured at 48^3, scaled to 96^3 by the FLOP ratio"
    res["time_ratio_voxel_over_latent"] = res["voxel_unet_s"] / res["latent_unet_s"]

    # 2. sampling: DDIM-10 vs DDPM-1000, chain only and whole window
    with torch.no_grad():
        cond = net.condition(window, ctx, mask)
    ddpm = DDIMSlidingWindowInferer(
        96,
        scheduler=DDPMScheduler(1000, schedule="cosine", clip_sample=False),
        num_inference_steps=args.ddpm_steps,
        standardise_latent=True,
    )
    with torch.no_grad():
        res["ddim10_chain_s"] = timeit(
            lambda: ddim.sample_latents(net, cond, 1, (96, 96, 96), device), device, repeat=3
        )
        res["ddpm_chain_s"] = timeit(
            lambda: ddpm.sample_latents(net, cond, 1, (96, 96, 96), device), device, repeat=1, warmup=0
        )
        res["ddpm_steps"] = args.ddpm_steps
        if args.ddpm_steps != 1000:
            res["ddpm_chain_s"] *= 1000 / args.ddpm_steps
            res["ddpm_note"] = f"timed with {args.ddpm_steps} steps, scaled to 1000"
        res["chain_ratio_ddpm1000_over_ddim10"] = res["ddpm_chain_s"] / res["ddim10_chain_s"]
        res["ddim10_window_s"] = timeit(lambda: ddim(window, net, context=ctx, context_mask=mask), device, repeat=2)
        res["ddpm1000_window_s"] = res["ddim10_window_s"] - res["ddim10_chain_s"] + res["ddpm_chain_s"]
        res["window_ratio_ddpm1000_over_ddim10"] = res["ddpm1000_window_s"] / res["ddim10_window_s"]

    res["parameters_m"] = sum(p.numel() for p in net.parameters()) / 1e6

    Path(args.out).write_text(json.dumps(res, indent=2))
    rows = [
        ("denoiser GFLOPs / forward: latent 2x12^3", f"{res['latent_unet_gflops']:.3f}"),
        (f"denoiser GFLOPs / forward: voxel {n_classes + 1}x96^3", f"{res['voxel_unet_gflops']:.1f}"),
        ("FLOP ratio voxel / latent", f"{res['flop_ratio_voxel_over_latent']:.0f}x"),
        ("denoiser time / forward: latent", f"{res['latent_unet_s'] * 1e3:.1f} ms"),
        ("denoiser time / forward: voxel (" + res["voxel_unet_timing"] + ")", f"{res['voxel_unet_s']:.2f} s"),
        ("time ratio voxel / latent", f"{res['time_ratio_voxel_over_latent']:.0f}x"),
        ("latent chain DDIM-10", f"{res['ddim10_chain_s']:.3f} s"),
        (
            "latent chain DDPM-1000" + (f" ({res['ddpm_note']})" if "ddpm_note" in res else ""),
            f"{res['ddpm_chain_s']:.2f} s",
        ),
        ("chain ratio DDPM-1000 / DDIM-10", f"{res['chain_ratio_ddpm1000_over_ddim10']:.0f}x"),
        ("whole 96^3 window DDIM-10 (encoder + chain + decoder)", f"{res['ddim10_window_s']:.2f} s"),
        ("whole 96^3 window DDPM-1000", f"{res['ddpm1000_window_s']:.2f} s"),
        ("window ratio DDPM-1000 / DDIM-10", f"{res['window_ratio_ddpm1000_over_ddim10']:.1f}x"),
        ("peak memory, one 96^3 window (" + res["peak_memory_kind"] + ")", f"{res['peak_memory_mb']:.0f} MB"),
    ]
    print(
        f"device: {res.get('gpu', res['device'])}, torch {res['torch']}, {res['threads']} threads, "
        f"{res['parameters_m']:.2f} M parameters\n"
    )
    print("| measure | value |\n|---|---|")
    for k, v in rows:
        print(f"| {k} | {v} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
