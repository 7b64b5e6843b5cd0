"""Small synthetic breast-ultrasound images in the official BUSI layout (for the ``busi`` converter, tests, demos).

:func:`make_busi_like` writes ``Dataset_BUSI_with_GT/{benign,malignant,normal}/<class> (<n>).png`` with masks
``<class> (<n>)_mask.png`` (and, for every third lesion case, a second lesion in ``_mask_1.png``). Images are
RGB-stored grayscale like the real release: horizontal tissue layers (smooth noise), multiplicative speckle, a
hypoechoic (dark) lesion with a brighter rim (malignant: irregular, spiculated outline; benign: smooth ellipse),
and posterior acoustic enhancement below benign lesions / shadowing below malignant ones. Normal images have empty
masks. Deterministic from ``seed``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from common.io.atomic import atomic_path
from PIL import Image, ImageDraw

__all__ = ["SyntheticBUSICase", "make_busi_like"]


@dataclass(frozen=True)
class SyntheticBUSICase:
    """Ground truth of one synthetic BUSI case."""

    case_id: str
    cls: str
    image: Path
    masks: tuple[Path, ...]
    lesion_fraction: float


def _smooth(rng: np.random.Generator, h: int, w: int, cells: tuple[int, int]) -> np.ndarray:
    coarse = rng.uniform(-1.0, 1.0, cells).astype(np.float32)
    return np.asarray(Image.fromarray(coarse, mode="F").resize((w, h), Image.BICUBIC), dtype=np.float32)


def _lesion_polygon(rng: np.random.Generator, h: int, w: int, irregular: bool, scale: float = 1.0) -> np.ndarray:
    cy, cx = rng.uniform(0.35, 0.6) * h, rng.uniform(0.3, 0.7) * w
    ry, rx = rng.uniform(0.12, 0.2) * h * scale, rng.uniform(0.14, 0.24) * w * scale
    t = np.linspace(0, 2 * np.pi, 48, endpoint=False)
    r = 1.0 + (
        0.18 * np.sin(5 * t + rng.uniform(0, 6)) + rng.uniform(-0.12, 0.12, t.size)
        if irregular
        else 0.05 * np.sin(2 * t)
    )
    return np.stack([cx + rx * r * np.cos(t), cy + ry * r * np.sin(t)], axis=1)


def make_busi_like(
    dst: str | Path,
    n_benign: int = 2,
    n_malignant: int = 12,
    n_normal: int = 1,
    size: tuple[int, int] = (80, 96),
    seed: int = 0,
) -> list[SyntheticBUSICase]:
    """Write a synthetic ``dst/Dataset_BUSI_with_GT`` and return the cases' ground truth.

    Args:
        n_benign, n_malignant, n_normal: images per class (numbered from 1 as in the release).
        size: ``(H, W)`` of every image (the real release has varied sizes around 500 x 600).
        seed: everything is a function of the seed.
    """
    root = Path(dst) / "Dataset_BUSI_with_GT"
    h, w = size
    cases: list[SyntheticBUSICase] = []
    for cls, n in (("benign", n_benign), ("malignant", n_malignant), ("normal", n_normal)):
        for i in range(1, n + 1):
            rng = np.random.default_rng([seed, {"benign": 1, "malignant": 2, "normal": 3}[cls], i])
            depth = np.linspace(0.0, 1.0, h, dtype=np.float32)[:, None]
            tissue = 0.55 + 0.18 * _smooth(rng, h, w, (6, 3)) + 0.12 * np.sin(depth * rng.uniform(8, 14) * np.pi)
            tissue *= 1.0 - 0.45 * depth  # attenuation with depth
            polys = []
            if cls != "normal":
                polys.append(_lesion_polygon(rng, h, w, irregular=cls == "malignant"))
                if i % 3 == 0:
                    polys.append(_lesion_polygon(rng, h, w, irregular=cls == "malignant", scale=0.45))
            mask_imgs = []
            lesion = np.zeros((h, w), dtype=bool)
            for poly in polys:
                m = Image.new("L", (w, h), 0)
                ImageDraw.Draw(m).polygon([tuple(p) for p in poly], fill=255)
                arr = np.asarray(m) > 0
                lesion |= arr
                mask_imgs.append(arr)
            img = tissue.copy()
            if lesion.any():
                rows = np.where(lesion.any(axis=1))[0]
                below = np.zeros_like(lesion)
                cols = lesion.any(axis=0)
                below[rows.max() :, :] = cols[None, :]
                img = np.where(below, img * (0.6 if cls == "malignant" else 1.35), img)
                grown = lesion.copy()
                for axis, shift in ((0, 1), (0, -1), (1, 1), (1, -1)):
                    grown |= np.roll(lesion, shift, axis=axis)
                img = np.where(grown & ~lesion, np.minimum(img + 0.3, 1.0), img)  # brighter rim
                img = np.where(lesion, 0.12 + 0.06 * _smooth(rng, h, w, (4, 4)), img)
            speckle = rng.rayleigh(0.5, (h, w)).astype(np.float32) / 0.63
            img = np.clip(img * speckle, 0.0, 1.0)
            img8 = (img * 255).astype(np.uint8)
            case_id = f"{cls} ({i})"
            img_path = root / cls / f"{case_id}.png"
            with atomic_path(img_path) as tmp:
                Image.fromarray(np.stack([img8] * 3, axis=-1)).save(tmp, format="PNG")
            mask_paths = []
            for k, arr in enumerate(mask_imgs or [np.zeros((h, w), dtype=bool)]):
                mp = root / cls / (f"{case_id}_mask.png" if k == 0 else f"{case_id}_mask_{k}.png")
                with atomic_path(mp) as tmp:
                    Image.fromarray(arr.astype(np.uint8) * 255).save(tmp, format="PNG")
                mask_paths.append(mp)
            cases.append(SyntheticBUSICase(f"{cls}_{i:03d}", cls, img_path, tuple(mask_paths), float(lesion.mean())))
    return cases
