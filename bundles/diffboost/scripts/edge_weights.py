"""The HED weights the edge maps need (bundles/diffboost/docs/sources.md §1.2, §8): a missing file stops the run, no
silent fallback.

DiffBoost's ControlNet hint is ``clip(HED(image) + B(label), 0, 1)`` with the ControlNet annotator's HED network and
its BSDS500 weights ``network-bsds500.pth`` (``scripts.edges``). The paper-scale configs (``train_controlnet.json``,
``synthesize.json``) default ``hed_weights`` to ``<bundle_root>/models/network-bsds500.pth`` (listed in
``large_files.yml``); ``hed_weights: null`` selects the documented Sobel fallback (the CPU demo does). Their
``initialize`` calls :func:`require_hed_weights` first, so a configured but missing file ends the run with a message
saying how to get it, before Stable Diffusion is loaded.
"""

from __future__ import annotations

from os import PathLike
from pathlib import Path

from common.errors import BadInputError

__all__ = ["HED_WEIGHTS_URL", "require_hed_weights"]

#: the ControlNet annotator's HED (BSDS500) weights
HED_WEIGHTS_URL = "https://huggingface.co/lllyasviel/Annotators/resolve/main/network-bsds500.pth"


def require_hed_weights(path: str | PathLike | None) -> str | None:
    """``path`` as a string if it is a file, ``None`` if HED is switched off (``None`` or ``""``: Sobel fallback).

    Raises:
        BadInputError: naming ``path``, when it is set but is not a file (with where to download it, and the
            ``hed_weights: null`` alternative).
    """
    if path is None or str(path) == "":
        return None
    if not Path(path).is_file():
        raise BadInputError(
            path,
            "HED weights file not found (network-bsds500.pth, the ControlNet annotator's BSDS500 HED used for the "
            f"edge maps, bundles/diffboost/docs/sources.md §1.2): download it from {HED_WEIGHTS_URL} to this path (it "
            "is listed in the "
            "bundle's large_files.yml) or set hed_weights to where it is; hed_weights null uses the Sobel "
            "fallback instead (not the paper's edges)",
        )
    return str(path)
