"""Your own images (and optionally masks and texts) in two plain folders -> datalist.

Layout::

    SRC/images/<case>.<ext>      2D: .png .tif .tiff .jpg .jpeg .bmp   3D: .nii.gz .nii   (one kind per dataset)
    SRC/labels/<case>.<ext>      optional; same case name (file name without extension), integer class ids

Texts (every case needs one, the datalist format's rule; a text-guided bundle conditions on it): ``text_file`` (JSON
or CSV ``image|case_id|name -> text|description``, see :func:`common.data.converters.base.load_text_file`) and/or one
``text`` for every case the file does not list (e.g. the prompt a bundle was trained with). Images are referenced in
place (not copied), except TIFF: the bundles read 2D images as PNG/JPEG/BMP (MONAI's PIL reader), so a ``.tif`` /
``.tiff`` image or mask is written once as ``DST/images|labels/<case>.png`` with its pixels unchanged (8- or 16-bit
grey, 8-bit RGB/RGBA; other TIFF flavours -- float, multi-page, more channels -- are refused naming the file).
Every file the datalist lists is then read completely (a truncated file fails the conversion).

Splits: without ``SRC/labels`` every case goes to ``test`` (an inference-only datalist: segment your images with a
trained bundle). With labels, ``split="auto"`` (default) splits the cases with
:func:`common.data.datalist.split_cases` (``val_fraction``, ``test_fraction``, ``seed``) for training your own
model; ``split="test"`` puts all of them in ``test`` (evaluate a trained bundle on them).

Errors (:class:`BadInputError` naming the file): no images, two files of one case name, mixed 2D/3D files, an image
without its label (when labels exist) or a label without its image, image/label size (2D) or shape/affine (3D) mismatch,
a case without text, unreadable files.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common.data.converters import register_converter
from common.data.converters.base import (
    DatasetConverter,
    case_key,
    load_text_file,
    lookup_text,
    relative_path,
    visible_files,
)
from common.data.datalist import split_cases
from common.errors import BadInputError

__all__ = ["FolderConverter"]

SUFFIXES_2D = (".png", ".tif", ".tiff", ".jpg", ".jpeg", ".bmp")
SUFFIXES_3D = (".nii.gz", ".nii")


@dataclass
class FolderLayout:
    images: dict[str, Path]
    labels: dict[str, Path]
    spatial_dims: int


def _is_3d(path: Path) -> bool:
    return path.name.lower().endswith(SUFFIXES_3D)


def _size_2d(path: Path) -> tuple[int, int]:
    from PIL import Image

    try:
        with Image.open(path) as im:
            return im.size
    except Exception as err:
        raise BadInputError(path, f"cannot read the image ({err})") from None


def _tiff_as_png(src: Path, dst: Path) -> Path:
    """Write the single-page TIFF ``src`` as the PNG ``dst`` with its pixel values unchanged; returns ``dst``."""
    import numpy as np
    from common.io.atomic import atomic_path
    from PIL import Image

    try:
        import tifffile

        arr = np.asarray(tifffile.imread(src))
    except Exception as err:
        raise BadInputError(src, f"cannot read the TIFF ({type(err).__name__}: {err})") from None
    if arr.ndim == 3 and arr.shape[0] in (3, 4) and arr.shape[-1] not in (3, 4):
        arr = np.moveaxis(arr, 0, -1)  # planar (C, H, W) RGB -> (H, W, C)
    grey = arr.ndim == 2
    if not (grey and arr.dtype in (np.uint8, np.uint16)) and not (
        arr.ndim == 3 and arr.shape[-1] in (3, 4) and arr.dtype == np.uint8
    ):
        raise BadInputError(
            src,
            f"TIFF of shape {arr.shape} and type {arr.dtype} has no PNG equivalent (8/16-bit grey or 8-bit RGB/RGBA): "
            "export it as PNG yourself (a multi-page or float TIFF needs a choice of page or scaling)",
        )
    with atomic_path(dst) as tmp:
        Image.fromarray(arr).save(tmp, format="PNG")
    return dst


def _by_case(files: list[Path]) -> dict[str, Path]:
    """``{case name: file}``; two files with one case name (``a.png`` + ``a.jpg``) are an error naming both."""
    out: dict[str, Path] = {}
    for f in files:
        cid = case_key(f)
        if cid in out:
            raise BadInputError(f, f"same case name {cid!r} as {out[cid].name}; keep one file per case")
        out[cid] = f
    return out


@register_converter("folder")
class FolderConverter(DatasetConverter):
    """``SRC/images`` (+ ``SRC/labels``) -> datalist (see module docstring)."""

    description = "your own data: SRC/images/<case>.<ext> (+ SRC/labels/<case>.<ext>), text per case or for all"
    expected_layout = (
        "  SRC/images/<case>.png|.tif|.jpg (2D) or <case>.nii.gz|.nii (3D)\n"
        "  SRC/labels/<case>.<ext> (optional, same case names, integer class ids)"
    )
    options = {
        "split": ("auto", "'auto': labelled cases split into training/validation/test; 'test': all cases in test"),
        "test_fraction": (0.2, "with labels and split 'auto': fraction of the cases held out for test"),
        "text": (None, "one sentence for every case (with text_file: for the cases the file does not list)"),
        "modality": ("unknown", "modality written into the datalist (e.g. CT, MRI, US, histology)"),
        "label_names": (["foreground"], "names of the classes 1..K (class 0 is background)"),
        "affine_atol": (1e-3, "3D: largest image/label affine difference accepted"),
    }

    def check_layout(self, src: Path, options: Mapping[str, Any]) -> FolderLayout:
        img_dir, lbl_dir = src / "images", src / "labels"
        if not img_dir.is_dir():
            raise self.layout_error(img_dir, "missing images folder")
        files = visible_files(img_dir, SUFFIXES_2D + SUFFIXES_3D)
        if not files:
            raise self.layout_error(img_dir, "no image files")
        dims = {3 if _is_3d(f) else 2 for f in files}
        if len(dims) > 1:
            raise BadInputError(img_dir, "mixes 2D images and 3D NIfTI volumes; keep one kind per dataset")
        images = _by_case(files)
        labels: dict[str, Path] = {}
        if lbl_dir.is_dir():
            labels = _by_case(visible_files(lbl_dir, SUFFIXES_2D + SUFFIXES_3D))
            for cid, f in labels.items():
                if cid not in images:
                    raise BadInputError(f, f"label without an image named {cid}.* in {img_dir}")
            for cid, f in images.items():
                if cid not in labels:
                    raise BadInputError(f, f"image without a label named {cid}.* in {lbl_dir}")
        if options["split"] not in ("auto", "test"):
            raise BadInputError("split", f"must be 'auto' or 'test', got {options['split']!r}")
        return FolderLayout(images, labels, dims.pop())

    def build(self, layout: FolderLayout, dst: Path, **options: Any) -> dict[str, Any]:
        table = load_text_file(options["text_file"]) if options["text_file"] else None
        text = options["text"]
        if text is not None and not isinstance(text, str):
            text = str(text)  # --option text=42 arrives parsed as JSON
        if table is None and (not isinstance(text, str) or not text.strip()):
            raise BadInputError(
                "text",
                "every case needs a text: pass --option text='<one sentence for all cases>' or "
                "--option text_file=<csv/json mapping case -> sentence>",
            )
        for cid, label in layout.labels.items():
            image = layout.images[cid]
            if layout.spatial_dims == 2:
                if _size_2d(image) != _size_2d(label):
                    raise BadInputError(
                        label, f"size {_size_2d(label)} differs from its image {image} {_size_2d(image)}"
                    )
            else:
                from common.data.converters._nifti_pairs import check_pair

                check_pair(image, label, float(options["affine_atol"]))

        def readable(path: Path, kind: str) -> Path:
            if layout.spatial_dims == 2 and path.suffix.lower() in (".tif", ".tiff"):
                return _tiff_as_png(path, dst / kind / f"{case_key(path)}.png")
            return path

        images = {cid: readable(f, "images") for cid, f in layout.images.items()}
        labels = {cid: readable(f, "labels") for cid, f in layout.labels.items()}

        def entry(cid: str) -> dict[str, Any]:
            from_file = table is not None and (cid in table or not isinstance(text, str) or not text.strip())
            e = {
                "case_id": cid,
                "image": relative_path(images[cid], dst),
                "text": lookup_text(table, cid, options["text_file"]) if from_file else str(text).strip(),
                "text_source": "dataset" if from_file else "given",
            }
            if cid in labels:
                e["label"] = relative_path(labels[cid], dst)
            return e

        names = options["label_names"]
        names = [names] if isinstance(names, str) else list(names)
        doc: dict[str, Any] = {
            "name": "folder",
            "description": f"user images from {layout.images[next(iter(layout.images))].parent.parent}",
            "source_layout": "folder",
            "spatial_dims": layout.spatial_dims,
            "modality": {"0": str(options["modality"])},
            "labels": {"0": "background", **{str(i + 1): n for i, n in enumerate(names)}},
        }
        ids = sorted(layout.images)
        if not layout.labels or options["split"] == "test":
            doc["test"] = [entry(c) for c in ids]
            return doc
        parts = split_cases(ids, float(options["val_fraction"]), float(options["test_fraction"]), int(options["seed"]))
        for split in ("training", "validation", "test"):
            doc[split] = [entry(c) for c in parts[split]]
        return doc
