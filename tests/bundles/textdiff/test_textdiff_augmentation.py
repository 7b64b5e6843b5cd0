"""TextDiff's augmentation draws what the official ``RandomGenerator`` draws (issue 12 §2): rot90 with k uniform over
{0, 1, 2, 3} (MONAI's RandRotate90d: {1, 2, 3}), always one flip, integer-degree rotation in -20..19 with
nearest-neighbour resampling as ``scipy.ndimage.rotate(order=0, reshape=False)``."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch
from scipy import ndimage


@pytest.fixture
def aug():
    from scripts.augmentation import RandIntegerRotated, RandRot90Flipd

    return RandRot90Flipd, RandIntegerRotated


def test_rot90_k_is_uniform_over_four_and_one_flip_always(aug):
    rot_flip = aug[0](keys=["image", "label"])
    rot_flip.set_random_state(0)
    image = torch.arange(16.0).reshape(1, 4, 4)
    seen = Counter()
    for _ in range(4000):
        out = rot_flip({"image": image, "label": image.clone()})
        assert torch.equal(out["image"], out["label"])  # one draw for both keys
        assert torch.equal(out["image"], _rot_flip(image, rot_flip.k, rot_flip.axis))
        seen[rot_flip.k] += 1
    freqs = [seen[k] / 4000 for k in range(4)]
    assert all(0.22 < f < 0.28 for f in freqs), freqs  # MONAI's RandRotate90d: 0 never, 1/3 each
    with pytest.raises(ValueError, match="non-square"):
        for _ in range(20):
            rot_flip({"image": torch.zeros(1, 4, 6), "label": torch.zeros(1, 4, 6)})


def _rot_flip(x: torch.Tensor, k: int, axis: int) -> torch.Tensor:
    return torch.from_numpy(np.flip(np.rot90(x.numpy(), k, axes=(1, 2)), axis=1 + axis).copy())


def test_integer_rotation_matches_scipy_order_0(aug):
    rotate = aug[1](keys=["image", "label"])
    rotate.set_random_state(1)
    rng = np.random.default_rng(0)
    image = rng.random((1, 64, 64)).astype(np.float32)
    label = np.zeros((1, 64, 64), np.uint8)
    label[0, 20:40, 10:50] = 1
    angles = set()
    for _ in range(40):
        out = rotate({"image": torch.from_numpy(image), "label": torch.from_numpy(label)})
        angles.add(rotate.degrees)
        expected = ndimage.rotate(label[0], rotate.degrees, order=0, reshape=False)
        got = out["label"][0].numpy()
        assert got.dtype == np.uint8 and set(np.unique(got)) <= {0, 1}
        assert (got != expected).mean() < 0.002, rotate.degrees  # at most rounding ties at a few edge pixels
    assert angles <= set(range(-20, 20)) and len(angles) > 15
