"""Generate the per-case sentence from a label mask when a dataset ships no text (pure numpy, no scipy).

Two describers, both deterministic and documented rule by rule so a generated text can be checked against its mask:

* :func:`describe_nuclei_mask` -- 2D binary nuclei masks (MoNuSeg), in the vocabulary of LViT's MoNuSeg texts
  (bundles/textdiff/docs/sources.md §1.2; the 9 distinct LViT sentences are "The nuclei are evenly / sparsely /
  irregularly distributed.", "The nuclei density is higher around." and "The nuclei density in the <where> is high."
  with <where> in {upper left, upper right, lower left, lower right, upper, lower, left, right}). LViT does not say how
  its sentences were chosen (they were written by hand); the rules below are this project's.
* :func:`describe_labelled_volume` -- 3D multi-class label volumes (MSD and similar), a template over the dataset
  metadata and the label content:

      "<modality> of the <region> showing <structure phrases>."
      e.g. "CT of the abdomen showing the right kidney and a kidney tumour on the right."

  A structure phrase is "the <side> <name>" ("the <name> on both sides" when it spans both halves), or
  "a <name> on the <side>" for lesion-like names (tumour, tumor, cancer, lesion, cyst, metastasis, nodule, mass);
  "the <name>" when sides are not used. Without any foreground: "<modality> of the <region> with no labelled
  structure." Side (patient left/right) comes from the affine: world coordinates are NIfTI RAS+ (x grows towards
  the patient's Right), the midline is taken as the world x of the field-of-view centre (assumes the scan is
  centred on the patient; pass ``side_reference="none"`` for crops such as MSD Hippocampus). A class is on the
  right if >= 80 % of its voxels have world x > midline, on the left if <= 20 %, otherwise on both sides.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

import numpy as np

__all__ = [
    "LESION_WORDS",
    "NUCLEI_PATTERNS",
    "body_region",
    "count_components_2d",
    "describe_labelled_volume",
    "describe_nuclei_mask",
    "describe_unlabelled_volume",
    "modality_phrase",
    "nuclei_pattern",
    "structure_sides",
]

#: distribution categories of :func:`nuclei_pattern` (the <where> values are the LViT position words)
NUCLEI_PATTERNS: tuple[str, ...] = (
    "sparse",
    "upper left",
    "upper right",
    "lower left",
    "lower right",
    "upper",
    "lower",
    "left",
    "right",
    "around",
    "even",
    "irregular",
)

#: rule thresholds of :func:`nuclei_pattern`
SPARSE_AREA_FRACTION = 0.05  # nuclei cover < 5 % of the image -> "sparsely distributed"
QUADRANT_RATIO = 2.0  # a quadrant holds >= 50 % of the nuclei area (2 x its 25 % share)
HALF_RATIO = 1.3  # a half holds >= 65 % of the nuclei area
AROUND_RATIO = 1.5  # density outside the central box >= 1.5 x density inside it ("higher around")
EVEN_MAX_CV = 0.5  # coefficient of variation of the 4x4-cell densities <= 0.5 -> "evenly", else "irregularly"

#: lower-case name fragments that make a class a lesion ("a <name> on the <side>")
LESION_WORDS: tuple[str, ...] = ("tumour", "tumor", "cancer", "lesion", "cyst", "metasta", "nodule", "mass")

#: task-name keyword -> body region used in the 3D template (first match wins)
REGION_KEYWORDS: tuple[tuple[str, str], ...] = (
    ("hippocampus", "brain"),
    ("brain", "brain"),
    ("prostate", "pelvis"),
    ("lung", "chest"),
    ("heart", "chest"),
    ("liver", "abdomen"),
    ("hepatic", "abdomen"),
    ("pancrea", "abdomen"),
    ("spleen", "abdomen"),
    ("colon", "abdomen"),
    ("kidney", "abdomen"),
    ("kits", "abdomen"),
    ("lits", "abdomen"),
)

#: channel name (lower case) -> modality words in the 3D template
MODALITY_WORDS: dict[str, str] = {
    "ct": "CT",
    "mri": "MRI",
    "mr": "MRI",
    "t1": "T1-weighted MRI",
    "t1w": "T1-weighted MRI",
    "t1gd": "contrast-enhanced T1-weighted MRI",
    "t2": "T2-weighted MRI",
    "t2w": "T2-weighted MRI",
    "flair": "FLAIR MRI",
    "adc": "ADC MRI",
    "dwi": "diffusion-weighted MRI",
    "us": "ultrasound",
    "ultrasound": "ultrasound",
}


def count_components_2d(mask: np.ndarray) -> int:
    """Number of 4-connected foreground components of a 2D mask ``(H, W)``.

    Hand-written because scipy is not a dependency: min-label propagation over the 4 neighbours plus pointer
    jumping, vectorised in numpy (~0.3 s for a 1000x1000 MoNuSeg mask; slower for long thin components).
    """
    fg = np.asarray(mask).astype(bool)
    if fg.ndim != 2:
        raise ValueError(f"expected a 2D mask, got shape {fg.shape}")
    if not fg.any():
        return 0
    h, w = fg.shape
    big = h * w
    idx = np.flatnonzero(fg)
    lab = np.where(fg, np.arange(big).reshape(h, w), big)
    while True:
        new = lab.copy()
        np.minimum(new[1:, :], lab[:-1, :], out=new[1:, :])
        np.minimum(new[:-1, :], lab[1:, :], out=new[:-1, :])
        np.minimum(new[:, 1:], lab[:, :-1], out=new[:, 1:])
        np.minimum(new[:, :-1], lab[:, 1:], out=new[:, :-1])
        new[~fg] = big
        flat = new.ravel()
        while True:  # pointer jumping: a pixel takes the label of the pixel its label points to
            nxt = flat[flat[idx]]
            if np.array_equal(nxt, flat[idx]):
                break
            flat[idx] = nxt
        if np.array_equal(new, lab):
            break
        lab = new
    return int(np.count_nonzero(lab.ravel()[idx] == idx))


def _region_ratio(fg: np.ndarray, region: np.ndarray, total: float) -> float:
    """Share of the nuclei area inside ``region`` divided by the region's share of the image area."""
    return float(fg[region].sum()) / total / (region.sum() / region.size)


