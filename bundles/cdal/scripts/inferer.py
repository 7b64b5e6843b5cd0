"""cDAL inference: T-step sampling from noise, N samples, mean, threshold, per-pixel variance
(bundles/cdal/docs/sources.md §6).

:class:`CDALInferer` is the bundle's ``inferer``: a callable ``inferer(image, network)`` as MONAI Label and
``SupervisedEvaluator`` call it. It holds everything of the sampling loop (schedule, N, seed, tiling):

- 2D (``[B, C, H, W]``): optional resize of the image to ``resize_to`` (MoNuSeg: 512, bundles/cdal/docs/sources.md
§1.1), then
  ``monai.inferers.SlidingWindowInferer(roi_size, overlap=0)`` -- with 512 and roi 256 exactly the official 4
  non-overlapping tiles -- whose predictor draws the N samples of each tile; stitched maps are resized back to the
  input size (bilinear), so the mask is at the input's resolution.
- 3D (``[B, C, H, W, D]``, Hippocampus): ``sliding_window_inference(roi (32, 32, 32), sw_batch_size 4,
  overlap 0.75)`` whose predictor samples each window slice by slice (the last axis; the generator is 2D) and
  returns the per-channel rounded mean of the N samples (official ``metrics_hippo.py``), averaged over windows.

Per sample: ``x_T ~ N(0, I)``; for ``t = T-1..0``: fresh ``z``, ``x0_hat = G(x, t, I, z)``,
``x <- DDPMScheduler.step(x0_hat, t, x)`` (MONAI; no noise at t = 0, so the result is ``x0_hat``). Each sample is
mapped to [0, 1] by ``(x + 1) / 2`` and clamped. The output holds class scores whose argmax is the paper's mask,
as every bundle's ``inferer`` does (bundles/README.md, "Outputs"), so the same postprocessing (and MONAI Label, which
takes the labels from ``metadata.json``'s ``channel_def``) works for all of them:

- binary (1 label channel): ``(1 - m, m)`` with ``m`` the mean of the N samples' foreground maps; argmax = the
  paper's threshold ``m > 0.5`` (a tie at exactly 0.5 goes to background, as ``m > 0.5`` does);
- multi-class (one-hot channels incl. background): the per-channel means (3D: rounded per window, then averaged
  over windows, as the official ``metrics_hippo.py``); argmax = the class.

Output ``[B, K + 1, *spatial]`` (``K`` = 2 for binary, else the label channels): the K class scores, then the
uncertainty = per-pixel variance over the N samples of the [0, 1] foreground map (one-hot label maps: summed over
the foreground channels 1..Cl-1; the bundles' one definition, :func:`common.inferers.sampling.foreground_variance`);
``return_uncertainty=False`` gives ``[B, K, ...]``.
All randomness comes from one ``torch.Generator`` seeded with ``seed`` at every call, so the same image and seed
give exactly the same mask (``seed=None``: the global RNG).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from common.errors import BadInputError
from common.inferers.sampling import SamplingInferer, foreground_variance
from common.networks.utils import unwrap_network
from monai.data import MetaTensor
from monai.inferers import SlidingWindowInferer, sliding_window_inference
from monai.utils import convert_to_dst_type
from scripts.schedule import CDALSchedule
from torch import nn

__all__ = ["sample_label_maps", "CDALInferer"]


@torch.no_grad()
def sample_label_maps(
    network: nn.Module,
    schedule: CDALSchedule,
    image: torch.Tensor,
    num_samples: int,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Draw ``num_samples`` label maps for a 2D batch; returns ``[N, B, Cl, H, W]`` in [0, 1].

    Args:
        network: the generator (``nz``, ``label_channels`` attributes; DDP unwrapped).
        schedule: the T-step schedule (sampling uses its MONAI ``DDPMScheduler``).
        image: ``[B, Ci, H, W]`` condition images.
        num_samples: ``N``; the N samples run as one batch of ``N * B``.
        generator: random source for ``x_T``, ``z`` and the posterior noise.
    """
    g = unwrap_network(network)
    b = image.shape[0]
    cond = image.repeat(num_samples, *([1] * (image.ndim - 1)))  # [N*B, Ci, H, W], sample-major
    shape = (num_samples * b, g.label_channels, *image.shape[2:])
    x = torch.randn(shape, generator=generator, device=image.device, dtype=image.dtype)
    for t in reversed(range(schedule.num_timesteps)):
        z = torch.randn(shape[0], g.nz, generator=generator, device=image.device, dtype=image.dtype)
        tt = torch.full((shape[0],), t, dtype=torch.long, device=image.device)
        x0_hat = network(x, tt, cond, z)
        x = schedule.step(x0_hat, t, x, generator=generator)
    x = ((x + 1.0) / 2.0).clamp(0.0, 1.0)
    return x.reshape(num_samples, b, *x.shape[1:])


