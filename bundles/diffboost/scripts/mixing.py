"""Stage (d): segmentation training on real + synthetic slices with random patch mixing
(bundles/diffboost/docs/sources.md §5.3; Alg. 1).

The patch mask (paper §III-D): draw U(0, 1) on a (H/P) x (W/P) grid, set 1 where it is below alpha (1 = real), and
upsample it (nearest) to H x W. alpha = 1 -> real only, alpha = 0 -> synthetic only; P = H -> a whole-image choice.

Two ways to use it, one flag (``mix_mode``):

- ``"output"`` (default; the authors' code, which produced Table II): run the network on the real slice and on the
  synthetic one separately and mix the LOGITS: ``loss = DiceCE(m * C(x0) + (1 - m) * C(xi), y)`` (the synthetic label
  equals the real one, so the target is y). The paper also calls alpha "a weighting factor in our pre-designed
  combination loss function" (§V-B).
- ``"input"`` (the paper's Algorithm 1, line 5): mix the INPUT images, one forward pass:
  ``loss = DiceCE(C(m * x0 + (1 - m) * xi), y)``.
- ``"none"``: the baseline, real slices only (``use_synthetic: false`` selects it).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from common.errors import BadInputError

__all__ = ["MIX_MODES", "make_patch_mask", "mix", "PatchMixIteration"]

MIX_MODES = ("output", "input", "none")


def make_patch_mask(
    batch: int,
    height: int,
    width: int,
    patch_size: int,
    alpha: float,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """Random patch mask ``(B, 1, H, W)`` of {0., 1.}: each P x P patch is 1 (real) with probability ``alpha``.

    The grid is ``ceil(H / P) x ceil(W / P)`` (exact when P divides the size, as 64 | 384), upsampled by repetition
    and cropped to H x W. Raises :class:`BadInputError` for alpha outside [0, 1] or a patch size < 1.
    """
    if not 0.0 <= float(alpha) <= 1.0:
        raise BadInputError("mix_alpha", f"must be in [0, 1] (probability of a real patch), got {alpha}")
    if int(patch_size) < 1:
        raise BadInputError("mix_patch_size", f"must be >= 1 pixel, got {patch_size}")
    p = int(patch_size)
    gh, gw = -(-height // p), -(-width // p)
    u = torch.rand((batch, 1, gh, gw), generator=generator)
    grid = (u < float(alpha)).float()
    mask = grid.repeat_interleave(p, dim=2).repeat_interleave(p, dim=3)[:, :, :height, :width]
    return mask.to(device)


def mix(real: torch.Tensor, synthetic: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``mask * real + (1 - mask) * synthetic`` (mask broadcast over channels)."""
    return mask * real + (1.0 - mask) * synthetic


class PatchMixIteration:
    """``iteration_update(engine, batch)`` of a MONAI ``SupervisedTrainer`` for DiffBoost (or the baseline).

    Args:
        mode: ``"output"`` (code, default), ``"input"`` (paper Alg. 1) or ``"none"`` (baseline, real only).
        alpha: probability of a real patch (0.6).
        patch_size: P in pixels (64 at 384^2).
        image_key, synthetic_key, label_key: batch keys (``image`` / ``image_syn`` ``(B, 1, H, W)``, ``label``
            ``(B, 1, H, W)`` class ids).

    Uses ``engine.network``, ``engine.optimizer``, ``engine.loss_function`` (DiceCE with ``to_onehot_y``/softmax)
    and ``engine.state.device``. Output ``{"loss", "pred", "label", "real_fraction"}``, decollated by the trainer
    (``decollate=True``, the default) into one dict per sample, as ``SupervisedTrainer``'s own iteration is.
    """

    def __init__(
        self,
        mode: str = "output",
        alpha: float = 0.6,
        patch_size: int = 64,
        image_key: str = "image",
        synthetic_key: str = "image_syn",
        label_key: str = "label",
    ) -> None:
        if mode not in MIX_MODES:
            raise BadInputError("mix_mode", f"must be one of {MIX_MODES}, got {mode!r}")
        make_patch_mask(1, 1, 1, patch_size, alpha)  # validates alpha and patch size
        self.mode, self.alpha, self.patch_size = mode, float(alpha), int(patch_size)
        self.image_key, self.synthetic_key, self.label_key = image_key, synthetic_key, label_key

    def forward_loss(
        self, network: torch.nn.Module, loss_function: Any, batch: Mapping[str, Any], device: torch.device
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, float]:
        """(loss, logits used in the loss, label, fraction of real pixels) for one batch."""
        x0 = torch.as_tensor(batch[self.image_key]).float().to(device)
        y = torch.as_tensor(batch[self.label_key]).to(device)
        if self.mode == "none":
            logits = network(x0)
            return loss_function(logits, y), logits, y, 1.0
        if self.synthetic_key not in batch:
            raise BadInputError(
                "batch",
                f"mix_mode {self.mode!r} needs synthetic images ('{self.synthetic_key}'); set use_synthetic "
                "true and run synthesize.json, or train the baseline (use_synthetic false)",
            )
        xi = torch.as_tensor(batch[self.synthetic_key]).float().to(device)
        if xi.shape != x0.shape:
            raise BadInputError(
                "batch", f"real {tuple(x0.shape)} and synthetic {tuple(xi.shape)} images differ in shape"
            )
        m = make_patch_mask(x0.shape[0], x0.shape[-2], x0.shape[-1], self.patch_size, self.alpha, device=device)
        if self.mode == "output":
            logits = mix(network(x0), network(xi), m)
        else:
            logits = network(mix(x0, xi, m))
        return loss_function(logits, y), logits, y, float(m.mean())

    def __call__(self, engine: Any, batch: Mapping[str, Any]) -> Any:
        from monai.engines.utils import IterationEvents

        engine.network.train()
        engine.optimizer.zero_grad(set_to_none=True)
        loss, logits, y, frac = self.forward_loss(engine.network, engine.loss_function, batch, engine.state.device)
        engine.state.output = {"loss": loss, "pred": logits, "label": y, "real_fraction": frac}
        # as SupervisedTrainer's own iteration: MODEL_COMPLETED lets the trainer decollate the output (decollate=True),
        # so MONAI's handlers (e.g. from_engine(["loss"], first=True) of --tracking mlflow) read it as usual
        engine.fire_event(IterationEvents.MODEL_COMPLETED)
        loss.backward()
        engine.optimizer.step()
        return engine.state.output
