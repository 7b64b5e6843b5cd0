"""Shared code of the diffusion-based, text-guided segmentation bundle collection.

Where the line falls: a module lives here when two or more bundles use it, or when it is the collection's own
contract (errors, input checks, outputs, training state, evaluation); code of one method lives in that bundle's
``scripts/`` so that each bundle folder shows its method (cDAL's NCSN++ layers and sampler, TextDiff's feature
extractor, feature cache, head and inferer, TextDiffSeg's network wiring and text conditioning, DiffBoost's edge
maps, Stable Diffusion parts and synthesis). The ADM UNet stays here although only TextDiff loads OpenAI's weights:
it is the collection's 2D diffusion UNet (in-domain pretraining, the stand-ins and the converter use it).

Subpackages by role, as MONAI's:

- :mod:`common.errors` -- the project error type for bad input and its message helpers.
- :mod:`common.io` -- atomic writes, image file checks, checkpoint loading and converters, atomic savers.
- :mod:`common.transforms` -- input checks as functions and MONAI transforms; inference transforms.
- :mod:`common.text` -- the frozen text encoder; per-case prompts and their checks.
- :mod:`common.networks` -- ADM UNet, 3D label autoencoder, text cross-attention, ``InferenceNetwork``.
- :mod:`common.inferers` -- ``SamplingInferer`` (one interface and one uncertainty for every bundle) and the DDIM
  sliding-window inferer.
- :mod:`common.data` -- datalist format, dataset converters, synthetic and paper-size data in the real layouts.
- :mod:`common.training` -- resumable training: atomic checkpoints, RNG states, seeding, logging handlers.
- :mod:`common.evaluation` -- Dice/IoU/HD95, per-case CSV + summary JSON, overlay pictures.
- :mod:`common.standins` -- random-weight stand-ins of the pretrained parts in their official formats.
- :mod:`common.utils` -- for tools, benches and tests: bundle ``scripts`` imports, profiling.
"""

__version__ = "0.1.0"
