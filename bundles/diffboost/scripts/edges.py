"""Edge maps for edge-conditioned generation (ControlNet hints): HED soft edges, a Sobel fallback, the label outline.

DiffBoost (bundles/diffboost/docs/sources.md §1.2, code ``segmentation/preprocess/utils.py``) conditions its ControlNet
on

    edge = clip(HED(image) + B(label), 0, 1)

where ``HED`` is the holistically-nested edge detector of the ControlNet annotator (VGG16, 5 side outputs, 1x1 fuse,
sigmoid; BSDS500 weights ``network-bsds500.pth``; SOFT edges: no NMS, no threshold) and ``B(label)`` is the magnitude
of the label convolved with the complex 3x3 Scharr kernel, clipped to [0, 1] -- a binary ~2-pixel outline of the mask
(every pixel where the label changes). The pieces are usable on their own:

- :class:`HEDNetwork` -- the annotator's HED network; :meth:`HEDNetwork.from_file` loads ``network-bsds500.pth``
  (keys ``module*`` or ``net*``; ``torch.load(weights_only=True)``).
- :func:`sobel_edges` -- the documented fallback when no HED weights are given: gradient magnitude of a Gaussian-
  smoothed image (MONAI ``SobelGradients``-style kernels), divided by its 99th percentile and clipped to [0, 1]. Like
  HED it is a soft map in [0, 1] without thresholding, but it is a low-level detector: it fires on speckle and
  texture that HED (trained on BSDS500 contours) suppresses, so the hint is noisier than the authors'.
- :func:`label_outline` -- ``B(label)`` (Scharr boundary, 'symm' padding as ``scipy.signal.convolve2d``).
- :func:`conditioning_edge_map` -- the union above, with the shape checks.
- :class:`EdgeMapd` -- a MONAI dictionary transform writing ``edge`` from ``image`` (and ``label``).

Written here rather than taken from ``controlnet_aux`` because its HED post-processing differs (uint8 PIL output,
``safe``/``scribble`` modes) and it is not a project dependency; the forward pass below follows the annotator exactly
(BGR mean subtraction 104.007/116.669/122.679 on 0-255 input, bilinear upsampling of the side outputs).

Shapes: images ``(C, H, W)`` or batches ``(B, C, H, W)`` with C = 1 or 3; outputs ``(1, H, W)`` / ``(B, 1, H, W)``.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping
from os import PathLike
from typing import Any

import torch
import torch.nn.functional as F
from common.errors import BadInputError
from common.standins import warn_if_standin
from monai.config import KeysCollection
from monai.transforms import MapTransform

__all__ = [
    "HED_BGR_MEAN",
    "HEDNetwork",
    "EdgeDetector",
    "sobel_edges",
    "label_outline",
    "conditioning_edge_map",
    "EdgeMapd",
]

#: per-channel mean (B, G, R order) the BSDS500 HED network subtracts from 0-255 input
HED_BGR_MEAN = (104.00698793, 116.66876762, 122.67891434)


def _vgg_stage(c_in: int, c_out: int, n_convs: int, pool: bool) -> torch.nn.Sequential:
    layers: list[torch.nn.Module] = [torch.nn.MaxPool2d(kernel_size=2, stride=2)] if pool else []
    for i in range(n_convs):
        layers += [torch.nn.Conv2d(c_in if i == 0 else c_out, c_out, 3, 1, 1), torch.nn.ReLU(inplace=False)]
    return torch.nn.Sequential(*layers)


class HEDNetwork(torch.nn.Module):
    """Holistically-nested edge detection (Xie & Tu 2015) as in the ControlNet v1.0 annotator.

    Layer names match the annotator's state dict (``netVggOne.0.weight``, ..., ``netCombine.0.bias``) so
    ``network-bsds500.pth`` loads strictly (its ``module*`` keys are renamed to ``net*``).

    Input: ``(B, 3, H, W)`` RGB in [0, 1] (the annotator feeds BGR; :meth:`forward` swaps the channels).
    Output: ``(B, 1, H, W)`` edge probability in [0, 1] (sigmoid of the fused side outputs).
    """

    def __init__(self) -> None:
        super().__init__()
        self.netVggOne = _vgg_stage(3, 64, 2, pool=False)
        self.netVggTwo = _vgg_stage(64, 128, 2, pool=True)
        self.netVggThr = _vgg_stage(128, 256, 3, pool=True)
        self.netVggFou = _vgg_stage(256, 512, 3, pool=True)
        self.netVggFiv = _vgg_stage(512, 512, 3, pool=True)
        self.netScoreOne = torch.nn.Conv2d(64, 1, 1)
        self.netScoreTwo = torch.nn.Conv2d(128, 1, 1)
        self.netScoreThr = torch.nn.Conv2d(256, 1, 1)
        self.netScoreFou = torch.nn.Conv2d(512, 1, 1)
        self.netScoreFiv = torch.nn.Conv2d(512, 1, 1)
        self.netCombine = torch.nn.Sequential(torch.nn.Conv2d(5, 1, 1), torch.nn.Sigmoid())

    @classmethod
    def from_file(cls, path: str | PathLike, map_location: str | torch.device = "cpu") -> HEDNetwork:
        """Build the network and load ``network-bsds500.pth`` (or a state dict saved from this class).

        Raises:
            BadInputError: unreadable file or weights that do not fit (names the file and the mismatch).
        """
        from common.io.checkpoints import load_network_weights

        net = cls()
        state = torch.load(path, map_location=map_location, weights_only=True) if _is_file(path) else None
        if state is None:
            raise BadInputError(
                path, "HED weights file not found (network-bsds500.pth, e.g. from HF lllyasviel/Annotators)"
            )
        if isinstance(state, Mapping) and all(isinstance(k, str) for k in state):
            state = {k.replace("module", "net"): v for k, v in state.items()}
        warn_if_standin(path, "HED weights")
        load_network_weights(net, state, key=None, source=str(path))
        return net.eval().requires_grad_(False)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` RGB in [0, 1] -> ``(B, 1, H, W)`` soft edges in [0, 1]."""
        x = image.flip(1) * 255.0  # RGB -> BGR, 0-255 (annotator: input[:, :, ::-1] / 255, then * 255 inside)
        x = x - torch.tensor(HED_BGR_MEAN, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        v1 = self.netVggOne(x)
        v2 = self.netVggTwo(v1)
        v3 = self.netVggThr(v2)
        v4 = self.netVggFou(v3)
        v5 = self.netVggFiv(v4)
        size = image.shape[-2:]
        scores = [
            F.interpolate(s(v), size=size, mode="bilinear", align_corners=False)
            for s, v in (
                (self.netScoreOne, v1),
                (self.netScoreTwo, v2),
                (self.netScoreThr, v3),
                (self.netScoreFou, v4),
                (self.netScoreFiv, v5),
            )
        ]
        return self.netCombine(torch.cat(scores, dim=1))


def _is_file(path: str | PathLike) -> bool:
    import os

    return os.path.isfile(path)


def _as_batch(image: torch.Tensor, source: Any) -> tuple[torch.Tensor, bool]:
    """``(C, H, W)`` or ``(B, C, H, W)`` float tensor -> ``(B, C, H, W)``, and whether a batch axis was added."""
    t = torch.as_tensor(image)
    if t.ndim == 3:
        return t.unsqueeze(0).float(), True
    if t.ndim == 4:
        return t.float(), False
    raise BadInputError(source, f"expected an image (C, H, W) or a batch (B, C, H, W), got shape {tuple(t.shape)}")


def _gaussian_kernel1d(sigma: float) -> torch.Tensor:
    radius = max(1, int(math.ceil(3.0 * sigma)))
    x = torch.arange(-radius, radius + 1, dtype=torch.float32)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    return k / k.sum()


def sobel_edges(
    image: torch.Tensor, sigma: float = 1.0, percentile: float = 99.0, source: Any = "image"
) -> torch.Tensor:
    """Soft Sobel edge map: the fallback edge detector when no HED weights are given.

    Steps: channel mean (grayscale); Gaussian smoothing (``sigma`` px, reflect padding); Sobel gradients in x and y;
    magnitude; divided by its ``percentile``-th percentile per image (so contrast/intensity range do not matter) and
    clipped to [0, 1]. No thresholding or non-maximum suppression (soft, like HED). A constant image gives zeros.

    Args:
        image: ``(C, H, W)`` or ``(B, C, H, W)``, any intensity range.
        sigma: Gaussian smoothing before differentiation (0 disables it).
        percentile: normalisation percentile of the gradient magnitude.
        source: name for error messages.

    Returns:
        ``(1, H, W)`` or ``(B, 1, H, W)`` float32 in [0, 1].
    """
    x, added = _as_batch(image, source)
    x = x.mean(dim=1, keepdim=True)
    if sigma > 0:
        k = _gaussian_kernel1d(sigma).to(x)
        r = k.numel() // 2
        if min(x.shape[-2:]) > r:
            x = F.conv2d(F.pad(x, (r, r, 0, 0), mode="reflect"), k.view(1, 1, 1, -1))
            x = F.conv2d(F.pad(x, (0, 0, r, r), mode="reflect"), k.view(1, 1, -1, 1))
    kx = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]], dtype=x.dtype, device=x.device)
    weight = torch.stack([kx, kx.t()]).unsqueeze(1)
    grad = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), weight)
    mag = grad.pow(2).sum(dim=1, keepdim=True).sqrt()
    scale = torch.quantile(mag.flatten(1), percentile / 100.0, dim=1).clamp_min(1e-8).view(-1, 1, 1, 1)
    out = (mag / scale).clamp(0.0, 1.0)
    return out[0] if added else out


