"""Bundle-specific transforms: torchvision-style colour jitter of RGB images in the 0-255 range.

The official MoNuSeg pipeline (bundles/cdal/docs/sources.md §1.1) applies ``ColorJitter(brightness=0.4, contrast=0.4,
saturation=0.4, hue=0.1)`` to the image only. MONAI has no colour jitter (and torchvision is not a dependency), so the
four torchvision operations are re-implemented here on channel-first ``[3, H, W]`` float tensors in ``[0, max_value]``:

- brightness ``b ~ U(1-0.4, 1+0.4)``: ``x * b``;
- contrast ``c``: blend with the mean of the grayscale image, ``c x + (1-c) mean(gray)``;
- saturation ``s``: blend with the grayscale image, ``s x + (1-s) gray``;
- hue ``h ~ U(-0.1, 0.1)``: rotate the HSV hue by ``h`` turns;

in a random order, each result clamped to ``[0, max_value]`` (as torchvision does for float images).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any

import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform, RandomizableTransform
from monai.utils import convert_to_dst_type

__all__ = ["RandColorJitterd", "rgb_to_gray"]


def rgb_to_gray(x: torch.Tensor) -> torch.Tensor:
    """ITU-R 601-2 luma of ``[3, H, W]`` -> ``[1, H, W]`` (torchvision's weights)."""
    return (0.299 * x[0] + 0.587 * x[1] + 0.114 * x[2]).unsqueeze(0)


def _rgb_to_hsv(x: torch.Tensor) -> torch.Tensor:
    r, g, b = x
    maxc, _ = x.max(0)
    minc, _ = x.min(0)
    delta = maxc - minc
    v = maxc
    s = torch.where(maxc > 0, delta / maxc.clamp(min=1e-12), torch.zeros_like(maxc))
    dc = delta.clamp(min=1e-12)
    rc, gc, bc = (maxc - r) / dc, (maxc - g) / dc, (maxc - b) / dc
    h = torch.where(maxc == r, bc - gc, torch.where(maxc == g, 2.0 + rc - bc, 4.0 + gc - rc))
    h = torch.where(delta > 0, (h / 6.0) % 1.0, torch.zeros_like(h))
    return torch.stack([h, s, v])


def _hsv_to_rgb(x: torch.Tensor) -> torch.Tensor:
    h, s, v = x
    i = torch.floor(h * 6.0)
    f = h * 6.0 - i
    i = i.long() % 6
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    choices = [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)]
    out = torch.zeros(3, *h.shape, dtype=x.dtype, device=x.device)
    for k, (r, g, b) in enumerate(choices):
        m = i == k
        out[0][m], out[1][m], out[2][m] = r[m], g[m], b[m]
    return out


class RandColorJitterd(RandomizableTransform, MapTransform):
    """Random brightness / contrast / saturation / hue of RGB ``[3, H, W]`` images (see module docstring).

    Args:
        keys: image key(s).
        brightness, contrast, saturation: jitter amounts (factor drawn from ``U(1-a, 1+a)``).
        hue: hue shift drawn from ``U(-hue, hue)`` (turns, at most 0.5).
        max_value: the intensity range top (255 for the official 0-255 pipeline).
        prob: probability to apply.
    """

    def __init__(
        self,
        keys: KeysCollection,
        brightness: float = 0.4,
        contrast: float = 0.4,
        saturation: float = 0.4,
        hue: float = 0.1,
        max_value: float = 255.0,
        prob: float = 1.0,
        allow_missing_keys: bool = False,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        RandomizableTransform.__init__(self, prob)
        if not 0 <= hue <= 0.5:
            raise ValueError(f"hue must be in [0, 0.5], got {hue}")
        self.amounts = (float(brightness), float(contrast), float(saturation))
        self.hue = float(hue)
        self.max_value = float(max_value)
        self._order: list[int] = [0, 1, 2, 3]
        self._factors = (1.0, 1.0, 1.0, 0.0)

    def randomize(self, data: Any = None) -> None:
        super().randomize(None)
        if not self._do_transform:
            return
        b, c, s = (float(self.R.uniform(max(0.0, 1 - a), 1 + a)) for a in self.amounts)
        self._factors = (b, c, s, float(self.R.uniform(-self.hue, self.hue)))
        self._order = [int(i) for i in self.R.permutation(4)]

    def _jitter(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] != 3:
            raise ValueError(f"RandColorJitterd needs RGB [3, H, W] images, got shape {tuple(x.shape)}")
        top = self.max_value
        b, c, s, h = self._factors
        for op in self._order:
            if op == 0:
                x = (x * b).clamp(0, top)
            elif op == 1:
                x = (c * x + (1 - c) * rgb_to_gray(x).mean()).clamp(0, top)
            elif op == 2:
                x = (s * x + (1 - s) * rgb_to_gray(x)).clamp(0, top)
            elif h != 0.0:
                hsv = _rgb_to_hsv(x / top)
                hsv[0] = (hsv[0] + h) % 1.0
                x = (_hsv_to_rgb(hsv) * top).clamp(0, top)
        return x

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        self.randomize()
        if not self._do_transform:
            return d
        for key in self.key_iterator(d):
            img = d[key]
            t = torch.as_tensor(img).float()
            out = self._jitter(t)
            d[key] = convert_to_dst_type(out, img)[0] if isinstance(img, torch.Tensor) else out.numpy()
        return d
