"""Kaggle "Chest Xray Masks and Labels" (Montgomery + Shenzhen lungs) -> datalist with 0/1 masks
(bundles/cdal/docs/sources.md §1.2).

Accepted source layout (``SRC`` is the folder holding ``CXR_png`` and ``masks``, e.g. ``Lung Segmentation/``)::

    CXR_png/MCUCXR_0001_0.png      # 800 images: 138 Montgomery (MCUCXR_*) + 662 Shenzhen (CHNCXR_*)
    CXR_png/CHNCXR_0001_0.png
    masks/MCUCXR_0001_0.png        # 704 masks (0/255): Montgomery masks share the image name,
    masks/CHNCXR_0001_0_mask.png   #   Shenzhen masks add the suffix "_mask" (566 of the 662 images have one)

Pairs: every mask with its image (``<name>.png`` or ``<name without _mask>.png``); images without a mask are
skipped (listed in the datalist's ``unpaired_images`` count). A mask without its image is an error naming both.

Folds, exactly as the official ``preprocess_dataset/Lung.py`` (the paper's "566 train / 138 test, 3-fold CV"):
``fold=0``: test = the 138 Montgomery cases, training = the 566 Shenzhen cases; ``fold=1`` / ``fold=2``: test = the
first / last 138 Shenzhen cases (sorted by mask name), training = the other Shenzhen cases + the Montgomery cases.
``val_fraction`` (default 0 here: the official code has no validation split) moves a seeded fraction of the
training cases to ``validation``.

Output (``DST``): ``labels/<case>.png`` = single-channel uint8 masks with **0 = background, 1 = lung** (the official
code maps lungs to -1 inside the model, an inverted polarity that we do not copy); images are referenced in place
(relative paths, not copied). Text: ``text_file`` (JSON/CSV) or a generated sentence naming the source set.

Errors (:class:`BadInputError` naming the file): missing ``CXR_png``/``masks``, a mask without its image, a mask
whose size differs from its image, a mask that is not binary (values other than 0 and one foreground value).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from common.data.converters import register_converter
from common.data.converters.base import DatasetConverter, load_text_file, lookup_text, relative_path, visible_files
from common.data.datalist import split_cases
from common.errors import BadInputError
from common.io.atomic import atomic_path
from PIL import Image

__all__ = ["CXRLungsConverter", "cxr_fold_split"]


@dataclass
class CXRCase:
    case_id: str
    image: Path
    mask: Path
    source: str  # "montgomery" | "shenzhen"


def cxr_fold_split(cases: list[CXRCase], fold: int) -> tuple[list[CXRCase], list[CXRCase]]:
    """``(training, test)`` of ``fold`` in 0..2 (official Lung.py; see the module docstring)."""
    mont = sorted((c for c in cases if c.source == "montgomery"), key=lambda c: c.mask.name)
    shen = sorted((c for c in cases if c.source == "shenzhen"), key=lambda c: c.mask.name)
    n = len(mont)
    if fold == 0:
        return shen, mont
    if fold not in (1, 2):
        raise BadInputError("fold", f"must be 0, 1 or 2, got {fold!r}")
    if len(shen) < n:
        raise BadInputError("fold", f"fold {fold} needs at least {n} Shenzhen cases, found {len(shen)}")
    test = shen[:n] if fold == 1 else shen[len(shen) - n :]
    rest = shen[n:] if fold == 1 else shen[: len(shen) - n]
    return mont + rest if fold == 1 else rest + mont, test


@register_converter("cxr_lungs")
class CXRLungsConverter(DatasetConverter):
    """Kaggle Chest Xray Masks and Labels (Montgomery + Shenzhen) -> datalist (see module docstring)."""

    description = "Kaggle Chest Xray Masks and Labels (Montgomery + Shenzhen lungs, CXR_png + masks) -> 0/1 masks"
    expected_layout = (
        "  CXR_png/<name>.png (MCUCXR_* Montgomery, CHNCXR_* Shenzhen)\n"
        "  masks/<name>.png (Montgomery) or masks/<name>_mask.png (Shenzhen), 0/255"
    )
    options = {"fold": (0, "cross-validation fold 0, 1 or 2 (official Lung.py)")}

    def option_defaults(self) -> dict[str, Any]:
        merged = super().option_defaults()
        merged["val_fraction"] = 0.0  # the official code has no validation split
        return merged

    def check_layout(self, src: Path, options: Mapping[str, Any]) -> list[CXRCase]:
        images_dir, masks_dir = src / "CXR_png", src / "masks"
        for d in (images_dir, masks_dir):
            if not d.is_dir():
                raise self.layout_error(d, "missing folder")
        images = {p.name: p for p in visible_files(images_dir, (".png",))}
        masks = visible_files(masks_dir, (".png",))
        if not masks:
            raise self.layout_error(masks_dir, "no mask PNGs found")
        cases = []
        for m in masks:
            stem = m.stem
            image_name = (stem[: -len("_mask")] if stem.endswith("_mask") else stem) + ".png"
            if image_name not in images:
                raise BadInputError(m, f"mask without its image {images_dir / image_name}")
            source = "montgomery" if image_name.upper().startswith("MCU") else "shenzhen"
            cases.append(CXRCase(Path(image_name).stem, images[image_name], m, source))
        self._n_unpaired = len(images) - len(cases)
        return cases

    def build(self, layout: list[CXRCase], dst: Path, **options: Any) -> dict[str, Any]:
        fold = int(options["fold"])
        training, test = cxr_fold_split(layout, fold)
        table = load_text_file(options["text_file"]) if options["text_file"] else None

        def entry(case: CXRCase) -> dict[str, Any]:
            with Image.open(case.image) as im:
                size = im.size
            with Image.open(case.mask) as mm:
                mask = np.asarray(mm.convert("L"))
            if (mask.shape[1], mask.shape[0]) != size:
                raise BadInputError(
                    case.mask,
                    f"mask size {mask.shape[1]}x{mask.shape[0]} differs from image {case.image} ({size[0]}x{size[1]})",
                )
            values = np.unique(mask)
            if len(values) > 2 or (len(values) == 2 and values[0] != 0):
                raise BadInputError(
                    case.mask, f"mask is not binary: values {values[:6].tolist()}; expected 0 and one foreground value"
                )
            out = dst / "labels" / f"{case.case_id}.png"
            out.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(out) as tmp:
                Image.fromarray((mask > 0).astype(np.uint8)).save(tmp, format="PNG")
            if table is not None:
                text, source = lookup_text(table, case.case_id, options["text_file"]), "dataset"
            else:
                where = "Montgomery County" if case.source == "montgomery" else "Shenzhen"
                text, source = (
                    f"Frontal chest X-ray from the {where} set showing the left and right lungs.",
                    "generated",
                )
            return {
                "case_id": case.case_id,
                "image": relative_path(case.image, dst),
                "label": relative_path(out, dst),
                "text": text,
                "text_source": source,
                "source_set": case.source,
            }

        by_id = {c.case_id: entry(c) for c in training}
        split = split_cases(list(by_id), options["val_fraction"], 0.0, options["seed"])
        return {
            "name": "CXR-lungs",
            "description": (
                "Kaggle Chest Xray Masks and Labels (Montgomery County + Shenzhen), converted by "
                f"common.data.converters.cxr_lungs: fold {fold} of the official 3-fold split; masks 0 = background, "
                f"1 = lung; {getattr(self, '_n_unpaired', 0)} image(s) without a mask skipped"
            ),
            "source_layout": "kaggle-chest-xray-masks-and-labels",
            "spatial_dims": 2,
            "modality": {"0": "X-ray"},
            "labels": {"0": "background", "1": "lung"},
            "fold": fold,
            "training": [by_id[i] for i in split["training"]],
            "validation": [by_id[i] for i in split["validation"]],
            "test": [entry(c) for c in test],
        }