class CDALInferer(SamplingInferer):
    """``inferer(image, network) -> [B, K + 1, *spatial]`` (K class scores, uncertainty); see the module docstring.

    Args:
        num_timesteps: ``T`` of the trained model (4 MoNuSeg, 2 CXR / Hippocampus).
        num_samples: ``N`` samples averaged (5 in the paper).
        seed: seed of the sampling generator, re-applied at each call (``None``: global RNG, not reproducible).
        roi_size: tile (2D) or window (3D) size.
        sw_batch_size: tiles/windows per generator call.
        overlap: tile overlap (0 for the MoNuSeg 4-tile scheme; 0.75 for Hippocampus windows).
        resize_to: 2D only: resize the image to this size before tiling (MoNuSeg 512; ``None`` keeps it).
        return_uncertainty: add the variance channel (default off: the plain ``inferer`` MONAI Label calls;
            :meth:`with_uncertainty` gives the evaluator's copy with it on).
        beta_min, beta_max: the schedule's VP range.
    """

    def __init__(
        self,
        num_timesteps: int = 4,
        num_samples: int = 5,
        seed: int | None = 0,
        roi_size: Sequence[int] | int = (256, 256),
        sw_batch_size: int = 4,
        overlap: float = 0.0,
        resize_to: Sequence[int] | int | None = None,
        return_uncertainty: bool = False,
        beta_min: float = 0.1,
        beta_max: float = 20.0,
    ) -> None:
        super().__init__(num_samples=num_samples, seed=seed, return_uncertainty=return_uncertainty)
        self.schedule = CDALSchedule(num_timesteps, beta_min, beta_max)
        self.roi_size = roi_size
        self.sw_batch_size = int(sw_batch_size)
        self.overlap = float(overlap)
        self.resize_to = resize_to

    # ------------------------------------------------------------------------------------------------ helpers
    def _check(self, image: torch.Tensor, network: nn.Module) -> None:
        g = unwrap_network(network)
        src = "image"
        if isinstance(image, MetaTensor):
            src = str(image.meta.get("filename_or_obj", "image"))
        if not isinstance(image, torch.Tensor) or image.ndim not in (4, 5):
            shape = tuple(getattr(image, "shape", ()))
            raise BadInputError(src, f"expected a batch [B, C, H, W] (2D) or [B, C, H, W, D] (3D), got shape {shape}")
        if not hasattr(g, "nz") or not hasattr(g, "label_channels"):
            raise BadInputError(src, f"network {type(g).__name__} is not a cDAL generator (needs nz, label_channels)")
        if image.shape[1] != g.image_channels:
            raise BadInputError(
                src,
                f"image has {image.shape[1]} channel(s), the generator expects {g.image_channels} "
                f"(shape {tuple(image.shape)}, channel first)",
            )
        if not torch.isfinite(image).all():
            raise BadInputError(src, "image contains NaN or inf values")

    def _predictor_2d(self, network: nn.Module, gen: torch.Generator | None):
        def predict(tile: torch.Tensor) -> torch.Tensor:
            s = sample_label_maps(network, self.schedule, tile.as_subclass(torch.Tensor), self.num_samples, gen)
            return torch.cat([s.mean(0), s.var(0, unbiased=False)], dim=1)  # [b, 2*Cl, h, w], per-channel variances

        return predict

    def _predictor_3d(self, network: nn.Module, gen: torch.Generator | None):
        def predict(window: torch.Tensor) -> torch.Tensor:
            w = window.as_subclass(torch.Tensor)
            b, c, h, wd, d = w.shape
            slices = w.permute(0, 4, 1, 2, 3).reshape(b * d, c, h, wd)
            s = sample_label_maps(network, self.schedule, slices, self.num_samples, gen)  # [N, b*d, Cl, h, w]
            mean = s.mean(0)
            if mean.shape[1] > 1:
                mean = mean.round()  # per-channel round before window averaging (official metrics_hippo.py)
            var = foreground_variance(s, sample_dim=0, channel_dim=2)  # [b*d, 1, h, w], bundles/README.md "Outputs"
            out = torch.cat([mean, var], dim=1)  # [b*d, Cl+1, h, w]
            return out.reshape(b, d, out.shape[1], h, wd).permute(0, 2, 3, 4, 1)

        return predict

    # ------------------------------------------------------------------------------------------------ call
    @torch.no_grad()
    def sample(self, inputs: torch.Tensor, network: nn.Module, **kwargs) -> tuple[torch.Tensor, torch.Tensor]:
        """``[B, C, *spatial]`` -> (class scores ``[B, K, *spatial]``, uncertainty ``[B, 1, *spatial]``)."""
        image = inputs
        self._check(image, network)
        network.eval()
        gen = self.generator(image.device)
        x = image.as_subclass(torch.Tensor).float()
        cl = unwrap_network(network).label_channels
        if x.ndim == 4:
            size = tuple(x.shape[2:])
            if self.resize_to is not None:
                target = (self.resize_to,) * 2 if isinstance(self.resize_to, int) else tuple(self.resize_to)
                # antialiased as PIL's bilinear shrink of the official loader (common.transforms.resize)
                x = F.interpolate(x, size=target, mode="bilinear", align_corners=False, antialias=True)
            roi = (self.roi_size,) * 2 if isinstance(self.roi_size, int) else tuple(self.roi_size)
            sw = SlidingWindowInferer(roi_size=roi, sw_batch_size=self.sw_batch_size, overlap=self.overlap)
            maps = sw(x, self._predictor_2d(network, gen))
            if tuple(maps.shape[2:]) != size:
                maps = F.interpolate(maps, size=size, mode="bilinear", align_corners=False)
            mean, var = maps[:, :cl], maps[:, cl:]
            var = var[:, 1:].sum(1, keepdim=True) if cl > 1 else var  # foreground classes (foreground_variance)
        else:
            roi = (self.roi_size,) * 3 if isinstance(self.roi_size, int) else tuple(self.roi_size)
            maps = sliding_window_inference(
                x, roi, self.sw_batch_size, self._predictor_3d(network, gen), overlap=self.overlap
            )
            mean, var = maps[:, :cl], maps[:, cl:]
        scores = torch.cat([1.0 - mean, mean], dim=1) if cl == 1 else mean
        scores, var = scores.to(torch.float32), var.to(torch.float32)
        if isinstance(image, MetaTensor):
            scores, var = convert_to_dst_type(scores, image)[0], convert_to_dst_type(var, image)[0]
        return scores, var
