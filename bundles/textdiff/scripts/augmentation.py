"""TextDiff's training augmentation as the official ``RandomGenerator`` draws it (bundles/textdiff/docs/sources.md
§2.1).

The official code (``RandomGenerator`` of the Synapse/LViT loaders the repository reuses) applies, jointly to image and
mask, one of: ``random_rot_flip`` (rot90 by ``k = np.random.randint(0, 4)``, then a flip along
``np.random.randint(0, 2)``), ``random_rotate`` (an integer angle ``np.random.randint(-20, 20)`` degrees with
``scipy.ndimage.rotate(order=0, reshape=False)``, constant 0 fill) or nothing. MONAI's ``RandRotate90d`` draws
``k`` in ``{1, ..., max_k}`` (never the identity, so each rotation is a third likelier than the official quarter)
and ``RandRotated`` a continuous angle: the two transforms here draw what the official code draws.

Shapes: every key holds a channel-first 2D array or tensor (C, H, W); the output has the same shape (the 90-degree
rotations of a non-square image are not applied: see :class:`RandRot90Flipd`).
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform, RandomizableTransform, Rotate

__all__ = ["RandIntegerRotated", "RandRot90Flipd"]


def _as_tensor(x):
    return x if isinstance(x, torch.Tensor) else torch.as_tensor(np.ascontiguousarray(x))


class RandRot90Flipd(RandomizableTransform, MapTransform):
    """``random_rot_flip``: rotate by ``k * 90`` degrees with ``k`` uniform in ``{0, 1, 2, 3}``, then flip along a
    spatial axis drawn uniformly from the two (always one flip), the same draw for every key.

    For a non-square image an odd ``k`` would change the shape (the official loader resizes to a square first; so
    do the bundle's configs); it raises ``ValueError`` there rather than returning another shape.
    """

    def __init__(self, keys: KeysCollection, allow_missing_keys: bool = False) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        RandomizableTransform.__init__(self, prob=1.0)
        self.k = 0
        self.axis = 0

    def randomize(self, data=None) -> None:
        self.k = int(self.R.randint(0, 4))
        self.axis = int(self.R.randint(0, 2))

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        self.randomize()
        for key in self.key_iterator(d):
            x = _as_tensor(d[key])
            if self.k % 2 and x.shape[-1] != x.shape[-2]:
                raise ValueError(
                    f"{key}: a 90-degree rotation of a non-square {tuple(x.shape)} image changes its shape"
                )
            d[key] = torch.flip(torch.rot90(x, self.k, dims=(-2, -1)), dims=(x.ndim - 2 + self.axis,))
        return d


class RandIntegerRotated(RandomizableTransform, MapTransform):
    """``random_rotate``: rotation by an integer angle drawn uniformly from ``[low, high)`` degrees about the image
    centre, nearest-neighbour for every key (``order=0``: the official code rotates the image that way too), the
    shape kept and the corners filled with 0.

    Args:
        keys: the keys to rotate together.
        low, high: the angle range in degrees (official: -20, 20, i.e. -20..19).
    """

    def __init__(self, keys: KeysCollection, low: int = -20, high: int = 20, allow_missing_keys: bool = False) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        RandomizableTransform.__init__(self, prob=1.0)
        if not int(low) < int(high):
            raise ValueError(f"low must be below high, got {low}, {high}")
        self.low, self.high = int(low), int(high)
        self.degrees = 0

    def randomize(self, data=None) -> None:
        self.degrees = int(self.R.randint(self.low, self.high))

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        self.randomize()
        # MONAI turns the array the other way round than scipy.ndimage.rotate for the same angle: the minus sign
        # makes it scipy's rotation (equal pixel for pixel, tests/bundles/textdiff/test_textdiff_augmentation.py)
        rotate = Rotate(angle=-math.radians(self.degrees), keep_size=True, mode="nearest", padding_mode="zeros")
        for key in self.key_iterator(d):
            x = _as_tensor(d[key])
            d[key] = rotate(x).to(x.dtype) if self.degrees else x  # nearest: the values (labels) stay the same set
        return d
