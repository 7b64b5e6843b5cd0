"""Shared steps of the converters for releases made of 3D NIfTI image/label pairs (KiTS21, LiTS).

Checks every pair's header (same shape and affine), reads each label once for its generated text
(:func:`common.data.describe.describe_labelled_volume`: "CT of the abdomen showing the right kidney and a kidney
tumour on the right."), splits the labelled cases with :func:`common.data.datalist.split_cases` and returns the
datalist document referencing the original files (no copies), as the MSD converter does.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from common.data.converters.base import load_text_file, relative_path
from common.data.converters.msd import _header, labelled_volume_entry, read_new_label
from common.data.datalist import split_cases
from common.data.describe import describe_labelled_volume, describe_unlabelled_volume
from common.errors import BadInputError

__all__ = ["VOLUME_PAIR_OPTIONS", "VolumeCase", "check_pair", "build_volume_datalist"]

#: converter options shared by the NIfTI-pair releases (KiTS21, LiTS): split fractions, side naming, affine tolerance
VOLUME_PAIR_OPTIONS: dict[str, tuple[Any, str]] = {
    "val_fraction": (0.1, "fraction of the non-test labelled cases held out for validation"),
    "test_fraction": (0.2, "fraction of the labelled cases held out for test"),
    "side_reference": ("fov_center", "'fov_center' (left/right from the affine) or 'none'"),
    "affine_atol": (1e-3, "tolerance (mm) when comparing image and label affines"),
}


@dataclass
class VolumeCase:
    """One case: ``label`` is None for unlabelled (test) images."""

    case_id: str
    image: Path
    label: Path | None = None


def check_pair(image: Path, label: Path, affine_atol: float) -> None:
    """Raise :class:`BadInputError` naming both files if image and label differ in shape or affine."""
    img_shape, img_aff = _header(image)
    lbl_shape, lbl_aff = _header(label)
    if img_shape[:3] != lbl_shape[:3] or len(img_shape) != 3:
        raise BadInputError(image, f"image and label {label} differ in shape: {img_shape} vs {lbl_shape}")
    if not np.allclose(img_aff, lbl_aff, rtol=0.0, atol=float(affine_atol)):
        raise BadInputError(
            image, f"image and label {label} differ in affine:\n{np.round(img_aff, 4)}\nvs\n{np.round(lbl_aff, 4)}"
        )


def build_volume_datalist(
    name: str,
    description: str,
    source_layout: str,
    labelled: list[VolumeCase],
    unlabelled: list[VolumeCase],
    labels: dict[int, str],
    dst: Path,
    options: dict[str, Any],
    modality_words: str = "CT",
    region: str = "abdomen",
) -> dict[str, Any]:
    """The datalist document (see the module docstring); ``options`` holds seed / fractions / text_file."""
    if not labelled:
        raise BadInputError(dst, "no labelled case found")
    table = load_text_file(options["text_file"]) if options.get("text_file") else None
    str_names = {str(k): v for k, v in labels.items()}
    entries: dict[str, dict[str, Any]] = {}
    for case in labelled:
        arr, affine = read_new_label(case, entries, labels, known="among the dataset's labels")
        side = options.get("side_reference", "fov_center")
        entries[case.case_id] = labelled_volume_entry(
            case,
            dst,
            table,
            options.get("text_file"),
            lambda: describe_labelled_volume(arr, affine, str_names, modality_words, region, side),
        )
    split = split_cases(list(entries), options["val_fraction"], options["test_fraction"], options["seed"])
    doc: dict[str, Any] = {
        "name": name,
        "description": f"{description} Datalist over the original NIfTI files (seed {options['seed']}, val_fraction "
        f"{options['val_fraction']}, test_fraction {options['test_fraction']} of the labelled cases).",
        "source_layout": source_layout,
        "spatial_dims": 3,
        "modality": {"0": modality_words},
        "labels": {str(k): v for k, v in sorted(labels.items())},
    }
    doc.update({k: [entries[i] for i in ids] for k, ids in split.items()})
    doc["unlabelled"] = [
        {
            "case_id": c.case_id,
            "image": relative_path(c.image, dst),
            "text": describe_unlabelled_volume(modality_words, region),
            "text_source": "generated",
        }
        for c in unlabelled
    ]
    return doc
