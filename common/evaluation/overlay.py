"""Overlay pictures of a segmentation: image, ground-truth contour, predicted contour, optional uncertainty panel.

Only numpy and Pillow are used (no matplotlib, no SciPy), so the pictures can be written by every bundle, on any
machine, without a display.

Layout of one picture (PNG, RGB, 8 bit):

- left panel (H x W): the image in grey (an RGB image is kept as is), intensities windowed to the 1st-99th
  percentile; ground-truth contours in cool colours, predicted contours in warm colours (:data:`CONTOUR_PALETTE`;
  binary task: ground truth green, prediction red). Where both contours fall on the same pixel, the prediction
  colour is drawn (it is drawn last).
- right panel, only when an uncertainty map is given (H x (W + legend)): the uncertainty as a heat map
  (:func:`cubehelix_colormap`, blended over the grey image with opacity :data:`HEATMAP_ALPHA`) and, on its right, a
  colour legend bar (top = ``vmax``, bottom = ``vmin``, both written in the bar's strip when it is tall enough).

Contours are the mask minus its binary erosion by a 3x3 square, so they are one pixel wide and lie inside the mask.
For 3D volumes (D, H, W) the axial slice (index along axis 0) with the largest ground-truth area is shown (else the
largest predicted area, else the middle slice); its index is part of the file name (``<case>_slice<k>.png``) and of
the PNG text chunk ``slice``.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from os import PathLike
from pathlib import Path

import numpy as np
import torch
from common.errors import BadInputError
from common.io.atomic import atomic_write_bytes
from PIL import Image, ImageDraw, ImageFont
from PIL.PngImagePlugin import PngInfo

__all__ = [
    "CONTOUR_PALETTE",
    "HEATMAP_ALPHA",
    "window_intensities",
    "binary_erosion",
    "mask_contour",
    "cubehelix_colormap",
    "select_slice",
    "render_overlay",
    "save_overlay",
    "palette_description",
]

#: (ground-truth RGB, prediction RGB) per foreground class 1, 2, ...; cycled when there are more classes.
#: Ground truth uses cool colours, predictions warm colours. Class 1 (binary tasks): green / red.
CONTOUR_PALETTE: tuple[tuple[tuple[int, int, int], tuple[int, int, int]], ...] = (
    ((0, 255, 0), (255, 0, 0)),  # class 1: green / red
    ((0, 255, 255), (255, 255, 0)),  # class 2: cyan / yellow
    ((0, 128, 255), (255, 0, 255)),  # class 3: azure / magenta
    ((0, 0, 255), (255, 128, 0)),  # class 4: blue / orange
    ((128, 255, 192), (255, 128, 160)),  # class 5: mint / pink
)

#: Opacity of the uncertainty heat map over the grey image.
HEATMAP_ALPHA = 0.6


def _to_numpy(x: np.ndarray | torch.Tensor) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def window_intensities(image: np.ndarray, low: float = 1.0, high: float = 99.0) -> np.ndarray:
    """Map intensities to uint8 with a percentile window.

    Args:
        image: any shape; all values share one window (an RGB image keeps its colour balance).
        low: lower percentile, mapped to 0.
        high: upper percentile, mapped to 255.

    Returns:
        uint8 array of the same shape. A constant image gives zeros.
    """
    a = np.asarray(image, dtype=np.float64)
    finite = a[np.isfinite(a)]
    if finite.size == 0:
        return np.zeros(a.shape, dtype=np.uint8)
    lo, hi = np.percentile(finite, [low, high])
    if hi <= lo:
        return np.zeros(a.shape, dtype=np.uint8)
    scaled = np.clip((np.nan_to_num(a, nan=lo) - lo) / (hi - lo), 0.0, 1.0)
    return np.round(scaled * 255.0).astype(np.uint8)


def binary_erosion(mask: np.ndarray) -> np.ndarray:
    """Erosion of a 2D bool mask by a 3x3 square; pixels outside the image count as background.

    Written with numpy shifts because SciPy is not a dependency of this project.
    """
    m = np.asarray(mask, dtype=bool)
    padded = np.pad(m, 1, mode="constant", constant_values=False)
    h, w = m.shape
    out = np.ones_like(m)
    for dy in range(3):
        for dx in range(3):
            out &= padded[dy : dy + h, dx : dx + w]
    return out


def mask_contour(mask: np.ndarray) -> np.ndarray:
    """One-pixel contour of a 2D mask: the mask minus its :func:`binary_erosion` (bool, same shape)."""
    m = np.asarray(mask, dtype=bool)
    return m & ~binary_erosion(m)


def cubehelix_colormap(
    values: np.ndarray,
    start: float = 0.3,
    rotations: float = -0.6,
    hue: float = 1.8,
    lightness: tuple[float, float] = (0.15, 0.9),
) -> np.ndarray:
    """Cubehelix colour map (D. A. Green, Bull. Astr. Soc. India 39, 289, 2011): perceived lightness grows
    monotonically with the value, so the map stays readable in grey scale and for colour-blind readers.

    Computed from Green's closed formula instead of a colour table, so no plotting library is needed.

    Args:
        values: any shape, expected in [0, 1] (clipped).
        start, rotations, hue: Green's parameters (start colour, number of R->G->B turns, saturation); the
            defaults run dark purple -> blue -> teal -> green -> pale yellow, close to viridis.
        lightness: the lightness range used, to avoid pure black and pure white.

    Returns:
        uint8 RGB array of shape ``values.shape + (3,)``.
    """
    v = np.clip(np.asarray(values, dtype=np.float64), 0.0, 1.0)
    lam = lightness[0] + (lightness[1] - lightness[0]) * v
    amp = hue * lam * (1.0 - lam) / 2.0
    phi = 2.0 * np.pi * (start / 3.0 + rotations * v)
    cos, sin = np.cos(phi), np.sin(phi)
    r = lam + amp * (-0.14861 * cos + 1.78277 * sin)
    g = lam + amp * (-0.29227 * cos - 0.90649 * sin)
    b = lam + amp * (1.97294 * cos)
    rgb = np.stack([r, g, b], axis=-1)
    return np.round(np.clip(rgb, 0.0, 1.0) * 255.0).astype(np.uint8)


def select_slice(label: np.ndarray, pred: np.ndarray | None = None, axis: int = 0) -> int:
    """Index of the slice along ``axis`` with the largest ground-truth area (foreground = label > 0).

    Falls back to the largest predicted area when the ground truth is empty, and to the middle slice when both
    are empty. Ties go to the lowest index.

    Args:
        label: ground-truth label map (D, H, W).
        pred: predicted label map (D, H, W) or None.
        axis: the slicing axis (0 = axial for (D, H, W) arrays).
    """
    g = np.asarray(label) > 0
    other = tuple(a for a in range(g.ndim) if a != axis % g.ndim)
    area = g.sum(axis=other)
    if area.max() > 0:
        return int(np.argmax(area))
    if pred is not None:
        area = (np.asarray(pred) > 0).sum(axis=other)
        if area.max() > 0:
            return int(np.argmax(area))
    return g.shape[axis] // 2


def _grey_or_rgb(image: np.ndarray | None, shape: tuple[int, int], source: str) -> np.ndarray:
    """(H, W, 3) uint8 background from a grey (H, W) or RGB(A) (H, W, 3|4) image; black if no image."""
    if image is None:
        return np.zeros(shape + (3,), dtype=np.uint8)
    a = np.asarray(image)
    if a.ndim == 3 and a.shape[-1] in (3, 4):
        a = a[..., :3]
        rgb = a if a.dtype == np.uint8 else window_intensities(a)
    elif a.ndim == 2:
        rgb = np.repeat(window_intensities(a)[..., None], 3, axis=-1)
    else:
        raise BadInputError(source, f"image of shape {a.shape} is neither grey (H, W) nor RGB (H, W, 3)")
    if rgb.shape[:2] != shape:
        raise BadInputError(source, f"image size {rgb.shape[:2]} differs from the label size {shape}")
    return np.ascontiguousarray(rgb)


def _legend_strip(height: int, width: int, vmin: float, vmax: float) -> np.ndarray:
    """(height, width, 3) white strip with a vertical colour bar (top = vmax) and, when tall enough, its range."""
    strip = np.full((height, width, 3), 255, dtype=np.uint8)
    bar_w = max(3, width // 3)
    x0 = max(1, (width - bar_w) // 4)
    ramp = np.linspace(1.0, 0.0, height)[:, None].repeat(bar_w, axis=1)
    strip[:, x0 : x0 + bar_w] = cubehelix_colormap(ramp)
    if height >= 40 and width - (x0 + bar_w) >= 8:
        img = Image.fromarray(strip)
        draw = ImageDraw.Draw(img)
        font = ImageFont.load_default()
        tx = x0 + bar_w + 1
        draw.text((tx, 0), f"{vmax:.2g}", fill=(0, 0, 0), font=font)
        draw.text((tx, height - 12), f"{vmin:.2g}", fill=(0, 0, 0), font=font)
        strip = np.asarray(img).copy()
    return strip


def render_overlay(
    image: np.ndarray | torch.Tensor | None,
    label: np.ndarray | torch.Tensor | None,
    pred: np.ndarray | torch.Tensor | None,
    *,
    num_classes: int = 2,
    uncertainty: np.ndarray | torch.Tensor | None = None,
    uncertainty_range: tuple[float, float] | None = None,
    legend_width: int = 32,
    source: str = "overlay",
) -> np.ndarray:
    """Render the overlay picture of one 2D slice.

    Args:
        image: grey (H, W) or RGB (H, W, 3) image, or None for a black background.
        label: ground-truth label map (H, W) or None.
        pred: predicted label map (H, W) or None.
        num_classes: number of classes including the background; classes 1 .. num_classes-1 get contours.
        uncertainty: optional uncertainty map (H, W); adds the heat-map panel.
        uncertainty_range: (vmin, vmax) of the colour scale; default (min(0, map min), map max).
        legend_width: width in pixels of the legend strip right of the uncertainty panel.
        source: case id or file name for error messages.

    Returns:
        uint8 RGB array (H, W, 3), or (H, 2W + legend_width, 3) with an uncertainty map.
    """
    maps = {k: (None if v is None else _to_numpy(v)) for k, v in (("label", label), ("pred", pred))}
    unc = None if uncertainty is None else _to_numpy(uncertainty).astype(np.float64)
    ref = next((m for m in (maps["label"], maps["pred"], unc) if m is not None), None)
    if ref is None:
        if image is None:
            raise BadInputError(source, "nothing to draw: no image, label, prediction or uncertainty")
        shape = tuple(_to_numpy(image).shape[:2])
    else:
        shape = tuple(ref.shape)
    for name, m in (*maps.items(), ("uncertainty", unc)):
        if m is not None and m.shape != shape:
            raise BadInputError(source, f"{name} map shape {m.shape} differs from {shape}; expected 2D maps")
    if len(shape) != 2:
        raise BadInputError(source, f"expected 2D maps (H, W) for an overlay, got shape {shape}")
    base = _grey_or_rgb(None if image is None else _to_numpy(image), shape, source)

    panel = base.copy()
    for which, m in ((0, maps["label"]), (1, maps["pred"])):
        if m is None:
            continue
        for c in range(1, num_classes):
            colour = CONTOUR_PALETTE[(c - 1) % len(CONTOUR_PALETTE)][which]
            panel[mask_contour(m == c)] = colour
    if unc is None:
        return panel

    finite = unc[np.isfinite(unc)]
    if uncertainty_range is None:
        vmin = min(0.0, float(finite.min())) if finite.size else 0.0
        vmax = float(finite.max()) if finite.size else 1.0
    else:
        vmin, vmax = (float(v) for v in uncertainty_range)
    if vmax <= vmin:
        vmax = vmin + 1.0
    heat = cubehelix_colormap((np.nan_to_num(unc, nan=vmin) - vmin) / (vmax - vmin)).astype(np.float64)
    blended = np.round((1.0 - HEATMAP_ALPHA) * base + HEATMAP_ALPHA * heat).astype(np.uint8)
    legend = _legend_strip(shape[0], legend_width, vmin, vmax)
    return np.concatenate([panel, blended, legend], axis=1)


def save_overlay(
    path: str | PathLike,
    image: np.ndarray | torch.Tensor | None,
    label: np.ndarray | torch.Tensor | None,
    pred: np.ndarray | torch.Tensor | None,
    uncertainty: np.ndarray | torch.Tensor | None = None,
    *,
    slice_index: int | None = None,
    min_display_size: int | None = None,
    num_classes: int = 2,
    uncertainty_range: tuple[float, float] | None = None,
    source: str | None = None,
) -> Path:
    """Write the overlay PNG of a 2D case, or of one axial slice of a 3D case, atomically.

    Args:
        path: output file. For 3D inputs ``_slice<k>`` is inserted before the ``.png`` suffix.
        image: (H, W), (H, W, 3) or (D, H, W) image, or None.
        label: ground-truth label map (H, W) or (D, H, W), or None.
        pred: predicted label map of the same shape as ``label``, or None.
        uncertainty: optional uncertainty map of the label's shape; adds the heat-map panel.
        slice_index: for 3D, the slice along axis 0 to draw; default :func:`select_slice`.
        min_display_size: if given, small slices are enlarged by an integer factor (nearest neighbour, before the
            contours are drawn, so contours stay thin) until their shorter side is at least this many pixels.
        num_classes: number of classes including the background.
        uncertainty_range: (vmin, vmax) for the heat map's colour scale.
        source: case id or file name for error messages (default: ``path``).

    Returns:
        the path written.
    """
    src = str(path) if source is None else source
    arrays = {k: (None if v is None else _to_numpy(v)) for k, v in (("label", label), ("pred", pred))}
    img = None if image is None else _to_numpy(image)
    unc = None if uncertainty is None else _to_numpy(uncertainty)
    ref = arrays["label"] if arrays["label"] is not None else arrays["pred"]
    out = Path(path)
    info = PngInfo()
    if ref is not None and ref.ndim == 3:
        k = slice_index
        if k is None:
            g = arrays["label"] if arrays["label"] is not None else arrays["pred"]
            k = select_slice(g, arrays["pred"] if arrays["label"] is not None else None)
        if not 0 <= k < ref.shape[0]:
            raise BadInputError(src, f"slice {k} is outside a volume of depth {ref.shape[0]}")
        for name, a in (("image", img), ("uncertainty", unc)):
            if a is not None and a.shape != ref.shape:
                raise BadInputError(src, f"{name} shape {a.shape} differs from the label map shape {ref.shape}")
        arrays = {n: (None if a is None else a[k]) for n, a in arrays.items()}
        img = None if img is None else img[k]
        unc = None if unc is None else unc[k]
        name = out.name[: -len(".png")] if out.name.lower().endswith(".png") else out.name
        out = out.with_name(f"{name}_slice{k}.png")
        info.add_text("slice", f"{k} (axis 0 of the (D, H, W) volume)")
    ref2d = arrays["label"] if arrays["label"] is not None else arrays["pred"]
    if min_display_size and ref2d is not None and min(ref2d.shape[:2]) < min_display_size:
        f = -(-min_display_size // min(ref2d.shape[:2]))
        enlarge = lambda a: None if a is None else np.repeat(np.repeat(a, f, axis=0), f, axis=1)  # noqa: E731
        arrays = {n: enlarge(a) for n, a in arrays.items()}
        img, unc = enlarge(img), enlarge(unc)
        info.add_text("scale", f"enlarged {f}x (nearest neighbour) for display")
    options = {"num_classes": num_classes, "uncertainty": unc, "uncertainty_range": uncertainty_range, "source": src}
    rgb = render_overlay(img, arrays["label"], arrays["pred"], **options)
    info.add_text("palette", "ground truth: cool colours, prediction: warm colours (class 1: green / red)")
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="PNG", pnginfo=info)
    return atomic_write_bytes(out, buffer.getvalue())


def palette_description(num_classes: int, class_names: Sequence[str] | None = None) -> list[dict]:
    """The contour colours used for each foreground class, e.g. for a legend in a report."""
    names = list(class_names) if class_names is not None else [f"class_{c}" for c in range(1, num_classes)]
    return [
        {"class_index": c, "class": names[c - 1], "ground_truth_rgb": list(gt), "prediction_rgb": list(pr)}
        for c in range(1, num_classes)
        for gt, pr in [CONTOUR_PALETTE[(c - 1) % len(CONTOUR_PALETTE)]]
    ]
