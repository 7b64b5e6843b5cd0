"""Input checks used by every bundle: files, images, labels, text prompts and checkpoints.

Every check raises :class:`common.errors.BadInputError` whose message names the file (or case id) and the problem,
e.g. ``"data/case_07_seg.nii.gz: label values [255] are not in the allowed label set [0, 1] ..."``. Valid inputs
pass unchanged. The checks are cheap for big 3D volumes: one reduction pass (``aminmax`` / ``sum``) decides the
common case, and the exact (allocating) checks run in chunks only when that pass finds a problem.

Plain functions:

- :func:`check_file_exists`, :func:`check_image_file` (reads the file with the right reader)
- :func:`check_image_array`, :func:`check_geometry`, :func:`check_label`, :func:`check_text`
- :func:`load_checkpoint` (``weights_only=True``), :func:`load_network_weights`

MONAI dictionary transforms (for bundle configs):

- :class:`CheckedLoadImaged` -- ``LoadImaged`` whose read errors become ``BadInputError`` naming the file.
- :class:`CheckImageLabeld` -- after ``LoadImaged``/``EnsureChannelFirstd``: dims, channels, NaN/inf, label values,
  empty masks, image/label geometry.
- :class:`CheckTextd` -- missing, empty or too-long text prompts.

Note: inside a ``Compose`` MONAI re-raises transform errors as ``RuntimeError("applying transform ...")`` with the
``BadInputError`` as ``__cause__``; :func:`find_bad_input_error` digs it out (e.g. for a bundle's top-level message).
"""

from __future__ import annotations

import math
import pickle
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import LoadImaged, MapTransform
from monai.utils import ensure_tuple

from common.errors import BadInputError

__all__ = [
    "find_bad_input_error",
    "check_file_exists",
    "check_image_file",
    "check_image_array",
    "check_geometry",
    "check_label",
    "check_text",
    "resolve_texts",
    "check_loader_has_batches",
    "token_counter",
    "load_checkpoint",
    "describe_state_dict_mismatch",
    "load_network_weights",
    "CheckedLoadImaged",
    "CheckImageLabeld",
    "CheckTextd",
]

_CHUNK = 1 << 24  # elements per chunk for the exact (allocating) checks: 16M elements = 16 MB of bools
_MAX_LISTED = 5  # how many offending keys/values a message lists


def _fmt_list(items: Sequence[Any], limit: int = _MAX_LISTED) -> str:
    items = list(items)
    shown = ", ".join(repr(i) if isinstance(i, str) else str(i) for i in items[:limit])
    return f"[{shown}{', ...' if len(items) > limit else ''}]"


def _short(err: BaseException, limit: int = 300) -> str:
    text = " ".join(str(err).split())
    text = text if len(text) <= limit else text[: limit - 3] + "..."
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def find_bad_input_error(exc: BaseException | None) -> BadInputError | None:
    """The :class:`BadInputError` in ``exc`` or its ``__cause__``/``__context__`` chain (``None`` if absent).

    MONAI's ``Compose``/``Dataset`` wrap transform errors in ``RuntimeError``; use this to report the real problem.
    """
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, BadInputError):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


# ----------------------------------------------------------------------------------------------------------- files
def check_file_exists(path: str | PathLike, what: str = "file") -> Path:
    """Check that ``path`` is an existing, non-empty regular file; returns it as a ``Path``.

    Args:
        path: the file.
        what: what the file is, for the message (``"image"``, ``"label"``, ``"checkpoint"``...).

    Raises:
        BadInputError: missing, a folder, or 0 bytes.
    """
    p = Path(path).expanduser()
    if not p.exists():
        hint = f" (the folder {p.parent} does not exist either)" if not p.parent.exists() else ""
        raise BadInputError(p, f"{what} file not found{hint}; check the path in the datalist/config")
    if p.is_dir():
        raise BadInputError(p, f"expected a {what} file, got a folder")
    if p.stat().st_size == 0:
        raise BadInputError(p, f"{what} file is empty (0 bytes); it was probably not written completely")
    return p


