"""Latent DDIM sampling inside MONAI's sliding-window inference, with samples-per-window uncertainty.

TextDiffSeg (``bundles/textdiffseg/docs/sources.md`` §5, paper §III.B) segments a volume by running, for every 96^3
window, a 10-step
DDIM chain in the label latent space conditioned on the image window, decoding the sampled latent to class
probabilities, and stitching the windows with ``sliding_window_inference(overlap=0.5)``. This module is that loop,
independent of the network: the network only has to expose four methods (:class:`LatentSegmentationDiffusion`)::

    condition(window, **kwargs)                 -> condition of the window (anything; e.g. (B, c, *latent))
    latent_shape(spatial_shape)                 -> (k, *latent) shape of the sampled latent for a window
    predict_noise(z_t, timesteps, condition)    -> (B, k, *latent) predicted noise (epsilon)
    decode_probabilities(z_0)                   -> (B, N, *spatial) class probabilities of the window

Reused from MONAI: ``monai.inferers.sliding_window_inference`` (window placement, Gaussian/constant blending, tuple
outputs) and the schedulers' ``set_timesteps`` / ``step`` (``DDIMScheduler`` by default; ``DDPMScheduler`` works
too, for the DDPM-1000 comparison of the bench). Written here: the per-window chain (one batch of ``num_samples``
chains per window batch, seeded noise) and the mean / variance over samples, because neither
``LatentDiffusionInferer.sample`` (no sliding window, no samples statistics) nor ``SlidingWindowInferer`` (no
sampling) does both.

Uncertainty (beyond the paper): with ``num_samples = S > 1`` every window is sampled S times from independent
noise; the prediction is the mean of the S probability maps and the uncertainty the bundles' one definition
(bundles/README.md, "Outputs"; :func:`common.inferers.sampling.foreground_variance`): the voxel-wise variance over
the samples of the foreground probability, summed over the foreground classes ``sum_{c>=1} Var_s[p_c]`` when there
are more than two (population variance, 0 when S = 1), stitched like the probabilities.

Used from a bundle config (the contract's ``inferer(image, network)``)::

    "inferer": {"_target_": "common.inferers.ddim_sliding_window.DDIMSlidingWindowInferer",
                "roi_size": [96, 96, 96], "overlap": 0.5, "num_inference_steps": 10, "num_samples": 1,
                "scheduler": {"_target_": "monai.networks.schedulers.DDIMScheduler", "num_train_timesteps": 1000,
                              "schedule": "cosine", "clip_sample": false}}
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import torch
from common.errors import BadInputError
from common.inferers.sampling import SamplingInferer, foreground_variance
from common.networks.utils import unwrap_network
from monai.inferers import sliding_window_inference
from monai.networks.schedulers import DDIMScheduler

__all__ = ["DDIMSlidingWindowInferer", "LatentSegmentationDiffusion"]


@runtime_checkable
class LatentSegmentationDiffusion(Protocol):
    """What :class:`DDIMSlidingWindowInferer` needs from a latent diffusion segmentation network."""

    def condition(self, window: torch.Tensor, **kwargs: Any) -> Any:
        """The image (and text) condition of one (B, C, *window) image window, computed once per window."""

    def latent_shape(self, spatial_shape: Sequence[int]) -> tuple[int, ...]:
        """(C_z, *latent spatial) of the latent that a window of ``spatial_shape`` maps to."""

    def predict_noise(self, z_t: torch.Tensor, timesteps: torch.Tensor, condition: Any) -> torch.Tensor:
        """The noise predicted in the latent ``z_t`` (B, C_z, *latent) at ``timesteps`` (B,)."""

    def decode_probabilities(self, z_0: torch.Tensor) -> torch.Tensor:
        """Class probabilities (B, N, *window) of the denoised latent ``z_0``."""


def _repeat_condition(condition: Any, times: int) -> Any:
    """Repeat every tensor of a (nested) condition ``times`` times along the batch dim (sample-major blocks)."""
    if times == 1:
        return condition
    if isinstance(condition, torch.Tensor):
        return condition.repeat_interleave(times, dim=0)
    if isinstance(condition, (list, tuple)):
        return type(condition)(_repeat_condition(c, times) for c in condition)
    if isinstance(condition, dict):
        return {k: _repeat_condition(v, times) for k, v in condition.items()}
    return condition


def _slice_item(value: Any, index: int, batch: int) -> Any:
    """The ``index``-th item of a per-batch kwarg (tensor / list of length ``batch``); other values unchanged."""
    if batch == 1:
        return value
    if isinstance(value, torch.Tensor) and value.ndim > 0 and value.shape[0] == batch:
        return value[index : index + 1]
    if isinstance(value, (list, tuple)) and len(value) == batch:
        return type(value)([value[index]])
    return value


class DDIMSlidingWindowInferer(SamplingInferer):
    """``inferer(image, network) -> probabilities``: latent DDIM per window, stitched by sliding windows.

    Args:
        roi_size: window size (paper: 96^3). Each size must be divisible by the network's latent down factor.
        scheduler: a MONAI scheduler with ``set_timesteps`` / ``step``; default
            ``DDIMScheduler(1000, schedule="cosine", clip_sample=False)`` (``bundles/textdiffseg/docs/sources.md``
            §2.7).
        num_inference_steps: sampling steps (paper: DDIM 10).
        num_samples: S independent chains per window; mean probabilities, variance as uncertainty.
        sw_batch_size: windows per network call (each call runs ``sw_batch_size * S`` chains).
        overlap: window overlap (paper: 0.5).
        mode: blending of overlapping windows, ``"constant"`` or ``"gaussian"``.
        eta: DDIM eta (0 = deterministic given the initial noise; ``bundles/textdiffseg/docs/sources.md`` §2.7).
        seed: seed of the initial noise, re-applied on every call so a volume's result is reproducible;
            ``None`` draws from the global generator.
        return_uncertainty: default of the call's flag: append the uncertainty as one extra channel
            (:class:`~common.inferers.sampling.SamplingInferer`; :meth:`with_uncertainty` gives a copy with it on).
        standardise_latent: re-standardise the latent (per sample mean 0 / std 1) on the initial noise and after
            every step, as LDSeg's sampler does (``bundles/textdiffseg/docs/sources.md`` §5; default off).
        sw_device, device: as in ``sliding_window_inference`` (window compute device / stitching device).
        progress: show a progress bar over windows.
    """

    def __init__(
        self,
        roi_size: Sequence[int] | int,
        scheduler: Any | None = None,
        num_inference_steps: int = 10,
        num_samples: int = 1,
        sw_batch_size: int = 1,
        overlap: float = 0.5,
        mode: str = "constant",
        eta: float = 0.0,
        seed: int | None = 0,
        return_uncertainty: bool = False,
        standardise_latent: bool = False,
        sw_device: torch.device | str | None = None,
        device: torch.device | str | None = None,
        progress: bool = False,
    ) -> None:
        super().__init__(num_samples=num_samples, seed=seed, return_uncertainty=return_uncertainty)
        if num_inference_steps < 1:
            raise ValueError(f"num_inference_steps must be >= 1, got {num_inference_steps}.")
        self.roi_size = roi_size
        self.scheduler = scheduler or DDIMScheduler(
            num_train_timesteps=1000, schedule="cosine", clip_sample=False, prediction_type="epsilon"
        )
        self.num_inference_steps = int(num_inference_steps)
        self.sw_batch_size = int(sw_batch_size)
        self.overlap = float(overlap)
        self.mode = mode
        self.eta = float(eta)
        self.standardise_latent = bool(standardise_latent)
        self.sw_device = sw_device
        self.device = device
        self.progress = progress
        self._step_takes_eta = "eta" in inspect.signature(self.scheduler.step).parameters
        self._generator: torch.Generator | None = None

    # ---------------------------------------------------------------------------------------------------------
    def _noise(self, shape: tuple[int, ...], device: torch.device) -> torch.Tensor:
        if self._generator is None:
            return torch.randn(shape, device=device)
        return torch.randn(shape, generator=self._generator).to(device)

    @staticmethod
    def _standardise(z: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.layer_norm(z, z.shape[1:])

    def sample_latents(
        self, net: Any, condition: Any, batch: int, spatial: Sequence[int], device: torch.device
    ) -> torch.Tensor:
        """Run the reverse chain for ``batch`` latents of a window of size ``spatial``; returns z_0 (batch, k, ...)."""
        z = self._noise((batch, *net.latent_shape(spatial)), device)
        if self.standardise_latent:
            z = self._standardise(z)
        self.scheduler.set_timesteps(self.num_inference_steps, device=device)
        for t in self.scheduler.timesteps:
            t_int = int(t)
            eps = net.predict_noise(z, torch.full((batch,), t_int, device=device, dtype=torch.long), condition)
            if self._step_takes_eta:
                z, _ = self.scheduler.step(eps, t_int, z, eta=self.eta, generator=self._generator)
            else:
                z, _ = self.scheduler.step(eps, t_int, z, generator=self._generator)
            if self.standardise_latent:
                z = self._standardise(z)
        return z

    def predict_window(self, window: torch.Tensor, net: Any, **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """One window batch (W, C, *roi) -> (mean probabilities (W, N, *roi), uncertainty (W, 1, *roi))."""
        n_win, s = window.shape[0], self.num_samples
        condition = _repeat_condition(net.condition(window, **kwargs), s)
        z0 = self.sample_latents(net, condition, n_win * s, tuple(window.shape[2:]), window.device)
        probs = net.decode_probabilities(z0).float()
        probs = probs.reshape(n_win, s, *probs.shape[1:])
        mean = probs.mean(dim=1)
        var = foreground_variance(probs, sample_dim=1, channel_dim=2)  # bundles/README.md "Outputs"; 0 when S = 1
        return mean, var

    def sample(
        self, inputs: torch.Tensor, network: torch.nn.Module, **kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """
        Args:
            inputs: (B, C, *spatial) image(s); any size (padded to ``roi_size`` where smaller).
            network: a :class:`LatentSegmentationDiffusion` module (DDP-wrapped is fine).
            kwargs: passed to ``network.condition`` (e.g. text tokens); tensors / lists of length B are split
                per image.

        Returns:
            (B, N, *spatial) mean class probabilities and (B, 1, *spatial) uncertainty, stitched over the windows.
        """
        net = unwrap_network(network)
        missing = [
            m for m in ("condition", "latent_shape", "predict_noise", "decode_probabilities") if not hasattr(net, m)
        ]
        if missing:
            raise TypeError(
                f"{type(net).__name__} lacks {missing} (see "
                "common.inferers.ddim_sliding_window.LatentSegmentationDiffusion)"
            )
        roi = (self.roi_size,) * (inputs.ndim - 2) if isinstance(self.roi_size, int) else tuple(self.roi_size)
        if inputs.ndim != len(roi) + 2:
            raise BadInputError(
                "image",
                f"expected a ({len(roi)}D) batch (B, C, {', '.join('*' * len(roi))}) matching roi_size {roi}, "
                f"got shape {tuple(inputs.shape)}",
            )
        self._generator = self.generator("cpu")
        means, variances = [], []
        batch = inputs.shape[0]
        try:
            for b in range(batch):
                item_kwargs = {k: _slice_item(v, b, batch) for k, v in kwargs.items()}
                mean, var = sliding_window_inference(
                    inputs[b : b + 1],
                    roi_size=roi,
                    sw_batch_size=self.sw_batch_size,
                    predictor=lambda w: self.predict_window(w, net, **item_kwargs),
                    overlap=self.overlap,
                    mode=self.mode,
                    sw_device=self.sw_device,
                    device=self.device,
                    progress=self.progress,
                )
                means.append(mean)
                variances.append(var)
        finally:
            self._generator = None
        return torch.cat(means, dim=0), torch.cat(variances, dim=0)