def label_outline(label: torch.Tensor, source: Any = "label") -> torch.Tensor:
    """``B(label)``: where the label changes, from the complex 3x3 Scharr kernel (bundles/diffboost/docs/sources.md
    §1.2).

    ``|conv2d(label, [[-3-3j, -10j, 3-3j], [-10, 0, 10], [-3+3j, 10j, 3+3j]], boundary='symm')|`` clipped to [0, 1]:
    1 on both sides of every class boundary (~2 px wide), 0 elsewhere. With a 3x3 kernel, 'symm' padding equals
    replicate padding (the border row is mirrored onto itself), so the image border is never an outline.

    Args:
        label: ``(1, H, W)`` or ``(B, 1, H, W)`` class ids (any integer/float dtype).

    Returns:
        ``(1, H, W)`` / ``(B, 1, H, W)`` float32 in {0, 1}.
    """
    y, added = _as_batch(label, source)
    if y.shape[1] != 1:
        raise BadInputError(
            source, f"expected a one-channel label map, got {y.shape[1]} channels (shape {tuple(y.shape)})"
        )
    real = torch.tensor([[-3.0, 0.0, 3.0], [-10.0, 0.0, 10.0], [-3.0, 0.0, 3.0]], dtype=y.dtype, device=y.device)
    imag = torch.tensor([[-3.0, -10.0, -3.0], [0.0, 0.0, 0.0], [3.0, 10.0, 3.0]], dtype=y.dtype, device=y.device)
    g = F.conv2d(F.pad(y, (1, 1, 1, 1), mode="replicate"), torch.stack([real, imag]).unsqueeze(1))
    out = g.pow(2).sum(dim=1, keepdim=True).sqrt().clamp(0.0, 1.0)
    return out[0] if added else out


