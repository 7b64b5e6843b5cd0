"""MONAI image savers that never leave a half-written output: writers go through :func:`common.io.atomic.atomic_path`.

- :func:`atomic_writer_class` -- wraps a MONAI ``ImageWriter`` class so ``write`` targets a temp name then renames.
- :class:`AtomicSaveImage` / :class:`AtomicSaveImaged` -- drop-in replacements of MONAI's ``SaveImage`` /
  ``SaveImaged`` (same arguments) whose image writers write to a temporary name, re-read it
  (:func:`common.io.verify.verify_written_file`) and rename; a full disk or an incomplete file raises
  :class:`~common.errors.OutputWriteError` naming the output, and nothing is left under its name.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from os import PathLike

from common.errors import OutputWriteError
from common.io.atomic import atomic_path
from monai.data import image_writer
from monai.transforms import SaveImage, SaveImaged

__all__ = [
    "atomic_writer_class",
    "AtomicNibabelWriter",
    "AtomicITKWriter",
    "AtomicPILWriter",
    "AtomicSaveImage",
    "AtomicSaveImaged",
]

_ATOMIC_WRITERS: dict[type, type] = {}
#: the OutputWriteErrors of this thread's current save: MONAI's SaveImage tries every writer and then raises a plain
#: "cannot find a suitable writer" RuntimeError without the cause; the savers below re-raise the recorded error.
_WRITE_ERRORS = threading.local()


@contextlib.contextmanager
def _reraise_write_errors() -> Iterator[None]:
    """Around one ``SaveImage`` call: if it fails after a writer hit a full disk or wrote an incomplete file, raise
    that :class:`~common.errors.OutputWriteError` (naming the file) instead of MONAI's generic error."""
    _WRITE_ERRORS.errors = []
    try:
        yield
    except Exception as err:
        recorded = getattr(_WRITE_ERRORS, "errors", [])
        if recorded and not isinstance(err, OutputWriteError):
            raise recorded[-1] from err
        raise
    finally:
        _WRITE_ERRORS.errors = []


def atomic_writer_class(writer_cls: type[image_writer.ImageWriter]) -> type[image_writer.ImageWriter]:
    """Subclass of a MONAI ``ImageWriter`` class whose ``write(filename)`` goes through :func:`atomic_path`.

    Built-in writers get module-level classes (``AtomicNibabelWriter``, ...) so that they pickle by reference.
    """
    if writer_cls in _ATOMIC_WRITERS.values():
        return writer_cls
    if writer_cls not in _ATOMIC_WRITERS:
        name = f"Atomic{writer_cls.__name__}"

        def write(self, filename_or_obj, verbose: bool = True, **kwargs):
            if not isinstance(filename_or_obj, (str, PathLike)):  # file-like object: nothing to rename
                return writer_cls.write(self, filename_or_obj, verbose=verbose, **kwargs)
            try:
                with atomic_path(filename_or_obj) as tmp:
                    return writer_cls.write(self, str(tmp), verbose=verbose, **kwargs)
            except OutputWriteError as err:
                getattr(_WRITE_ERRORS, "errors", []).append(err)
                raise

        cls = type(name, (writer_cls,), {"write": write, "__module__": __name__, "__qualname__": name})
        cls.__doc__ = f"``{writer_cls.__name__}`` writing to a temporary name in the same folder, then renaming."
        _ATOMIC_WRITERS[writer_cls] = cls
        globals().setdefault(name, cls)
    return _ATOMIC_WRITERS[writer_cls]


AtomicNibabelWriter = atomic_writer_class(image_writer.NibabelWriter)
AtomicITKWriter = atomic_writer_class(image_writer.ITKWriter)
AtomicPILWriter = atomic_writer_class(image_writer.PILWriter)


class AtomicSaveImage(SaveImage):
    """:class:`monai.transforms.SaveImage` that never leaves a half-written output file.

    Same arguments as ``SaveImage`` (``output_dir``, ``output_postfix``, ``output_ext``, ``separate_folder``,
    ``resample``, ``writer``, ...). Every writer MONAI would try is replaced by its atomic subclass
    (:func:`atomic_writer_class`): the image is written to ``.<name>.<token>.tmp<ext>`` in the output folder and
    renamed to ``<name><ext>`` only after the writer finished.
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.writers = tuple(atomic_writer_class(w) for w in self.writers)

    def __call__(self, *args, **kwargs):
        with _reraise_write_errors():
            return super().__call__(*args, **kwargs)


class AtomicSaveImaged(SaveImaged):
    """:class:`monai.transforms.SaveImaged` that never leaves a half-written output file.

    Drop-in replacement in bundle configs (same arguments as ``SaveImaged``)::

        {"_target_": "common.io.atomic.AtomicSaveImaged", "keys": "pred", "output_dir": "@output_dir",
         "output_postfix": "seg", "output_ext": ".nii.gz", "separate_folder": false, "resample": false}

    Input: ``data[key]`` channel-first ``[C, H, W]`` or ``[C, H, W, D]`` (MetaTensor with ``filename_or_obj``).
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.saver.writers = tuple(atomic_writer_class(w) for w in self.saver.writers)

    def __call__(self, *args, **kwargs):
        with _reraise_write_errors():
            return super().__call__(*args, **kwargs)
