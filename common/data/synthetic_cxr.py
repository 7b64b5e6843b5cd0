"""Synthetic chest X-rays in the Kaggle "Chest Xray Masks and Labels" layout (cDAL's CXR dataset, ``cxr_lungs``).

:func:`make_cxr_lungs_like` writes ``<dst>/CXR_png/<name>.png`` (8-bit grey) and the lung masks
``<dst>/masks/<name>.png`` (Montgomery, ``MCUCXR_<NNNN>_<0|1>``) or ``<dst>/masks/<name>_mask.png`` (Shenzhen,
``CHNCXR_<NNNN>_<0|1>``), 0/255, as the release does
(https://www.kaggle.com/datasets/nikhilpandey360/chest-xray-masks-and-labels). The release's images are large:
Montgomery 4020 x 4892 or 4892 x 4020 pixels, Shenzhen about 3000 x 3000 (NLM Montgomery/Shenzhen descriptions, Jaeger
et al. 2014); :data:`MONTGOMERY_SIZE` / :data:`SHENZHEN_SIZE` are those sizes as ``(H, W)`` for paper-size stand-ins;
tests use small ones. Content: a bright body with two dark lung fields (the masks), ribs as faint bands, noise.
Deterministic from ``seed``; files written atomically.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from common.io.atomic import atomic_path
from PIL import Image, ImageDraw, ImageFilter

__all__ = ["MONTGOMERY_SIZE", "SHENZHEN_SIZE", "SyntheticCXRLungCase", "make_cxr_lungs_like"]

#: (H, W) of a Montgomery County image (portrait 4892 x 4020)
MONTGOMERY_SIZE = (4892, 4020)
#: (H, W) of a typical Shenzhen image (about 3K x 3K)
SHENZHEN_SIZE = (2949, 3000)


@dataclass(frozen=True)
class SyntheticCXRLungCase:
    """One written case: its name, image and mask paths and the lung fraction of the image."""

    name: str
    image: Path
    mask: Path
    lung_fraction: float


def _lung_mask(h: int, w: int, rng: np.random.Generator) -> Image.Image:
    mask = Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(mask)
    for side in (-1, 1):
        cx = w / 2 + side * w * rng.uniform(0.17, 0.21)
        cy = h * rng.uniform(0.45, 0.5)
        rx, ry = w * rng.uniform(0.12, 0.15), h * rng.uniform(0.25, 0.3)
        angles = np.linspace(0, 2 * np.pi, 48, endpoint=False)
        radius = 1.0 + 0.06 * np.sin(3 * angles + rng.uniform(0, 6))
        pts = [(cx + rx * r * np.cos(a), cy + ry * r * np.sin(a)) for a, r in zip(angles, radius, strict=True)]
        draw.polygon(pts, fill=255)
    return mask


def _cxr_image(mask: Image.Image, rng: np.random.Generator) -> Image.Image:
    w, h = mask.size
    small = (max(8, w // 8), max(8, h // 8))
    yy, xx = np.mgrid[0 : small[1], 0 : small[0]].astype(np.float32)
    body = np.exp(-(((xx - small[0] / 2) / (0.45 * small[0])) ** 4 + ((yy - small[1] / 2) / (0.55 * small[1])) ** 4))
    ribs = 0.08 * (np.sin(yy / small[1] * 2 * np.pi * 9 + rng.uniform(0, 6)) > 0.6)
    base = 40.0 + 170.0 * body + 255.0 * ribs * body
    img = Image.fromarray(np.clip(base, 0, 255).astype(np.uint8)).resize((w, h), Image.BILINEAR)
    lungs = np.asarray(mask.filter(ImageFilter.GaussianBlur(max(1.0, w / 200))), dtype=np.float32) / 255.0
    arr = np.asarray(img, dtype=np.float32) * (1.0 - 0.6 * lungs)
    arr += rng.normal(0.0, 6.0, arr.shape).astype(np.float32)
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def _save_png(image: Image.Image, path: Path) -> None:
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG")


def make_cxr_lungs_like(
    dst: str | Path,
    n_montgomery: int = 3,
    n_shenzhen: int = 5,
    montgomery_size: tuple[int, int] = (64, 52),
    shenzhen_size: tuple[int, int] = (60, 60),
    seed: int = 0,
) -> list[SyntheticCXRLungCase]:
    """Write ``n_montgomery`` + ``n_shenzhen`` cases in the release layout under ``dst``; return them.

    Args:
        dst: the folder holding ``CXR_png/`` and ``masks/`` (the release's ``Lung Segmentation`` folder).
        n_montgomery, n_shenzhen: cases per source (the release: 138 and 566 with masks).
        montgomery_size, shenzhen_size: ``(H, W)`` of the images; :data:`MONTGOMERY_SIZE` and
            :data:`SHENZHEN_SIZE` are the release's.
        seed: everything is a function of the seed.
    """
    root = Path(dst)
    cases: list[SyntheticCXRLungCase] = []
    sources = [("MCUCXR", i, montgomery_size) for i in range(n_montgomery)]
    sources += [("CHNCXR", i, shenzhen_size) for i in range(n_shenzhen)]
    for k, (prefix, i, (h, w)) in enumerate(sources):
        rng = np.random.default_rng([seed, 33, k])
        name = f"{prefix}_{i:04d}_{int(rng.integers(0, 2))}"
        mask = _lung_mask(h, w, rng)
        image_path = root / "CXR_png" / f"{name}.png"
        mask_path = root / "masks" / (f"{name}.png" if prefix == "MCUCXR" else f"{name}_mask.png")
        _save_png(_cxr_image(mask, rng), image_path)
        _save_png(mask, mask_path)
        fraction = float(np.asarray(mask).astype(bool).mean())
        cases.append(SyntheticCXRLungCase(name, image_path, mask_path, fraction))
    return cases
