"""Reading medical image files: the format from the file name, the right reader, errors that name the file.

- :func:`check_file_exists` -- the path exists and is a non-empty file.
- :func:`check_image_file` -- the header of a NIfTI / MetaImage / NRRD / DICOM / PNG / TIFF / JPEG file reads; returns
  its shape (the pixel data is not decoded).
"""

from __future__ import annotations

from os import PathLike
from pathlib import Path

import numpy as np

from common.errors import BadInputError, short_message

__all__ = ["check_file_exists", "check_image_file"]


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
            f"cannot read the {what} file with the {fmt} reader ({short_message(e)}); the file is truncated or "
            "corrupt, "
            "re-export or re-download it",
        ) from e
