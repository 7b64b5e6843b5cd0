"""Small synthetic datasets written in the OFFICIAL release layouts, so the real converters and bundles can run
end to end without the real data (tests, demos, CI). Everything is deterministic from ``seed``.

* :func:`make_monuseg_like` -- the MoNuSeg 2018 layout (``MoNuSeg 2018 Training Data/{Tissue Images,Annotations}``
  + ``MoNuSegTestData/``): H&E-like RGB ``.tif`` (pink eosin background with low-frequency variation and noise,
  purple textured elliptical nuclei) and Aperio ImageScope ``.xml`` polygons, one Region per nucleus. The nuclei of
  each image follow a distribution pattern (:data:`NUCLEI_PATTERNS` of :mod:`common.data.describe`, e.g. clustered
  in the upper right), cycled over the cases so that the generated texts vary; the intended pattern is returned.
* :func:`make_msd_like` -- an MSD task folder (``TaskXX_Name/dataset.json``, ``imagesTr``, ``labelsTr``,
  ``imagesTs``) of small 3D CT-like NIfTI volumes with a non-identity affine (spacing 1.5 x 1.5 x 2 mm, the x axis
  flipped on every other case so that voxel order and patient side disagree), a body ellipsoid, left and/or right
  "kidney" ellipsoids (label 1) with a "kidney tumour" (label 2) and optionally a "kidney cyst" (label 3) inside one
  kidney, each with its own intensity, plus noise. The ground truth (which kidneys, tumour side, ...) is returned.

Foreground intensity/texture differs from the background, so a small network can learn the task.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import nibabel as nib
import numpy as np
import tifffile
from common.data.converters.monuseg import MONUSEG_TEST_FOLDER, MONUSEG_TRAIN_FOLDER
from common.io.atomic import atomic_path
from PIL import Image, ImageDraw, ImageFilter

__all__ = [
    "DEFAULT_NUCLEI_PATTERNS",
    "SYNTHETIC_LAYOUTS",
    "SyntheticNucleiCase",
    "SyntheticVolumeCase",
    "make_monuseg_like",
    "make_msd_like",
    "make_synthetic_dataset",
    "synthetic_generator",
]

#: pattern cycle of :func:`make_monuseg_like` (case i of a release gets pattern (i + offset) % len)
DEFAULT_NUCLEI_PATTERNS: tuple[str, ...] = (
    "upper right",
    "lower left",
    "even",
    "upper left",
    "lower right",
    "around",
    "sparse",
    "upper",
    "lower",
    "left",
    "right",
    "irregular",
)

_QUADRANTS = {"upper left": (0, 0), "upper right": (0, 1), "lower left": (1, 0), "lower right": (1, 1)}
_HALVES = {"upper": ((0, 0), (0, 1)), "lower": ((1, 0), (1, 1)), "left": ((0, 0), (1, 0)), "right": ((0, 1), (1, 1))}


@dataclass(frozen=True)
class SyntheticNucleiCase:
    """Ground truth of one synthetic MoNuSeg-layout case."""

    case_id: str
    release: str  # "training" | "test"
    image: Path
    annotation: Path
    pattern: str
    n_nuclei: int


@dataclass(frozen=True)
class SyntheticVolumeCase:
    """Ground truth of one synthetic MSD-layout case (``label`` None for ``imagesTs``)."""

    case_id: str
    image: Path
    label: Path | None
    kidney_sides: tuple[str, ...]  # subset of ("left", "right"), patient sides
    tumour_side: str | None
    cyst_side: str | None
    shape: tuple[int, int, int]
    affine: np.ndarray


# ----------------------------------------------------------------------------------------------------------------
# MoNuSeg layout
# ----------------------------------------------------------------------------------------------------------------


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], cells: int) -> np.ndarray:
    """Low-frequency noise in [-1, 1] of ``shape (H, W)``: a ``cells x cells`` grid upsampled bilinearly (PIL)."""
    coarse = rng.uniform(-1.0, 1.0, (cells, cells)).astype(np.float32)
    img = Image.fromarray(coarse, mode="F").resize((shape[1], shape[0]), Image.BILINEAR)
    return np.asarray(img, dtype=np.float32)


def _centres_for_pattern(
    pattern: str, size: int, r_max: float, n_target: int, rng: np.random.Generator
) -> list[Callable[[], tuple[float, float]]]:
    """One sampler per nucleus, each returning a random (x, y) centre in the region the pattern assigns to it."""
    lo, hi = r_max + 1.0, size - r_max - 1.0
    mid = size / 2.0

    def box(x0: float, x1: float, y0: float, y1: float) -> Callable[[], tuple[float, float]]:
        x0, x1, y0, y1 = max(x0, lo), min(x1, hi), max(y0, lo), min(y1, hi)
        return lambda: (float(rng.uniform(x0, x1)), float(rng.uniform(y0, y1)))

    def quadrant(q: tuple[int, int]) -> Callable[[], tuple[float, float]]:
        row, col = q
        return box(col * mid, (col + 1) * mid, row * mid, (row + 1) * mid)

    all_q = list(_QUADRANTS.values())
    if pattern in _QUADRANTS:  # 78 % in the quadrant, the rest spread evenly over the other three
        n_in = round(0.78 * n_target)
        others = [q for q in all_q if q != _QUADRANTS[pattern]]
        return [quadrant(_QUADRANTS[pattern])] * n_in + [quadrant(others[k % 3]) for k in range(n_target - n_in)]
    if pattern in _HALVES:  # 80 % in the half, split evenly between its two quadrants
        n_in = round(0.8 * n_target)
        inside = _HALVES[pattern]
        others = [q for q in all_q if q not in inside]
        return [quadrant(inside[k % 2]) for k in range(n_in)] + [
            quadrant(others[k % 2]) for k in range(n_target - n_in)
        ]
    if pattern == "around":  # 92 % outside the central box, balanced over the 4 quadrants
        q1, q3 = size / 4.0, 3 * size / 4.0
        ring = []
        for q in all_q:  # each quadrant minus its share of the central box: two strips
            row, col = q
            xs = (col * mid, (col + 1) * mid)
            ys = (row * mid, (row + 1) * mid)
            strip_y = (0.0, q1) if row == 0 else (q3, float(size))
            strip_x = (0.0, q1) if col == 0 else (q3, float(size))
            ring.append(box(xs[0], xs[1], *strip_y))
            ring.append(box(*strip_x, ys[0], ys[1]))
        n_in = round(0.92 * n_target)
        return [ring[k % len(ring)] for k in range(n_in)] + [box(q1, q3, q1, q3)] * (n_target - n_in)
    if pattern == "irregular":  # one tight cluster per quadrant, in one cell of the 4x4 grid; two of the four
        cell = size / 4.0  # clusters sit in a central cell so the pattern is not "around"
        inner = set(rng.permutation(4)[:2].tolist())
        clusters = []
        for k, (row, col) in enumerate(all_q):
            if k in inner:
                r, c = 1 + row, 1 + col  # the quadrant's cell next to the image centre
            else:
                r, c = [(2 * row + a, 2 * col + b) for a in (0, 1) for b in (0, 1) if (a, b) != (1 - row, 1 - col)][
                    int(rng.integers(3))
                ]
            clusters.append(box(c * cell, (c + 1) * cell, r * cell, (r + 1) * cell))
        return [clusters[k % 4] for k in range(n_target)]
    if pattern == "sparse":
        return [box(lo, hi, lo, hi)] * n_target
    raise ValueError(f"unknown nuclei pattern {pattern!r}; use one of {DEFAULT_NUCLEI_PATTERNS}")


def _place_nuclei(pattern: str, size: int, radius: tuple[float, float], rng: np.random.Generator) -> list[np.ndarray]:
    """Non-overlapping elliptical nucleus polygons ``(V, 2)`` [X, Y] for one image (rejection sampling)."""
    r_lo, r_hi = radius
    mean_area = np.pi * ((r_lo + r_hi) / 2) ** 2 * 0.82
    if pattern == "even":  # jittered grid with a multiple of 4 points per side (equal counts per 4x4 cell)
        g = max(4, int(round(np.sqrt(0.2 * size * size / mean_area) / 4)) * 4)
        step = size / g
        jitter = max(0.0, (step - 2 * r_hi - 1) / 2)
        centres = [
            ((gx + 0.5) * step + rng.uniform(-jitter, jitter), (gy + 0.5) * step + rng.uniform(-jitter, jitter))
            for gy in range(g)
            for gx in range(g)
        ]
        samplers = [(lambda c=c: c) for c in centres]
    else:
        coverage = {"sparse": 0.02, "irregular": 0.08}.get(pattern, 0.13)
        n_target = max(4, int(round(coverage * size * size / mean_area)))
        samplers = _centres_for_pattern(pattern, size, r_hi, n_target, rng)
    placed_xy = np.zeros((0, 2))
    placed_r = np.zeros(0)
    polygons = []
    for sampler in samplers:
        r = float(rng.uniform(r_lo, r_hi))
        for _ in range(60):
            cx, cy = sampler()
            if placed_r.size == 0 or np.all(np.hypot(*(placed_xy - (cx, cy)).T) > placed_r + r + 1.5):
                break
        else:
            continue  # no room left for this nucleus
        placed_xy = np.vstack([placed_xy, (cx, cy)])
        placed_r = np.append(placed_r, r)
        ry = r * rng.uniform(0.65, 1.0)
        theta = rng.uniform(0.0, np.pi)
        n_vert = max(12, int(2 * np.pi * r / 2))
        t = np.linspace(0.0, 2 * np.pi, n_vert, endpoint=False)
        jit = 1.0 + rng.uniform(-0.08, 0.08, n_vert)
        ex, ey = r * np.cos(t) * jit, ry * np.sin(t) * jit
        x = cx + ex * np.cos(theta) - ey * np.sin(theta)
        y = cy + ex * np.sin(theta) + ey * np.cos(theta)
        polygons.append(np.round(np.stack([x, y], axis=1), 3))
    return polygons


def _render_he(polygons: list[np.ndarray], size: int, rng: np.random.Generator) -> np.ndarray:
    """H&E-like RGB uint8 image ``(size, size, 3)`` with the nuclei polygons painted purple and textured."""
    shape = (size, size)
    mask_img = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(mask_img)
    for pts in polygons:
        draw.polygon([(float(a), float(b)) for a, b in pts], fill=1, outline=1)
    nuclei = np.asarray(mask_img, dtype=bool)
    cells = max(4, size // 24)
    eosin = _smooth_noise(rng, shape, cells)
    background = np.stack([236 + 8 * eosin, 172 + 18 * eosin, 204 + 10 * eosin], axis=-1) + rng.normal(
        0.0, 7.0, (*shape, 3)
    )
    chromatin = _smooth_noise(rng, shape, max(8, size // 6))
    purple = np.stack([104 + 18 * chromatin, 56 + 14 * chromatin, 150 + 16 * chromatin], axis=-1) + rng.normal(
        0.0, 14.0, (*shape, 3)
    )
    rgb = np.where(nuclei[..., None], purple, background)
    img = Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8), mode="RGB").filter(ImageFilter.GaussianBlur(0.6))
    return np.asarray(img, dtype=np.uint8)


def _aperio_xml(polygons: list[np.ndarray]) -> ElementTree.ElementTree:
    """Aperio ImageScope XML with one Region per polygon (the structure of the MoNuSeg annotations)."""
    root = ElementTree.Element("Annotations", MicronsPerPixel="0.252000")
    ann = ElementTree.SubElement(
        root, "Annotation", Id="1", Name="", ReadOnly="0", LineColor="65280", Visible="1", Type="4"
    )
    attrs = ElementTree.SubElement(ann, "Attributes")
    ElementTree.SubElement(attrs, "Attribute", Name="Description", Id="0", Value="")
    regions = ElementTree.SubElement(ann, "Regions")
    ElementTree.SubElement(regions, "RegionAttributeHeaders")
    for k, pts in enumerate(polygons, start=1):
        region = ElementTree.SubElement(regions, "Region", Id=str(k), Type="0", Zoom="1", Selected="0", NegativeROA="0")
        ElementTree.SubElement(region, "Attributes")
        verts = ElementTree.SubElement(region, "Vertices")
        for x, y in pts:
            ElementTree.SubElement(verts, "Vertex", X=f"{x:.3f}", Y=f"{y:.3f}", Z="0")
    ElementTree.SubElement(ann, "Plots")
    ElementTree.indent(root)
    return ElementTree.ElementTree(root)


def make_monuseg_like(
    dst: str | Path,
    n_train: int = 6,
    n_test: int = 2,
    size: int = 128,
    seed: int = 0,
    patterns: Sequence[str] = DEFAULT_NUCLEI_PATTERNS,
    nucleus_radius: tuple[float, float] | None = None,
) -> list[SyntheticNucleiCase]:
    """Write a synthetic dataset in the MoNuSeg 2018 release layout under ``dst``; return the cases' ground truth.

    Layout written::

        dst/MoNuSeg 2018 Training Data/Tissue Images/TCGA-SY-<NNNN>-01Z-00-DX1.tif   (size x size x 3 uint8)
        dst/MoNuSeg 2018 Training Data/Annotations/TCGA-SY-<NNNN>-01Z-00-DX1.xml     (Aperio XML)
        dst/MoNuSegTestData/TCGA-SY-<NNNN>-01Z-00-DX1.{tif,xml}

    Args:
        n_train, n_test: number of images of the training / test release (``n_test=0`` writes no test release).
        size: image side in pixels (128 default; 1000 for the real resolution).
        seed: everything is a function of the seed.
        patterns: distribution patterns cycled over the cases (training case i: ``patterns[i % len]``, test case i:
            ``patterns[(i + 3) % len]``).
        nucleus_radius: (min, max) nucleus radius in pixels; default (3, 5.5) x size/128, capped at (8, 14).
    """
    dst = Path(dst)
    if size < 32:
        raise ValueError(f"size must be >= 32 pixels, got {size}")
    scale = size / 128.0
    radius = nucleus_radius or (min(3.0 * scale, 8.0), min(5.5 * scale, 14.0))
    train_dir = dst / MONUSEG_TRAIN_FOLDER
    cases = []
    for release, n, offset in (("training", n_train, 0), ("test", n_test, 3)):
        for i in range(n):
            idx = i if release == "training" else 1000 + i
            rng = np.random.default_rng([seed, idx])
            pattern = patterns[(i + offset) % len(patterns)]
            polygons = _place_nuclei(pattern, size, radius, rng)
            image = _render_he(polygons, size, rng)
            case_id = f"TCGA-SY-{idx:04d}-01Z-00-DX1"
            if release == "training":
                tif, xml = train_dir / "Tissue Images" / f"{case_id}.tif", train_dir / "Annotations" / f"{case_id}.xml"
            else:
                tif, xml = dst / MONUSEG_TEST_FOLDER / f"{case_id}.tif", dst / MONUSEG_TEST_FOLDER / f"{case_id}.xml"
            with atomic_path(tif) as tmp:
                tifffile.imwrite(tmp, image, photometric="rgb")
            with atomic_path(xml) as tmp:
                _aperio_xml(polygons).write(tmp, encoding="UTF-8", xml_declaration=True)
            cases.append(SyntheticNucleiCase(case_id, release, tif, xml, pattern, len(polygons)))
    return cases


# ----------------------------------------------------------------------------------------------------------------
# MSD layout
# ----------------------------------------------------------------------------------------------------------------

_LABEL_NAMES = ("background", "kidney", "kidney tumour", "kidney cyst")
#: per channel: (air, body, kidney, tumour, cyst) mean intensities
_INTENSITIES = ((-1000.0, 40.0, 160.0, 90.0, 0.0), (0.0, 800.0, 1400.0, 600.0, 2400.0))


def _ellipsoid(grid: tuple[np.ndarray, ...], centre: Sequence[float], radii: Sequence[float]) -> np.ndarray:
    return sum(((g - c) / r) ** 2 for g, c, r in zip(grid, centre, radii, strict=True)) <= 1.0


def _synthetic_volume(
    shape: tuple[int, int, int],
    x_sign: int,
    n_classes: int,
    n_channels: int,
    with_label: bool,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray, tuple[str, ...], str | None, str | None]:
    """Image ``(X, Y, Z[, C])`` int16, label ``(X, Y, Z)`` uint8 and the kidney/tumour/cyst patient sides."""
    grid = np.meshgrid(*[np.arange(s, dtype=np.float32) for s in shape], indexing="ij")
    nx, ny, nz = shape
    cx, cy, cz = (nx - 1) / 2, (ny - 1) / 2, (nz - 1) / 2
    body = _ellipsoid(grid, (cx, cy, cz), (0.46 * nx, 0.42 * ny, 10.0 * nz))
    label = np.zeros(shape, dtype=np.uint8)
    kidneys = (("left", "right"), ("left",), ("right",))[int(rng.choice(3, p=[0.5, 0.25, 0.25]))]
    kidney_geom = {}
    for side in kidneys:
        # patient right = larger world x; world x = x_sign * spacing * i + t -> voxel side depends on x_sign
        u = 0.22 if (side == "right") == (x_sign > 0) else -0.22
        centre = (cx + u * nx, cy + rng.uniform(-0.05, 0.05) * ny, cz + rng.uniform(-0.08, 0.08) * nz)
        radii = tuple(rng.uniform(0.9, 1.1) * f * s for f, s in zip((0.11, 0.14, 0.26), shape, strict=True))
        kidney_geom[side] = (centre, radii)
        label[_ellipsoid(grid, centre, radii)] = 1
    tumour_side = cyst_side = None
    if n_classes >= 3 and rng.uniform() < 0.75:
        tumour_side = str(rng.choice(kidneys))
        kc, kr = kidney_geom[tumour_side]
        centre = (kc[0], kc[1], kc[2] + 0.45 * kr[2])
        r = max(1.6, 0.45 * min(kr))
        label[_ellipsoid(grid, centre, (r, r, r)) & (label == 1)] = 2
    if n_classes >= 4 and rng.uniform() < 0.6:
        cyst_side = str(rng.choice(kidneys))
        kc, kr = kidney_geom[cyst_side]
        centre = (kc[0], kc[1], kc[2] - 0.45 * kr[2])
        r = max(1.6, 0.4 * min(kr))
        label[_ellipsoid(grid, centre, (r, r, r)) & (label == 1)] = 3
    channels = []
    for c in range(n_channels):
        air, soft, kid, tum, cyst = _INTENSITIES[c % 2]
        vol = np.where(body, soft, air).astype(np.float32)
        for value, cls in ((kid, 1), (tum, 2), (cyst, 3)):
            vol[label == cls] = value
        vol += 25.0 * (label > 0) * rng.normal(0.0, 1.0, shape).astype(np.float32)  # organ texture
        vol += rng.normal(0.0, 15.0, shape).astype(np.float32)
        channels.append(np.clip(np.rint(vol), -1024, 3071).astype(np.int16))
    image = channels[0] if n_channels == 1 else np.stack(channels, axis=-1)
    if not with_label:
        kidneys, tumour_side, cyst_side = (), None, None
    return image, label, kidneys, tumour_side, cyst_side


def make_msd_like(
    dst: str | Path,
    n_train: int = 6,
    n_test: int = 2,
    n_classes: int = 3,
    n_channels: int = 1,
    shape_range: tuple[int, int] = (32, 48),
    spacing: tuple[float, float, float] = (1.5, 1.5, 2.0),
    seed: int = 0,
    task_name: str = "Task90_SynthKidney",
    shape: tuple[int, int, int] | None = None,
    label_names: Sequence[str] | None = None,
) -> list[SyntheticVolumeCase]:
    """Write a synthetic MSD task folder ``dst/<task_name>`` and return the cases' ground truth.

    Layout written::

        dst/Task90_SynthKidney/dataset.json
        dst/Task90_SynthKidney/imagesTr/kidney_<NNN>.nii.gz   (X, Y, Z) int16, or (X, Y, Z, C) when n_channels > 1
        dst/Task90_SynthKidney/labelsTr/kidney_<NNN>.nii.gz   (X, Y, Z) uint8: 0 bg, 1 kidney, 2 tumour, 3 cyst
        dst/Task90_SynthKidney/imagesTs/kidney_<NNN>.nii.gz

    Args:
        n_train, n_test: labelled / unlabelled cases.
        n_classes: 2 (kidney), 3 (+ kidney tumour, default) or 4 (+ kidney cyst), background included.
        n_channels: 1 (modality "CT") or 2 (4D images, modality "T2", "ADC" -- for channel-selection tests).
        shape_range: each axis length drawn uniformly from [lo, hi].
        spacing: voxel size in mm; the affine is diag(s_x * spacing_x, -spacing_y, spacing_z) plus an origin, with
            s_x = +1 for even and -1 for odd case numbers.
        seed: everything is a function of the seed.
        task_name: the task folder (e.g. ``Task09_Spleen`` for a paper-size stand-in of that release).
        shape: every case this ``(X, Y, Z)`` (paper-size stand-ins, e.g. ``(512, 512, 90)``) instead of
            ``shape_range``.
        label_names: ``dataset.json`` label names (default kidney / kidney tumour / kidney cyst), ``n_classes`` long.
    """
    if label_names is not None and len(label_names) != n_classes:
        raise ValueError(f"label_names must have n_classes={n_classes} entries, got {list(label_names)}")
    if n_classes not in (2, 3, 4):
        raise ValueError(f"n_classes must be 2, 3 or 4, got {n_classes}")
    if n_channels not in (1, 2):
        raise ValueError(f"n_channels must be 1 or 2, got {n_channels}")
    if shape_range[0] < 16 or shape_range[1] < shape_range[0]:
        raise ValueError(f"shape_range must be (lo, hi) with 16 <= lo <= hi, got {shape_range}")
    task = Path(dst) / task_name
    modality = {"0": "CT"} if n_channels == 1 else {"0": "T2", "1": "ADC"}
    cases = []
    for i in range(n_train + n_test):
        labelled = i < n_train
        rng = np.random.default_rng([seed, 7, i])
        drawn = tuple(int(s) for s in rng.integers(shape_range[0], shape_range[1] + 1, 3))
        case_shape = tuple(int(s) for s in shape) if shape is not None else drawn
        x_sign = 1 if i % 2 == 0 else -1
        affine = np.diag([x_sign * spacing[0], -spacing[1], spacing[2], 1.0])
        centre = (np.asarray(case_shape) - 1) / 2.0
        affine[:3, 3] = -affine[:3, :3] @ centre + rng.uniform(-20.0, 20.0, 3)
        image, label, kidneys, tumour, cyst = _synthetic_volume(
            case_shape, x_sign, n_classes, n_channels, labelled, rng
        )
        case_id = f"kidney_{i:03d}"
        img_path = task / ("imagesTr" if labelled else "imagesTs") / f"{case_id}.nii.gz"
        with atomic_path(img_path) as tmp:
            nib.save(nib.Nifti1Image(image, affine), tmp)
        lbl_path = None
        if labelled:
            lbl_path = task / "labelsTr" / f"{case_id}.nii.gz"
            with atomic_path(lbl_path) as tmp:
                nib.save(nib.Nifti1Image(label, affine), tmp)
        cases.append(SyntheticVolumeCase(case_id, img_path, lbl_path, kidneys, tumour, cyst, case_shape, affine))
    meta = {
        "name": task_name.split("_", 1)[-1],
        "description": "Synthetic kidney CT-like volumes (common.data.synthetic.make_msd_like)",
        "reference": "synthetic",
        "licence": "CC0",
        "release": "1.0",
        "tensorImageSize": "3D" if n_channels == 1 else "4D",
        "modality": modality,
        "labels": {str(k): (label_names or _LABEL_NAMES)[k] for k in range(n_classes)},
        "numTraining": n_train,
        "numTest": n_test,
        "training": [
            {"image": f"./imagesTr/{c.case_id}.nii.gz", "label": f"./labelsTr/{c.case_id}.nii.gz"}
            for c in cases
            if c.label is not None
        ],
        "test": [f"./imagesTs/{c.case_id}.nii.gz" for c in cases if c.label is None],
    }
    with atomic_path(task / "dataset.json") as tmp:
        tmp.write_text(json.dumps(meta, indent=4) + "\n", encoding="utf-8")
    return cases


#: layout name -> ``"module:function"`` of its generator (``tools/make_synthetic_data.py LAYOUT DST``); imported on use
SYNTHETIC_LAYOUTS: dict[str, str] = {
    "monuseg": "common.data.synthetic:make_monuseg_like",
    "msd": "common.data.synthetic:make_msd_like",
    "busi": "common.data.synthetic_busi:make_busi_like",
    "qata": "common.data.synthetic_qata:make_qata_like",
    "cxr_lungs": "common.data.synthetic_cxr:make_cxr_lungs_like",
    "kits21": "common.data.synthetic_ct:make_kits21_like",
    "lits": "common.data.synthetic_ct:make_lits_like",
}


def synthetic_generator(layout: str) -> Callable[..., Any]:
    """The generator of ``layout`` (one of :data:`SYNTHETIC_LAYOUTS`): ``generator(dst, **options)``.

    Raises:
        ValueError: an unknown layout, listing the known ones.
    """
    if layout not in SYNTHETIC_LAYOUTS:
        raise ValueError(f"unknown synthetic layout {layout!r}; available: {sorted(SYNTHETIC_LAYOUTS)}")
    module, name = SYNTHETIC_LAYOUTS[layout].split(":")
    return getattr(importlib.import_module(module), name)


def make_synthetic_dataset(layout: str, dst: str | Path, **options: Any) -> Any:
    """``synthetic_generator(layout)(dst, **options)``."""
    return synthetic_generator(layout)(dst, **options)
