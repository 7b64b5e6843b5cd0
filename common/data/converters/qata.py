"""QaTa-COV19 with LViT's text annotations (LViT release layout) -> RGB PNG image/mask pairs + datalist.

TextDiff reads its data in LViT's layout (bundles/textdiff/docs/sources.md §1.1, §1.3)::

    SRC/
        Train_Folder/img/<name>.png     Train_Folder/labelcol/mask_<name>.png     Train_Folder/Train_text.xlsx
        Val_Folder/img/...              Val_Folder/labelcol/...                   Val_Folder/Val_text.xlsx
        Test_Folder/img/...             Test_Folder/labelcol/...                  Test_Folder/Test_text.xlsx

``*_text.xlsx`` (one sheet, header ``Image | Description``, ``Image`` = the MASK file name) holds one sentence per
image, e.g. "Bilateral pulmonary infection, two infected areas, upper left lung and upper right lung."; a ``.csv``
or ``.json`` export with the same columns (:func:`common.data.converters.base.load_text_file`) is accepted instead.
The .xlsx is read with :mod:`common.data.xlsx` (standard library; no pandas/openpyxl). ``Val_Folder`` is optional:
without it ``val_fraction`` of ``Train_Folder`` becomes validation (seeded).

The mask of image ``<stem>.<ext>`` is ``labelcol/<mask_prefix><stem>.png`` (QaTa: ``mask_`` + image name; LViT's
MoNuSeg: ``mask_prefix=""``, image ``.tif`` -> mask ``.png``).

Output (``DST``): ``imagesTr/``, ``labelsTr/`` (Train + Val), ``imagesTs/``, ``labelsTs/`` (Test), ``datalist.json``.
Images are written as **3-channel** RGB PNG (a grayscale X-ray repeated on 3 channels, as the official code's
``cv2.imread`` reads it); masks as uint8 PNG with 0 = background, 1 = lesion (QaTa's 0/255 masks: ``> 0``).
Texts: ``text_source`` "dataset"; multi-line descriptions are joined with spaces.

Label-efficient subsets (150 QaTa / 5 MoNuSeg training images, paper §3) are drawn by the bundle
(``num_train_cases``), not here, so one converted dataset serves every setting.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from common.data.converters import register_converter
from common.data.converters.base import DatasetConverter, case_key, load_text_file, relative_path, visible_files
from common.data.datalist import split_cases
from common.data.xlsx import read_xlsx_table
from common.errors import BadInputError
from common.io.atomic import atomic_path
from PIL import Image

__all__ = ["LVIT_FOLDERS", "QaTaConverter", "read_lvit_text_table"]

#: LViT split folders -> (datalist split, text table stem)
LVIT_FOLDERS: dict[str, tuple[str, str]] = {
    "Train_Folder": ("training", "Train_text"),
    "Val_Folder": ("validation", "Val_text"),
    "Test_Folder": ("test", "Test_text"),
}
_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")


def read_lvit_text_table(path: str | Path) -> dict[str, str]:
    """LViT text table (``.xlsx``, ``.csv`` or ``.json``; columns ``Image``, ``Description``) ->
    ``{case_key(Image): sentence}`` (keys without folder/extension, e.g. ``"mask_covid_1"``)."""
    path = Path(path)
    if path.suffix.lower() != ".xlsx":
        return load_text_file(path)
    rows = read_xlsx_table(path)
    table: dict[str, str] = {}
    for i, row in enumerate(rows, start=2):
        lowered = {k.strip().lower(): v for k, v in row.items()}
        name = lowered.get("image", lowered.get("name", ""))
        text = lowered.get("description", lowered.get("text", ""))
        if not name.strip():
            raise BadInputError(path, f"row {i}: no image name (header must have 'Image' and 'Description')")
        text = " ".join(line.strip() for line in str(text).splitlines() if line.strip())
        if not text:
            raise BadInputError(path, f"row {i}: empty description for {name!r}")
        table[case_key(name.strip())] = text
    if not table:
        raise BadInputError(path, "the text table holds no rows")
    return table


@dataclass
class _Split:
    folder: Path
    split: str
    images: list[Path] = field(default_factory=list)
    table: Path | None = None


@register_converter("qata")
class QaTaConverter(DatasetConverter):
    """QaTa-COV19 (or any LViT-layout dataset) with per-image text -> datalist (see module docstring)."""

    description = "QaTa-COV19 / LViT layout ({Train,Val,Test}_Folder/{img,labelcol} + *_text.xlsx) -> PNG pairs"
    expected_layout = (
        "  Train_Folder/img/<name>.png, Train_Folder/labelcol/mask_<name>.png, Train_Folder/Train_text.xlsx\n"
        "  (optional) Val_Folder/... with Val_text.xlsx; Test_Folder/... with Test_text.xlsx\n"
        "  text tables: .xlsx, .csv or .json with columns Image (mask file name) and Description"
    )
    options = {"mask_prefix": ("mask_", "mask file name = <mask_prefix><image stem>.png ('' for LViT's MoNuSeg)")}

    def check_layout(self, src: Path, options: Mapping[str, Any]) -> list[_Split]:
        splits = []
        for folder_name, (split, table_stem) in LVIT_FOLDERS.items():
            folder = src / folder_name
            if not folder.is_dir():
                if folder_name == "Train_Folder":
                    raise self.layout_error(folder, "missing training folder")
                continue
            for sub in ("img", "labelcol"):
                if not (folder / sub).is_dir():
                    raise self.layout_error(folder / sub, "missing folder")
            images = visible_files(folder / "img", _IMAGE_SUFFIXES)
            if not images:
                raise self.layout_error(folder / "img", "no images found")
            tables = [folder / f"{table_stem}{ext}" for ext in (".xlsx", ".csv", ".json")]
            table = next((t for t in tables if t.is_file()), None)
            if table is None and not options.get("text_file"):
                raise BadInputError(
                    folder / f"{table_stem}.xlsx",
                    "text table missing (also looked for .csv/.json); TextDiff needs LViT's text annotations "
                    "(see the LViT README), or pass text_file",
                )
            splits.append(_Split(folder, split, images, table))
        return splits

    def build(self, layout: list[_Split], dst: Path, **options: Any) -> dict[str, Any]:
        common_table = load_text_file(options["text_file"]) if options["text_file"] else None
        prefix = str(options["mask_prefix"])
        entries: dict[str, list[dict[str, Any]]] = {"training": [], "validation": [], "test": []}
        seen: set[str] = set()
        for part in layout:
            table = read_lvit_text_table(part.table) if part.table is not None else common_table
            table_name = part.table or options["text_file"]
            sub = "Ts" if part.split == "test" else "Tr"
            for img_path in part.images:
                cid = case_key(img_path.name)
                if cid in seen:
                    raise BadInputError(img_path, f"case id {cid!r} appears in two folders")
                seen.add(cid)
                mask_path = part.folder / "labelcol" / f"{prefix}{cid}.png"
                if not mask_path.is_file():
                    raise BadInputError(mask_path, f"mask missing for image {img_path} (mask_prefix={prefix!r})")
                mask_key = case_key(mask_path.name)
                text = table.get(mask_key, table.get(cid)) if table is not None else None
                if text is None:
                    raise BadInputError(table_name, f"no description for {mask_path.name} (image {img_path.name})")
                image = _read_rgb(img_path)
                mask = _read_mask(mask_path)
                if mask.shape != image.shape[:2]:
                    raise BadInputError(
                        mask_path, f"mask size {mask.shape} differs from the image's {image.shape[:2]} ({img_path})"
                    )
                out_img, out_lbl = dst / f"images{sub}" / f"{cid}.png", dst / f"labels{sub}" / f"{cid}.png"
                _write_png(image, out_img)
                _write_png(mask, out_lbl)
                entries[part.split].append(
                    {
                        "case_id": cid,
                        "image": relative_path(out_img, dst),
                        "label": relative_path(out_lbl, dst),
                        "text": text,
                        "text_source": "dataset",
                    }
                )
        if not entries["validation"] and entries["training"]:
            by_id = {e["case_id"]: e for e in entries["training"]}
            split = split_cases(list(by_id), options["val_fraction"], 0.0, options["seed"])
            entries["training"] = [by_id[i] for i in split["training"]]
            entries["validation"] = [by_id[i] for i in split["validation"]]
        return {
            "name": "QaTa-COV19",
            "description": (
                "QaTa-COV19 chest X-rays with COVID-19 lesion masks and LViT's text annotations, converted by "
                "common.data.converters.qata: 3-channel PNG images, uint8 PNG masks 0 = background, 1 = lesion"
            ),
            "source_layout": "lvit",
            "spatial_dims": 2,
            "modality": {"0": "X-ray"},
            "labels": {"0": "background", "1": "lesion"},
            **entries,
        }


def _read_rgb(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as im:
            im.load()
            arr = np.asarray(im)
    except Exception as e:  # PIL raises several types for broken files
        raise BadInputError(path, f"cannot read the image ({e})") from None
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=2)
    elif arr.ndim == 3 and arr.shape[2] == 4:
        arr = arr[..., :3]
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise BadInputError(path, f"expected a grayscale or RGB image, got shape {arr.shape}")
    if arr.dtype != np.uint8:
        if arr.max() > 255 or arr.min() < 0:
            raise BadInputError(path, f"expected 8-bit intensities, got {arr.dtype} in [{arr.min()}, {arr.max()}]")
        arr = arr.astype(np.uint8)
    return np.ascontiguousarray(arr)


def _read_mask(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as im:
            arr = np.asarray(im.convert("L"))
    except Exception as e:
        raise BadInputError(path, f"cannot read the mask ({e})") from None
    return (arr > 0).astype(np.uint8)


def _write_png(arr: np.ndarray, path: Path) -> None:
    with atomic_path(path) as tmp:
        Image.fromarray(arr).save(tmp, format="PNG")
