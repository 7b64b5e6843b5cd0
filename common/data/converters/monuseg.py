"""MoNuSeg 2018 (official release layout) -> PNG image/mask pairs + datalist (bundles/textdiff/docs/sources.md §1.2,
bundles/cdal/docs/sources.md §1.1).

Accepted source layouts (``SRC`` is any one of the three)::

    MoNuSeg 2018 Training Data/          # training release (30 cases)
        Tissue Images/<case>.tif         #   1000x1000 RGB H&E
        Annotations/<case>.xml           #   Aperio ImageScope XML, one Region per nucleus
    MoNuSegTestData/                     # test release (14 cases)
        <case>.tif
        <case>.xml                       #   side by side with the image
    <parent>/                            # a folder holding the training release and (optionally) the test release
        MoNuSeg 2018 Training Data/...
        MoNuSegTestData/...

A training-release folder is recognised by its ``Tissue Images/`` + ``Annotations/`` sub-folders, a test-release
folder by ``.tif`` files directly inside it. Hidden and macOS ``._*`` files are ignored. The datalist needs the
training release; the test release alone is rejected.

Output (``DST``)::

    imagesTr/<case>.png   labelsTr/<case>.png    # training release (training + validation + test_fraction part)
    imagesTs/<case>.png   labelsTs/<case>.png    # test release
    datalist.json

Images are RGB uint8 PNG (pixels copied unchanged from the .tif). Masks are single-channel uint8 PNG with
**0 = background, 1 = nucleus** (so ``labels`` in the datalist applies as is; no rescaling in the bundles; use
``>0`` if a mask was made elsewhere with 0/255). Polygons are rasterised with ``PIL.ImageDraw.polygon`` (vertex
(X, Y) = (column, row), outline included); overlapping nuclei merge in the binary mask.

Splits: the training release is split with :func:`common.data.datalist.split_cases` (seeded; ``val_fraction`` of
it to validation, ``test_fraction`` (default 0) to test); every test-release case goes to ``test``.

Text per case: from ``text_file`` (JSON/CSV, image/mask name -> sentence; ``text_source`` = "dataset") or
generated from the mask by :func:`common.data.describe.describe_nuclei_mask` (``text_source`` = "generated";
``text_style`` "lvit" (LViT's vocabulary, default) or "detailed" (adds the nuclei count and area)).

Errors (all :class:`BadInputError` naming the file): a .tif without its .xml (or an .xml without its .tif),
unparsable XML, a vertex missing X/Y, a polygon outside the image (beyond ``vertex_tolerance`` pixels), an image
that is not 8-bit RGB (RGBA with an all-opaque alpha channel is accepted and the alpha dropped).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import numpy as np
import tifffile
from common.data.converters import register_converter
from common.data.converters.base import DatasetConverter, load_text_file, lookup_text, relative_path, visible_files
from common.data.datalist import split_cases
from common.data.describe import describe_nuclei_mask
from common.errors import BadInputError
from common.io.atomic import atomic_path
from PIL import Image, ImageDraw

__all__ = [
    "MONUSEG_TEST_FOLDER",
    "MONUSEG_TRAIN_FOLDER",
    "MoNuSegConverter",
    "rasterize_polygons",
    "read_aperio_polygons",
    "read_rgb_tif",
]

MONUSEG_TRAIN_FOLDER = "MoNuSeg 2018 Training Data"
MONUSEG_TEST_FOLDER = "MoNuSegTestData"
_TIF = (".tif", ".tiff")


@dataclass
class MoNuSegCase:
    """One image + annotation pair of a release."""

    case_id: str
    image: Path
    annotation: Path


@dataclass
class MoNuSegLayout:
    """The releases found under ``SRC``."""

    training: list[MoNuSegCase] = field(default_factory=list)
    test: list[MoNuSegCase] = field(default_factory=list)


def read_rgb_tif(path: Path) -> np.ndarray:
    """Read an 8-bit RGB TIFF as ``(H, W, 3)`` uint8; RGBA with an all-opaque alpha loses its alpha channel."""
    try:
        arr = tifffile.imread(path)
    except Exception as err:  # tifffile raises several types for broken files
        raise BadInputError(path, f"cannot read the TIFF image ({err})") from None
    if arr.ndim == 3 and arr.shape[-1] == 4 and arr.dtype == np.uint8:
        if not np.all(arr[..., 3] == 255):
            raise BadInputError(path, "RGBA image with transparent pixels; expected an 8-bit RGB H&E image")
        arr = arr[..., :3]
    if arr.ndim != 3 or arr.shape[-1] != 3 or arr.dtype != np.uint8:
        raise BadInputError(
            path, f"image is not 8-bit RGB: shape {arr.shape}, dtype {arr.dtype}; expected (H, W, 3) uint8 H&E"
        )
    return np.ascontiguousarray(arr)


def read_aperio_polygons(path: Path) -> list[tuple[str, np.ndarray]]:
    """Polygons of an Aperio ImageScope XML: ``[(region_id, vertices (N, 2) float [X, Y]), ...]``.

    Reads every ``Annotations/Annotation/Regions/Region/Vertices/Vertex`` (X, Y attributes; Z ignored).
    """
    try:
        root = ElementTree.parse(path).getroot()
    except (ElementTree.ParseError, OSError) as err:
        raise BadInputError(path, f"unparsable annotation XML ({err})") from None
    if root.tag != "Annotations":
        raise BadInputError(path, f"not an Aperio ImageScope XML: root element <{root.tag}>, expected <Annotations>")
    polygons = []
    for k, region in enumerate(root.iter("Region")):
        rid = region.get("Id", f"#{k}")
        verts = []
        for v in region.iter("Vertex"):
            try:
                verts.append((float(v.attrib["X"]), float(v.attrib["Y"])))
            except (KeyError, ValueError):
                raise BadInputError(path, f"region {rid}: vertex without numeric X/Y attributes: {v.attrib}") from None
        if verts:
            polygons.append((rid, np.asarray(verts, dtype=np.float64)))
    return polygons


def rasterize_polygons(
    polygons: list[tuple[str, np.ndarray]], shape: tuple[int, int], source: Path, tolerance: float = 2.0
) -> np.ndarray:
    """Binary mask ``(H, W)`` uint8 {0, 1} of the union of the polygons (PIL, outline included).

    Raises:
        BadInputError: a vertex lies more than ``tolerance`` pixels outside the image (names ``source``).
    """
    h, w = shape
    img = Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(img)
    for rid, pts in polygons:
        x, y = pts[:, 0], pts[:, 1]
        if x.min() < -tolerance or y.min() < -tolerance or x.max() > w + tolerance or y.max() > h + tolerance:
            raise BadInputError(
                source,
                f"region {rid}: polygon outside the {w}x{h} image (X {x.min():.1f}..{x.max():.1f}, "
                f"Y {y.min():.1f}..{y.max():.1f}); is this the annotation of another image?",
            )
        coords = [(float(a), float(b)) for a, b in pts]
        if len(coords) == 1:
            draw.point(coords, fill=1)
        else:
            draw.polygon(coords, fill=1, outline=1)
    return np.asarray(img, dtype=np.uint8)


def _write_png(arr: np.ndarray, path: Path) -> None:
    with atomic_path(path) as tmp:
        Image.fromarray(arr).save(tmp, format="PNG")


@register_converter("monuseg")
class MoNuSegConverter(DatasetConverter):
    """MoNuSeg 2018 training (+ test) release -> PNG pairs + datalist (see module docstring)."""

    description = "MoNuSeg 2018 nuclei (H&E .tif + Aperio .xml) -> PNG image/mask pairs"
    expected_layout = (
        f"  {MONUSEG_TRAIN_FOLDER}/Tissue Images/<case>.tif + {MONUSEG_TRAIN_FOLDER}/Annotations/<case>.xml\n"
        f"  and optionally {MONUSEG_TEST_FOLDER}/<case>.tif + <case>.xml (side by side);\n"
        "  SRC may be the training-release folder itself or a folder holding both releases"
    )
    options = {
        "text_style": ("lvit", "generated text: 'lvit' (LViT vocabulary) or 'detailed' (adds count and area)"),
        "vertex_tolerance": (2.0, "pixels a polygon vertex may lie outside the image before it is an error"),
    }

    def check_layout(self, src: Path, options: Mapping[str, Any]) -> MoNuSegLayout:
        """Find the releases under ``src`` and pair every .tif with its .xml."""
        if (src / "Tissue Images").exists() or (src / "Annotations").exists() or src.name == MONUSEG_TRAIN_FOLDER:
            return MoNuSegLayout(training=self._training_release(src))
        if src.name == MONUSEG_TEST_FOLDER or visible_files(src, _TIF):
            raise self.layout_error(
                src.parent / MONUSEG_TRAIN_FOLDER,
                "only the test release was given; the datalist needs the training release too -- pass the folder "
                "holding both",
            )
        train_dir, test_dir = src / MONUSEG_TRAIN_FOLDER, src / MONUSEG_TEST_FOLDER
        if not train_dir.is_dir():
            raise self.layout_error(train_dir, "missing training-release folder")
        layout = MoNuSegLayout(training=self._training_release(train_dir))
        if test_dir.is_dir():
            layout.test = self._pairs(test_dir, test_dir, test_dir)
        return layout

    def _training_release(self, folder: Path) -> list[MoNuSegCase]:
        images, annotations = folder / "Tissue Images", folder / "Annotations"
        for sub in (images, annotations):
            if not sub.is_dir():
                raise self.layout_error(sub, "missing folder")
        return self._pairs(folder, images, annotations)

    def _pairs(self, release: Path, images: Path, annotations: Path) -> list[MoNuSegCase]:
        tifs = visible_files(images, _TIF)
        if not tifs:
            raise self.layout_error(images, "no .tif images found")
        xml_keys = {p.stem: p for p in visible_files(annotations, (".xml",))}
        cases = []
        for tif in tifs:
            xml = xml_keys.pop(tif.stem, None)
            if xml is None:
                raise BadInputError(annotations / f"{tif.stem}.xml", f"annotation missing for image {tif}")
            cases.append(MoNuSegCase(tif.stem, tif, xml))
        if xml_keys:
            orphan = sorted(xml_keys.values())[0]
            raise BadInputError(orphan, f"annotation without an image (expected {images / (orphan.stem + '.tif')})")
        return cases

    def build(self, layout: MoNuSegLayout, dst: Path, **options: Any) -> dict[str, Any]:
        """Rasterise every case, write PNGs under ``dst`` and return the datalist document."""
        ids = [c.case_id for c in layout.training] + [c.case_id for c in layout.test]
        dup = sorted({i for i in ids if ids.count(i) > 1})
        if dup:
            raise BadInputError(dup[0], "case id present in both the training and the test release")
        table = load_text_file(options["text_file"]) if options["text_file"] else None
        if options["text_style"] not in ("lvit", "detailed"):
            raise BadInputError("text_style", f"must be 'lvit' or 'detailed', got {options['text_style']!r}")

        def convert_case(case: MoNuSegCase, sub: str) -> dict[str, Any]:
            image = read_rgb_tif(case.image)
            polygons = read_aperio_polygons(case.annotation)
            mask = rasterize_polygons(polygons, image.shape[:2], case.annotation, float(options["vertex_tolerance"]))
            img_path, lbl_path = (
                dst / f"images{sub}" / f"{case.case_id}.png",
                dst / f"labels{sub}" / f"{case.case_id}.png",
            )
            _write_png(image, img_path)
            _write_png(mask, lbl_path)
            if table is not None:
                text, source = lookup_text(table, case.case_id, options["text_file"]), "dataset"
            else:
                text = describe_nuclei_mask(mask, count=len(polygons), style=options["text_style"])
                source = "generated"
            return {
                "case_id": case.case_id,
                "image": relative_path(img_path, dst),
                "label": relative_path(lbl_path, dst),
                "text": text,
                "text_source": source,
                "n_nuclei": len(polygons),
            }

        by_id = {c.case_id: convert_case(c, "Tr") for c in layout.training}
        split = split_cases(list(by_id), options["val_fraction"], options["test_fraction"], options["seed"])
        test_entries = [by_id[i] for i in split["test"]] + [convert_case(c, "Ts") for c in layout.test]
        return {
            "name": "MoNuSeg",
            "description": (
                "MoNuSeg 2018 multi-organ nuclei segmentation (H&E, 40x). Converted by common.data.converters.monuseg: "
                "RGB PNG images, uint8 PNG masks with 0 = background, 1 = nucleus. training/validation from the "
                f"training release (seed {options['seed']}, val_fraction {options['val_fraction']}), test = test "
                "release"
                + (f" + test_fraction {options['test_fraction']} of the training release" if split["test"] else "")
            ),
            "source_layout": "monuseg-2018",
            "spatial_dims": 2,
            "modality": {"0": "H&E"},
            "labels": {"0": "background", "1": "nucleus"},
            "training": [by_id[i] for i in split["training"]],
            "validation": [by_id[i] for i in split["validation"]],
            "test": test_entries,
        }
