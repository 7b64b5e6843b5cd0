"""The collection's sampling inferers share one interface: S samples, one seed, one uncertainty definition.

Every bundle's ``inferer(image, network, **kwargs)`` draws ``num_samples`` predictions from a stochastic model (a
diffusion chain, a GAN generator's latent, a diffusion UNet's noise) and returns their mean class probabilities;
with ``return_uncertainty`` it appends one channel, the bundles' uncertainty (bundles/README.md, "Outputs"):
:func:`foreground_variance` of the S samples. The plain inferer (probabilities only) is what MONAI Label calls; the
evaluator and the inference config use :meth:`SamplingInferer.with_uncertainty`, a copy with the channel on.

Subclasses implement :meth:`SamplingInferer.sample`, which returns ``(probabilities, uncertainty)`` for a batch,
and use :meth:`SamplingInferer.generator` for their randomness so that the same image and seed give the same
output. Subclasses: :class:`common.inferers.ddim_sliding_window.DDIMSlidingWindowInferer` (TextDiffSeg), the
cDAL and TextDiff inferers in their bundles' ``scripts/inferer.py``.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from monai.inferers import Inferer

__all__ = ["SamplingInferer", "foreground_variance", "split_uncertainty"]


def foreground_variance(samples: torch.Tensor, sample_dim: int = 0, channel_dim: int = 2) -> torch.Tensor:
    """The bundles' uncertainty map: per-pixel variance over the N samples of the foreground probability.

    This is the single quantity every bundle writes as ``<case>_uncertainty`` (bundles/README.md, "Outputs"):

    - binary task (C == 2 softmax classes, or C == 1 sigmoid/label map): the variance over the samples of the
      foreground probability (channel 1, resp. channel 0);
    - multi-class task (C > 2, channel 0 = background): the sum over the foreground classes 1..C-1 of the per-class
      probability variances (for one-hot class probabilities this is the expected squared distance of a sample from
      the mean over the foreground classes, so it stays comparable between binary and multi-class bundles).

    Population variance (divide by N, ``unbiased=False``): N = 1 gives exactly 0. Unscaled; at most 0.25 per class.

    Args:
        samples: probabilities with a sample axis and a class-channel axis, e.g. (N, B, C, *spatial).
        sample_dim: the sample axis (removed in the result).
        channel_dim: the class-channel axis of ``samples`` (kept, size 1, in the result).

    Returns:
        float32 tensor shaped as ``samples`` without ``sample_dim`` and with 1 channel, e.g. (B, 1, *spatial).
    """
    nd = samples.ndim
    sample_dim, channel_dim = sample_dim % nd, channel_dim % nd
    if sample_dim == channel_dim:
        raise ValueError(f"foreground_variance: sample_dim and channel_dim are both {sample_dim}")
    var = samples.float().var(dim=sample_dim, unbiased=False)
    c_dim = channel_dim - 1 if channel_dim > sample_dim else channel_dim
    channels = var.shape[c_dim]
    foreground = var.narrow(c_dim, 1, channels - 1) if channels > 1 else var
    return foreground.sum(dim=c_dim, keepdim=True)


def split_uncertainty(pred: torch.Tensor, channel_dim: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Output with the uncertainty as the last channel -> (probabilities (N, ...), uncertainty (1, ...)).

    ``channel_dim`` 0 for one decollated item (N + 1, *spatial), 1 for a batch (B, N + 1, *spatial).
    """
    n = pred.shape[channel_dim]
    if n < 2:
        raise ValueError(f"expected >= 2 channels (probabilities + uncertainty), got shape {tuple(pred.shape)}")
    return pred.narrow(channel_dim, 0, n - 1), pred.narrow(channel_dim, n - 1, 1)


class SamplingInferer(Inferer):
    """``inferer(inputs, network, *, return_uncertainty=None, **kwargs)``: mean of S samples (+ uncertainty).

    Args:
        num_samples: S, the number of samples averaged (>= 1).
        seed: seed of the generator handed to :meth:`sample`, re-applied at every call (reproducible outputs);
            ``None`` uses the global RNG.
        return_uncertainty: default of the call's flag: append :func:`foreground_variance` of the samples as one
            extra channel. Off by default: the plain inferer returns probabilities only, as MONAI Label expects.

    Shapes: ``inputs`` (B, C, *spatial) -> (B, N, *spatial) class probabilities, or (B, N + 1, *spatial) with the
    uncertainty last.
    """

    def __init__(self, num_samples: int = 1, seed: int | None = 0, return_uncertainty: bool = False) -> None:
        super().__init__()
        if isinstance(num_samples, bool) or int(num_samples) < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples}")
        self.num_samples = int(num_samples)
        self.seed = None if seed is None else int(seed)
        self.return_uncertainty = bool(return_uncertainty)

    def with_uncertainty(self, flag: bool = True) -> SamplingInferer:
        """A shallow copy whose calls do (or do not) append the uncertainty channel; shares the networks."""
        other = copy.copy(self)
        other.return_uncertainty = bool(flag)
        return other

    def generator(self, device: torch.device | str = "cpu") -> torch.Generator | None:
        """A generator on ``device`` seeded with ``seed`` (a fresh one per call), or ``None`` without a seed."""
        if self.seed is None:
            return None
        gen = torch.Generator(device=device)
        gen.manual_seed(self.seed)
        return gen

    def sample(
        self, inputs: torch.Tensor, network: torch.nn.Module, **kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, C, *spatial) -> (probabilities (B, N, *spatial), uncertainty (B, 1, *spatial)) over the S samples."""
        raise NotImplementedError(f"{type(self).__name__} must implement sample()")

    def __call__(  # type: ignore[override]
        self,
        inputs: torch.Tensor,
        network: torch.nn.Module,
        *args: Any,
        return_uncertainty: bool | None = None,
        **kwargs: Any,
    ) -> torch.Tensor:
        if args:
            raise TypeError(f"{type(self).__name__} takes keyword arguments only after the network, got {args!r}")
        probabilities, uncertainty = self.sample(inputs, network, **kwargs)
        with_unc = self.return_uncertainty if return_uncertainty is None else bool(return_uncertainty)
        return torch.cat([probabilities, uncertainty.to(probabilities.dtype)], dim=1) if with_unc else probabilities