def nuclei_pattern(mask: np.ndarray) -> str:
    """Distribution category of a 2D nuclei mask ``(H, W)`` (row 0 = upper, column 0 = left).

    Rules, first match wins (thresholds are the module constants):

    1. nuclei area fraction < ``SPARSE_AREA_FRACTION`` -> "sparse";
    2. the quadrant with the largest area ratio (its share of nuclei area / 0.25) >= ``QUADRANT_RATIO`` -> that
       quadrant ("upper left", ...);
    3. the half (upper/lower/left/right) with the largest ratio >= ``HALF_RATIO`` -> that half;
    4. density outside the central box (middle half of rows and columns) / density inside >= ``AROUND_RATIO`` ->
       "around";
    5. coefficient of variation of the densities of a 4x4 grid of cells <= ``EVEN_MAX_CV`` -> "even", else
       "irregular".
    """
    fg = np.asarray(mask).astype(bool)
    if fg.ndim != 2:
        raise ValueError(f"expected a 2D mask, got shape {fg.shape}")
    h, w = fg.shape
    total = float(fg.sum())
    if total / fg.size < SPARSE_AREA_FRACTION:
        return "sparse"
    rows, cols = np.arange(h)[:, None], np.arange(w)[None, :]
    upper, left = rows < h / 2, cols < w / 2
    upper, lower = np.broadcast_to(upper, fg.shape), np.broadcast_to(~upper, fg.shape)
    left, right = np.broadcast_to(left, fg.shape), np.broadcast_to(~left, fg.shape)
    quadrants = {
        "upper left": upper & left,
        "upper right": upper & right,
        "lower left": lower & left,
        "lower right": lower & right,
    }
    ratios = {k: _region_ratio(fg, r, total) for k, r in quadrants.items()}
    best = max(ratios, key=ratios.get)
    if ratios[best] >= QUADRANT_RATIO:
        return best
    halves = {"upper": upper, "lower": lower, "left": left, "right": right}
    ratios = {k: _region_ratio(fg, r, total) for k, r in halves.items()}
    best = max(ratios, key=ratios.get)
    if ratios[best] >= HALF_RATIO:
        return best
    centre = (rows >= h / 4) & (rows < 3 * h / 4) & (cols >= w / 4) & (cols < 3 * w / 4)
    centre = np.broadcast_to(centre, fg.shape)
    inner = fg[centre].mean()
    outer = fg[~centre].mean()
    if outer >= AROUND_RATIO * max(inner, 1e-12):
        return "around"
    cells = [block.mean() for band in np.array_split(fg, 4, axis=0) for block in np.array_split(band, 4, axis=1)]
    cv = float(np.std(cells) / max(np.mean(cells), 1e-12))
    return "even" if cv <= EVEN_MAX_CV else "irregular"


_LVIT_SENTENCE = {
    "sparse": "The nuclei are sparsely distributed.",
    "even": "The nuclei are evenly distributed.",
    "irregular": "The nuclei are irregularly distributed.",
    "around": "The nuclei density is higher around.",
}


def describe_nuclei_mask(
    mask: np.ndarray, count: int | None = None, style: Literal["lvit", "detailed"] = "lvit"
) -> str:
    """Sentence describing a 2D nuclei mask ``(H, W)`` (non-zero = nucleus).

    Args:
        mask: binary mask, row 0 at the top of the image.
        count: number of nuclei (e.g. the number of annotated polygons); counted with :func:`count_components_2d`
            when ``None`` and needed.
        style: ``"lvit"``: one sentence of the LViT vocabulary (fits TextDiff's 10-token budget);
            ``"detailed"``: "There are <count> nuclei covering <p> % of the image. " + the LViT sentence.
    """
    pattern = nuclei_pattern(mask)
    sentence = _LVIT_SENTENCE.get(pattern, f"The nuclei density in the {pattern} is high.")
    if style == "lvit":
        return sentence
    if style != "detailed":
        raise ValueError(f"unknown style {style!r}; use 'lvit' or 'detailed'")
    n = count_components_2d(mask) if count is None else int(count)
    pct = 100.0 * float(np.asarray(mask).astype(bool).mean())
    noun = "nucleus" if n == 1 else "nuclei"
    verb = "is" if n == 1 else "are"
    return f"There {verb} {n} {noun} covering {pct:.0f}% of the image. {sentence}"