def _image_format(path: Path) -> str:
    name = path.name.lower()
    if name.endswith((".nii", ".nii.gz", ".hdr", ".img")):
        return "nifti"
    if name.endswith((".png", ".jpg", ".jpeg", ".bmp", ".gif")):
        return "pil"
    if name.endswith((".tif", ".tiff")):
        return "tiff"
    if name.endswith(".npy"):
        return "npy"
    if name.endswith(".npz"):
        return "npz"
    return "sitk"  # .mha, .mhd, .nrrd, .dcm, ...


def _read_image_file(path: Path, fmt: str) -> tuple[int, ...]:
    """Read the whole file (so truncated data is detected, not only a valid header); returns the array shape."""
    if fmt == "nifti":
        import nibabel as nib

        img = nib.load(str(path))
        return tuple(np.asanyarray(img.dataobj).shape)
    if fmt == "pil":
        from PIL import Image

        with Image.open(path) as im:
            im.load()
            return (im.height, im.width, len(im.getbands()))
    if fmt == "tiff":
        import tifffile

        return tuple(tifffile.imread(path).shape)
    if fmt == "npy":
        return tuple(np.load(path, allow_pickle=False).shape)
    if fmt == "npz":
        with np.load(path, allow_pickle=False) as z:
            return tuple(z[z.files[0]].shape) if z.files else ()
    import SimpleITK as sitk

    return tuple(sitk.GetArrayViewFromImage(sitk.ReadImage(str(path))).shape)


def check_image_file(path: str | PathLike, what: str = "image") -> tuple[int, ...]:
    """Check that an image file exists and can be read completely with the reader for its extension.

    NIfTI (``.nii``, ``.nii.gz``) via nibabel, PNG/JPEG via Pillow, TIFF via tifffile, ``.npy``/``.npz`` via numpy,
    anything else via SimpleITK. The whole pixel data is read, so a truncated file is detected even when its header
    is intact. Returns the array shape as stored in the file (reader order, no channel-first conversion).

    Raises:
        BadInputError: missing/empty file, or the reader failed (message names the reader and its error).
    """
    p = check_file_exists(path, what)
    fmt = _image_format(p)
    try:
        return _read_image_file(p, fmt)
    except (MemoryError, KeyboardInterrupt):
        raise
    except Exception as e:
        raise BadInputError(
            p,
            f"cannot read the {what} file with the {fmt} reader ({_short(e)}); the file is truncated or corrupt, "
            "re-export or re-download it",
        ) from e


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
        axes = (
            "[C, H, W]" if spatial_dims == 2 else "[C, H, W, D]" if spatial_dims == 3 else f"[C, {spatial_dims} axes]"
        )
        hint = ""
        if len(shape) == spatial_dims:
            hint = "; the channel axis is missing (add EnsureChannelFirstd after LoadImaged)"
        elif len(shape) == spatial_dims + 2 and shape[0] == 1:
            hint = "; it has an extra batch axis of size 1"
        raise BadInputError(
            source,
            f"expected a {spatial_dims}D {name} with {spatial_dims} spatial dimensions, channel first {axes} "
            f"({spatial_dims + 1} dims), got shape {_shape_str(shape)} ({len(shape)} dims){hint}",
        )
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
            allowed = f" {sorted(set(int(v) for v in label_values))}" if label_values is not None else ""
            raise BadInputError(
                source,
                f"{name} has dtype {str(t.dtype).replace('torch.', '')} with values that are not whole numbers "
                f"(e.g. {_fmt_list([round(v, 4) for v in examples])}); expected integer class ids{allowed}. "
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
                    f"{name} values {_fmt_list(bad)} are not in the allowed label set {allowed_set} "
                    f"({n_bad} voxels){hint}",
                )
    if require_foreground and lo == background and hi == background:
        raise BadInputError(
            source,
            f"{name} has no foreground (every voxel is {background}, shape {_shape_str(t.shape)}); this case cannot "
            "be used where a lesion/organ is required: remove it from the datalist or fix the mask",
        )