class EdgeDetector:
    """Soft edge detector: HED when ``hed_weights`` is given, else :func:`sobel_edges`.

    Args:
        hed_weights: path of ``network-bsds500.pth`` (ControlNet annotator / HF ``lllyasviel/Annotators``), or
            ``None`` for the Sobel fallback.
        device: where HED runs.
        sobel_sigma: smoothing of the fallback.

    Call: ``detector(image)`` with ``(C, H, W)`` / ``(B, C, H, W)`` in [0, 1] (HED input range; 1 channel is
    replicated to RGB) -> ``(1, H, W)`` / ``(B, 1, H, W)`` in [0, 1].
    """

    def __init__(
        self, hed_weights: str | PathLike | None = None, device: str | torch.device = "cpu", sobel_sigma: float = 1.0
    ) -> None:
        self.hed_weights = hed_weights
        self.device = torch.device(device)
        self.sobel_sigma = sobel_sigma
        self.hed = HEDNetwork.from_file(hed_weights).to(self.device) if hed_weights else None

    @property
    def kind(self) -> str:
        """``"hed"`` or ``"sobel"``."""
        return "hed" if self.hed is not None else "sobel"

    @torch.no_grad()
    def __call__(self, image: torch.Tensor, source: Any = "image") -> torch.Tensor:
        x, added = _as_batch(image, source)
        if self.hed is None:
            out = sobel_edges(x, sigma=self.sobel_sigma, source=source)
        else:
            if x.shape[1] == 1:
                x = x.expand(-1, 3, -1, -1)
            if x.shape[1] != 3:
                raise BadInputError(source, f"HED needs 1 or 3 image channels, got {x.shape[1]}")
            out = self.hed(x.to(self.device)).cpu()
        return out[0] if added else out


