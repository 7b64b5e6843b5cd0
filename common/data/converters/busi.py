"""BUSI breast ultrasound (Al-Dhabyani et al. 2020) -> grayscale PNG image/mask pairs + K-fold datalists.

Accepted source layout (``SRC`` is the ``Dataset_BUSI_with_GT`` folder or its parent)::

    Dataset_BUSI_with_GT/
        benign/benign (1).png          benign/benign (1)_mask.png   [benign/benign (1)_mask_1.png ...]
        malignant/malignant (1).png    malignant/malignant (1)_mask.png
        normal/normal (1).png          normal/normal (1)_mask.png   (all-zero masks)

Some images have several masks (``_mask_1``, ``_mask_2``, one lesion each): they are united. Hidden and macOS ``._*``
files are ignored. Images (8-bit gray or RGB-stored gray) are written as single-channel uint8 PNG (``L`` = luminance
for RGB, channels checked to be equal is not required), masks as uint8 PNG with **0 = background, 1 = lesion**
("breast cancer" for the default subset), both at the original size::

    DST/images/<class>_<NNN>.png   DST/labels/<class>_<NNN>.png
    DST/datalist.json              # fold ``fold`` held out as test
    DST/datalist_fold<k>.json      # every fold k of the K-fold split

Subset (bundles/diffboost/docs/sources.md §1.1: the paper uses 147 BUSI images without saying which -- UNKNOWN): our
documented default is ``classes=["malignant"]`` (210 images, every one with a lesion; the label is "breast cancer" as in
the authors' preprocessing config); ``["benign", "malignant"]`` (647) is the other sensible choice. Normal images have
empty masks and are skipped unless ``keep_empty`` (DiffBoost trains and evaluates on images with foreground only).

Split: case-level K-fold in natural file order (``benign (2)`` before ``benign (10)``; classes in the order given),
see :func:`common.data.converters._folds.cross_validation_split` (``val_fraction`` of the training cases held out
for validation, default 0.1). Text per case: the task prompt ``text`` (default ``"Breast, Ultrasound"``, the
authors' "<Organ>, <Modality>" prompt, bundles/diffboost/docs/sources.md §3), ``text_source`` "generated"; or from
``text_file``.

Errors (:class:`BadInputError` naming the file): an image without a mask, a mask without its image, a mask whose size
differs from its image, an unreadable PNG, unknown class folders requested, an empty selection.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from common.data.converters import register_converter
from common.data.converters._folds import FOLD_OPTIONS, cross_validation_split
from common.data.converters.base import DatasetConverter, load_text_file, relative_path, visible_files
from common.data.datalist import write_datalist
from common.errors import BadInputError
from common.io.atomic import atomic_path
from PIL import Image

__all__ = ["BUSI_FOLDER", "BUSI_CLASSES", "BUSIConverter", "read_gray_png"]

BUSI_FOLDER = "Dataset_BUSI_with_GT"
BUSI_CLASSES = ("benign", "malignant", "normal")
_NAME = re.compile(r"^(?P<cls>[a-z]+) \((?P<num>\d+)\)(?P<mask>_mask(?:_(?P<k>\d+))?)?\.png$", re.IGNORECASE)


@dataclass
class BUSICase:
    """One image and its mask file(s)."""

    case_id: str
    cls: str
    number: int
    image: Path
    masks: list[Path] = field(default_factory=list)


def read_gray_png(path: Path) -> np.ndarray:
    """``(H, W)`` uint8 of a PNG (RGB/RGBA converted to luminance ``L``); :class:`BadInputError` if unreadable."""
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode in ("I;16", "I", "F"):
                raise BadInputError(path, f"expected an 8-bit image, got PIL mode {im.mode}")
            return np.asarray(im.convert("L"), dtype=np.uint8)
    except BadInputError:
        raise
    except Exception as err:
        raise BadInputError(path, f"cannot read the PNG ({err})") from None


@register_converter("busi")
class BUSIConverter(DatasetConverter):
    """BUSI ``Dataset_BUSI_with_GT`` -> grayscale PNG pairs + K-fold datalists (see module docstring)."""

    description = "BUSI breast ultrasound (Dataset_BUSI_with_GT/{benign,malignant,normal}/*.png + *_mask*.png)"
    expected_layout = (
        f"  {BUSI_FOLDER}/<class>/<class> (<n>).png with <class> (<n>)_mask.png [_mask_1.png ...], "
        f"<class> in {list(BUSI_CLASSES)}\n  SRC is {BUSI_FOLDER} or the folder holding it"
    )
    options = {
        "val_fraction": (0.1, "fraction of each fold's training cases held out for validation"),
        **FOLD_OPTIONS,
        "classes": (["malignant"], "BUSI classes to include (our subset choice; the paper's 147 images are unknown)"),
        "keep_empty": (False, "keep images whose mask is empty (normal class)"),
        "text": ("Breast, Ultrasound", "prompt stored as each case's text (DiffBoost '<Organ>, <Modality>')"),
    }

    def check_layout(self, src: Path, options: Mapping[str, Any]) -> list[BUSICase]:
        root = src / BUSI_FOLDER if (src / BUSI_FOLDER).is_dir() else src
        classes = options["classes"]
        classes = [classes] if isinstance(classes, str) else list(classes)
        unknown = [c for c in classes if c not in BUSI_CLASSES]
        if unknown or not classes:
            raise BadInputError(
                "classes", f"unknown BUSI class(es) {unknown or classes}; choose from {list(BUSI_CLASSES)}"
            )
        cases: list[BUSICase] = []
        for cls in classes:
            folder = root / cls
            if not folder.is_dir():
                raise self.layout_error(folder, "missing class folder")
            images: dict[int, BUSICase] = {}
            masks: list[tuple[int, Path]] = []
            for f in visible_files(folder, (".png",)):
                m = _NAME.match(f.name)
                if m is None or m.group("cls").lower() != cls:
                    raise BadInputError(
                        f, f"unexpected file name; expected '{cls} (<n>).png' or '{cls} (<n>)_mask.png'"
                    )
                num = int(m.group("num"))
                if m.group("mask"):
                    masks.append((num, f))
                else:
                    images[num] = BUSICase(f"{cls}_{num:03d}", cls, num, f)
            for num, f in masks:
                if num not in images:
                    raise BadInputError(f, f"mask without its image '{cls} ({num}).png'")
                images[num].masks.append(f)
            for num in sorted(images):
                case = images[num]
                if not case.masks:
                    raise BadInputError(
                        case.image, f"image without a mask; expected '{cls} ({num})_mask.png' beside it"
                    )
                case.masks.sort()
                cases.append(case)
        if not cases:
            raise self.layout_error(root, f"no images in the class folder(s) {classes}")
        return cases

    def build(self, layout: list[BUSICase], dst: Path, **options: Any) -> dict[str, Any]:
        table = load_text_file(options["text_file"]) if options["text_file"] else None
        entries: dict[str, dict[str, Any]] = {}
        skipped = 0
        for case in layout:
            image = read_gray_png(case.image)
            label = np.zeros(image.shape, dtype=np.uint8)
            for mpath in case.masks:
                mask = read_gray_png(mpath)
                if mask.shape != image.shape:
                    raise BadInputError(
                        mpath,
                        f"mask size {mask.shape[::-1]} (W, H) differs from its image {case.image.name} "
                        f"{image.shape[::-1]}; the mask must be drawn on the image's pixel grid",
                    )
                label |= (mask > 127).astype(np.uint8)
            if not label.any() and not options["keep_empty"]:
                skipped += 1
                continue
            img_path, lbl_path = dst / "images" / f"{case.case_id}.png", dst / "labels" / f"{case.case_id}.png"
            for path, arr in ((img_path, image), (lbl_path, label)):
                with atomic_path(path) as tmp:
                    Image.fromarray(arr).save(tmp, format="PNG")
            text, source = str(options["text"]), "generated"
            if table is not None:
                key = case.image.stem
                text, source = table.get(key, table.get(case.case_id, text)), "dataset"
            entries[case.case_id] = {
                "case_id": case.case_id,
                "image": relative_path(img_path, dst),
                "label": relative_path(lbl_path, dst),
                "text": text,
                "text_source": source,
                "busi_class": case.cls,
                "source_image": case.image.name,
            }
        if not entries:
            raise BadInputError(dst, f"no case with a non-empty mask among {len(layout)} image(s); set keep_empty")
        ids = list(entries)
        n_folds, fold = int(options["n_folds"]), int(options["fold"])
        description = (
            f"BUSI ({', '.join(dict.fromkeys(c.cls for c in layout))}; {len(ids)} images with a lesion"
            + (f", {skipped} empty masks skipped" if skipped else "")
            + "): grayscale PNG at the original size, masks 0/1 (union of the _mask files)."
        )
        doc_base: dict[str, Any] = {
            "name": "BUSI",
            "description": description,
            "source_layout": "busi",
            "spatial_dims": 2,
            "modality": {"0": "US"},
            "labels": {"0": "background", "1": "breast cancer" if layout[0].cls == "malignant" else "lesion"},
        }
        return _fold_documents(doc_base, entries, ids, dst, options, n_folds, fold)


def _fold_documents(
    doc_base: dict[str, Any],
    entries: Mapping[str, Mapping[str, Any]],
    ids: list[str],
    dst: Path,
    options: Mapping[str, Any],
    n_folds: int,
    fold: int,
    group_of: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Write ``datalist_fold<k>.json`` for every fold and return the document of fold ``fold``.

    ``group_of`` maps entry id -> case id when entries are slices of cases (the split is over cases).
    """
    from common.data.datalist import split_cases

    groups = list(dict.fromkeys(group_of[i] for i in ids)) if group_of else ids

    def document(split: dict[str, list[str]], k: int | None) -> dict[str, Any]:
        doc = dict(doc_base)
        doc["cross_validation"] = (
            {"n_folds": n_folds, "fold": k, "scheme": "KFold without shuffle over cases in source order"}
            if k is not None
            else {"n_folds": 0}
        )
        for name in ("training", "validation", "test"):
            chosen = set(split[name])
            doc[name] = [dict(entries[i]) for i in ids if (group_of[i] if group_of else i) in chosen]
        return doc

    if n_folds == 0:
        return document(split_cases(groups, options["val_fraction"], options["test_fraction"], options["seed"]), None)
    docs = [
        document(cross_validation_split(groups, n_folds, k, options["val_fraction"], options["seed"]), k)
        for k in range(n_folds)
    ]
    if not 0 <= fold < n_folds:
        raise BadInputError("fold", f"must be in [0, {n_folds}), got {fold}")
    for k, doc in enumerate(docs):
        write_datalist(dst / f"datalist_fold{k}.json", doc, check_files=True)
    return docs[fold]