# ------------------------------------------------------------------------------------------------------------ text
def token_counter(tokenizer: Any, add_special_tokens: bool = True) -> Callable[[str], int]:
    """A ``str -> int`` token counter from a Hugging Face tokenizer (counts special tokens such as [CLS]/[SEP])."""

    def count(text: str) -> int:
        return len(tokenizer(text, add_special_tokens=add_special_tokens, truncation=False)["input_ids"])

    return count


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


def resolve_texts(
    texts: Sequence[Any] | str | None,
    batch: int,
    default_text: str | None = None,
    case_ids: Sequence[Any] | None = None,
) -> list[str]:
    """The report text of each of ``batch`` cases: the case's own text, else ``default_text``, else an error.

    The bundle contract (``bundles/README.md``): text is a first-class per-case input, and a text-guided bundle
    refuses a case without text unless the config sets ``default_text``. A single text (a ``str`` or a list of one)
    is shared by the whole batch.

    Args:
        texts: one text per case (``None``/empty/non-string entries count as missing), a single text, or ``None``.
        batch: number of cases.
        default_text: prompt used for cases without text; ``None`` = a missing text is an error.
        case_ids: names used in error messages (default ``image[i]``).

    Raises:
        BadInputError: naming the case, when a text is missing and there is no ``default_text``, or when the
            number of texts does not match ``batch``.
    """
    names = [f"case {c}" for c in case_ids] if case_ids is not None else [f"image[{i}]" for i in range(batch)]
    if isinstance(texts, str) or texts is None:
        texts = [texts] * batch
    texts = list(texts)
    if len(texts) == 1 and batch > 1:
        texts = texts * batch
    if len(texts) != batch:
        raise BadInputError("text", f"{len(texts)} texts for a batch of {batch} images; give one per image")
    out = []
    for name, t in zip(names, texts):
        if not isinstance(t, str) or not t.strip():
            if default_text is None:
                raise BadInputError(
                    name,
                    f"no report text for this case (got {t!r}); this model segments an image given its text: add a "
                    "'text' to the case in the datalist, or set 'default_text' in the config",
                )
            t = default_text
        out.append(t)
    return out


def check_text(
    text: Any,
    source: str | PathLike | None,
    max_tokens: int | None = None,
    count_tokens: Callable[[str], int] | Any | None = None,
    max_chars: int | None = None,
    name: str = "text prompt",
) -> str:
    """Check a text prompt: present, a non-empty string, and not longer than the text encoder accepts.

    Args:
        text: the prompt.
        source: file name or case id for the message.
        max_tokens: the most tokens the text encoder accepts (e.g. 512 for BERT); needs ``count_tokens``.
        count_tokens: ``str -> int`` token counter, or a Hugging Face tokenizer (wrapped with :func:`token_counter`).
        max_chars: optional limit on characters (for encoders without a tokenizer at hand).
        name: what the text is, for the message.

    Returns:
        the text, unchanged.

    Raises:
        BadInputError: missing (``None``), not a string, empty/whitespace only, or too long.
    """
    if text is None:
        raise BadInputError(source, f"{name} is missing; every case needs a text description")
    if not isinstance(text, str):
        raise BadInputError(source, f"{name} must be a string, got {type(text).__name__}")
    if not text.strip():
        raise BadInputError(source, f"{name} is empty; every case needs a text description")
    if max_chars is not None and len(text) > max_chars:
        raise BadInputError(source, f"{name} has {len(text)} characters, at most {max_chars} are allowed; shorten it")
    if max_tokens is not None:
        if count_tokens is None:
            raise ValueError("check_text: max_tokens needs count_tokens (a str -> int callable or a tokenizer)")
        counter = token_counter(count_tokens) if hasattr(count_tokens, "convert_tokens_to_ids") else count_tokens
        n = int(counter(text))
        if n > max_tokens:
            raise BadInputError(
                source,
                f"{name} is too long: {n} tokens, the text encoder accepts at most {max_tokens}; shorten it "
                f"(it would otherwise be truncated): {text[:60]!r}...",
            )
    return text


