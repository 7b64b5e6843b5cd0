"""Per-case, per-class Dice, IoU and HD95 of integer label maps, with documented empty-mask conventions.

The four bundles report (see the specs, "metrics" sections):

- TextDiff (bundles/textdiff/docs/sources.md §6) and cDAL 2D (bundles/cdal/docs/sources.md §6): per-image foreground
Dice and IoU ("mIoU" is the foreground
  IoU, not a class mean), averaged over images.
- cDAL Hippo (bundles/cdal/docs/sources.md §6): per-class Dice (anterior, posterior), background excluded.
- TextDiffSeg (bundles/textdiffseg/docs/sources.md §5): per-case Dice (and NSD), empty label & empty prediction -> Dice
1.
- DiffBoost (bundles/diffboost/docs/sources.md §6): per-case Dice, Jaccard, HD95 (in mm, with the voxel spacing).

This module computes the common part, Dice / IoU / HD95 of every foreground class of one case, with MONAI:
:func:`monai.metrics.compute_dice`, :func:`monai.metrics.compute_iou` and
:func:`monai.metrics.compute_hausdorff_distance` (``percentile=95``, ``spacing=`` so that HD95 is in mm when the
spacing is known).

Conventions for empty masks (per class, per case):

==========================  =====  =====  =====
label / prediction          Dice   IoU    HD95
==========================  =====  =====  =====
both empty                  1      1      0
exactly one of them empty   0      0      NaN
==========================  =====  =====  =====

A NaN HD95 is kept in the per-case table and excluded from the means, with the number of excluded values reported
(``n_nan`` in :mod:`common.evaluation.report`).

HD95 follows MONAI's definition: boundary voxels are the mask minus its binary erosion (cross-shaped structuring
element, outside of the image counts as background); for every boundary voxel of one mask the Euclidean distance
(scaled by ``spacing``) to the nearest boundary voxel of the other mask is taken, the 95th percentile
(linear interpolation, :func:`torch.quantile`) of each direction is computed, and HD95 is the larger of the two.

MONAI computes boundaries and distances with ``scipy.ndimage`` on CPU. SciPy is not a dependency of this project, so
when it cannot be imported the same definition is evaluated by :func:`hausdorff_distance_95_torch`
(a chunked brute-force nearest-neighbour search in torch); the tests check that both agree.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch
from common.errors import BadInputError
from monai.metrics import compute_dice, compute_hausdorff_distance, compute_iou
from monai.utils import optional_import

__all__ = [
    "ClassMetrics",
    "EMPTY_NONE",
    "EMPTY_BOTH",
    "EMPTY_LABEL",
    "EMPTY_PREDICTION",
    "binarize",
    "to_label_map",
    "resolve_class_names",
    "compute_case_metrics",
    "hausdorff_distance_95_torch",
    "mask_boundary",
]

# MONAI needs scipy.ndimage (binary erosion, distance transform) for the Hausdorff distance on CPU.
_, _HAS_SCIPY_NDIMAGE = optional_import("scipy.ndimage")

EMPTY_NONE = "none"
EMPTY_BOTH = "both"
EMPTY_LABEL = "label"
EMPTY_PREDICTION = "prediction"

ArrayLike = np.ndarray | torch.Tensor


@dataclass(frozen=True)
class ClassMetrics:
    """Metrics of one foreground class of one case.

    Attributes:
        class_index: the label value of the class (1 .. num_classes - 1).
        class_name: human-readable class name.
        dice: Dice coefficient 2|P∩G| / (|P| + |G|) in [0, 1] (1 if both masks are empty).
        iou: intersection over union |P∩G| / |P∪G| in [0, 1] (1 if both masks are empty).
        hd95: 95th-percentile symmetric Hausdorff distance, in mm when a spacing was given, else in voxels;
            0 if both masks are empty, NaN if exactly one is empty.
        pred_voxels: number of voxels of the class in the prediction.
        label_voxels: number of voxels of the class in the ground truth.
        empty: which mask is empty: ``"none"``, ``"both"``, ``"label"`` or ``"prediction"``.
    """

    class_index: int
    class_name: str
    dice: float
    iou: float
    hd95: float
    pred_voxels: int
    label_voxels: int
    empty: str

    def as_dict(self) -> dict:
        """The fields as a plain dict (column name -> value)."""
        return asdict(self)


def _to_numpy(x: ArrayLike) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def binarize(probability: ArrayLike, threshold: float = 0.5) -> np.ndarray:
    """Foreground mask of a probability map: ``probability > threshold`` (strictly greater).

    Strictly greater matches the bundles' rules: argmax over two softmax channels (TextDiff,
    bundles/textdiff/docs/sources.md §6) is
    ``p_fg > 0.5`` and ``torch.round`` of an ensemble mean (cDAL, bundles/cdal/docs/sources.md §6) rounds 0.5 down to 0.

    Args:
        probability: foreground probability, any shape, e.g. (H, W) or (D, H, W); numpy or torch.
        threshold: decision threshold.

    Returns:
        a label map of the same shape, dtype ``int32``, values {0, 1}.
    """
    p = _to_numpy(probability)
    return (p > threshold).astype(np.int32)


def to_label_map(
    x: ArrayLike,
    num_classes: int | None = None,
    channel_dim: int | None = None,
    threshold: float = 0.5,
    source: str = "input",
) -> np.ndarray:
    """Convert a label map, a probability map or a one-hot / multi-channel array into an integer label map.

    Args:
        x: one of
            - an integer (or bool, or float with integer values) label map (H, W) or (D, H, W): returned as is;
            - a float foreground-probability map with values in [0, 1]: thresholded with :func:`binarize`;
            - with ``channel_dim`` given: a one-hot or per-class probability array, e.g. (C, H, W) or (C, D, H, W)
              for ``channel_dim=0``: argmax over the channels (one channel: thresholded instead).
        num_classes: number of classes including the background; when given, label values must be below it.
        channel_dim: the channel axis for one-hot / multi-channel inputs; ``None`` for label or probability maps.
        threshold: threshold for single-channel probabilities.
        source: file name or case id used in error messages.

    Returns:
        an ``int32`` label map without a channel axis.

    Raises:
        BadInputError: negative labels, labels >= ``num_classes``, or a float map that is neither integer-valued
            nor a probability map in [0, 1].
    """
    a = _to_numpy(x)
    if channel_dim is not None:
        if a.ndim < 2:
            raise BadInputError(source, f"expected a channel axis {channel_dim} in an array of shape {a.shape}")
        if a.shape[channel_dim] == 1:
            a = np.squeeze(a, axis=channel_dim)
            labels = binarize(a, threshold) if np.issubdtype(a.dtype, np.floating) else (a != 0).astype(np.int32)
        else:
            labels = np.argmax(a, axis=channel_dim).astype(np.int32)
    elif a.dtype == np.bool_ or np.issubdtype(a.dtype, np.integer):
        labels = a.astype(np.int32)
    elif np.issubdtype(a.dtype, np.floating):
        if not np.all(np.isfinite(a)):
            raise BadInputError(source, "the map contains NaN or infinite values")
        if np.all(a == np.round(a)):
            labels = a.astype(np.int32)
        elif a.size and a.min() >= 0.0 and a.max() <= 1.0:
            labels = binarize(a, threshold)
        else:
            raise BadInputError(
                source,
                f"float values in [{a.min():.4g}, {a.max():.4g}] are neither integer class labels nor "
                "probabilities in [0, 1]; save an integer label map (argmax of the prediction)",
            )
    else:
        raise BadInputError(source, f"unsupported data type {a.dtype} for a label map")
    if labels.size and labels.min() < 0:
        raise BadInputError(source, f"negative label value {int(labels.min())}; labels must be 0 .. num_classes-1")
    if num_classes is not None and labels.size and labels.max() >= num_classes:
        raise BadInputError(
            source,
            f"label value {int(labels.max())} is not below num_classes={num_classes}; "
            "set num_classes (background included) or fix the label file",
        )
    return labels


def resolve_class_names(num_classes: int, class_names: Sequence[str] | None = None) -> list[str]:
    """Names of the foreground classes 1 .. num_classes-1.

    Args:
        num_classes: number of classes including the background (2 for a binary task).
        class_names: ``num_classes - 1`` foreground names, or ``num_classes`` names with the background first
            (then the first is dropped); ``None`` gives ``class_1, class_2, ...``.

    Raises:
        BadInputError: when the number of names fits neither convention.
    """
    if num_classes < 2:
        raise BadInputError("num_classes", f"must be >= 2 (background + at least one class), got {num_classes}")
    if class_names is None:
        return [f"class_{c}" for c in range(1, num_classes)]
    names = [str(n) for n in class_names]
    if len(names) == num_classes:
        return names[1:]
    if len(names) == num_classes - 1:
        return names
    raise BadInputError(
        "class_names",
        f"got {len(names)} names for num_classes={num_classes}; give {num_classes - 1} foreground names "
        f"or {num_classes} names with the background first",
    )


def _check_spacing(spacing: Sequence[float] | float | None, ndim: int, source: str) -> tuple[float, ...] | None:
    if spacing is None:
        return None
    if isinstance(spacing, (int, float)):
        values = (float(spacing),) * ndim
    else:
        values = tuple(float(s) for s in spacing)
    if len(values) != ndim:
        raise BadInputError(source, f"spacing {values} has {len(values)} values for a {ndim}D label map")
    if not all(math.isfinite(v) and v > 0 for v in values):
        raise BadInputError(source, f"spacing {values} must be positive and finite")
    return values


def mask_boundary(mask: torch.Tensor) -> torch.Tensor:
    """Boundary of a binary mask: the mask minus its erosion by a cross (face-connected) structuring element.

    Matches ``scipy.ndimage.binary_erosion(mask) ^ mask`` (border value 0) used by MONAI's
    :func:`monai.metrics.utils.get_mask_edges`; written with torch so that no SciPy is needed.

    Args:
        mask: bool tensor (H, W) or (D, H, W).

    Returns:
        bool tensor of the same shape, True on boundary voxels.
    """
    m = mask.bool()
    padded = torch.nn.functional.pad(m[None, None].float(), [1, 1] * m.ndim, value=0.0)[0, 0].bool()
    eroded = m.clone()
    for axis in range(m.ndim):
        for offset in (0, 2):
            index = [slice(1, s + 1) for s in m.shape]
            index[axis] = slice(offset, offset + m.shape[axis])
            eroded &= padded[tuple(index)]
    return m & ~eroded


def _nearest_distances(points: torch.Tensor, targets: torch.Tensor, chunk: int = 4096) -> torch.Tensor:
    """Distance of every point (N, d) to its nearest target (M, d), in chunks of ``chunk`` points."""
    out = torch.empty(points.shape[0], dtype=torch.float64)
    for start in range(0, points.shape[0], chunk):
        out[start : start + chunk] = torch.cdist(points[start : start + chunk], targets).min(dim=1).values
    return out


def hausdorff_distance_95_torch(pred: torch.Tensor, label: torch.Tensor, spacing: Sequence[float] | None) -> float:
    """HD95 of two non-empty binary masks with MONAI's definition, in torch only (no SciPy).

    Used when SciPy (needed by MONAI's CPU implementation) is missing. Brute-force nearest neighbours between
    boundary voxels: O(|∂P|·|∂G|) time, computed in chunks to bound memory.

    Args:
        pred: bool tensor (H, W) or (D, H, W), non-empty.
        label: bool tensor of the same shape, non-empty.
        spacing: physical size of a voxel along each axis (same order as the axes), or None for voxel units.

    Returns:
        max(q95(d(∂P → ∂G)), q95(d(∂G → ∂P))).
    """
    scale = torch.ones(pred.ndim, dtype=torch.float64)
    if spacing is not None:
        scale = torch.as_tensor(spacing, dtype=torch.float64)
    edge_pred = torch.nonzero(mask_boundary(pred)).to(torch.float64) * scale
    edge_label = torch.nonzero(mask_boundary(label)).to(torch.float64) * scale
    forward = torch.quantile(_nearest_distances(edge_pred, edge_label), 0.95)
    backward = torch.quantile(_nearest_distances(edge_label, edge_pred), 0.95)
    return float(torch.maximum(forward, backward))


def _hd95(pred: torch.Tensor, label: torch.Tensor, spacing: tuple[float, ...] | None) -> float:
    if not _HAS_SCIPY_NDIMAGE:
        return hausdorff_distance_95_torch(pred, label, spacing)
    with warnings.catch_warnings():
        # MONAI 1.6 passes a deprecated argument internally (get_mask_edges: always_return_as_numpy).
        warnings.simplefilter("ignore", FutureWarning)
        value = compute_hausdorff_distance(
            pred[None, None], label[None, None], include_background=True, percentile=95, spacing=spacing
        )
    return float(value[0, 0])


def compute_case_metrics(
    pred: ArrayLike,
    label: ArrayLike,
    num_classes: int,
    spacing: Sequence[float] | float | None = None,
    class_names: Sequence[str] | None = None,
    source: str = "case",
) -> list[ClassMetrics]:
    """Dice, IoU and HD95 of every foreground class of one case.

    Args:
        pred: predicted integer label map (H, W) or (D, H, W), numpy or torch (see :func:`to_label_map` for
            probability or one-hot inputs).
        label: ground-truth integer label map of the same shape.
        num_classes: number of classes including the background (2 for binary segmentation).
        spacing: voxel size per axis in the axis order of the arrays (e.g. mm); a single number means isotropic.
            With a spacing HD95 is in those units (mm), without it in voxels.
        class_names: foreground class names (see :func:`resolve_class_names`).
        source: case id or file name used in error messages.

    Returns:
        one :class:`ClassMetrics` per foreground class 1 .. num_classes-1, in class order.

    Raises:
        BadInputError: shapes differ, the maps are not 2D/3D, labels are out of range or the spacing is invalid.
    """
    names = resolve_class_names(num_classes, class_names)
    p = to_label_map(pred, num_classes=num_classes, source=f"{source} (prediction)")
    g = to_label_map(label, num_classes=num_classes, source=f"{source} (label)")
    if p.shape != g.shape:
        raise BadInputError(source, f"prediction shape {p.shape} differs from label shape {g.shape}")
    if p.ndim not in (2, 3):
        raise BadInputError(source, f"expected a 2D (H, W) or 3D (D, H, W) label map, got shape {p.shape}")
    spacing_t = _check_spacing(spacing, p.ndim, source)
    pt, gt = torch.from_numpy(p), torch.from_numpy(g)

    results: list[ClassMetrics] = []
    for c, name in zip(range(1, num_classes), names):
        pm, gm = pt == c, gt == c
        n_pred, n_label = int(pm.sum()), int(gm.sum())
        if n_pred == 0 and n_label == 0:
            dice, iou, hd95, empty = 1.0, 1.0, 0.0, EMPTY_BOTH
        elif n_pred == 0 or n_label == 0:
            dice, iou, hd95 = 0.0, 0.0, float("nan")
            empty = EMPTY_PREDICTION if n_pred == 0 else EMPTY_LABEL
        else:
            pb, gb = pm[None, None], gm[None, None]
            dice = float(compute_dice(pb, gb, include_background=True, ignore_empty=False)[0, 0])
            iou = float(compute_iou(pb, gb, include_background=True, ignore_empty=False)[0, 0])
            hd95 = _hd95(pm, gm, spacing_t)
            empty = EMPTY_NONE
        results.append(ClassMetrics(c, name, dice, iou, hd95, n_pred, n_label, empty))
    return results
