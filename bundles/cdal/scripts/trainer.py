"""cDAL training iteration as a MONAI/ignite engine: discriminator step, then attention-guided generator step.

Per iteration (bundles/cdal/docs/sources.md §3.3, §3.2, §4; paper §2.2, eq 4; official ``train_cDal_monu_and_lung.py``
steps I-III):

1. **D step**: ``t ~ U{0..T-1}``, ``(x_lo, x_hi) = q_sample_pairs(x0, t)``; real loss ``softplus(-D(x_lo, t, x_hi))``;
   R1 ``gamma/2 * E||grad_{x_lo} D||^2`` every ``lazy_reg`` global steps (every step when ``lazy_reg`` is 0/None;
   gamma not rescaled by the interval, as the code); fake: ``x0_hat = G(x_hi, t, I, z)`` (no G gradient),
   ``x_fake = posterior sample``, loss ``softplus(D(x_fake, t, x_hi))``; one Adam step of D.
2. **G step**: fresh ``t``, pair and ``z``; ``A = channel mean of D.get_features(x_lo, t, x_hi)[attn_layer]``
   upsampled to the label size; ``x0_att = A * x0``; ``(_, x_hi_att) = q_sample_pairs(x0_att, t)`` (new noise);
   ``L_G = mean((x0 - G(x_hi_att, t, I, z))^2)`` -- MSE only, no adversarial term for G; one Adam step of G;
   optional EMA update of a copy of G (Hippocampus).

Labels: a ``{0..K-1}`` class-id mask ``[B, 1, H, W]`` becomes ``2 m - 1`` (binary, 1 label channel) or
``2 onehot(m) - 1`` (``label_channels = K`` > 1). 3D batches ``[B, C, H, W, D]`` are cut into their ``D`` axial slices
(``[B*D, C, H, W]``), as the Hippocampus script does.

Why not ``monai.engines.GanTrainer`` / ``AdversarialTrainer``: both assume an adversarial generator loss; cDAL's
generator gets none, and the attention step sits between the two updates (bundles/cdal/docs/sources.md §9).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from common.errors import BadInputError
from common.networks.utils import unwrap_network
from common.transforms.checks import check_loader_has_batches
from monai.engines import Trainer
from scripts.networks import discriminator_attention_map
from scripts.schedule import CDALSchedule
from torch import nn

__all__ = ["labels_to_signed", "slices_2d", "EMAUpdater", "CDALTrainer", "discriminator_loss", "generator_loss"]


def slices_2d(x: torch.Tensor) -> torch.Tensor:
    """``[B, C, H, W, D] -> [B*D, C, H, W]`` (axial slices along the last axis); 4D input unchanged."""
    if x.ndim == 4:
        return x
    if x.ndim != 5:
        raise ValueError(f"expected a 2D [B, C, H, W] or 3D [B, C, H, W, D] batch, got shape {tuple(x.shape)}")
    b, c, h, w, d = x.shape
    return x.permute(0, 4, 1, 2, 3).reshape(b * d, c, h, w)


def labels_to_signed(label: torch.Tensor, label_channels: int, source: str = "label") -> torch.Tensor:
    """Class-id mask ``[B, 1, H, W]`` -> signed target in {-1, +1}: ``2 m - 1`` (binary) or ``2 onehot - 1``.

    Raises:
        BadInputError: values outside ``0..K-1`` (``K = 2`` for one label channel).
    """
    if label.shape[1] != 1:
        raise BadInputError(source, f"expected a 1-channel class-id label [B, 1, H, W], got shape {tuple(label.shape)}")
    ids = label.round().long()
    k = 2 if label_channels == 1 else label_channels
    lo, hi = int(ids.min()), int(ids.max())
    if lo < 0 or hi >= k:
        raise BadInputError(
            source,
            f"label values {lo}..{hi} are outside 0..{k - 1}; set label_channels/num_classes to the number of "
            "classes (binary masks must be 0/1)",
        )
    if label_channels == 1:
        return ids.float() * 2.0 - 1.0
    onehot = F.one_hot(ids[:, 0], k).permute(0, 3, 1, 2).float()
    return onehot * 2.0 - 1.0


class EMAUpdater:
    """Exponential moving average of a network's parameters kept in ``ema_network`` (a copy of it).

    ``ema = decay * ema + (1 - decay) * param`` after each generator step; buffers are copied. DDGAN's EMA
    optimiser wrapper (``EMA.py``) does the same, and starts the average from the weights after the first step
    (``ema = param`` then), not from the initial ones: ``update(first=True)`` does that (the trainer passes it on the
    run's first iteration, never after a resume). Decay 0.999 for Hippocampus, bundles/cdal/docs/sources.md §4. The
    EMA network is what ``ResumableCheckpointer(final_model_key="ema")`` exports.
    """

    def __init__(self, network: nn.Module, ema_network: nn.Module, decay: float = 0.999) -> None:
        if not 0.0 <= decay <= 1.0:
            raise ValueError(f"ema decay must be in [0, 1], got {decay}")
        self.network, self.ema_network, self.decay = network, ema_network, float(decay)
        self.ema_network.requires_grad_(False)

    @torch.no_grad()
    def update(self, first: bool = False) -> None:
        """One EMA step after an optimiser step; ``first``: the first step of training (the average starts there)."""
        src = unwrap_network(self.network)
        for e, p in zip(self.ema_network.parameters(), src.parameters()):
            if first:
                e.copy_(p.detach())
            else:
                e.lerp_(p.detach(), 1.0 - self.decay)
        for e, b in zip(self.ema_network.buffers(), src.buffers()):
            e.copy_(b)


def discriminator_loss(d_real: torch.Tensor, d_fake: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Logistic (non-saturating) D losses: ``mean(softplus(-D(real)))``, ``mean(softplus(D(fake)))``."""
    return F.softplus(-d_real).mean(), F.softplus(d_fake).mean()


def generator_loss(x0: torch.Tensor, x0_hat: torch.Tensor) -> torch.Tensor:
    """Paper eq 4: ``mean((x0 - x0_hat)^2)`` over pixels and batch."""
    return torch.mean((x0 - x0_hat) ** 2)


class CDALTrainer(Trainer):
    """MONAI ``Trainer`` whose iteration is the cDAL D step + G step (see the module docstring).

    Args:
        device: training device.
        max_epochs: epochs to run.
        train_data_loader: yields dicts with ``image`` ``[B, Ci, H, W(, D)]`` and ``label`` ``[B, 1, H, W(, D)]``.
        generator, discriminator: the networks (may be DDP-wrapped).
        optimizer_g, optimizer_d: their optimisers.
        schedule: :class:`CDALSchedule` (T steps).
        label_channels: 1 (binary) or the number of classes (one-hot).
        attn_layer: index of the discriminator feature map for the attention map (MoNuSeg 3, CXR 4, Hippo 2);
            ``None`` disables attention (the paper's "w/o attention" ablation).
        r1_gamma: R1 weight (1).
        lazy_reg: apply R1 every ``lazy_reg`` global steps (10 MoNuSeg/Hippo; 0 or ``None`` = every step, CXR).
        ema: optional :class:`EMAUpdater` updated after every G step.
        epoch_length, train_handlers, amp: as MONAI's ``SupervisedTrainer`` (amp is not supported: False only).
        image_key, label_key: batch keys.
    """

    def __init__(
        self,
        device: torch.device | str,
        max_epochs: int,
        train_data_loader: Any,
        generator: nn.Module,
        discriminator: nn.Module,
        optimizer_g: torch.optim.Optimizer,
        optimizer_d: torch.optim.Optimizer,
        schedule: CDALSchedule,
        label_channels: int = 1,
        attn_layer: int | None = 3,
        r1_gamma: float = 1.0,
        lazy_reg: int | None = 10,
        ema: EMAUpdater | None = None,
        epoch_length: int | None = None,
        train_handlers: Sequence | None = None,
        amp: bool = False,
        image_key: str = "image",
        label_key: str = "label",
        prepare_batch: Callable | None = None,
    ) -> None:
        if amp:
            raise ValueError("CDALTrainer: amp is not supported (the R1 double backward runs in float32)")
        if epoch_length is None:
            check_loader_has_batches(train_data_loader)
        # Workflow(device, max_epochs, data_loader, epoch_length, ...); the iteration is ours, batches stay collated
        workflow = (torch.device(device), max_epochs, train_data_loader, epoch_length)
        super().__init__(*workflow, handlers=train_handlers, decollate=False)
        self.generator, self.discriminator = generator, discriminator
        self.optimizer_g, self.optimizer_d = optimizer_g, optimizer_d
        self.schedule = schedule
        self.label_channels = int(label_channels)
        self.attn_layer = attn_layer
        self.r1_gamma = float(r1_gamma)
        self.lazy_reg = int(lazy_reg) if lazy_reg else 0
        self.ema = ema
        self.image_key, self.label_key = image_key, label_key
        self.nz = unwrap_network(generator).nz
        self._custom_prepare = prepare_batch

    def prepare(self, batchdata: Mapping[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """``(image [N, Ci, H, W], signed label [N, Cl, H, W])`` on the device (3D batches sliced)."""
        if self._custom_prepare is not None:
            return self._custom_prepare(batchdata, self.state.device)
        for key in (self.image_key, self.label_key):
            if key not in batchdata:
                raise BadInputError("training batch", f"no {key!r} entry (found {sorted(batchdata)})")
        image = slices_2d(torch.as_tensor(batchdata[self.image_key])).to(self.state.device).float()
        label = slices_2d(torch.as_tensor(batchdata[self.label_key])).to(self.state.device)
        return image, labels_to_signed(label, self.label_channels)

    def _iteration(self, engine: Any, batchdata: Mapping[str, Any]) -> list[dict[str, float]]:
        image, x0 = self.prepare(batchdata)
        image, x0 = image.as_subclass(torch.Tensor), x0.as_subclass(torch.Tensor)
        n, dev, num_steps = x0.shape[0], x0.device, self.schedule.num_timesteps
        g, d = self.generator, self.discriminator
        g.train()
        d.train()

        # ---- I-II: discriminator step
        d.requires_grad_(True)
        self.optimizer_d.zero_grad(set_to_none=True)
        t = torch.randint(0, num_steps, (n,), device=dev)
        x_lo, x_hi = self.schedule.q_sample_pairs(x0, t)
        x_lo = x_lo.detach().requires_grad_(True)
        d_real = d(x_lo, t, x_hi).view(-1)
        loss_real = F.softplus(-d_real).mean()
        r1 = torch.zeros((), device=dev)
        apply_r1 = self.r1_gamma > 0 and (self.lazy_reg == 0 or (engine.state.iteration - 1) % self.lazy_reg == 0)
        # one backward per forward (as the official loop), which DistributedDataParallel requires
        loss_real.backward(retain_graph=apply_r1)
        if apply_r1:
            (grad,) = torch.autograd.grad(d_real.sum(), x_lo, create_graph=True)
            r1 = self.r1_gamma / 2 * grad.flatten(1).norm(2, dim=1).pow(2).mean()
            r1.backward()
        with torch.no_grad():
            z = torch.randn(n, self.nz, device=dev)
            x0_fake = g(x_hi, t, image, z)
            x_fake = self.schedule.sample_posterior(x0_fake, x_hi, t)
        d_fake = d(x_fake, t, x_hi).view(-1)
        loss_fake = F.softplus(d_fake).mean()
        loss_fake.backward()
        self.optimizer_d.step()
        d.requires_grad_(False)

        # ---- III: attention-guided generator step
        self.optimizer_g.zero_grad(set_to_none=True)
        t = torch.randint(0, num_steps, (n,), device=dev)
        x_lo, x_hi = self.schedule.q_sample_pairs(x0, t)
        z = torch.randn(n, self.nz, device=dev)
        if self.attn_layer is not None:
            attn = discriminator_attention_map(d, x_lo, t, x_hi, self.attn_layer)
            _, x_hi_in = self.schedule.q_sample_pairs(attn * x0, t)
        else:
            x_hi_in = x_hi
        x0_hat = g(x_hi_in.detach(), t, image, z)
        loss_g = generator_loss(x0, x0_hat)
        loss_g.backward()
        self.optimizer_g.step()
        d.requires_grad_(True)
        if self.ema is not None:
            self.ema.update(first=engine.state.iteration == 1)
        # a list of one dict, as a decollated MONAI trainer output: what MONAI's handlers (``from_engine(['loss'],
        # first=True)`` of ``--tracking mlflow``) read
        return [
            {
                "loss": float(loss_g.detach()),
                "loss_g": float(loss_g.detach()),
                "loss_d": float((loss_real + loss_fake).detach()),
                "loss_d_real": float(loss_real.detach()),
                "loss_d_fake": float(loss_fake.detach()),
                "r1": float(r1.detach()),
            }
        ]


def make_ema(
    network: nn.Module, ema_network: nn.Module, decay: float = 0.999, enabled: bool = True
) -> EMAUpdater | None:
    """:class:`EMAUpdater` of ``network`` into ``ema_network`` when ``enabled`` (config helper), else ``None``."""
    return EMAUpdater(network, ema_network, decay) if enabled else None


__all__.append("make_ema")
