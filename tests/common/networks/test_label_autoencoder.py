"""common.networks.label_autoencoder: shapes, latent standardisation, round trip after training, bad inputs."""

from __future__ import annotations

import pytest
import torch
from common.errors import BadInputError
from common.networks.label_autoencoder import LabelAutoencoder, StandardiseLatent


def _tiny(num_classes: int = 3, latent_channels: int = 1) -> LabelAutoencoder:
    return LabelAutoencoder(
        3, num_classes=num_classes, latent_channels=latent_channels, channels=(8, 16), norm_num_groups=8
    )


def _blob_labels(batch: int, size: int = 16, seed: int = 0) -> torch.Tensor:
    """(B, 1, S, S, S) labels: a ball (class 1) with a smaller ball inside (class 2) at random centres."""
    g = torch.Generator().manual_seed(seed)
    grid = torch.stack(torch.meshgrid(*[torch.arange(size, dtype=torch.float32)] * 3, indexing="ij"))
    out = torch.zeros(batch, 1, size, size, size, dtype=torch.long)
    for b in range(batch):
        c = 4 + torch.rand(3, generator=g) * (size - 8)
        d = ((grid - c.view(3, 1, 1, 1)) ** 2).sum(0).sqrt()
        out[b, 0][d < 4.5] = 1
        out[b, 0][d < 2.0] = 2
    return out


def test_shapes_and_default_spec_geometry():
    ae = _tiny()
    y = _blob_labels(2)
    z = ae.encode(ae.one_hot(y))
    assert z.shape == (2, 1, 8, 8, 8)
    assert ae.decode(z).shape == (2, 3, 16, 16, 16)
    assert ae.latent_shape((16, 24, 32)) == (1, 8, 12, 16)
    spec = LabelAutoencoder(3, num_classes=3)  # bundles/textdiffseg/docs/sources.md §2.2: 96^3 -> 1 x 12^3
    assert spec.downsample_factor == 8 and spec.latent_shape((96, 96, 96)) == (1, 12, 12, 12)


def test_latent_is_standardised_per_sample():
    torch.manual_seed(0)
    ae = _tiny(latent_channels=2)
    y = _blob_labels(3, seed=1)
    z = ae.encode(ae.one_hot(y))
    flat = z.flatten(1)
    assert torch.allclose(flat.mean(1), torch.zeros(3), atol=1e-5)
    assert torch.allclose(flat.var(1, unbiased=False), torch.ones(3), atol=1e-3)
    # the standardisation alone, for any size and scale
    x = torch.randn(2, 1, 5, 6, 7) * 13.0 + 4.0
    s = StandardiseLatent()(x).flatten(1)
    assert torch.allclose(s.mean(1), torch.zeros(2), atol=1e-5)
    assert torch.allclose(s.std(1, unbiased=False), torch.ones(2), atol=1e-4)
    # without it the raw encoder output is not standardised
    raw = LabelAutoencoder(3, num_classes=3, channels=(8, 16), norm_num_groups=8, standardise=False)
    zr = raw.encode(raw.one_hot(y)).flatten(1)
    assert not torch.allclose(zr.var(1, unbiased=False), torch.ones(3), atol=1e-2)


def test_round_trip_reconstructs_labels_after_training():
    torch.manual_seed(0)
    ae = _tiny()
    opt = torch.optim.Adam(ae.parameters(), lr=3e-3)
    y = _blob_labels(4, seed=2)
    onehot = ae.one_hot(y)
    before = (ae(onehot).argmax(1) == y[:, 0]).float()
    for _ in range(60):
        loss = torch.nn.functional.cross_entropy(ae(onehot), y[:, 0])
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        probs = ae.decode_stage_2_outputs(ae.encode_stage_2_inputs(onehot))
    assert torch.allclose(probs.sum(1), torch.ones_like(probs[:, 0]), atol=1e-5)
    rec = probs.argmax(1)
    fg = y[:, 0] > 0
    inter = ((rec > 0) & fg).sum().item()
    dice = 2 * inter / ((rec > 0).sum().item() + fg.sum().item())
    assert dice > 0.85, dice
    assert (rec == y[:, 0]).float().mean() > max(0.95, before.mean().item())


def test_bad_inputs_are_named():
    ae = _tiny()
    with pytest.raises(BadInputError, match=r"class ids must be in \[0, 2\]"):
        ae.one_hot(torch.full((1, 1, 16, 16, 16), 3))
    with pytest.raises(BadInputError, match="divisible by the autoencoder's down factor 2"):
        ae.encode(torch.zeros(1, 3, 15, 16, 16))
    with pytest.raises(BadInputError, match="expected a one-hot label"):
        ae.encode(torch.zeros(1, 1, 16, 16, 16))
    with pytest.raises(ValueError, match="num_classes"):
        LabelAutoencoder(3, num_classes=1)
