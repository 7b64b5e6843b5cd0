"""Dictionary transforms for text-guided inference configs: default text, resize back to the input, uncertainty split.

Used by the TextDiff bundle; generic for any bundle that runs at a fixed size, needs a report text per case, or
returns an extra uncertainty channel.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from monai.data import MetaTensor
from monai.transforms import MapTransform

from common.checks import resolve_texts
from common.errors import BadInputError

__all__ = ["FillTextd", "ResizeToOriginald", "SplitUncertaintyd"]


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
    """Move the uncertainty channel (channel 2, variance of p(foreground) over the noise draws, <= 0.25) of a
    3-channel prediction into ``uncertainty_key``, scaled by 4 to [0, 1]; 2-channel predictions pass unchanged."""

    def __init__(self, keys: str = "pred", uncertainty_key: str = "uncertainty") -> None:
        super().__init__(keys)
        self.uncertainty_key = uncertainty_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            pred = d[key]
            if pred.shape[0] == 3:
                d[self.uncertainty_key] = (pred[2:3] * 4.0).clamp(0.0, 1.0)
                d[key] = pred[:2]
        return d
