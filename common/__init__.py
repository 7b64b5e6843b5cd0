"""Shared code of the diffusion-based, text-guided segmentation bundle collection.

One concept per module:

- :mod:`common.errors` -- the project error type for bad input.
- :mod:`common.checks` -- input checks used by every bundle (files, images, labels, text, checkpoints).
- :mod:`common.text_encoder` -- frozen Hugging Face text encoder (Clinical BioBERT by default), offline first.
- :mod:`common.cross_attention` -- masked cross-attention of 2D/3D feature maps over text tokens.
- :mod:`common.data` -- datalist format, dataset converters, synthetic data in the real layouts.
- :mod:`common.training` -- resumable training: atomic checkpoints, RNG states, seeding, logging handlers.
- :mod:`common.evaluation` -- Dice/IoU/HD95, per-case CSV + summary JSON, overlay pictures.
"""

__version__ = "0.1.0"
