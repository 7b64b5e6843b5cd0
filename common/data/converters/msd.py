"""Medical Segmentation Decathlon task folder -> datalist referencing the original NIfTI files (no copies).

Accepted source layout (``SRC`` is the task folder, or a folder holding exactly one task folder)::

    TaskXX_Name/
        dataset.json        # {"name", "modality": {"0": "CT"}, "labels": {"0": "background", ...},
                            #  "numTraining", "training": [{"image": "./imagesTr/x.nii.gz",
                            #                               "label": "./labelsTr/x.nii.gz"}, ...],
                            #  "test": ["./imagesTs/y.nii.gz", ...]}
        imagesTr/*.nii.gz   # 3D (or 4D: X, Y, Z, channel) images
        labelsTr/*.nii.gz   # 3D integer labels
        imagesTs/*.nii.gz   # unlabelled images (optional)

macOS ``._*`` and other hidden files are ignored (when ``dataset.json`` has no ``test`` list, ``imagesTs/`` is
listed). Checks before anything is written: every listed file exists; each image/label pair has the same spatial
shape and affine (``affine_atol`` mm) -- a mismatch raises :class:`BadInputError` naming both files; label values
are integers listed in ``labels``.

Datalist: ``training`` / ``validation`` / ``test`` = seeded split of the labelled cases
(:func:`common.data.datalist.split_cases`, defaults val 0.1 / test 0.2 as in bundles/textdiffseg/docs/sources.md §1.1);
``unlabelled``
= the ``imagesTs`` images. Paths are relative from ``DST`` to the original files. ``modality`` and ``labels`` are
kept (after the options below).

Options:
    channels: list of image channels to use (4D images, e.g. Prostate ``[0]`` = T2). Recorded as top-level
        ``image_channels``; bundles select them after ``EnsureChannelFirstd``, e.g.
        ``{"_target_": "Lambdad", "keys": "image", "func": "$lambda x: x[[0]]"}``.
    label_mapping: ``{orig: target}`` label merge (unlisted values kept), e.g. Pancreas ``{"2": 1}``;
        ``binary=True`` is the shorthand "every non-zero label -> 1" (Prostate, Pancreas merged). Recorded as
        top-level ``label_mapping`` = ``{"orig_labels": [...], "target_labels": [...]}``, i.e. the arguments of
        ``monai.transforms.MapLabelValued(keys="label", orig_labels=..., target_labels=...)``; ``labels`` lists the
        merged classes (names joined with " and ", or ``label_names``).
    label_names: ``{target: name}`` for the classes after merging (e.g. ``{"1": "prostate"}``).
    region / side_reference: see the text template.

Text template (:func:`common.data.describe.describe_labelled_volume`)::

    "<modality> of the <region> showing <structures>."   e.g. "CT of the abdomen showing the right kidney and a
                                                          kidney tumour on the right."

``<modality>`` from the (selected) channel names (``modality_phrase``: "CT", "T2-weighted MRI", ...);
``<region>`` from the task name (``body_region``: Liver/Pancreas/Spleen/Colon/Kidney -> abdomen, Prostate ->
pelvis, Hippocampus/BrainTumour -> brain, Lung/Heart -> chest, else the organ name) or the ``region`` option;
``<structures>`` = the classes present in the (merged) label with their patient side from the affine (NIfTI
RAS+; ``side_reference="none"`` drops sides, advisable for cropped volumes such as Hippocampus).
Unlabelled images get "<modality> of the <region>.".
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from common.data.converters import register_converter
from common.data.converters.base import DatasetConverter, case_key, load_text_file, relative_path, visible_files
from common.data.datalist import split_cases
from common.data.describe import body_region, describe_labelled_volume, describe_unlabelled_volume, modality_phrase
from common.errors import BadInputError

__all__ = ["MSDClasses", "MSDConverter", "read_integer_label"]

_NII = (".nii.gz", ".nii")


@dataclass
class MSDCase:
    """One labelled (``label`` set) or unlabelled case of the task."""

    case_id: str
    image: Path
    label: Path | None = None


@dataclass
class MSDLayout:
    """A checked MSD task folder."""

    task_dir: Path
    meta: dict[str, Any]
    n_channels: int
    training: list[MSDCase] = field(default_factory=list)
    unlabelled: list[MSDCase] = field(default_factory=list)


def read_integer_label(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Label volume ``(X, Y, Z)`` as an integer array (on-disk dtype kept when integer) and its affine ``(4, 4)``.

    Raises:
        BadInputError: unreadable file, non-integer values, negative values or more than 3 non-singleton dims.
    """
    try:
        img = nib.load(str(path))
        arr = np.asanyarray(img.dataobj)
    except Exception as err:  # nibabel raises several types for broken files
        raise BadInputError(path, f"cannot read the NIfTI label ({err})") from None
    while arr.ndim > 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim != 3:
        raise BadInputError(path, f"expected a 3D label volume, got shape {arr.shape}")
    if arr.dtype.kind == "f":
        rounded = np.rint(arr)
        if not np.array_equal(rounded, arr):
            raise BadInputError(path, "label volume holds non-integer values; expected integer class ids")
        arr = rounded.astype(np.int32)
    elif arr.dtype.kind not in "iub":
        raise BadInputError(path, f"unsupported label dtype {arr.dtype}")
    if arr.size and arr.min() < 0:
        raise BadInputError(path, f"negative label value {int(arr.min())}")
    return arr, np.asarray(img.affine, dtype=np.float64)


