"""Dictionary transforms for inference configs: default text, resize back to the input, uncertainty split, and a
``Spacingd`` that tolerates MONAI Label's extra keys.

Used by the TextDiff bundle; generic for any bundle that runs at a fixed size, needs a report text per case, or
returns an extra uncertainty channel (:func:`common.inferers.sampling.foreground_variance`, the one definition of
the ``<case>_uncertainty`` output shared by every bundle; bundles/README.md, "Outputs").
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from os import PathLike
from typing import Any

import torch
import torch.nn.functional as F
from common.errors import BadInputError
from common.inferers.sampling import split_uncertainty
from common.text.prompts import resolve_texts
from monai.data import MetaTensor
from monai.transforms import MapTransform
from monai.transforms import Spacingd as _MonaiSpacingd

__all__ = ["FillCaseIdd", "FillTextd", "PathSafeSpacingd", "ResizeToOriginald", "SplitUncertaintyd"]


class FillCaseIdd(MapTransform):
    """Give an item without a case id the file name of its image, without folder and extension.

    Datalists from the converters always carry ``case_id``; MONAI Label's datastore items (training and
    validation) carry only ``image`` and ``label`` paths, and engines that pass case ids on (feature caches, error
    messages) would fail with a ``KeyError``. Runs on the item before the image is loaded (``source_key`` a path).

    Args:
        keys: the case id key (``"case_id"``).
        source_key: the key whose path names the case (``"image"``).
    """

    def __init__(self, keys: str = "case_id", source_key: str = "image") -> None:
        super().__init__(keys, allow_missing_keys=True)
        self.source_key = source_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict:
        from common.data.converters.base import case_key

        d = dict(data)
        for key in self.keys:
            if d.get(key) in (None, ""):
                source = d.get(self.source_key)
                if isinstance(source, (list, tuple)) and source:
                    source = source[0]
                if not isinstance(source, (str, PathLike)):
                    raise BadInputError(
                        f"{key}", f"no {key!r} and no file path under {self.source_key!r} to name the case"
                    )
                d[key] = case_key(source)
        return d


class FillTextd(MapTransform):
    """Make sure a case has a report text: keep it, use ``default_text`` if it has none, or raise.

    Args:
        keys: the text key (``"text"``).
        default_text: prompt for cases without text; ``None`` = a case without text is a
            :class:`~common.errors.BadInputError` naming the case and the fix.
        case_key: key of the case id used in the message.
    """

    def __init__(self, keys: str = "text", default_text: str | None = None, case_key: str = "case_id") -> None:
        super().__init__(keys, allow_missing_keys=True)
        self.default_text = default_text
        self.case_key = case_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict:
        d = dict(data)
        for key in self.keys:
            (d[key],) = resolve_texts([d.get(key)], 1, self.default_text, [d.get(self.case_key, "?")])
        return d


class ResizeToOriginald(MapTransform):
    """Resize channel-first predictions back to the spatial shape the reference image had when loaded.

    The reference's MetaTensor meta ``spatial_shape`` (set by ``LoadImage``) gives the size; the output is a
    MetaTensor carrying the reference's meta (file name for the writer). Bilinear for probabilities.
    """

    def __init__(self, keys, ref_key: str = "image", mode: str = "bilinear", allow_missing_keys: bool = True) -> None:
        super().__init__(keys, allow_missing_keys)
        self.ref_key = ref_key
        self.mode = mode

    def __call__(self, data: Mapping[Hashable, Any]) -> dict:
        d = dict(data)
        ref = d[self.ref_key]
        if not isinstance(ref, MetaTensor) or "spatial_shape" not in ref.meta:
            raise BadInputError(self.ref_key, "no 'spatial_shape' in the image meta data; load it with LoadImaged")
        size = [int(s) for s in torch.as_tensor(ref.meta["spatial_shape"]).flatten().tolist()]
        meta = dict(ref.meta)
        meta["affine"] = meta.get("original_affine", meta.get("affine"))
        for key in self.key_iterator(d):
            x = torch.as_tensor(d[key]).float()[None]
            x = F.interpolate(x, size=size, mode=self.mode, align_corners=False if self.mode != "nearest" else None)
            d[key] = MetaTensor(x[0], meta=meta)
        return d


class SplitUncertaintyd(MapTransform):
    """Move a prediction's trailing uncertainty channel into ``uncertainty_key``, unchanged (float32).

    The prediction is channel-first, ``(C, *spatial)``. Whether its last channel is an uncertainty map is decided
    from the configured number of classes, never guessed from the channel count alone:

    - ``C == num_classes + 1``: class probabilities ``(num_classes, ...)`` followed by the uncertainty
      (:func:`common.inferers.sampling.foreground_variance`, the contract's definition); it is moved to
      ``uncertainty_key`` as ``(1, ...)`` as float32, unscaled (saved as a float32 TIFF / NIfTI), and ``key`` keeps the
      first ``num_classes`` channels;
    - ``C == num_classes``: no uncertainty channel (e.g. the plain ``inferer`` MONAI Label calls): passes unchanged;
    - any other ``C``: :class:`~common.errors.BadInputError` naming the case and the key.

    Args:
        keys: the prediction key(s).
        num_classes: number of class channels of the network output (background included); required.
        uncertainty_key: where the uncertainty map goes.
        case_key: key of the case id used in messages (else the prediction's file name, else ``"?"``).
    """

    def __init__(
        self,
        keys: str = "pred",
        num_classes: int | None = None,
        uncertainty_key: str = "uncertainty",
        case_key: str = "case_id",
    ) -> None:
        super().__init__(keys)
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise BadInputError(
                "SplitUncertaintyd",
                f"num_classes must be the number of class channels (an int >= 1), got {num_classes!r}; set it in "
                'the config (e.g. "num_classes": "@network_def#num_classes")',
            )
        self.num_classes = num_classes
        self.uncertainty_key = uncertainty_key
        self.case_key = case_key

    def _case_name(self, d: Mapping[Hashable, Any], pred: Any) -> str:
        if d.get(self.case_key) is not None:
            return f"case {d[self.case_key]}"
        meta = getattr(pred, "meta", None) or {}
        return str(meta.get("filename_or_obj") or "case ?")

    def __call__(self, data: Mapping[Hashable, Any]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            pred = d[key]
            channels = int(pred.shape[0])
            if channels == self.num_classes + 1:
                d[key], uncertainty = split_uncertainty(pred, channel_dim=0)
                d[self.uncertainty_key] = uncertainty.float()
            elif channels != self.num_classes:
                raise BadInputError(
                    self._case_name(d, pred),
                    f"{key!r} has {channels} channels; expected {self.num_classes} class channels, or "
                    f"{self.num_classes + 1} with a trailing uncertainty channel (num_classes={self.num_classes}); "
                    "check that num_classes matches the network output",
                )
        return d


class PathSafeSpacingd(_MonaiSpacingd):
    """``monai.transforms.Spacingd`` that leaves non-dict ``<key>_*`` entries of the data alone.

    MONAI 1.6's ``Spacingd`` updates every entry whose name starts with ``"<key>_"`` as a metadata dict when the image
    comes from a NIfTI file. MONAI Label puts the image's path under ``image_path`` (a ``str``) into the data it
    sends through a bundle's ``preprocessing`` (``BasicInferTask.__call__``), so the plain transform fails there with
    ``AttributeError: 'str' object has no attribute 'update'``. This subclass takes such non-mapping entries out
    for the call and puts them back unchanged; everything else (arguments, output, ``inverse``) is ``Spacingd``'s.
    """

    def __call__(self, data: Mapping[Hashable, Any], lazy: bool | None = None) -> dict[Hashable, Any]:
        d = dict(data)
        prefixes = tuple(f"{k}_" for k in self.keys)
        aside = {
            k: d.pop(k)
            for k in list(d)
            if isinstance(k, str) and k.startswith(prefixes) and not isinstance(d[k], Mapping)
        }
        out = super().__call__(d, lazy=lazy)
        out.update(aside)
        return out
