"""LiTS release (CodaLab "Training Batch 1/2" + "Test Batch") -> datalist over the original NIfTI files.

Accepted layout (``SRC`` holds the batch folders, or the files directly)::

    Training Batch 1/volume-0.nii, Training Batch 1/segmentation-0.nii, ...   (0 background, 1 liver, 2 tumor)
    Training Batch 2/volume-28.nii, Training Batch 2/segmentation-28.nii, ...
    Test Batch/test-volume-0.nii, ...                                         (unlabelled, optional)

``.nii`` or ``.nii.gz``. Every ``volume-N`` needs its ``segmentation-N`` (a missing one is an error naming it).
Splits as ``bundles/textdiffseg/docs/sources.md`` §1.1: seeded test 20 %, validation 10 % of the rest (LiTS' own 70 test
labels are not public). Text: the generated description of each label, e.g. "CT of the abdomen showing the liver and a
liver tumor on the right."
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from common.data.converters import register_converter
from common.data.converters._nifti_pairs import VOLUME_PAIR_OPTIONS, VolumeCase, build_volume_datalist, check_pair
from common.data.converters.base import DatasetConverter
from common.errors import BadInputError

__all__ = ["LiTSConverter", "LITS_LABELS"]

LITS_LABELS = {0: "background", 1: "liver", 2: "liver tumor"}
_VOLUME = re.compile(r"^(test-)?volume-(\d+)\.nii(\.gz)?$")


def _nifti_files(src: Path) -> list[Path]:
    folders = [src] + sorted(d for d in src.iterdir() if d.is_dir() and not d.name.startswith("."))
    return [p for d in folders for p in sorted(d.iterdir()) if p.is_file() and not p.name.startswith(".")]


@register_converter("lits")
class LiTSConverter(DatasetConverter):
    """LiTS ``volume-N.nii`` / ``segmentation-N.nii`` (+ ``test-volume-N.nii``) -> datalist."""

    description = "LiTS liver tumour CT (Training Batch 1/2: volume-N.nii + segmentation-N.nii; Test Batch)"
    expected_layout = (
        "  Training Batch 1/volume-0.nii, Training Batch 1/segmentation-0.nii, ..., Test Batch/test-volume-0.nii\n"
        "  SRC holds the batch folders (or the files directly); .nii or .nii.gz"
    )
    options = dict(VOLUME_PAIR_OPTIONS)

    def check_layout(self, src: Path, options: Mapping[str, Any]) -> tuple[list[VolumeCase], list[VolumeCase]]:
        files = _nifti_files(src)
        segs = {}
        for p in files:
            m = re.match(r"^segmentation-(\d+)\.nii(\.gz)?$", p.name)
            if m:
                segs[int(m.group(1))] = p
        labelled, unlabelled = [], []
        for p in files:
            m = _VOLUME.match(p.name)
            if not m:
                continue
            idx = int(m.group(2))
            if m.group(1):
                unlabelled.append(VolumeCase(f"test-volume-{idx}", p))
                continue
            if idx not in segs:
                raise BadInputError(p, f"no segmentation-{idx}.nii(.gz) for this volume in {src}")
            check_pair(p, segs[idx], options["affine_atol"])
            labelled.append(VolumeCase(f"volume-{idx}", p, segs[idx]))
        if not labelled:
            raise self.layout_error(src / "Training Batch 1" / "volume-0.nii", "no volume-N.nii found")
        labelled.sort(key=lambda c: int(c.case_id.split("-")[-1]))
        return labelled, unlabelled

    def build(self, layout: tuple[list[VolumeCase], list[VolumeCase]], dst: Path, **options: Any) -> dict[str, Any]:
        labelled, unlabelled = layout
        return build_volume_datalist(
            "LiTS", "LiTS liver / liver tumor CT.", "lits", labelled, unlabelled, LITS_LABELS, dst, options
        )
