"""Reading medical image files: the format from the file name, the right reader, errors that name the file.

- :func:`check_file_exists` -- the path exists and is a non-empty file.
- :func:`read_image` -- the one image reader: any NIfTI / MetaImage / NRRD / DICOM / PNG / TIFF / JPEG / NumPy file
  into an array in one axis order (rows first) and its spacing; errors name the file and the reader.
- :func:`check_image_file` -- the file reads completely; returns its shape.
"""

from __future__ import annotations

from os import PathLike
from pathlib import Path

import numpy as np
from common.errors import BadInputError, short_message

__all__ = ["check_file_exists", "check_image_file", "read_image"]


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


def read_image(path: str | PathLike, what: str = "image") -> tuple[np.ndarray, tuple[float, ...] | None]:
    """Read an image / label / prediction / uncertainty file whole: (array, voxel spacing in mm or ``None``).

    One axis convention for every format, the picture one (rows first), which is also what MONAI's readers give
    after reversing their (x, y, z) order:

    - NIfTI (``.nii``, ``.nii.gz``, ``.hdr``/``.img``; nibabel): the stored (x, y[, z]) axes reversed to (H, W) /
      (D, H, W); spacing = the header's voxel sizes in the same order. Trailing singleton axes are dropped.
    - PNG / JPEG / BMP / GIF (Pillow): (H, W) or (H, W, 3|4); spacing ``None``.
    - TIFF (tifffile): (H, W), (H, W, 3) or (D, H, W); spacing ``None``.
    - ``.npy`` / ``.npz`` (first array; no pickles): as stored; spacing ``None``.
    - anything else (``.mha``, ``.mhd``, ``.nrrd``, DICOM; SimpleITK): (D, H, W) / (H, W), spacing reversed to match.

    The whole pixel data is decoded, so a truncated file is detected even when its header is intact.

    Raises:
        BadInputError: missing / empty file, or the reader failed (the message names the reader and its error).
    """
    p = check_file_exists(path, what)
    fmt = _image_format(p)
    try:
        if fmt == "nifti":
            import nibabel as nib

            img = nib.load(str(p))
            data = np.asanyarray(img.dataobj)
            zooms = tuple(float(z) for z in img.header.get_zooms())
            while data.ndim > 2 and data.shape[-1] == 1:
                data = data[..., 0]
            return np.ascontiguousarray(data.transpose(tuple(range(data.ndim))[::-1])), zooms[: data.ndim][::-1]
        if fmt == "pil":
            from PIL import Image

            with Image.open(p) as im:
                im.load()
                return np.asarray(im).copy(), None
        if fmt == "tiff":
            import tifffile

            return np.asarray(tifffile.imread(str(p))), None
        if fmt == "npy":
            return np.load(p, allow_pickle=False), None
        if fmt == "npz":
            with np.load(p, allow_pickle=False) as z:
                if not z.files:
                    raise ValueError("the .npz archive holds no array")
                return np.asarray(z[z.files[0]]), None
        import SimpleITK as sitk  # noqa: N813 -- SimpleITK's own documented alias

        img = sitk.ReadImage(str(p))
        return sitk.GetArrayFromImage(img), tuple(float(s) for s in img.GetSpacing())[::-1]
    except (MemoryError, KeyboardInterrupt):
        raise
    except Exception as e:
        raise BadInputError(
            p,
            f"cannot read the {what} file with the {fmt} reader ({short_message(e)}); the file is truncated or "
            "corrupt, re-export or re-download it",
        ) from e


def check_image_file(path: str | PathLike, what: str = "image") -> tuple[int, ...]:
    """Check that an image file exists and can be read completely (:func:`read_image`); returns its array shape.

    Raises:
        BadInputError: missing/empty file, or the reader failed (message names the reader and its error).
    """
    return tuple(read_image(path, what)[0].shape)