# ----------------------------------------------------------------------------------------------------- checkpoints
def _checkpoint_read_problem(path: Path, err: BaseException) -> str:
    with open(path, "rb") as f:
        head = f.read(9)
    text = str(err)
    if isinstance(err, pickle.UnpicklingError) and "Unsupported global" in text:
        detail = " ".join(text[text.find("Unsupported global") :].split())
        detail = detail.split(" was not an allowed global")[0]
        return (
            f"checkpoint contains Python objects that are not allowed with torch.load(weights_only=True) "
            f"({detail}); it was not saved as plain state dicts (or it is not trustworthy). "
            "Re-save it as {'model': network.state_dict(), ...}"
        )
    if len(head) == 9 and head[8:9] == b"{":  # safetensors: u64 header length, then a JSON header
        return "this is a safetensors file, not a PyTorch checkpoint; load it with safetensors.torch.load_file"
    if not (head.startswith(b"PK\x03\x04") or head[:1] == b"\x80"):
        return f"not a PyTorch checkpoint file (it starts with {head[:8]!r}, neither a zip archive nor a pickle)"
    if "WeightsUnpickler error:" in text:  # keep torch's specific reason, drop its generic preamble
        reason = " ".join(text.split("WeightsUnpickler error:", 1)[1].split("Check the documentation")[0].split())
        detail = f"{type(err).__name__}: {reason}"
    else:
        detail = _short(err, 120)
    if head.startswith(b"PK\x03\x04"):
        return (
            f"checkpoint is truncated or corrupt (incomplete PyTorch zip archive; {detail}); "
            "it was probably not saved completely -- use an earlier checkpoint or re-download it"
        )
    if head[:1] == b"\x80":
        return f"checkpoint (legacy PyTorch format) is truncated or corrupt ({detail})"
    return f"not a readable PyTorch checkpoint ({_short(err, 120)})"


def load_checkpoint(
    path: str | PathLike,
    required_keys: Sequence[str] = ("model",),
    map_location: str | torch.device | None = "cpu",
) -> dict:
    """Load a checkpoint with ``torch.load(..., weights_only=True)`` and check its top-level keys.

    Args:
        path: the ``.pt``/``.pth`` file.
        required_keys: top-level keys that must be present (e.g. ``("model",)``, or those of a training state).
        map_location: passed to ``torch.load`` (default CPU).

    Returns:
        the checkpoint dict.

    Raises:
        BadInputError: missing/empty file, truncated or non-torch file, disallowed Python objects, not a dict,
            or missing required keys.
    """
    p = check_file_exists(path, "checkpoint")
    try:
        ckpt = torch.load(p, map_location=map_location, weights_only=True)
    except (MemoryError, KeyboardInterrupt):
        raise
    except Exception as e:
        raise BadInputError(p, _checkpoint_read_problem(p, e)) from e
    if not isinstance(ckpt, Mapping):
        raise BadInputError(p, f"checkpoint holds a {type(ckpt).__name__}, expected a dict such as {{'model': ...}}")
    missing = [k for k in required_keys if k not in ckpt]
    if missing:
        raise BadInputError(
            p,
            f"checkpoint is missing the top-level key(s) {_fmt_list(missing)} "
            f"(found {_fmt_list(sorted(map(str, ckpt)))}); it is a partial checkpoint or one of another bundle",
        )
    return dict(ckpt)


def _is_state_dict(obj: Any) -> bool:
    return isinstance(obj, Mapping) and len(obj) > 0 and all(isinstance(v, torch.Tensor) for v in obj.values())


