#!/usr/bin/env python
"""Write random-weight STAND-INS of the pretrained parts, full size, in the exact public formats.

    python tools/make_standins.py OUT [--parts adm,bert,sd,hed,cdal] [--seed 0] [--force]

Writes under ``OUT`` (see :mod:`common.standins` for sizes, formats and the real artefacts' addresses)::

    guided_diffusion/256x256_diffusion_uncond.pt   OpenAI ADM 256x256 uncond state dict (566 tensors, 552.8 M params)
    Bio_ClinicalBERT/                              HF BERT-base cased folder (108.3 M params, vocab 28,996)
    stable-diffusion-v1-5/                         diffusers SD v1.5 folder (UNet 859.5 M, VAE 83.7 M, CLIP 123.1 M)
    hed/network-bsds500.pth                        HED BSDS500 weights (ControlNet annotator key names)
    cdal/netG_standin.pth                          cDAL MoNuSeg generator in the authors' DDP format (41.7 M params)

each folder with a ``STANDIN`` marker: the loaders of the bundles log a warning when they open a stand-in, because
its outputs are meaningless. Point the bundle configs at these paths to run the paper-scale configs without the real
weights (e.g. TextDiff ``adm_checkpoint``, ``text_encoder_path``; DiffBoost ``sd_model``, ``hed_weights``). Needs
~7.5 GB of disk, < 10 GB of memory; a complete part is skipped on a rerun (same seed) unless ``--force``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from common.standins import PARTS, make_standins  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path, help="output folder (several GB)")
    ap.add_argument("--parts", default=",".join(PARTS), help="comma-separated subset of the parts (default: all)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the random weights (default 0)")
    ap.add_argument("--force", action="store_true", help="rewrite parts that are already complete")
    args = ap.parse_args(argv)
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    unknown = [p for p in parts if p not in PARTS]
    if unknown:
        ap.error(f"unknown part(s) {unknown}; choose from {','.join(PARTS)}")
    written = make_standins(args.out, parts=parts, force=args.force, seed=args.seed, log=lambda m: print(m, flush=True))
    for part, path in written.items():
        print(f"{part}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
