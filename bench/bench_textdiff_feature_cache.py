#!/usr/bin/env python
"""TextDiff head training: epoch time from the feature cache vs re-running the frozen diffusion UNet.

    python bench/bench_textdiff_feature_cache.py [--scale demo|paper] [--n-images 8] [--epochs 3] [--device cpu]

Both variants train the same head (``scripts.text_guided_head.TextGuidedPixelClassifier``) with the same loss,
optimiser and batches, in the same process:

* ``rerun``: every iteration runs the frozen UNet at the 3 steps (``scripts.diffusion_features``) -- the official
  code's way (bundles/textdiff/docs/sources.md §2.2);
* ``cache``: the features were computed once (timed separately as ``fill``) into a
  ``scripts.feature_cache.FeatureCache`` (memory-mapped ``.npy``) and are read back every iteration.

Text tokens come from a frozen encoder whose per-text cache makes them free after the first epoch in both
variants, so random token tensors stand in for it here. ``--scale demo`` = the demo config (tiny random UNet,
64 px); ``--scale adm64`` = the full ADM-256 UNet and the 9.68 M head run at 64 px (CPU-feasible);
``--scale paper`` = the full ADM-256 UNet (random weights, fp16 autocast on CUDA) and the 9.68 M head at 256 px,
MoNuSeg blocks (needs a GPU). Prints one JSON line with seconds per epoch and the ratio rerun / cache.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from common.networks.guided_diffusion import ADM_256_UNCOND, adm_unet  # noqa: E402
from common.utils.bundles import bundle_scripts  # noqa: E402

with bundle_scripts("textdiff"):
    from scripts.diffusion_features import DiffusionFeatureExtractor
    from scripts.feature_cache import FeatureCache
    from scripts.text_guided_head import TextGuidedPixelClassifier

#: the paper's setting: the full ADM-256 UNet, MoNuSeg blocks, 768-d text and the 9.68 M head, at 256 px
PAPER = dict(
    unet=dict(ADM_256_UNCOND),
    blocks=(6, 8, 12, 16),
    size=256,
    context_dim=768,
    head=dict(proj_dim=768, attention_dim=512, num_heads=8, decoder_channels=(128, 32)),
    batch=1,
)
_UNET_KEYS = ("model_channels", "channel_mult", "num_res_blocks", "attention_resolutions", "num_head_channels")
_HEAD_KEYS = ("proj_dim", "attention_dim", "num_heads", "decoder_channels")


def demo_scale() -> dict:
    """The demo config's UNet, blocks, text width, head and batch (bundles/textdiff/configs/demo.json)."""
    demo = json.loads((REPO / "bundles" / "textdiff" / "configs" / "demo.json").read_text(encoding="utf-8"))
    size = demo["image_size"]
    unet = dict(image_size=size, **{k: demo[f"unet_{k}"] for k in _UNET_KEYS})
    head = {k: demo[k] for k in _HEAD_KEYS}
    return dict(
        unet=unet,
        blocks=demo["blocks"],
        size=size,
        context_dim=demo["context_dim"],
        head=head,
        batch=demo["batch_size"],
    )


SCALES = {
    "demo": demo_scale(),
    "adm64": dict(PAPER, size=64),  # the full ADM-256 architecture and the paper's head, run at 64 px (CPU-feasible)
    "paper": PAPER,
}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scale", choices=sorted(SCALES), default="demo")
    ap.add_argument("--n-images", type=int, default=8)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args(argv)
    cfg = SCALES[args.scale]
    device = torch.device(args.device)
    torch.manual_seed(0)
    unet = adm_unet(**cfg["unet"], init_seed=0, random_residuals=True, frozen=True).to(device)
    extractor = DiffusionFeatureExtractor(unet, steps=(50, 150, 250), blocks=cfg["blocks"], noise_seed=40)
    chans = [c for c, _ in extractor.feature_shapes(cfg["size"])]
    size, batch = cfg["size"], cfg["batch"]
    images = torch.rand(args.n_images, 3, size, size) * 2 - 1
    labels = (torch.rand(args.n_images, 1, size, size) > 0.7).float()
    tokens = torch.randn(args.n_images, 10, cfg["context_dim"])
    from monai.losses import DiceCELoss

    loss_fn = DiceCELoss(to_onehot_y=True, softmax=False, squared_pred=True, batch=True, lambda_dice=1.5)

    def epoch(head, opt, features_of) -> float:
        _sync(device)
        t0 = time.perf_counter()
        for i in range(0, args.n_images - batch + 1, batch):
            idx = list(range(i, i + batch))
            feats = features_of(idx)
            opt.zero_grad()
            logits = head(feats, tokens[idx].to(device))
            loss = loss_fn(logits, labels[idx].to(device))
            loss.backward()
            opt.step()
        _sync(device)
        return time.perf_counter() - t0

    def new_head():
        torch.manual_seed(0)
        head = TextGuidedPixelClassifier(chans, context_dim=cfg["context_dim"], output_size=size, **cfg["head"])
        head = head.to(device)
        return head, torch.optim.Adam(head.parameters(), lr=1e-4)

    head, opt = new_head()
    rerun = [epoch(head, opt, lambda idx: extractor(images[idx].to(device))) for _ in range(args.epochs)]
    with tempfile.TemporaryDirectory() as tmp:
        cache = FeatureCache(tmp, fingerprint=extractor.fingerprint())
        _sync(device)
        t0 = time.perf_counter()
        for i in range(args.n_images):
            cache.put(f"img{i}@0", [f[0] for f in extractor(images[i : i + 1].to(device))])
        _sync(device)
        fill = time.perf_counter() - t0

        def from_cache(idx):
            per = [cache.get(f"img{i}@0") for i in idx]
            return [torch.stack([p[k] for p in per]).to(device) for k in range(len(per[0]))]

        head, opt = new_head()
        cached = [epoch(head, opt, from_cache) for _ in range(args.epochs)]
        disk_mb = sum(f.stat().st_size for f in Path(tmp).rglob("*.npy")) / 2**20
    # the first epoch includes warm-up (allocations, page cache): report the median of the rest when available
    pick = (lambda xs: sorted(xs[1:])[len(xs[1:]) // 2]) if args.epochs > 1 else (lambda xs: xs[0])
    result = {
        "scale": args.scale,
        "device": str(device),
        "n_images": args.n_images,
        "batch": batch,
        "epochs": args.epochs,
        "rerun_s_per_epoch": round(pick(rerun), 4),
        "cache_s_per_epoch": round(pick(cached), 4),
        "ratio": round(pick(rerun) / pick(cached), 2),
        "cache_fill_s": round(fill, 3),
        "cache_disk_mb": round(disk_mb, 1),
        "torch_threads": torch.get_num_threads(),
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
