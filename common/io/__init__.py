"""Files in and out: atomic writes, image readers, checkpoint loading, MONAI savers that never leave half a file.

- :mod:`common.io.atomic` -- write to a temporary file, verify, rename (``atomic_write_*``, ``atomic_torch_save``).
- :mod:`common.io.savers` -- ``AtomicSaveImaged``: MONAI's ``SaveImaged`` through the atomic writer.
- :mod:`common.io.images` -- the format of an image file from its name; whole-file read checks naming the file.
- :mod:`common.io.checkpoints` -- ``weights_only=True`` checkpoint loading, strict state-dict loading with a
  readable mismatch report, the ``monai-generative`` key converter and the registry of checkpoint converters.
"""