def _present_values(arr: np.ndarray, chunk: int = 1 << 24) -> list[int]:
    """Distinct non-negative integer values of ``arr`` (bincount over slabs, so huge CT labels stay cheap)."""
    flat = arr.reshape(-1)
    counts = np.zeros(1, dtype=np.int64)
    for start in range(0, flat.size, chunk):
        c = np.bincount(flat[start : start + chunk].astype(np.int64))
        if c.size > counts.size:
            c[: counts.size] += counts
            counts = c
        else:
            counts[: c.size] += c
    return np.flatnonzero(counts).tolist()


def read_new_label(
    case: Any, seen: Mapping[str, Any], labels: Mapping[int, str], duplicate_in: str = "", known: str = "in"
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`read_integer_label` of ``case.label`` once its case id is known to be new (not in ``seen``) and with
    every value among ``labels``; the errors name the label file, ``duplicate_in`` ends the duplicate-id message
    and ``known`` says where the labels come from ("label values [7] are not <known> {...}")."""
    if case.case_id in seen:
        raise BadInputError(case.label, f"duplicate case id {case.case_id!r}{duplicate_in}")
    arr, affine = read_integer_label(case.label)
    unknown = sorted(set(_present_values(arr)) - set(labels))
    if unknown:
        raise BadInputError(case.label, f"label values {unknown} are not {known} {labels}")
    return arr, affine


def labelled_volume_entry(
    case: Any, dst: Path, table: Mapping[str, str] | None, text_file: Any, describe: Callable[[], str]
) -> dict[str, Any]:
    """Datalist entry of a labelled volume (``case``: ``case_id``, ``image``, ``label``): its text from the text file's
    ``table`` (``text_source`` "dataset"; :class:`BadInputError` naming ``text_file`` if the case has none), else
    ``describe()`` ("generated")."""
    if table is not None:
        if case.case_id not in table:
            raise BadInputError(text_file, f"no text for case {case.case_id!r}")
        text, source = table[case.case_id], "dataset"
    else:
        text, source = describe(), "generated"
    return {
        "case_id": case.case_id,
        "image": relative_path(case.image, dst),
        "label": relative_path(case.label, dst),
        "text": text,
        "text_source": source,
    }


def _header(path: Path) -> tuple[tuple[int, ...], np.ndarray]:
    try:
        img = nib.load(str(path))
    except Exception as err:
        raise BadInputError(path, f"cannot read the NIfTI header ({err})") from None
    return tuple(int(s) for s in img.shape), np.asarray(img.affine, dtype=np.float64)


def _int_keys(d: dict[Any, Any], source: Any, what: str) -> dict[int, Any]:
    try:
        return {int(k): v for k, v in d.items()}
    except (TypeError, ValueError):
        raise BadInputError(source, f"{what} keys must be integers, got {list(d)}") from None


@dataclass
class MSDClasses:
    """Label, modality and channel settings of an MSD task after the converter options.

    Built by :meth:`MSDConverter.parse_classes` (shared by the ``msd`` and ``msd_slices`` converters).

    Attributes:
        labels: ``{value: name}`` of ``dataset.json`` ``labels``.
        modality: ``{channel: name}`` of the selected channels (renumbered from 0).
        channels: the selected image channels, or ``None`` (all).
        mapping: ``{orig: target}`` of the label values that change.
        names: ``{target: name}`` of the classes after merging.
        lut: look-up table ``lut[orig] = target`` for every ``labels`` value; ``uint8`` when every value (before and
            after merging) is < 256, else ``int32`` -- so ``lut[label]`` never overflows.
    """

    labels: dict[int, str]
    modality: dict[int, str]
    channels: list[int] | None
    mapping: dict[int, int]
    names: dict[int, str]
    lut: np.ndarray

    def datalist_fields(self) -> dict[str, Any]:
        """The datalist's ``modality``, ``labels`` (after merging), ``source_labels`` (``dataset.json``'s) and, when
        channels are selected, ``image_channels``."""
        fields: dict[str, Any] = {
            "modality": {str(k): v for k, v in sorted(self.modality.items())},
            "labels": {str(k): self.names[k] for k in sorted(self.names)},
            "source_labels": {str(k): v for k, v in sorted(self.labels.items())},
        }
        if self.channels is not None:
            fields["image_channels"] = self.channels
        return fields


@register_converter("msd")
class MSDConverter(DatasetConverter):
    """MSD task folder -> datalist over the original NIfTI files (see module docstring)."""

    description = "Medical Segmentation Decathlon task folder (dataset.json + imagesTr/labelsTr/imagesTs NIfTI)"
    expected_layout = (
        "  TaskXX_Name/dataset.json, TaskXX_Name/imagesTr/*.nii.gz, TaskXX_Name/labelsTr/*.nii.gz "
        "[, TaskXX_Name/imagesTs/*.nii.gz]\n  SRC is the task folder or a folder holding exactly one task folder"
    )
    options = {
        "val_fraction": (0.1, "fraction of the non-test labelled cases held out for validation"),
        "test_fraction": (0.2, "fraction of the labelled cases held out for test"),
        "channels": (None, "image channels to use, e.g. [0] (4D images)"),
        "label_mapping": (None, 'label merge {orig: target}, e.g. {"2": 1}'),
        "binary": (False, "merge every non-zero label into 1"),
        "label_names": (None, 'names of the classes after merging, e.g. {"1": "prostate"}'),
        "region": (None, "body region words of the text (default: from the task name)"),
        "side_reference": ("fov_center", "'fov_center' (left/right from the affine) or 'none'"),
        "affine_atol": (1e-3, "tolerance (mm) when comparing image and label affines"),
    }

    def check_layout(self, src: Path, options: Mapping[str, Any]) -> MSDLayout:
        """Find ``dataset.json``, parse it, check every file and every image/label geometry (headers only)."""
        task_dir = src
        if not (src / "dataset.json").is_file():
            tasks = sorted(d for d in src.iterdir() if d.is_dir() and (d / "dataset.json").is_file())
            if len(tasks) > 1:
                raise BadInputError(src, f"several task folders {[t.name for t in tasks]}; pass one of them")
            if not tasks:
                raise self.layout_error(src / "dataset.json", "missing dataset.json")
            task_dir = tasks[0]
        meta_path = task_dir / "dataset.json"
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise BadInputError(meta_path, f"not a valid JSON file ({err})") from None
        if not isinstance(meta, dict):
            raise BadInputError(meta_path, "expected a JSON object")
        missing = [k for k in ("name", "modality", "labels", "training") if k not in meta]
        if missing:
            raise BadInputError(meta_path, f"missing key(s) {missing} of the MSD dataset.json format")
        for key in ("modality", "labels"):
            if not isinstance(meta[key], dict) or not meta[key]:
                raise BadInputError(meta_path, f'{key!r} must be an object like {{"0": "..."}}')
            _int_keys(meta[key], meta_path, key)
        if not isinstance(meta["training"], list) or not meta["training"]:
            raise BadInputError(meta_path, "'training' must be a non-empty list of {image, label} objects")
        if "numTraining" in meta and meta["numTraining"] != len(meta["training"]):
            raise BadInputError(
                meta_path, f"numTraining is {meta['numTraining']} but 'training' lists {len(meta['training'])} cases"
            )

        def resolve(rel: Any, what: str) -> Path:
            if not isinstance(rel, str):
                raise BadInputError(meta_path, f"{what} path must be a string, got {rel!r}")
            path = (task_dir / rel).resolve() if not os.path.isabs(rel) else Path(rel)
            if not path.is_file():
                if not path.parent.is_dir():
                    raise self.layout_error(path.parent, f"missing folder (listed in {meta_path})")
                raise BadInputError(path, f"{what} listed in {meta_path} not found")
            return path

        layout = MSDLayout(task_dir=task_dir, meta=meta, n_channels=1)
        channel_counts = set()
        for i, item in enumerate(meta["training"]):
            if not isinstance(item, dict) or "image" not in item or "label" not in item:
                raise BadInputError(meta_path, f"training entry {i} must be an object with 'image' and 'label'")
            if Path(item["image"]).name.startswith("._"):
                continue
            image, label = resolve(item["image"], "image"), resolve(item["label"], "label")
            img_shape, img_aff = _header(image)
            lbl_shape, lbl_aff = _header(label)
            lbl_spatial = lbl_shape[:3] if all(s == 1 for s in lbl_shape[3:]) else lbl_shape
            if img_shape[:3] != lbl_spatial or len(lbl_spatial) != 3:
                raise BadInputError(image, f"image and label {label} differ in shape: {img_shape} vs {lbl_shape}")
            if not np.allclose(img_aff, lbl_aff, rtol=0.0, atol=float(options["affine_atol"])):
                raise BadInputError(
                    image,
                    f"image and label {label} differ in affine (voxel -> world):\n{np.round(img_aff, 4)}\nvs\n"
                    f"{np.round(lbl_aff, 4)}",
                )
            channel_counts.add(img_shape[3] if len(img_shape) == 4 else 1)
            layout.training.append(MSDCase(case_key(label), image, label))
        if len(channel_counts) > 1:
            raise BadInputError(meta_path, f"images have different channel counts {sorted(channel_counts)}")
        layout.n_channels = channel_counts.pop() if channel_counts else 1
        if "test" in meta:
            if not isinstance(meta["test"], list):
                raise BadInputError(meta_path, "'test' must be a list of image paths")
            for item in meta["test"]:
                rel = item.get("image") if isinstance(item, dict) else item
                if isinstance(rel, str) and Path(rel).name.startswith("._"):
                    continue
                path = resolve(rel, "test image")
                layout.unlabelled.append(MSDCase(case_key(path), path))
        elif (task_dir / "imagesTs").is_dir():
            layout.unlabelled = [MSDCase(case_key(p), p) for p in visible_files(task_dir / "imagesTs", _NII)]
        return layout

    def parse_classes(
        self, layout: MSDLayout, options: Mapping[str, Any], require_channel_choice: bool = False
    ) -> MSDClasses:
        """Parse ``labels``/``modality`` of ``dataset.json`` with the ``channels``, ``binary``, ``label_mapping`` and
        ``label_names`` options (shared by ``msd`` and ``msd_slices``).

        Args:
            layout: the checked task folder.
            options: the converter options.
            require_channel_choice: multi-channel images need ``channels`` (2D slice converters).

        Raises:
            BadInputError: invalid channels, a missing channel choice, negative label values or bad label options.
        """
        meta, meta_path = layout.meta, layout.task_dir / "dataset.json"
        labels = {k: str(v) for k, v in _int_keys(meta["labels"], meta_path, "labels").items()}
        if min(labels) < 0:
            raise BadInputError(meta_path, f"label values must be >= 0, got {sorted(labels)}")
        modality = {k: str(v) for k, v in _int_keys(meta["modality"], meta_path, "modality").items()}
        channels = options["channels"]
        if channels is not None:
            channels = [channels] if isinstance(channels, int) else list(channels)
            bad = [c for c in channels if not isinstance(c, int) or not 0 <= c < layout.n_channels]
            if bad or not channels:
                raise BadInputError(
                    "channels", f"invalid channel(s) {bad or channels}: the images have {layout.n_channels} channel(s)"
                )
            modality = {i: modality.get(c, f"channel {c}") for i, c in enumerate(channels)}
        elif require_channel_choice and layout.n_channels > 1:
            raise BadInputError(
                meta_path, f"the images have {layout.n_channels} channels; choose with channels, e.g. [0] (Prostate T2)"
            )
        mapping, names = self._label_mapping(labels, dict(options))
        top = max([*labels, *mapping.values()])
        lut = np.arange(max(labels) + 1, dtype=np.uint8 if top < 256 else np.int32)
        for k, v in mapping.items():
            lut[k] = v
        return MSDClasses(labels, modality, channels, mapping, names, lut)

    def _label_mapping(self, labels: dict[int, str], options: dict[str, Any]) -> tuple[dict[int, int], dict[int, str]]:
        """({orig: target} of changed values, {target: name}) from ``binary``, ``label_mapping``, ``label_names``."""
        mapping: dict[int, int] = {}
        if options["binary"]:
            mapping = {k: 1 for k in labels if k != 0}
        if options["label_mapping"]:
            if not isinstance(options["label_mapping"], dict):
                raise BadInputError("label_mapping", "must be an object {orig: target}")
            for k, v in _int_keys(options["label_mapping"], "label_mapping", "label_mapping").items():
                if k not in labels:
                    raise BadInputError("label_mapping", f"label {k} is not in dataset.json labels {labels}")
                if not isinstance(v, int) or v < 0:
                    raise BadInputError("label_mapping", f"target of label {k} must be an integer >= 0, got {v!r}")
                mapping[k] = v
        if mapping.get(0, 0) != 0:
            raise BadInputError("label_mapping", "background (0) must stay 0")
        merged: dict[int, list[str]] = {}
        for k in sorted(labels):
            names = merged.setdefault(mapping.get(k, k), [])
            if labels[k] not in names:
                names.append(labels[k])
        names = {t: " and ".join(n) for t, n in merged.items()}
        names[0] = labels.get(0, "background")
        if options["label_names"]:
            for t, n in _int_keys(options["label_names"], "label_names", "label_names").items():
                if t not in names:
                    raise BadInputError(
                        "label_names", f"class {t} does not exist after merging (classes {sorted(names)})"
                    )
                names[t] = str(n)
        return {k: v for k, v in mapping.items() if k != v}, names

    def build(self, layout: MSDLayout, dst: Path, **options: Any) -> dict[str, Any]:
        """Read each label for its text and return the datalist document (no files written)."""
        meta = layout.meta
        classes = self.parse_classes(layout, options)
        labels, modality, names = classes.labels, classes.modality, classes.names
        mapping, lut = classes.mapping, classes.lut
        words = modality_phrase([modality[k] for k in sorted(modality)])
        region = options["region"] or body_region(str(meta["name"]) + " " + layout.task_dir.name)
        if options["side_reference"] not in ("fov_center", "none"):
            raise BadInputError("side_reference", f"must be 'fov_center' or 'none', got {options['side_reference']!r}")
        table = load_text_file(options["text_file"]) if options["text_file"] else None
        str_names = {str(k): v for k, v in names.items()}

        entries: dict[str, dict[str, Any]] = {}
        for case in layout.training:
            arr, affine = read_new_label(case, entries, labels, " in dataset.json", "in dataset.json labels")
            if mapping:
                arr = lut[arr]
            entries[case.case_id] = labelled_volume_entry(
                case,
                dst,
                table,
                options["text_file"],
                lambda: describe_labelled_volume(arr, affine, str_names, words, region, options["side_reference"]),
            )
        split = split_cases(list(entries), options["val_fraction"], options["test_fraction"], options["seed"])
        unlabelled = []
        for case in layout.unlabelled:
            if table is not None and case.case_id in table:
                text, source = table[case.case_id], "dataset"
            else:
                text, source = describe_unlabelled_volume(words, region), "generated"
            unlabelled.append(
                {"case_id": case.case_id, "image": relative_path(case.image, dst), "text": text, "text_source": source}
            )
        doc: dict[str, Any] = {
            "name": str(meta["name"]),
            "description": (
                f"MSD {layout.task_dir.name}: {meta.get('description', '')}".strip()
                + f" Datalist over the original NIfTI files (seed {options['seed']}, val_fraction "
                f"{options['val_fraction']}, test_fraction {options['test_fraction']} of the labelled cases)."
            ),
            "source_layout": "msd",
            "spatial_dims": 3,
            **classes.datalist_fields(),
        }
        if mapping:
            doc["label_mapping"] = {
                "orig_labels": sorted(mapping),
                "target_labels": [mapping[k] for k in sorted(mapping)],
            }
        doc.update({name: [entries[i] for i in ids] for name, ids in split.items()})
        doc["unlabelled"] = unlabelled
        return doc
