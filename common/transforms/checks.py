"""Input checks of images, labels and batches, plain and as MONAI dictionary transforms for bundle configs.

Every check raises :class:`common.errors.BadInputError` whose message names the file (or case id) and the problem,
e.g. ``"data/case_07_seg.nii.gz: label values [255] are not in the allowed label set [0, 1] ..."``. Valid inputs
pass unchanged. The checks are cheap for big 3D volumes: one reduction pass (``aminmax`` / ``sum``) decides the
common case, and the exact (allocating) checks run in chunks only when that pass finds a problem.

Plain functions: :func:`check_image_array`, :func:`check_geometry`, :func:`check_label`,
:func:`check_loader_has_batches`.

MONAI dictionary transforms:

- :class:`CheckedLoadImaged` -- ``LoadImaged`` whose read errors become ``BadInputError`` naming the file.
- :class:`CheckImageLabeld` -- after ``LoadImaged``/``EnsureChannelFirstd``: dims, channels, NaN/inf, label values,
  empty masks, image/label geometry.
- :class:`CheckTextd` -- missing, empty or too-long text prompts (:mod:`common.text.prompts`).

Note: inside a ``Compose`` MONAI re-raises transform errors as ``RuntimeError("applying transform ...")`` with the
``BadInputError`` as ``__cause__``; :func:`common.errors.find_bad_input_error` digs it out.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from os import PathLike
from typing import Any

import numpy as np
import torch
from common.errors import BadInputError, format_list, short_message
from common.io.images import check_file_exists, check_image_file
from common.text.prompts import check_text
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import LoadImaged, MapTransform
from monai.utils import ensure_tuple

__all__ = [
    "check_image_array",
    "check_geometry",
    "check_label",
    "check_loader_has_batches",
    "CheckedLoadImaged",
    "CheckImageLabeld",
    "CheckTextd",
]

_CHUNK = 1 << 24  # elements per chunk for the exact (allocating) checks: 16M elements = 16 MB of bools
_MAX_LISTED = 5  # how many offending keys/values a message lists


# ---------------------------------------------------------------------------------------------- arrays and values
def _as_tensor(x: Any) -> torch.Tensor:
    if isinstance(x, MetaTensor):
        return x.as_tensor()
    if isinstance(x, torch.Tensor):
        return x
    return torch.as_tensor(np.asarray(x))


def _chunks(flat: torch.Tensor, size: int = _CHUNK) -> Iterable[torch.Tensor]:
    for start in range(0, flat.numel(), size):
        yield flat[start : start + size]


def _nonfinite_counts(t: torch.Tensor) -> tuple[int, int, tuple[int, ...] | None]:
    """(number of NaN, number of inf, index of the first one) -- exact, chunked."""
    flat = t.reshape(-1)
    n_nan = n_inf = 0
    first: int | None = None
    for offset, chunk in zip(range(0, flat.numel(), _CHUNK), _chunks(flat)):
        nan, inf = torch.isnan(chunk), torch.isinf(chunk)
        n_nan += int(nan.sum())
        n_inf += int(inf.sum())
        if first is None:
            bad = torch.nonzero(nan | inf)
            if bad.numel():
                first = offset + int(bad[0, 0])
    index = tuple(int(i) for i in np.unravel_index(first, tuple(t.shape))) if first is not None else None
    return n_nan, n_inf, index


def _has_nonfinite(t: torch.Tensor) -> bool:
    """One reduction pass: ``aminmax`` propagates NaN and returns +-inf when present (no overflow, no copy)."""
    if t.numel() == 0:
        return False
    if t.is_complex():
        return not bool(torch.isfinite(t).all())
    if not t.is_floating_point():
        return False
    lo, hi = torch.aminmax(t.reshape(-1))
    return not (math.isfinite(float(lo)) and math.isfinite(float(hi)))


def _shape_str(shape: Sequence[int]) -> str:
    return str(tuple(int(s) for s in shape))


def _kind_of(spatial_dims: int, name: str) -> str:
    """``"2D image"``, ``"3D volume"`` (``"3D label volume"`` for a label), ``"4D array"``..."""
    if spatial_dims == 2:
        return f"2D {name}"
    if spatial_dims == 3:
        return "3D volume" if name == "image" else f"3D {name} volume"
    return f"{spatial_dims}D {name} array"


def _wrong_dims_message(shape: tuple[int, ...], spatial_dims: int, name: str) -> str:
    """What was expected and what was found, reading ``shape`` as channel first (as every loader here gives it)."""
    expected_axes = "[C, H, W]" if spatial_dims == 2 else "[C, H, W, D]" if spatial_dims == 3 else "[C, ...]"
    found = len(shape) - 1
    if found >= 2:
        got = f"a {_kind_of(found, name)} of shape {_shape_str(shape)} (channel first)"
    else:
        got = f"an array of shape {_shape_str(shape)}"
    hint = ""
    if len(shape) == spatial_dims and shape[0] != 1:
        hint = f"; if it is a {_kind_of(spatial_dims, name)} without its channel axis, load it with EnsureChannelFirstd"
    elif spatial_dims == 3 and found == 2:
        hint = "; this model segments 3D volumes: give it 3D files (e.g. NIfTI), or use a bundle for 2D images"
    elif spatial_dims == 2 and found == 3:
        hint = (
            "; this model segments 2D images: give it 2D files (PNG/TIFF), or cut the volume into slices "
            "(python -m common.data.converters msd_slices)"
        )
    return f"expected a {_kind_of(spatial_dims, name)} {expected_axes}, got {got}{hint}"


def check_image_array(
    arr: np.ndarray | torch.Tensor,
    source: str | PathLike | None,
    spatial_dims: int | None = None,
    channels: int | None = None,
    allow_nan: bool = False,
    name: str = "image",
) -> None:
    """Check a channel-first image array ``[C, *spatial]`` (spatial = ``H, W`` or ``H, W, D``).

    Args:
        arr: the array (numpy, torch or MetaTensor), channel first.
        source: file name or case id for the message.
        spatial_dims: expected number of spatial dims (2 or 3); ``None`` skips the check.
        channels: expected number of channels ``C``; ``None`` skips the check.
        allow_nan: accept NaN/inf values.
        name: what the array is (``"image"``, ``"label"``), for the message.

    Raises:
        BadInputError: wrong number of dims or channels, an empty axis, or NaN/inf values.
    """
    shape = tuple(arr.shape)
    if spatial_dims is not None and len(shape) != spatial_dims + 1:
        raise BadInputError(source, _wrong_dims_message(shape, spatial_dims, name))
    if channels is not None and (len(shape) == 0 or shape[0] != channels):
        got = shape[0] if shape else "none"
        raise BadInputError(
            source,
            f"expected {channels} channel(s) in the {name}, got {got} (shape {_shape_str(shape)}, channel first)",
        )
    if any(s == 0 for s in shape):
        raise BadInputError(source, f"{name} is empty (shape {_shape_str(shape)})")
    if not allow_nan:
        t = _as_tensor(arr)
        if _has_nonfinite(t):
            n_nan, n_inf, index = _nonfinite_counts(t)
            raise BadInputError(
                source,
                f"{name} contains {n_nan} NaN and {n_inf} inf values (first at index {index}); fix the file or "
                "replace them (e.g. with nan_to_num) before training/inference",
            )


def _geometry_of(x: Any) -> tuple[tuple[int, ...] | None, np.ndarray | None, str | None]:
    """(spatial shape, affine, file name) of a channel-first MetaTensor or of a MONAI meta dict."""
    if isinstance(x, MetaTensor):
        affine = x.affine
        affine = None if affine is None else np.asarray(affine.detach().cpu(), dtype=np.float64)
        src = x.meta.get("filename_or_obj")
        return tuple(int(s) for s in x.shape[1:]), affine, None if src is None else str(src)
    if isinstance(x, Mapping):
        shape = x.get("spatial_shape")
        shape = None if shape is None else tuple(int(s) for s in np.asarray(shape).reshape(-1))
        affine = x.get("affine", x.get("original_affine"))
        affine = None if affine is None else np.asarray(torch.as_tensor(affine).cpu(), dtype=np.float64)
        src = x.get("filename_or_obj")
        return shape, affine, None if src is None else str(src)
    raise TypeError(f"expected a MetaTensor or a meta dict, got {type(x).__name__}")


def _spacing(affine: np.ndarray, dims: int) -> np.ndarray:
    return np.sqrt((affine[:dims, :dims] ** 2).sum(axis=0))


def check_geometry(
    image: MetaTensor | Mapping,
    label: MetaTensor | Mapping,
    image_source: str | PathLike | None = None,
    label_source: str | PathLike | None = None,
    spacing_rtol: float = 1e-3,
    affine_atol: float = 1e-2,
    check_affine: bool = True,
) -> None:
    """Check that an image and its label are on the same voxel grid: shape, spacing and affine.

    Args:
        image: channel-first MetaTensor ``[C, *spatial]`` or its meta dict (``spatial_shape``, ``affine``,
            ``filename_or_obj``).
        label: the same for the label.
        image_source, label_source: names for the message (default: ``filename_or_obj`` of the meta data).
        spacing_rtol: relative tolerance on the voxel spacing (from the affine column norms).
        affine_atol: absolute tolerance (mm) on the affine entries (direction * spacing, origin); NIfTI headers
            store float32, so exact equality is too strict.
        check_affine: also compare spacing/orientation/origin (else only the shape).

    Raises:
        BadInputError: naming both files and what differs (shape, spacing, orientation or origin).
    """
    shape_i, aff_i, src_i = _geometry_of(image)
    shape_l, aff_l, src_l = _geometry_of(label)
    src_i = image_source if image_source is not None else src_i or "image"
    src_l = label_source if label_source is not None else src_l or "label"
    prefix = f"image and its label {src_l} are not on the same voxel grid"
    if shape_i is not None and shape_l is not None and shape_i != shape_l:
        raise BadInputError(src_i, f"{prefix}: spatial shape {shape_i} (image) vs {shape_l} (label)")
    if not check_affine or aff_i is None or aff_l is None:
        return
    dims = min(aff_i.shape[0], aff_l.shape[0]) - 1
    if aff_i.shape != aff_l.shape:
        raise BadInputError(src_i, f"{prefix}: affine of shape {aff_i.shape} (image) vs {aff_l.shape} (label)")
    sp_i, sp_l = _spacing(aff_i, dims), _spacing(aff_l, dims)
    if not np.allclose(sp_i, sp_l, rtol=spacing_rtol, atol=1e-6):
        raise BadInputError(
            src_i,
            f"{prefix}: voxel spacing {tuple(np.round(sp_i, 4).tolist())} (image) vs "
            f"{tuple(np.round(sp_l, 4).tolist())} (label); resample the label to the image",
        )
    diff = np.abs(aff_i - aff_l)
    if not np.all(diff <= affine_atol):
        where = "origin" if np.all(diff[:dims, :dims] <= affine_atol) else "orientation"
        if where == "origin":
            detail = (
                f"origin {tuple(np.round(aff_i[:dims, dims], 3).tolist())} (image) vs "
                f"{tuple(np.round(aff_l[:dims, dims], 3).tolist())} (label)"
            )
        else:
            detail = (
                f"direction/spacing matrix {np.round(aff_i[:dims, :dims], 3).tolist()} (image) vs "
                f"{np.round(aff_l[:dims, :dims], 3).tolist()} (label)"
            )
        raise BadInputError(
            src_i, f"{prefix}: affine {where} differs by up to {diff.max():.4g} (tolerance {affine_atol}): {detail}"
        )


def check_label(
    label: np.ndarray | torch.Tensor,
    source: str | PathLike | None,
    label_values: Iterable[int] | None = None,
    require_foreground: bool = False,
    background: int = 0,
    name: str = "label",
) -> None:
    """Check a segmentation label: finite whole numbers, within the allowed label set, optionally not empty.

    Args:
        label: label array of any shape (typically ``[1, *spatial]``), integer or float dtype.
        source: file name or case id for the message.
        label_values: the allowed class ids, e.g. ``[0, 1]``; ``None`` accepts any whole number.
        require_foreground: raise if no voxel differs from ``background`` (an empty mask).
        background: the background value.
        name: what the array is, for the message.

    Raises:
        BadInputError: NaN/inf, non-integer float values, values outside ``label_values``, or an empty mask.
    """
    t = _as_tensor(label)
    if t.numel() == 0:
        raise BadInputError(source, f"{name} is empty (shape {_shape_str(t.shape)})")
    if t.dtype == torch.bool:
        t = t.to(torch.uint8)
    if t.is_complex():
        raise BadInputError(source, f"{name} has complex dtype {t.dtype}; expected integer class ids")
    lo, hi = (float(v) for v in torch.aminmax(t.reshape(-1)))
    floating = t.is_floating_point()
    if floating and not (math.isfinite(lo) and math.isfinite(hi)):
        n_nan, n_inf, index = _nonfinite_counts(t)
        raise BadInputError(source, f"{name} contains {n_nan} NaN and {n_inf} inf values (first at index {index})")
    if floating:
        examples: list[float] = []
        for chunk in _chunks(t.reshape(-1)):
            frac = chunk[chunk != torch.round(chunk)]
            if frac.numel():
                examples = torch.unique(frac[:4096]).tolist()[:_MAX_LISTED]
                break
        if examples:
            allowed = f" {sorted({int(v) for v in label_values})}" if label_values is not None else ""
            raise BadInputError(
                source,
                f"{name} has dtype {str(t.dtype).replace('torch.', '')} with values that are not whole numbers "
                f"(e.g. {format_list([round(v, 4) for v in examples])}); expected integer class ids{allowed}. "
                "Interpolate labels with mode='nearest' or threshold soft masks",
            )
    if label_values is not None:
        allowed_set = sorted({int(v) for v in label_values})
        contiguous = allowed_set == list(range(allowed_set[0], allowed_set[-1] + 1)) if allowed_set else False
        if not (contiguous and lo >= allowed_set[0] and hi <= allowed_set[-1]):
            allowed_t = torch.tensor(allowed_set, dtype=t.dtype if not floating else torch.float64)
            bad_values: set[float] = set()
            n_bad = 0
            for chunk in _chunks(t.reshape(-1)):
                chunk = chunk.to(allowed_t.dtype) if floating else chunk
                outside = chunk[~torch.isin(chunk, allowed_t)]
                if outside.numel():
                    n_bad += outside.numel()
                    if len(bad_values) < _MAX_LISTED:
                        bad_values.update(torch.unique(outside[:65536]).tolist())
            if n_bad:
                bad = sorted(int(v) for v in bad_values)
                hint = ""
                if 255 in bad and allowed_set == [0, 1]:
                    hint = "; for a 0/255 mask divide by 255 (or threshold, e.g. AsDiscreted(threshold=0.5))"
                raise BadInputError(
                    source,
                    f"{name} values {format_list(bad)} are not in the allowed label set {allowed_set} "
                    f"({n_bad} voxels){hint}",
                )
    if require_foreground and lo == background and hi == background:
        raise BadInputError(
            source,
            f"{name} has no foreground (every voxel is {background}, shape {_shape_str(t.shape)}); this case cannot "
            "be used where a lesion/organ is required: remove it from the datalist or fix the mask",
        )


def check_loader_has_batches(loader: Any, source: str = "train#dataloader") -> int:
    """Return ``len(loader)``; raise if the training loader would yield no batch at all.

    With ``drop_last=True`` a dataset smaller than one batch (or, under ``torchrun``, a per-rank share smaller than
    one batch) gives an empty epoch: ignite only warns and the run "finishes" without training.

    Raises:
        BadInputError: naming ``source``, the number of cases, the batch size and the fix.
    """
    n = len(loader)
    if n == 0:
        cases = len(getattr(loader, "sampler", None) or getattr(loader, "dataset", []) or [])
        raise BadInputError(
            source,
            f"the data loader yields no batch: {cases} case(s) for this process with batch_size "
            f"{getattr(loader, 'batch_size', '?')} and drop_last={getattr(loader, 'drop_last', '?')} (under torchrun "
            "each rank gets 1/world_size of the cases); use more cases or a smaller batch_size",
        )
    return n


# ------------------------------------------------------------------------------------------------- transforms
def _source_of(d: Mapping, key: Hashable, case_key: str | None = None) -> str:
    """File name of ``d[key]`` (MetaTensor meta or ``<key>_meta_dict``), else the case id, else the key."""
    value = d.get(key)
    src = None
    if isinstance(value, MetaTensor):
        src = value.meta.get("filename_or_obj")
    if src is None and isinstance(d.get(f"{key}_meta_dict"), Mapping):
        src = d[f"{key}_meta_dict"].get("filename_or_obj")
    if src is None and isinstance(value, (str, PathLike)):
        src = value
    if src is None and case_key is not None and case_key in d:
        src = f"case {d[case_key]}"
    return str(src) if src is not None else f"'{key}'"


class CheckedLoadImaged(LoadImaged):
    """:class:`monai.transforms.LoadImaged` whose failures become :class:`BadInputError` naming the file.

    Same arguments as ``LoadImaged``. A missing file gives ``"<file>: image file not found ..."``; a truncated or
    corrupt file gives ``"<file>: cannot read the image file with the nifti reader (...)"``: the file is re-read
    with :func:`check_image_file` to name the reader and its error (only on failure; no cost otherwise).
    """

    def __call__(self, data, reader=None):
        d = dict(data)
        for key in self.key_iterator(d):
            value = d[key]
            files = value if isinstance(value, (list, tuple)) else [value]
            for f in files:
                if isinstance(f, (str, PathLike)):
                    check_file_exists(f, str(key))
            try:
                out = self._loader(value, reader)
            except (MemoryError, KeyboardInterrupt):
                raise
            except Exception as e:
                for f in files:
                    if isinstance(f, (str, PathLike)):
                        check_image_file(f, str(key))  # raises the specific BadInputError
                raise BadInputError(_source_of(d, key), f"cannot load {key!r}: {short_message(e)}") from e
            self._store(d, key, out)
        return d

    def _store(self, d: dict, key: Hashable, out: Any) -> None:
        if self._loader.image_only:
            d[key] = out
            return
        d[key] = out[0]
        idx = list(self.keys).index(key)
        meta_key = self.meta_keys[idx] or f"{key}_{self.meta_key_postfix[idx]}"
        if meta_key in d and not self.overwriting:
            raise KeyError(f"Metadata with key {meta_key} already exists and overwriting=False.")
        d[meta_key] = out[1]


class CheckImageLabeld(MapTransform):
    """Check a loaded image (and its label, if present) before any other preprocessing.

    Place it right after ``LoadImaged`` + ``EnsureChannelFirstd`` (or :class:`CheckedLoadImaged` with
    ``ensure_channel_first=True``), before resampling/cropping, so the original files are named. Reads MetaTensor
    meta (``filename_or_obj``, ``affine``) for the file names and the geometry. Costs one reduction pass per array
    (plus chunked exact passes only when a problem is found). Not randomised, so ``CacheDataset`` runs it once.

    Args:
        keys: ``"image"`` or ``("image", "label")``: the first key is the image, the optional second the label.
            The label is checked when present (inference data has none) unless ``label_required``.
        spatial_dims: expected spatial dims (2 or 3) of both arrays; ``None`` skips.
        image_channels: expected image channels ``C`` in ``[C, *spatial]``; ``None`` skips.
        label_values: allowed label ids, e.g. ``[0, 1]``; ``None``: any whole numbers.
        require_foreground: reject labels without foreground (for training sets that need a lesion/organ).
        check_geometry: compare image/label shape, spacing and affine (:func:`check_geometry`).
        allow_nan: accept NaN/inf in the image.
        label_channels: expected label channels (1 for class-id masks); ``None`` skips.
        label_required: raise if the label key is missing.
        case_key: data key holding a case id, used in messages when there is no file name.
        spacing_rtol, affine_atol: tolerances of :func:`check_geometry`.

    Input (per key): channel-first ``[C, H, W]`` or ``[C, H, W, D]`` MetaTensor or array. Output: unchanged data.
    """

    def __init__(
        self,
        keys: KeysCollection = ("image", "label"),
        spatial_dims: int | None = None,
        image_channels: int | None = None,
        label_values: Sequence[int] | None = None,
        require_foreground: bool = False,
        check_geometry: bool = True,
        allow_nan: bool = False,
        label_channels: int | None = 1,
        label_required: bool = False,
        case_key: str | None = None,
        spacing_rtol: float = 1e-3,
        affine_atol: float = 1e-2,
    ) -> None:
        keys = ensure_tuple(keys)
        if not 1 <= len(keys) <= 2:
            raise ValueError(f"CheckImageLabeld: keys must be (image,) or (image, label), got {keys}")
        super().__init__(keys, allow_missing_keys=True)
        self.image_key = keys[0]
        self.label_key = keys[1] if len(keys) == 2 else None
        self.spatial_dims = spatial_dims
        self.image_channels = image_channels
        self.label_values = None if label_values is None else [int(v) for v in label_values]
        self.require_foreground = require_foreground
        self.check_geometry = check_geometry
        self.allow_nan = allow_nan
        self.label_channels = label_channels
        self.label_required = label_required
        self.case_key = case_key
        self.spacing_rtol = spacing_rtol
        self.affine_atol = affine_atol

    def __call__(self, data: Mapping[Hashable, Any]) -> Mapping[Hashable, Any]:
        d = data
        if self.image_key not in d:
            raise BadInputError(
                _source_of(d, self.image_key, self.case_key), f"no {self.image_key!r} entry in the data"
            )
        img = d[self.image_key]
        img_src = _source_of(d, self.image_key, self.case_key)
        check_image_array(img, img_src, self.spatial_dims, self.image_channels, self.allow_nan, name="image")
        if self.label_key is None:
            return d
        if self.label_key not in d:
            if self.label_required:
                raise BadInputError(img_src, f"no label ({self.label_key!r}) for this image")
            return d
        lab = d[self.label_key]
        lab_src = _source_of(d, self.label_key, self.case_key)
        check_image_array(lab, lab_src, self.spatial_dims, self.label_channels, allow_nan=True, name="label")
        check_label(lab, lab_src, self.label_values, self.require_foreground, name="label")
        if self.check_geometry and isinstance(img, MetaTensor) and isinstance(lab, MetaTensor):
            check_geometry(img, lab, img_src, lab_src, spacing_rtol=self.spacing_rtol, affine_atol=self.affine_atol)
        elif self.check_geometry and tuple(img.shape[1:]) != tuple(lab.shape[1:]):
            raise BadInputError(
                img_src,
                f"image and its label {lab_src} are not on the same voxel grid: spatial shape "
                f"{_shape_str(img.shape[1:])} (image) vs {_shape_str(lab.shape[1:])} (label)",
            )
        return d


class CheckTextd(MapTransform):
    """Check the text prompt(s) of a case: present, non-empty, not longer than the text encoder accepts.

    Args:
        keys: the text key(s), default ``"text"``. A value may be a string or a list of strings.
        max_tokens: token limit of the text encoder (e.g. 512 for BERT, 77 for CLIP); needs ``count_tokens``.
        count_tokens: ``str -> int`` or a Hugging Face tokenizer.
        max_chars: optional character limit.
        source_key: data key whose file names the case in messages (default ``"image"``).
        case_key: data key holding a case id (used when there is no file name).
        allow_missing_keys: accept cases without the text key (otherwise "text prompt is missing").

    Output: unchanged data.
    """

    def __init__(
        self,
        keys: KeysCollection = "text",
        max_tokens: int | None = None,
        count_tokens: Callable[[str], int] | Any | None = None,
        max_chars: int | None = None,
        source_key: str | None = "image",
        case_key: str | None = None,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.max_tokens = max_tokens
        self.count_tokens = count_tokens
        self.max_chars = max_chars
        self.source_key, self.case_key = source_key, case_key  # where messages find the case's name

    def __call__(self, data: Mapping[Hashable, Any]) -> Mapping[Hashable, Any]:
        d = data
        if self.source_key is not None and self.source_key in d:
            src = _source_of(d, self.source_key, self.case_key)
        elif self.case_key is not None and self.case_key in d:
            src = f"case {d[self.case_key]}"
        else:
            src = None
        for key in self.keys:
            if key not in d:
                if self.allow_missing_keys:
                    continue
                raise BadInputError(src, f"text prompt is missing (no {key!r} entry); every case needs a description")
            values = d[key] if isinstance(d[key], (list, tuple)) else [d[key]]
            if not values:
                raise BadInputError(src, f"text prompt list {key!r} is empty")
            for v in values:
                check_text(v, src, self.max_tokens, self.count_tokens, self.max_chars, name=f"text prompt {key!r}")
        return d
