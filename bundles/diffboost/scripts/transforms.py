"""DiffBoost data transforms (bundles/diffboost/docs/sources.md §1.2 preprocessing, §5.2 per-sample data).

- :class:`PercentileScaled` -- per-slice percentile clip (0.5, 99.5) %, lower bound floored at -256 (meant for CT
  air), linear map to [-1, 1]: the authors' offline preprocessing, applied per image here.
- :class:`LoadSyntheticd` -- picks one of the case's synthetic images at random (i ~ U{1..n}, fresh every call)
  and loads it as ``image_syn`` (bundles/diffboost/docs/sources.md §5.2).
- :class:`JointMinMaxd` -- one min/max over the stacked (real, synthetic) pair -> [-1, 1] (the authors'
  ``MinMaxNormalization`` of the 2-channel stack); with the real image only it is the baseline's min-max.
- :func:`attach_synthetic` -- adds each training case's synthetic image files (from the synthesis manifest).
"""

from __future__ import annotations

import json
import os
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import torch
from common.errors import BadInputError
from monai.config import KeysCollection
from monai.transforms import LoadImage, MapTransform, RandomizableTransform

__all__ = ["PercentileScaled", "LoadSyntheticd", "JointMinMaxd", "attach_synthetic", "MANIFEST_NAME"]

#: file name of the synthesis manifest inside ``synthetic_dir``
MANIFEST_NAME = "manifest.json"


class PercentileScaled(MapTransform):
    """Clip each image to its (``lower``, ``upper``) percentiles (low bound >= ``floor``), map to [b_min, b_max].

    The authors' per-slice normalisation: ``lo = max(p0.5, -256)``, ``hi = p99.5``, ``x = clip(x, lo, hi)`` then
    linear to [-1, 1] (a constant image becomes ``b_min``). Input/output ``(C, H, W)``; the percentiles are over all
    channels of the one image (each slice is one image here).
    """

    def __init__(
        self,
        keys: KeysCollection = "image",
        lower: float = 0.5,
        upper: float = 99.5,
        floor: float | None = -256.0,
        b_min: float = -1.0,
        b_max: float = 1.0,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.lower, self.upper, self.floor, self.b_min, self.b_max = lower, upper, floor, b_min, b_max

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            x = d[key]
            t = torch.as_tensor(x).float()
            q = torch.quantile(
                t.flatten()[:: max(1, t.numel() // 1_000_000)], torch.tensor([self.lower, self.upper]) / 100.0
            )
            lo, hi = float(q[0]), float(q[1])
            if self.floor is not None:
                lo = max(lo, self.floor)
            hi = max(hi, lo)
            scaled = (t.clamp(lo, hi) - lo) / max(hi - lo, 1e-8) * (self.b_max - self.b_min) + self.b_min
            d[key] = _like(x, scaled)
        return d


def _like(ref: Any, value: torch.Tensor) -> Any:
    """``value`` with the MetaTensor metadata of ``ref`` (if any)."""
    from monai.data import MetaTensor

    if isinstance(ref, MetaTensor):
        return MetaTensor(value, meta=ref.meta, applied_operations=ref.applied_operations)
    return value


class JointMinMaxd(MapTransform):
    """Min-max normalise the given keys TOGETHER (one min and max over all of them) to [b_min, b_max].

    Missing keys (baseline: no synthetic image) are skipped, so the same transform serves both modes.
    """

    def __init__(self, keys: KeysCollection = ("image", "image_syn"), b_min: float = -1.0, b_max: float = 1.0) -> None:
        super().__init__(keys, allow_missing_keys=True)
        self.b_min, self.b_max = b_min, b_max

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        keys = list(self.key_iterator(d))
        if not keys:
            return d
        lo = min(float(torch.as_tensor(d[k]).min()) for k in keys)
        hi = max(float(torch.as_tensor(d[k]).max()) for k in keys)
        for k in keys:
            t = torch.as_tensor(d[k]).float()
            d[k] = _like(d[k], (t - lo) / max(hi - lo, 1e-8) * (self.b_max - self.b_min) + self.b_min)
        return d


class LoadSyntheticd(RandomizableTransform, MapTransform):
    """Load one synthetic image of the case, chosen uniformly at random from ``d[key]`` (a list of files).

    Args:
        keys: the key holding the list of synthetic image files (default ``"synthetic"``).
        output_key: where the loaded ``(1, H, W)`` image goes (default ``"image_syn"``).
        reference_key: its spatial shape must equal this key's (the real image after resizing).
        allow_missing_keys: cases without the key pass unchanged (baseline training).
    """

    def __init__(
        self,
        keys: KeysCollection = "synthetic",
        output_key: str = "image_syn",
        reference_key: str = "image",
        case_key: str = "case_id",
        allow_missing_keys: bool = True,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        RandomizableTransform.__init__(self, prob=1.0)
        self.output_key, self.reference_key, self.case_key = output_key, reference_key, case_key
        self.loader = LoadImage(image_only=True, ensure_channel_first=True)

    def _load(self, path: str) -> torch.Tensor:
        """``(1, H, W)`` float32: NIfTI read directly with nibabel (5-10x faster than ``LoadImage``, see the bench)."""
        if str(path).endswith((".nii", ".nii.gz")):
            arr = np.asarray(nib.load(str(path)).dataobj, dtype=np.float32)
            if arr.ndim == 2:
                return torch.from_numpy(np.ascontiguousarray(arr))[None]
        return torch.as_tensor(self.loader(path)).float()

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            files = d[key]
            if not files:
                raise BadInputError(
                    f"case {d.get(self.case_key)}", "no synthetic images listed; run synthesize.json first"
                )
            path = files[int(self.R.randint(len(files)))]
            img = self._load(path)
            ref = d.get(self.reference_key)
            if ref is not None and tuple(img.shape[1:]) != tuple(ref.shape[1:]):
                raise BadInputError(
                    path,
                    f"synthetic image size {tuple(img.shape[1:])} differs from the real image {tuple(ref.shape[1:])} "
                    "after resizing; re-run synthesize.json with the same image_size",
                )
            d[self.output_key] = img
        return d


def attach_synthetic(
    entries: Sequence[Mapping[str, Any]], synthetic_dir: str | os.PathLike, enabled: bool = True, min_per_case: int = 1
) -> list[dict[str, Any]]:
    """Copies of ``entries`` with ``"synthetic": [files]`` from ``<synthetic_dir>/manifest.json`` (if ``enabled``).

    Raises:
        BadInputError: no manifest, or a training case with fewer than ``min_per_case`` synthetic images (names the
            case and says to run ``synthesize.json``).
    """
    out = [dict(e) for e in entries]
    if not enabled:
        return out
    manifest = Path(synthetic_dir) / MANIFEST_NAME
    if not manifest.is_file():
        raise BadInputError(
            manifest,
            "synthesis manifest not found; run configs/synthesize.json first (or set use_synthetic false "
            "for the baseline)",
        )
    records = json.loads(manifest.read_text(encoding="utf-8"))["images"]
    by_case: dict[str, list[str]] = {}
    for r in records:
        by_case.setdefault(r["case_id"], []).append(str(Path(synthetic_dir) / r["file"]))
    for e in out:
        files = by_case.get(e["case_id"], [])
        if len(files) < min_per_case:
            raise BadInputError(
                f"case {e['case_id']}",
                f"{len(files)} synthetic image(s) in {manifest}, need >= {min_per_case}; run configs/synthesize.json "
                "for this datalist",
            )
        e["synthetic"] = sorted(files)
    return out
