"""Synthetic chest X-rays in LViT's QaTa-COV19 layout, with sentences that describe the generated lesions.

:func:`make_qata_like` writes ``{Train,Val,Test}_Folder/{img,labelcol}`` + ``*_text.xlsx`` (or ``.csv``) as
:mod:`common.data.converters.qata` reads them (bundles/textdiff/docs/sources.md §1.1, §1.3). Each image is an 8-bit
grayscale
"radiograph": bright body, two dark lung fields, smooth noise; COVID-like opacities are brighter blurred blobs
inside chosen lung zones, and the mask (0/255, ``mask_<name>.png``) is their union. The sentence follows LViT's
QaTa wording: "<Unilateral|Bilateral> pulmonary infection, <n> infected area(s), <zone> <side> lung[ and ...]."
Sides are the patient's (radiological convention: the patient's left lung is on the image's right).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from common.data.xlsx import write_xlsx_table
from common.io.atomic import atomic_path
from PIL import Image, ImageFilter

__all__ = ["SyntheticCXRCase", "make_qata_like"]

_NUMBERS = {1: "one", 2: "two", 3: "three", 4: "four"}
_ZONES = ("upper", "middle", "lower")


@dataclass(frozen=True)
class SyntheticCXRCase:
    """Ground truth of one synthetic case: file names, split folder, infected (zone, side) areas and the text."""

    image: Path
    mask: Path
    folder: str
    areas: tuple[tuple[str, str], ...]
    text: str


def _sentence(areas: list[tuple[str, str]]) -> str:
    sides = {s for _, s in areas}
    kind = "Bilateral" if len(sides) == 2 else "Unilateral"
    n = len(areas)
    where = " and ".join(f"{z} {s} lung" for z, s in areas)
    return f"{kind} pulmonary infection, {_NUMBERS[n]} infected area{'s' if n > 1 else ''}, {where}."


def _case(size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, list[tuple[str, str]]]:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64) / size
    image = np.full((size, size), 170.0)
    lungs = {}
    for side, cx in (("right", 0.3), ("left", 0.7)):  # patient's right lung on the image's left
        lung = ((xx - cx) / 0.17) ** 2 + ((yy - 0.5) / 0.33) ** 2 <= 1.0
        lungs[side] = lung
        image[lung] = 60.0
    all_areas = [(z, s) for s in ("right", "left") for z in _ZONES]
    n = int(rng.integers(1, 4))
    picked = [all_areas[i] for i in sorted(rng.choice(len(all_areas), size=n, replace=False))]
    mask = np.zeros((size, size), bool)
    for zone, side in picked:
        cx = (0.3 if side == "right" else 0.7) + rng.uniform(-0.05, 0.05)
        cy = {"upper": 0.3, "middle": 0.5, "lower": 0.7}[zone] + rng.uniform(-0.04, 0.04)
        r = rng.uniform(0.06, 0.09)
        blob = ((xx - cx) / r) ** 2 + ((yy - cy) / (r * rng.uniform(0.8, 1.3))) ** 2 <= 1.0
        mask |= blob & lungs[side]
    image[mask] = 140.0
    noise = rng.normal(0, 1, (size // 8 + 1, size // 8 + 1))
    image += np.kron(noise, np.ones((8, 8)))[:size, :size] * 8 + rng.normal(0, 4, (size, size))
    img = Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).filter(ImageFilter.GaussianBlur(size / 128))
    return np.asarray(img), (mask * 255).astype(np.uint8), picked


def make_qata_like(
    dst: str | Path,
    n_train: int = 6,
    n_val: int = 2,
    n_test: int = 2,
    size: int = 64,
    seed: int = 0,
    text_format: str = "xlsx",
) -> list[SyntheticCXRCase]:
    """Write a synthetic LViT-layout QaTa dataset under ``dst``; return the cases' ground truth.

    Args:
        n_train, n_val, n_test: images per folder (``n_val=0`` writes no ``Val_Folder``).
        size: image side in pixels (QaTa: 224).
        seed: everything is a function of the seed.
        text_format: ``"xlsx"`` (as LViT ships) or ``"csv"``.
    """
    if text_format not in ("xlsx", "csv"):
        raise ValueError(f"text_format must be 'xlsx' or 'csv', got {text_format!r}")
    dst = Path(dst)
    cases = []
    for folder, prefix, n, offset in (
        ("Train_Folder", "Train", n_train, 0),
        ("Val_Folder", "Val", n_val, 10_000),
        ("Test_Folder", "Test", n_test, 20_000),
    ):
        if n == 0:
            continue
        rows = []
        for i in range(n):
            rng = np.random.default_rng([seed, offset + i])
            image, mask, areas = _case(size, rng)
            name = f"covid_{offset + i + 1}.png"
            img_path, mask_path = dst / folder / "img" / name, dst / folder / "labelcol" / f"mask_{name}"
            for arr, path in ((image, img_path), (mask, mask_path)):
                path.parent.mkdir(parents=True, exist_ok=True)
                with atomic_path(path) as tmp:
                    Image.fromarray(arr).save(tmp, format="PNG")
            text = _sentence(areas)
            rows.append([mask_path.name, text])
            cases.append(SyntheticCXRCase(img_path, mask_path, folder, tuple(areas), text))
        table = dst / folder / f"{prefix}_text.{text_format}"
        if text_format == "xlsx":
            write_xlsx_table(table, ["Image", "Description"], rows)
        else:
            import csv

            with atomic_path(table) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
                w = csv.writer(f)
                w.writerow(["Image", "Description"])
                w.writerows(rows)
    return cases
