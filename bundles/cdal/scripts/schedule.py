"""cDAL's few-step diffusion: MONAI ``DDPMScheduler`` on the registered ``cdal_vp`` schedule + the batched parts.

bundles/cdal/docs/sources.md §2.6 / paper §2.1-2.3. Index convention (the official code's): the integer ``t in
{0..T-1}`` denotes the pair (level ``t``, level ``t+1``) = paper (x_{t-1}, x_t); level 0 is the clean label up to a
``beta_0 = 1e-8``.

What MONAI gives (used as is): ``DDPMScheduler(num_train_timesteps=T, schedule="cdal_vp", prediction_type="sample",
variance_type="fixed_small", clip_sample=True).step(x0_hat, t, x)`` is exactly the posterior sample of eq 2
(mean ``c1 x0_hat + c2 x``, variance ``beta'_t (1 - abar'_{t-1}) / (1 - abar'_t)``, no noise at ``t = 0``), used by the
sampler. What it lacks, written here: a per-sample-``t`` (batched) posterior for the training fake branch, the
forward sampler with the official ``beta_0`` level and ``q_sample_pairs`` (MONAI has no joint pair sampler).
"""

from __future__ import annotations

import scripts.noise_schedules  # noqa: F401  (registers "cdal_vp")
import torch
from monai.networks.schedulers import DDPMScheduler

__all__ = ["CDALSchedule", "extract"]


def extract(values: torch.Tensor, t: torch.Tensor, ndim: int) -> torch.Tensor:
    """``values[t]`` reshaped to ``[B, 1, ..., 1]`` (``ndim`` dims) for broadcasting over ``[B, C, *spatial]``."""
    out = values.to(t.device)[t]
    return out.reshape(-1, *([1] * (ndim - 1)))


class CDALSchedule:
    """Coefficients and samplers of the T-step VP discretisation (T = 4 MoNuSeg, 2 CXR / Hippocampus).

    Args:
        num_timesteps: ``T``.
        beta_min, beta_max: VP SDE range (0.1, 20).

    Attributes (float32 tensors on CPU; moved to the input's device on use):
        scheduler: the MONAI ``DDPMScheduler`` (betas ``beta'_1..T``) used for sampling.
        a_s_cum, sigmas_cum: ``sqrt(abar_t)``, ``sqrt(1 - abar_t)`` of levels ``t = 0..T`` (``beta_0 = 1e-8`` included).
        a_s, sigmas: ``sqrt(1 - beta_t)``, ``sqrt(beta_t)`` of levels ``0..T``.
        posterior_mean_coef1, posterior_mean_coef2, posterior_variance, posterior_log_variance_clipped: ``[T]``.
    """

    def __init__(self, num_timesteps: int = 4, beta_min: float = 0.1, beta_max: float = 20.0) -> None:
        if int(num_timesteps) < 1:
            raise ValueError(f"num_timesteps must be >= 1, got {num_timesteps}")
        self.num_timesteps = int(num_timesteps)
        self.scheduler = DDPMScheduler(
            num_train_timesteps=self.num_timesteps,
            schedule="cdal_vp",
            variance_type="fixed_small",
            clip_sample=True,
            prediction_type="sample",
            beta_min=beta_min,
            beta_max=beta_max,
        )
        betas = self.scheduler.betas.to(torch.float32)  # beta'_1..T
        full = torch.cat([torch.tensor([1e-8]), betas])  # levels 0..T, as get_sigma_schedule
        self.betas = full
        self.sigmas = full.sqrt()
        self.a_s = (1.0 - full).sqrt()
        self.a_s_cum = torch.cumprod(self.a_s, 0)
        self.sigmas_cum = (1.0 - self.a_s_cum**2).sqrt()
        alphas_cumprod = self.scheduler.alphas_cumprod.to(torch.float32)
        prev = torch.cat([torch.ones(1), alphas_cumprod[:-1]])
        self.posterior_variance = betas * (1 - prev) / (1 - alphas_cumprod)
        self.posterior_mean_coef1 = betas * prev.sqrt() / (1 - alphas_cumprod)
        self.posterior_mean_coef2 = (1 - prev) * (1 - betas).sqrt() / (1 - alphas_cumprod)
        self.posterior_log_variance_clipped = torch.log(self.posterior_variance.clamp(min=1e-20))

    # ------------------------------------------------------------------------------------------- forward
    def check_t(self, t: torch.Tensor) -> torch.Tensor:
        """``t`` as an int64 tensor ``[B]`` in ``0..T-1`` (ValueError otherwise)."""
        t = torch.as_tensor(t).long().reshape(-1)
        if t.numel() and (int(t.min()) < 0 or int(t.max()) >= self.num_timesteps):
            raise ValueError(f"time index must be in 0..{self.num_timesteps - 1}, got {t.tolist()}")
        return t

    def q_sample(
        self,
        x0: torch.Tensor,
        t: torch.Tensor,
        noise: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Level ``t`` of ``x0``: ``sqrt(abar_t) x0 + sqrt(1 - abar_t) eps`` (``[B, C, *spatial]``, ``t [B]``)."""
        if noise is None:
            noise = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
        return extract(self.a_s_cum, t, x0.ndim) * x0 + extract(self.sigmas_cum, t, x0.ndim) * noise

    def q_sample_pairs(
        self, x0: torch.Tensor, t: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(x_lo, x_hi)`` = (level ``t``, level ``t+1``) with fresh noise: ``x_hi = sqrt(1 - beta_{t+1}) x_lo +
        sqrt(beta_{t+1}) eps2`` (official ``q_sample_pairs``). Shapes as ``x0``."""
        t = self.check_t(t).to(x0.device)
        x_lo = self.q_sample(x0, t, generator=generator)
        noise = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
        x_hi = extract(self.a_s, t + 1, x0.ndim) * x_lo + extract(self.sigmas, t + 1, x0.ndim) * noise
        return x_lo, x_hi

    # ------------------------------------------------------------------------------------------- posterior
    def posterior_mean_variance(
        self, x0_hat: torch.Tensor, x_hi: torch.Tensor, t: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Mean, variance and clipped log-variance of ``q(x_lo | x_hi, x0_hat)`` per sample (eq 2)."""
        t = self.check_t(t).to(x_hi.device)
        n = x_hi.ndim
        mean = extract(self.posterior_mean_coef1, t, n) * x0_hat + extract(self.posterior_mean_coef2, t, n) * x_hi
        return mean, extract(self.posterior_variance, t, n), extract(self.posterior_log_variance_clipped, t, n)

    def sample_posterior(
        self, x0_hat: torch.Tensor, x_hi: torch.Tensor, t: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Batched posterior sample with a per-sample ``t`` (no noise where ``t == 0``); ``[B, C, *spatial]``."""
        t = self.check_t(t).to(x_hi.device)
        mean, _, log_var = self.posterior_mean_variance(x0_hat, x_hi, t)
        noise = torch.randn(x_hi.shape, generator=generator, device=x_hi.device, dtype=x_hi.dtype)
        nonzero = (t != 0).to(x_hi.dtype).reshape(-1, *([1] * (x_hi.ndim - 1)))
        return mean + nonzero * torch.exp(0.5 * log_var) * noise

    def step(
        self, x0_hat: torch.Tensor, t: int, x: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """One reverse step for a scalar ``t`` through MONAI's ``DDPMScheduler.step`` (sampling)."""
        prev, _ = self.scheduler.step(model_output=x0_hat, timestep=int(t), sample=x, generator=generator)
        return prev
