"""DiffBoost segmentation: patch mask statistics, output-/input-mixing, AttentionUnet training, checkpoints."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from common.errors import BadInputError
from common.io.atomic import atomic_torch_save
from common.io.checkpoints import load_network_weights
from common.utils.bundles import bundle_scripts
from monai.losses import DiceCELoss
from monai.networks.nets import AttentionUnet

with bundle_scripts("diffboost"):
    from scripts import mixing


def test_patch_mask_is_patchwise_constant_and_real_with_probability_alpha() -> None:
    g = torch.Generator().manual_seed(0)
    m = mixing.make_patch_mask(400, 384, 384, 64, 0.6, generator=g)
    assert m.shape == (400, 1, 384, 384) and set(torch.unique(m).tolist()) == {0.0, 1.0}
    grid = m[:, :, ::64, ::64]
    assert torch.equal(m, grid.repeat_interleave(64, 2).repeat_interleave(64, 3))  # constant on each 64 px patch
    assert abs(float(grid.mean()) - 0.6) < 0.02  # 14400 patches: std ~0.004
    assert abs(float(mixing.make_patch_mask(400, 64, 64, 16, 0.2, generator=g).mean()) - 0.2) < 0.03
    assert mixing.make_patch_mask(3, 16, 16, 4, 0.0).sum() == 0 and mixing.make_patch_mask(3, 16, 16, 4, 1.0).min() == 1
    whole = mixing.make_patch_mask(50, 32, 32, 32, 0.5, generator=g)  # P = H: a whole-image choice per sample
    assert all(len(torch.unique(s)) == 1 for s in whole)
    assert mixing.make_patch_mask(2, 30, 50, 16, 0.5).shape == (2, 1, 30, 50)  # non-divisible sizes are cropped
    with pytest.raises(BadInputError, match="mix_alpha: must be in"):
        mixing.make_patch_mask(1, 8, 8, 4, 1.5)
    with pytest.raises(BadInputError, match="mix_mode: must be one of"):
        mixing.PatchMixIteration(mode="logits")


class Recorder(torch.nn.Module):
    """1x1 conv recording its inputs."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 2, 1)
        self.inputs: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.inputs.append(x.detach().clone())
        return self.conv(x)


def test_output_mix_runs_two_passes_and_input_mix_one_pass_on_the_mixed_image(monkeypatch) -> None:
    x0, xi = torch.full((2, 1, 8, 8), 1.0), torch.full((2, 1, 8, 8), -1.0)
    y = torch.zeros(2, 1, 8, 8)
    y[:, :, 2:6, 2:6] = 1
    mask = mixing.make_patch_mask(2, 8, 8, 4, 0.5, generator=torch.Generator().manual_seed(3))
    monkeypatch.setattr(mixing, "make_patch_mask", lambda *a, **k: mask)
    batch = {"image": x0, "image_syn": xi, "label": y}
    net = Recorder()
    loss_f = DiceCELoss(include_background=False, to_onehot_y=True, softmax=True)
    loss, logits, _, frac = mixing.PatchMixIteration("output", 0.5, 4).forward_loss(
        net, loss_f, batch, torch.device("cpu")
    )
    assert len(net.inputs) == 2 and torch.equal(net.inputs[0], x0) and torch.equal(net.inputs[1], xi)
    with torch.no_grad():
        expected = mask * net.conv(x0) + (1 - mask) * net.conv(xi)
    assert torch.allclose(logits, expected) and torch.isclose(loss, loss_f(expected, y)) and frac == float(mask.mean())
    net.inputs.clear()
    _, logits_in, _, _ = mixing.PatchMixIteration("input", 0.5, 4).forward_loss(net, loss_f, batch, torch.device("cpu"))
    assert len(net.inputs) == 1 and torch.equal(net.inputs[0], mask * x0 + (1 - mask) * xi)
    net.inputs.clear()
    _, _, _, frac = mixing.PatchMixIteration("none").forward_loss(
        net, loss_f, {"image": x0, "label": y}, torch.device("cpu")
    )
    assert len(net.inputs) == 1 and torch.equal(net.inputs[0], x0) and frac == 1.0
    with pytest.raises(BadInputError, match="needs synthetic images"):
        mixing.PatchMixIteration("output").forward_loss(net, loss_f, {"image": x0, "label": y}, torch.device("cpu"))


def _toy_batch(n: int = 4, size: int = 32) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    labels, images, syn = [], [], []
    for i in range(n):
        cy, cx, r = 10 + 3 * i, 12 + 2 * i, 6 + i % 3
        disc = (((yy - cy) ** 2 + (xx - cx) ** 2) < r * r).float()
        labels.append(disc)
        images.append(disc * 1.2 - 0.6 + 0.2 * torch.randn(size, size, generator=g))
        syn.append(-disc * 0.8 + 0.3 + 0.4 * torch.randn(size, size, generator=g))  # different appearance, same mask
    stack = lambda t: torch.stack(t).unsqueeze(1)  # noqa: E731
    return {"image": stack(images), "image_syn": stack(syn), "label": stack(labels)}


@pytest.mark.parametrize("mode", ["output", "input", "none"])
def test_attention_unet_training_lowers_the_loss_and_checkpoints_reload_identically(mode: str, tmp_path: Path) -> None:
    torch.manual_seed(0)
    net = AttentionUnet(spatial_dims=2, in_channels=1, out_channels=2, channels=(4, 8, 16), strides=(2, 2))
    from ignite.engine import Events
    from monai.engines import SupervisedTrainer

    batch = _toy_batch()
    # a real MONAI trainer (decollate=True, the default) runs the iteration, as train.json does
    trainer = SupervisedTrainer(
        device=torch.device("cpu"),
        max_epochs=25,
        train_data_loader=[batch],
        network=net,
        optimizer=torch.optim.AdamW(net.parameters(), lr=1e-2),
        loss_function=DiceCELoss(include_background=False, to_onehot_y=True, softmax=True),
        iteration_update=mixing.PatchMixIteration(mode, alpha=0.6, patch_size=8),
    )
    losses: list[float] = []
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: losses.append(float(e.state.output[0]["loss"])))
    trainer.run()
    assert len(losses) == 25 and len(trainer.state.output) == 4  # decollated: one dict per sample
    assert sum(losses[-3:]) / 3 < 0.8 * sum(losses[:3]) / 3, losses
    path = atomic_torch_save({"model": net.state_dict()}, tmp_path / "model.pt")
    fresh = AttentionUnet(spatial_dims=2, in_channels=1, out_channels=2, channels=(4, 8, 16), strides=(2, 2))
    load_network_weights(fresh, path)
    net.eval(), fresh.eval()
    with torch.no_grad():
        assert torch.equal(net(batch["image"]), fresh(batch["image"]))
    wrong = AttentionUnet(spatial_dims=2, in_channels=1, out_channels=2, channels=(8, 16, 32), strides=(2, 2))
    with pytest.raises(BadInputError, match="model.pt: weights do not fit the network AttentionUnet"):
        load_network_weights(wrong, path)
