"""KiTS21 release (github neheller/kits21) -> datalist over the original NIfTI files.

Accepted layout (``SRC`` = the ``data`` folder of the repository, or the repository root holding ``data/``)::

    case_00000/imaging.nii.gz
    case_00000/aggregated_MAJ_seg.nii.gz   # majority-vote label: 0 background, 1 kidney, 2 tumor, 3 cyst
    case_00000/segmentations/...           # per-annotator instances (ignored)
    ...
    kits.json                              # clinical metadata (optional, ignored)

Cases without the chosen segmentation file (the 100 withheld test cases of the challenge have only
``imaging.nii.gz``) become ``unlabelled``. Splits as ``bundles/textdiffseg/docs/sources.md`` §1.1: seeded test 20 %,
validation 10 % of the rest. Text: the generated description of each label (organ, lesion, side from the affine,
modality), e.g. "CT of the abdomen showing the kidney on both sides and a kidney tumor on the left."
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from common.data.converters import register_converter
from common.data.converters._nifti_pairs import VOLUME_PAIR_OPTIONS, VolumeCase, build_volume_datalist, check_pair
from common.data.converters.base import DatasetConverter
from common.errors import BadInputError

__all__ = ["KiTS21Converter", "KITS21_LABELS"]

KITS21_LABELS = {0: "background", 1: "kidney", 2: "kidney tumor", 3: "kidney cyst"}


@register_converter("kits21")
class KiTS21Converter(DatasetConverter):
    """KiTS21 ``data/case_XXXXX/{imaging,aggregated_MAJ_seg}.nii.gz`` -> datalist (see module docstring)."""

    description = "KiTS21 challenge data (case_XXXXX/imaging.nii.gz + aggregated_MAJ_seg.nii.gz)"
    expected_layout = (
        "  data/case_00000/imaging.nii.gz, data/case_00000/aggregated_MAJ_seg.nii.gz, ...\n"
        "  SRC is the kits21 'data' folder (or the repository root holding it)"
    )
    options = {
        **VOLUME_PAIR_OPTIONS,
        "segmentation": (
            "aggregated_MAJ_seg",
            "label file name without .nii.gz (aggregated_AND_seg, aggregated_OR_seg)",
        ),
    }

    def check_layout(self, src: Path, options: Mapping[str, Any]) -> tuple[list[VolumeCase], list[VolumeCase]]:
        data = src / "data" if (src / "data").is_dir() and not any(src.glob("case_*")) else src
        cases = sorted(d for d in data.iterdir() if d.is_dir() and d.name.startswith("case_"))
        if not cases:
            raise self.layout_error(data / "case_00000", "no case_XXXXX folder")
        labelled, unlabelled = [], []
        for d in cases:
            image = d / "imaging.nii.gz"
            if not image.is_file():
                raise BadInputError(image, "imaging.nii.gz missing in the case folder")
            label = d / f"{options['segmentation']}.nii.gz"
            if label.is_file():
                check_pair(image, label, options["affine_atol"])
                labelled.append(VolumeCase(d.name, image, label))
            else:
                unlabelled.append(VolumeCase(d.name, image))
        if not labelled:
            raise BadInputError(data, f"no case has {options['segmentation']}.nii.gz; check the 'segmentation' option")
        return labelled, unlabelled

    def build(self, layout: tuple[list[VolumeCase], list[VolumeCase]], dst: Path, **options: Any) -> dict[str, Any]:
        labelled, unlabelled = layout
        return build_volume_datalist(
            "KiTS21", "KiTS21 kidney / tumor / cyst CT.", "kits21", labelled, unlabelled, KITS21_LABELS, dst, options
        )
