"""MSD task folder -> 2D axial slice datalists (DiffBoost: Task09 Spleen, Task05 Prostate;
bundles/diffboost/docs/sources.md §1.1-1.3).

Builds on the ``msd`` converter (:class:`common.data.converters.msd.MSDConverter`): the same accepted layout, layout
checks (files, image/label shape and affine) and options (``channels``, ``binary``, ``label_mapping``,
``label_names``), then cuts every labelled volume into its axial slices and keeps the "positive" ones, as the
authors' preprocessing does: a slice is kept when its label, resized (nearest) to ``slice_size`` x ``slice_size``
(384, the size the bundle works at), has more than ``min_foreground`` (20) foreground pixels.

Output (``DST``)::

    slices/images/<case>_z<NNN>.nii.gz    # 2D float32 (X, Y), the chosen channel(s) ((X, Y, C) for several)
    slices/labels/<case>_z<NNN>.nii.gz    # 2D uint8 (X, Y), labels after the merge (int32 if a value is >= 256)
    datalist.json                         # fold ``fold`` held out as test (spatial_dims 2)
    datalist_fold<k>.json                 # every fold of the case-level K-fold split

Each slice keeps the volume's affine moved to its z position, so in-plane spacing (for HD95 in mm) is preserved.
Intensities are unchanged (the bundle applies the per-slice percentile normalisation). Entries carry
``source_case`` and ``slice_index``; the K-fold split is over cases (all slices of a case in one fold), in
dataset.json order (sklearn ``KFold(3)`` without shuffle, as the authors).

Task presets (pass as options; our reading of the authors' data, bundles/diffboost/docs/sources.md §1.1):

- Task09_Spleen: defaults (CT, labels 0/1). Text "Spleen, CT".
- Task05_Prostate: ``channels=[0]`` (T2 of the 4D T2+ADC images), ``binary=True`` (PZ and TZ merged into 1),
  ``label_names={"1": "prostate"}``. Text "Prostate, MRI". (INFERRED, not in the authors' code: the authors' code
  expects one channel and 2 classes.)

Text per slice: ``text`` option, default "<Organ>, <Modality>" from the task name and the (selected) channel names
(CT -> "CT", MR/T1/T2/ADC/FLAIR -> "MRI"), the authors' prompt template (bundles/diffboost/docs/sources.md §3).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from common.data.converters import register_converter
from common.data.converters._folds import FOLD_OPTIONS
from common.data.converters.base import relative_path
from common.data.converters.busi import _fold_documents
from common.data.converters.msd import MSDConverter, MSDLayout, read_integer_label
from common.errors import BadInputError
from common.io.atomic import atomic_path
from PIL import Image

__all__ = ["MSDSliceConverter", "organ_modality_prompt", "positive_slices"]

_MRI_WORDS = ("mr", "mri", "t1", "t2", "adc", "flair", "dwi", "pd")


def organ_modality_prompt(task_name: str, modality_names: list[str]) -> str:
    """``"<Organ>, <Modality>"``: ``("Task09_Spleen", ["CT"])`` -> ``"Spleen, CT"``; T2/ADC -> ``"MRI"``."""
    organ = task_name.split("_", 1)[-1].replace("_", " ").strip() or task_name
    words = " ".join(modality_names).lower().replace("-", " ").split()
    if any(w in ("ct",) for w in words):
        modality = "CT"
    elif any(w in _MRI_WORDS for w in words):
        modality = "MRI"
    elif any(w in ("us", "ultrasound") for w in words):
        modality = "Ultrasound"
    else:
        modality = modality_names[0] if modality_names else "image"
    return f"{organ[:1].upper()}{organ[1:]}, {modality}"


def positive_slices(label: np.ndarray, slice_size: int = 384, min_foreground: int = 20) -> list[int]:
    """Axial indices ``z`` of a ``(X, Y, Z)`` label whose slice, resized (nearest) to ``slice_size``^2, has more than
    ``min_foreground`` non-zero pixels (the authors' positive-slice filter, bundles/diffboost/docs/sources.md §1.2)."""
    keep = []
    for z in range(label.shape[2]):
        sl = label[:, :, z]
        if not sl.any():
            continue
        small = np.asarray(Image.fromarray((sl > 0).astype(np.uint8)).resize((slice_size, slice_size), Image.NEAREST))
        if int(small.sum()) > min_foreground:
            keep.append(z)
    return keep


@register_converter("msd_slices")
class MSDSliceConverter(MSDConverter):
    """MSD task -> positive 2D axial slices + K-fold datalists (see module docstring)."""

    description = "MSD task folder -> positive 2D axial slices (DiffBoost spleen/prostate), K-fold datalists"
    options = {
        **MSDConverter.options,
        "val_fraction": (0.1, "fraction of each fold's training cases held out for validation"),
        **FOLD_OPTIONS,
        "slice_size": (384, "in-plane size at which the positive-slice filter counts foreground pixels"),
        "min_foreground": (20, "a slice is kept when it has more foreground pixels than this (at slice_size^2)"),
        "text": (None, "prompt of every slice (default '<Organ>, <Modality>' from the task)"),
    }

    def build(self, layout: MSDLayout, dst: Path, **options: Any) -> dict[str, Any]:
        meta, meta_path = layout.meta, layout.task_dir / "dataset.json"
        classes = self.parse_classes(layout, options, require_channel_choice=True)
        labels, modality, channels, lut = classes.labels, classes.modality, classes.channels, classes.lut
        text = options["text"] or organ_modality_prompt(
            str(meta.get("name") or layout.task_dir.name), [modality[k] for k in sorted(modality)]
        )
        entries: dict[str, dict[str, Any]] = {}
        group_of: dict[str, str] = {}
        n_slices = 0
        for case in layout.training:
            arr, affine = read_integer_label(case.label)
            unknown = sorted(set(np.unique(arr).tolist()) - set(labels))
            if unknown:
                raise BadInputError(case.label, f"label values {unknown} are not in dataset.json labels {labels}")
            arr = lut[arr]  # uint8, or int32 when a label value is >= 256
            keep = positive_slices(arr, int(options["slice_size"]), int(options["min_foreground"]))
            if not keep:
                continue
            image = np.asanyarray(nib.load(str(case.image)).dataobj).astype(np.float32)
            if image.ndim == 4:
                image = image[..., channels] if channels is not None else image
                image = image[..., 0] if image.shape[-1] == 1 else image
            for z in keep:
                sid = f"{case.case_id}_z{z:03d}"
                slice_affine = affine.copy()
                slice_affine[:3, 3] = affine[:3, :3] @ np.array([0.0, 0.0, float(z)]) + affine[:3, 3]
                img_path = dst / "slices" / "images" / f"{sid}.nii.gz"
                lbl_path = dst / "slices" / "labels" / f"{sid}.nii.gz"
                for path, data in ((img_path, image[:, :, z]), (lbl_path, arr[:, :, z])):
                    with atomic_path(path) as tmp:
                        nib.save(nib.Nifti1Image(np.ascontiguousarray(data), slice_affine), str(tmp))
                entries[sid] = {
                    "case_id": sid,
                    "image": relative_path(img_path, dst),
                    "label": relative_path(lbl_path, dst),
                    "text": text,
                    "text_source": "generated",
                    "source_case": case.case_id,
                    "slice_index": z,
                }
                group_of[sid] = case.case_id
                n_slices += 1
        if not entries:
            raise BadInputError(meta_path, "no positive slice in any labelled case (check labels / min_foreground)")
        doc_base: dict[str, Any] = {
            "name": str(meta["name"]),
            "description": (
                f"MSD {layout.task_dir.name}: {n_slices} positive axial slices (>{options['min_foreground']} "
                f"foreground px at {options['slice_size']}^2) of {len(set(group_of.values()))} cases, "
                "2D NIfTI, intensities unchanged."
            ),
            "source_layout": "msd_slices",
            "spatial_dims": 2,
            **classes.datalist_fields(),
        }
        ids = list(entries)
        return _fold_documents(
            doc_base, entries, ids, dst, options, int(options["n_folds"]), int(options["fold"]), group_of
        )