def body_region(task_name: str) -> str:
    """Body region of a task name via :data:`REGION_KEYWORDS` ("Task03_Liver" -> "abdomen"); else the organ name."""
    low = task_name.lower()
    for key, region in REGION_KEYWORDS:
        if key in low:
            return region
    organ = low.split("_", 1)[1] if low.startswith("task") and "_" in low else low
    return organ.replace("_", " ")


def modality_phrase(modality: Mapping[str, str] | Sequence[str]) -> str:
    """Modality words for the template: one channel via :data:`MODALITY_WORDS` ("T2" -> "T2-weighted MRI");
    several MRI channels -> "multi-parametric MRI (T2, ADC)"; otherwise the names joined with "/"."""
    names = list(modality.values()) if isinstance(modality, Mapping) else list(modality)
    words = [MODALITY_WORDS.get(str(n).strip().lower(), str(n).strip()) for n in names]
    if len(words) == 1:
        return words[0]
    if all(w.endswith("MRI") for w in words):
        return f"multi-parametric MRI ({', '.join(str(n) for n in names)})"
    return "/".join(words)


def structure_sides(
    label: np.ndarray, affine: np.ndarray, classes: Sequence[int]
) -> dict[int, Literal["left", "right", "both"]]:
    """Patient side of each present class of a 3D label ``(X, Y, Z)`` with a NIfTI affine ``(4, 4)`` (RAS+ world).

    Returns ``{class: "left" | "right" | "both"}`` for the classes present (see the module docstring for the rule).
    """
    affine = np.asarray(affine, dtype=np.float64)
    centre = (np.asarray(label.shape[:3], dtype=np.float64) - 1.0) / 2.0
    mid_x = float(affine[0, :3] @ centre + affine[0, 3])
    sides: dict[int, Literal["left", "right", "both"]] = {}
    for c in classes:
        ijk = np.nonzero(label == c)
        if ijk[0].size == 0:
            continue
        x = affine[0, 0] * ijk[0] + affine[0, 1] * ijk[1] + affine[0, 2] * ijk[2] + affine[0, 3]
        frac_right = float(np.mean(x > mid_x))
        sides[int(c)] = "right" if frac_right >= 0.8 else "left" if frac_right <= 0.2 else "both"
    return sides


def _capitalised(words: str) -> str:
    return words[:1].upper() + words[1:]


def _is_lesion(name: str) -> bool:
    low = name.lower()
    return any(w in low for w in LESION_WORDS)


def _join(phrases: Sequence[str]) -> str:
    return phrases[0] if len(phrases) == 1 else ", ".join(phrases[:-1]) + " and " + phrases[-1]


def describe_labelled_volume(
    label: np.ndarray,
    affine: np.ndarray,
    label_names: Mapping[str, str],
    modality: str,
    region: str,
    side_reference: Literal["fov_center", "none"] = "fov_center",
) -> str:
    """Template sentence for a 3D label volume ``(X, Y, Z)`` (integer classes) -- see the module docstring.

    Args:
        label: integer label volume (class ids as in ``label_names``).
        affine: its NIfTI affine ``(4, 4)`` (voxel -> RAS+ mm).
        label_names: ``{"0": "background", "1": "kidney", ...}``.
        modality: modality words (see :func:`modality_phrase`).
        region: body region words (see :func:`body_region`).
        side_reference: ``"fov_center"`` adds left/right; ``"none"`` omits sides.
    """
    modality = _capitalised(modality)
    classes = sorted(int(k) for k in label_names if int(k) != 0)
    present = [c for c in classes if np.any(label == c)]
    if not present:
        return f"{modality} of the {region} with no labelled structure."
    sides = structure_sides(label, affine, present) if side_reference == "fov_center" else {}
    phrases = []
    for c in present:
        name = label_names[str(c)]
        side = sides.get(c)
        if _is_lesion(name):
            phrases.append(
                f"a {name}" + ("" if side is None else " on both sides" if side == "both" else f" on the {side}")
            )
        else:
            where = {None: f"the {name}", "both": f"the {name} on both sides"}
            phrases.append(where.get(side, f"the {side} {name}"))
    return f"{modality} of the {region} showing {_join(phrases)}."


def describe_unlabelled_volume(modality: str, region: str) -> str:
    """Sentence for an image without label (MSD ``imagesTs``): "<modality> of the <region>."."""
    return f"{_capitalised(modality)} of the {region}."
