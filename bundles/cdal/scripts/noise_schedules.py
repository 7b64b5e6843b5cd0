"""Extra noise schedules registered in MONAI's ``NoiseSchedules`` store (usable by every MONAI scheduler by name).

- ``"cdal_vp"``: the few-step discretisation of the VP SDE used by DDGAN and cDAL (bundles/cdal/docs/sources.md §2.6)::

      tau_i = i / T * (1 - eps) + eps,  i = 0..T           (eps = 1e-3)
      alpha_bar(tau) = exp(-0.5 tau^2 (beta_max - beta_min) - tau beta_min)
      beta_i = 1 - alpha_bar(tau_i) / alpha_bar(tau_{i-1}),  i = 1..T

  Returned as the ``T`` betas ``beta_1..beta_T``; MONAI's ``alphas_cumprod[t]`` is then the official
  ``alpha_bar'_t`` (the official code prepends a ``beta_0 = 1e-8`` level for its forward sampler only).
  T=4: betas 0.4783, 0.8492, 0.9564, 0.9874.

Import this module (``import scripts.noise_schedules``) before building ``DDPMScheduler(schedule="cdal_vp")``.
"""

from __future__ import annotations

import torch
from monai.networks.schedulers import NoiseSchedules

__all__ = ["vp_discretized_betas", "vp_alpha_bar"]


def vp_alpha_bar(tau: torch.Tensor, beta_min: float = 0.1, beta_max: float = 20.0) -> torch.Tensor:
    """``alpha_bar(tau) = exp(-0.5 tau^2 (beta_max - beta_min) - tau beta_min)`` (float64 in, float64 out)."""
    return torch.exp(-0.5 * tau**2 * (beta_max - beta_min) - tau * beta_min)


def vp_discretized_betas(
    num_train_timesteps: int, beta_min: float = 0.1, beta_max: float = 20.0, eps_small: float = 1e-3
) -> torch.Tensor:
    """The ``T`` betas of the discretised VP SDE (DDGAN ``get_sigma_schedule`` without its ``beta_0``), float32."""
    if num_train_timesteps < 1:
        raise ValueError(f"num_train_timesteps must be >= 1, got {num_train_timesteps}")
    if not 0 <= beta_min < beta_max:
        raise ValueError(f"need 0 <= beta_min < beta_max, got beta_min={beta_min}, beta_max={beta_max}")
    tau = (
        torch.arange(num_train_timesteps + 1, dtype=torch.float64) / num_train_timesteps * (1.0 - eps_small) + eps_small
    )
    abar = vp_alpha_bar(tau, beta_min, beta_max)
    return (1.0 - abar[1:] / abar[:-1]).to(torch.float32)


if "cdal_vp" not in NoiseSchedules:
    NoiseSchedules.add(
        "cdal_vp", "DDGAN/cDAL few-step discretised VP schedule (beta_min, beta_max)", vp_discretized_betas
    )
