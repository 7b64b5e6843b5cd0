"""Check that a file just written is complete before it replaces anything (:func:`common.io.atomic.atomic_path`).

Writers do not always report a full disk: PIL's TIFF writer, for one, returns normally after ``ENOSPC`` and leaves
a truncated file (24,576 of 65,670 bytes in a measured run), and a buffered ``write`` can fail only at ``close``.
:func:`verify_written_file` therefore re-reads what was written, by its format, before the temporary file is
renamed into place:

=========================================  =========================================================================
format (by the *final* file name)          check
=========================================  =========================================================================
any                                        not empty; exactly ``expected_size`` bytes when the writer knows it
``.png .jpg .jpeg .bmp .tif .tiff``        PIL decodes every pixel (``Image.load``); TIFF falls back to tifffile
``.nii .nii.gz``                           nibabel reads the header and the whole voxel array (gzip CRC included)
``.pt .pth .ckpt .zip``                    every member of the zip archive reads with a matching CRC (``testzip``)
``.safetensors``                           the header parses and the file is as long as the tensors it lists
``.json``                                  parses
``.gz`` (other)                            decompresses to the end (CRC)
=========================================  =========================================================================

Only the standard library is imported at module level; PIL, nibabel and tifffile are imported when a file of
their format is checked.
"""

from __future__ import annotations

import gzip
import json
import shutil
import struct
import zipfile
from os import PathLike
from pathlib import Path

from common.errors import OutputWriteError
from common.io.atomic import _split_extension

__all__ = ["check_file_decodes", "verify_written_file", "disk_space_hint"]

_IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
_ZIP_EXTENSIONS = (".pt", ".pth", ".ckpt", ".zip")


def disk_space_hint(folder: str | PathLike) -> str:
    """``"N MB free on this disk"`` for the disk of ``folder`` (empty if it cannot be told)."""
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return ""
    return f"{free / 1e6:.0f} MB free on its disk"


def _check_image(path: Path, ext: str) -> None:
    from PIL import Image

    try:
        with Image.open(path) as im:
            im.load()
        return
    except Exception as err:  # PIL raises OSError, SyntaxError, ValueError... for truncated or odd files
        if ext not in (".tif", ".tiff"):
            raise ValueError(f"does not decode ({type(err).__name__}: {err})") from err
        pil_error = err
    try:  # TIFF flavours PIL does not read (multi-channel float, tiles) but tifffile does
        import tifffile

        tifffile.imread(path)
    except Exception as err:
        raise ValueError(f"does not decode (PIL: {pil_error}; tifffile: {err})") from err


def _check_nifti(path: Path) -> None:
    import nibabel as nib
    import numpy as np

    img = nib.load(str(path))
    np.asarray(img.dataobj)


def _check_zip(path: Path) -> None:
    if not zipfile.is_zipfile(path):
        raise ValueError("is not a complete zip archive (torch.save writes one)")
    with zipfile.ZipFile(path) as zf:
        bad = zf.testzip()
    if bad is not None:
        raise ValueError(f"member {bad!r} fails its CRC check")


def _check_safetensors(path: Path) -> None:
    size = path.stat().st_size
    with open(path, "rb") as fh:
        head = fh.read(8)
        if len(head) < 8:
            raise ValueError("has no safetensors header")
        (n,) = struct.unpack("<Q", head)
        if 8 + n > size:
            raise ValueError(f"header of {n} bytes runs past the end of the file ({size} bytes)")
        header = json.loads(fh.read(n))
    end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
    if 8 + n + end != size:
        raise ValueError(f"is {size} bytes, its header lists {8 + n + end}")


def _check_gzip(path: Path) -> None:
    with gzip.open(path, "rb") as fh:
        while fh.read(1 << 20):
            pass


def check_file_decodes(path: str | PathLike, name: str | None = None) -> None:
    """Read the whole file by its format (``name``'s extension, default ``path``'s): images decoded, NIfTI voxels
    read, zip members CRC-checked, safetensors sizes matched, JSON parsed, gzip streams read to the end.

    Raises:
        ValueError: saying what is wrong (empty, truncated, does not decode); the caller names the file.
    """
    path = Path(path)
    if path.stat().st_size == 0:
        raise ValueError("is empty")
    ext = _split_extension(Path(name or path.name).name)[1].lower()
    if ext in _IMAGE_EXTENSIONS:
        _check_image(path, ext)
    elif ext in (".nii", ".nii.gz"):
        _check_nifti(path)
    elif ext in _ZIP_EXTENSIONS:
        _check_zip(path)
    elif ext == ".safetensors":
        _check_safetensors(path)
    elif ext == ".json":
        json.loads(path.read_text(encoding="utf-8"))
    elif ext == ".gz":
        _check_gzip(path)


def verify_written_file(path: str | PathLike, final_name: str | None = None, expected_size: int | None = None) -> None:
    """Raise :class:`~common.errors.OutputWriteError` unless the file at ``path`` is complete and readable.

    Args:
        path: the file just written (usually the temporary name of :func:`common.io.atomic.atomic_path`).
        final_name: the name it will get (its extension picks the check; default: ``path``'s own name).
        expected_size: the number of bytes the writer wrote, when it knows (text, bytes).

    Raises:
        OutputWriteError: naming ``final_name`` (or ``path``), what is wrong and the free space on the disk.
    """
    path = Path(path)
    shown = Path(final_name) if final_name else path
    shown = shown if shown.is_absolute() else path.parent / shown.name
    try:
        size = path.stat().st_size
        if size == 0:
            raise ValueError("is empty")
        if expected_size is not None and size != expected_size:
            raise ValueError(f"is {size} bytes, {expected_size} were written")
        check_file_decodes(path, shown.name)
    except OutputWriteError:
        raise
    except Exception as err:  # every reader has its own error types for truncated data
        hint = disk_space_hint(path.parent)
        raise OutputWriteError(
            shown,
            f"the file just written is incomplete or unreadable: {err}"
            + (f" (is the disk full? {hint})" if hint else ""),
        ) from err