def describe_state_dict_mismatch(
    expected: Mapping[str, torch.Tensor], given: Mapping[str, Any], strict: bool = True, limit: int = _MAX_LISTED
) -> str | None:
    """How a state dict ``given`` fails to fit ``expected`` (a network's ``state_dict()``); ``None`` if it fits.

    Lists up to ``limit`` missing keys, unexpected keys and shape mismatches (checkpoint shape vs network shape).
    Missing/unexpected keys count only if ``strict``; shape mismatches always count.
    """
    missing = [k for k in expected if k not in given]
    unexpected = [k for k in given if k not in expected]
    mismatched = [
        f"{k!r}: checkpoint {tuple(given[k].shape)} vs network {tuple(expected[k].shape)}"
        for k in expected
        if k in given and isinstance(given[k], torch.Tensor) and tuple(given[k].shape) != tuple(expected[k].shape)
    ]
    parts = []
    if strict and missing:
        parts.append(f"{len(missing)} missing key(s) {_fmt_list(missing, limit)}")
    if strict and unexpected:
        parts.append(f"{len(unexpected)} unexpected key(s) {_fmt_list(unexpected, limit)}")
    if mismatched:
        shown = "; ".join(mismatched[:limit]) + ("; ..." if len(mismatched) > limit else "")
        parts.append(f"{len(mismatched)} shape mismatch(es) ({shown})")
    return ", ".join(parts) if parts else None


def _unwrap(network: torch.nn.Module) -> torch.nn.Module:
    while isinstance(network, (torch.nn.DataParallel, torch.nn.parallel.DistributedDataParallel)):
        network = network.module
    return network


def load_network_weights(
    network: torch.nn.Module,
    path_or_state: str | PathLike | Mapping,
    key: str | None = "model",
    strict: bool = True,
    source: str | None = None,
    map_location: str | torch.device | None = "cpu",
) -> torch.nn.Module:
    """Load weights into ``network`` after checking that they belong to it.

    Args:
        network: the module (``DataParallel``/``DistributedDataParallel`` are unwrapped).
        path_or_state: a checkpoint file (loaded with :func:`load_checkpoint`, ``weights_only=True``) or a dict.
        key: the entry holding the state dict (``{"model": state_dict}``, MONAI's convention). A raw state dict
            (all values tensors) is accepted too. ``None``: the dict is the state dict.
        strict: require exactly the network's keys; ``False`` still rejects shape mismatches (a checkpoint of
            another network configuration must not be half-loaded silently).
        source: name for the message when a dict is given.
        map_location: device for ``torch.load``.

    Returns:
        ``network`` (so configs can write ``$load_network_weights(@network_def, path)``).

    Raises:
        BadInputError: unreadable checkpoint, missing ``key``, or keys/shapes that do not fit the network
            (lists a few missing, unexpected and shape-mismatched keys).
    """
    if isinstance(path_or_state, Mapping):
        ckpt, src = path_or_state, source or "<state dict>"
    else:
        ckpt, src = load_checkpoint(path_or_state, required_keys=(), map_location=map_location), str(path_or_state)
    if key is not None and key in ckpt:
        state = ckpt[key]
    elif key is None or _is_state_dict(ckpt):
        state = ckpt
    else:
        raise BadInputError(
            src, f"checkpoint has no {key!r} entry (found {_fmt_list(sorted(map(str, ckpt)))}) and is not a state dict"
        )
    if not _is_state_dict(state):
        raise BadInputError(src, f"checkpoint entry {key!r} is not a state dict of tensors")
    net = _unwrap(network)
    expected = net.state_dict()
    if all(k.startswith("module.") for k in state) and not any(k.startswith("module.") for k in expected):
        state = {k[len("module.") :]: v for k, v in state.items()}  # saved from a DataParallel/DDP wrapper
    problem = describe_state_dict_mismatch(expected, state, strict=strict)
    if problem:
        raise BadInputError(
            src,
            f"weights do not fit the network {type(net).__name__}: {problem}. The checkpoint is probably from "
            "another network or another network configuration (channels, spatial_dims, ...)",
        )
    net.load_state_dict(state, strict=strict)
    return network


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
                raise BadInputError(_source_of(d, key), f"cannot load {key!r}: {_short(e)}") from e
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
        self.source_key = source_key
        self.case_key = case_key

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
