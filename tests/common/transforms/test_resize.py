"""AntialiasedResized equals PIL's bilinear shrink within uint8 rounding (issue 12 §2: cDAL's official loaders shrink
with PIL, which antialiases; MONAI's Resized differs by up to 45/255 on a textured image)."""

from __future__ import annotations

import numpy as np
import torch
from common.transforms.resize import AntialiasedResized
from monai.transforms import Resize
from PIL import Image


def _textured(h: int, w: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    base = (rng.random((h // 8, w // 8, 3)) * 255).astype(np.uint8)
    img = np.asarray(Image.fromarray(base).resize((w, h), Image.BICUBIC)).astype(int)
    return np.clip(img + rng.integers(-40, 40, img.shape), 0, 255).astype(np.uint8)


def test_shrinking_equals_pil_bilinear_and_labels_stay_nearest():
    img = _textured(600, 440)  # H x W, not square
    pil = np.asarray(Image.fromarray(img).resize((256, 256), Image.BILINEAR)).astype(np.float32)
    chw = torch.from_numpy(img).permute(2, 0, 1).float()
    label = torch.zeros(1, 600, 440)
    label[0, 100:300, 50:200] = 1
    out = AntialiasedResized(["image", "label"], (256, 256), ["bilinear", "nearest"])({"image": chw, "label": label})
    ours = out["image"].permute(1, 2, 0).numpy()
    assert np.abs(ours - pil).max() <= 1.0 and np.abs(ours - pil).mean() < 0.5
    plain = Resize((256, 256), mode="bilinear")(chw).permute(1, 2, 0).numpy()
    assert np.abs(plain - pil).max() > 10  # what the antialiasing fixes
    assert set(torch.unique(out["label"]).tolist()) == {0.0, 1.0} and out["label"].shape == (1, 256, 256)