def conditioning_edge_map(
    image: torch.Tensor,
    label: torch.Tensor | None,
    detector: EdgeDetector | None = None,
    image_range: tuple[float, float] = (-1.0, 1.0),
    source: Any = "image",
) -> torch.Tensor:
    """DiffBoost's ControlNet hint ``clip(edges(image) + B(label), 0, 1)`` (bundles/diffboost/docs/sources.md §1.2).

    Args:
        image: ``(C, H, W)`` or ``(B, C, H, W)`` with intensities in ``image_range`` (mapped to [0, 1] for HED, as
            the authors feed ``(x + 1) / 2``).
        label: ``(1, H, W)`` / ``(B, 1, H, W)`` class ids on the same grid, or ``None`` (edges of the image only,
            as for pre-training).
        detector: :class:`EdgeDetector` (default: the Sobel fallback).
        image_range: (low, high) of ``image``.
        source: case id / file for error messages.

    Returns:
        ``(1, H, W)`` / ``(B, 1, H, W)`` float32 in [0, 1].

    Raises:
        BadInputError: image and label of different spatial size (or batch size), or a multi-channel label.
    """
    x, added = _as_batch(image, source)
    if label is not None:
        y, _ = _as_batch(label, source)
        if tuple(y.shape[-2:]) != tuple(x.shape[-2:]) or y.shape[0] != x.shape[0]:
            raise BadInputError(
                source,
                f"image and label differ in size: image {tuple(x.shape)} vs label {tuple(y.shape)}; the edge map "
                "needs the mask on the image's pixel grid (resize both with the same transform)",
            )
    lo, hi = image_range
    x01 = ((x - lo) / max(hi - lo, 1e-8)).clamp(0.0, 1.0)
    edges = (detector or EdgeDetector())(x01, source=source)
    if label is not None:
        edges = (edges + label_outline(y, source=source)).clamp(0.0, 1.0)
    return edges[0] if added else edges


class EdgeMapd(MapTransform):
    """Dictionary transform: ``d[edge_key] = conditioning_edge_map(d[image_key], d[label_key])``.

    Deterministic (cache it, e.g. in ``CacheDataset``: HED at 384^2 is the expensive part of the preprocessing).

    Args:
        keys: ``(image_key,)`` or ``(image_key, label_key)``; without a label only image edges are used.
        edge_key: output key (``(1, H, W)`` float32 in [0, 1]).
        hed_weights: path of ``network-bsds500.pth`` or ``None`` (Sobel fallback, see :func:`sobel_edges`).
        image_range: intensity range of the image (default [-1, 1], DiffBoost's normalised slices).
        case_key: data key naming the case in error messages.
        device: where HED runs.
    """

    def __init__(
        self,
        keys: KeysCollection = ("image", "label"),
        edge_key: str = "edge",
        hed_weights: str | PathLike | None = None,
        image_range: tuple[float, float] = (-1.0, 1.0),
        case_key: str | None = "case_id",
        device: str | torch.device = "cpu",
    ) -> None:
        super().__init__(keys)
        keys = tuple(self.keys)
        if not 1 <= len(keys) <= 2:
            raise ValueError(f"EdgeMapd: keys must be (image,) or (image, label), got {keys}")
        self.image_key, self.label_key = keys[0], (keys[1] if len(keys) == 2 else None)
        self.edge_key = edge_key
        self.image_range = tuple(image_range)
        self.case_key = case_key
        self.detector = EdgeDetector(hed_weights, device=device)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        source = d.get(self.case_key, self.image_key) if self.case_key else self.image_key
        label = d.get(self.label_key) if self.label_key else None
        edge = conditioning_edge_map(
            torch.as_tensor(d[self.image_key]),
            None if label is None else torch.as_tensor(label),
            self.detector,
            self.image_range,
            source=f"case {source}" if self.case_key in d else source,
        )
        d[self.edge_key] = edge.float()
        return d
