"""common.inferers.ddim_sliding_window: exact DDIM chain + stitching on a toy network, samples statistics, errors."""

from __future__ import annotations

import pytest
import torch
from common.errors import BadInputError
from common.inferers.ddim_sliding_window import DDIMSlidingWindowInferer, LatentSegmentationDiffusion
from common.inferers.sampling import split_uncertainty
from monai.networks.schedulers import DDIMScheduler, DDPMScheduler


class OracleNet(torch.nn.Module):
    """Predicts the exact noise that leads the chain to z0 = condition (the image window, 1 latent channel, factor 1).

    Decoding maps z0 to 2-class probabilities (sigmoid(z0 * gain), its complement), so the stitched output must equal
    that voxel-wise function of the whole image whatever the windows are.
    """

    def __init__(self, scheduler, gain: float = 3.0, noise_scale: float = 0.0) -> None:
        super().__init__()
        self.scheduler = scheduler
        self.gain = gain
        self.noise_scale = noise_scale
        self.calls = 0
        self.windows_seen = 0

    def condition(self, window, shift=None):
        self.windows_seen += window.shape[0]
        return window if shift is None else window + shift

    def latent_shape(self, spatial_shape):
        return (1, *spatial_shape)

    def predict_noise(self, z_t, timesteps, condition):
        self.calls += 1
        abar = self.scheduler.alphas_cumprod[timesteps].view(-1, 1, 1, 1, 1)
        eps = (z_t - abar.sqrt() * condition) / (1 - abar).sqrt()
        return eps

    def decode_probabilities(self, z0):
        p = torch.sigmoid(self.gain * z0)
        return torch.cat([1 - p, p], dim=1)


def _scheduler():
    return DDIMScheduler(num_train_timesteps=1000, schedule="cosine", clip_sample=False)


def test_protocol_and_exact_stitching_on_odd_sized_volume():
    sched = _scheduler()
    net = OracleNet(sched)
    assert isinstance(net, LatentSegmentationDiffusion)
    inferer = DDIMSlidingWindowInferer(roi_size=(8, 8, 8), scheduler=sched, num_inference_steps=10, sw_batch_size=3)
    image = torch.randn(1, 1, 13, 10, 17)
    out = inferer(image, net)
    assert out.shape == (1, 2, 13, 10, 17)
    expected = torch.sigmoid(3.0 * image)
    assert torch.allclose(out[:, 1:], expected, atol=1e-3)
    assert torch.allclose(out.sum(1), torch.ones(1, 13, 10, 17), atol=1e-5)
    # 10 DDIM steps per window batch
    n_batches = -(-net.windows_seen // 3)
    assert net.calls == 10 * n_batches


def test_seeded_noise_is_reproducible_and_uncertainty_comes_from_samples():
    sched = _scheduler()

    class NoisyNet(OracleNet):
        def predict_noise(self, z_t, timesteps, condition):  # a "wrong" constant prediction: result depends on noise
            return torch.zeros_like(z_t)

    net = NoisyNet(sched)
    image = torch.randn(1, 1, 12, 12, 12)
    one = DDIMSlidingWindowInferer(8, scheduler=sched, num_inference_steps=5, num_samples=1, seed=7)
    a, b = one(image, net), one(image, net)
    assert torch.equal(a, b)
    c = DDIMSlidingWindowInferer(8, scheduler=sched, num_inference_steps=5, num_samples=1, seed=8)(image, net)
    assert not torch.allclose(a, c)
    # S = 1: zero uncertainty; S = 4: positive variance, channels N + 1
    u1 = one(image, net, return_uncertainty=True)
    assert u1.shape == (1, 3, 12, 12, 12) and torch.count_nonzero(u1[:, 2]) == 0
    many = DDIMSlidingWindowInferer(8, scheduler=sched, num_inference_steps=5, num_samples=4, seed=7)
    u4 = many.with_uncertainty()(image, net)
    probs, unc = split_uncertainty(u4, channel_dim=1)
    assert probs.shape == (1, 2, 12, 12, 12) and unc.shape == (1, 1, 12, 12, 12)
    assert (unc > 1e-4).float().mean() > 0.5
    assert torch.allclose(probs.sum(1), torch.ones(1, 12, 12, 12), atol=1e-5)
    # the oracle is deterministic: zero variance whatever the noise
    exact = DDIMSlidingWindowInferer(8, scheduler=sched, num_samples=3, return_uncertainty=True)(
        image, OracleNet(sched)
    )
    assert exact[:, 2].abs().max() < 1e-5


class FixedSamplesNet(OracleNet):
    """Sample j of every window decodes to the constant class probabilities ``samples[j]`` (noise is ignored)."""

    def __init__(self, scheduler, samples) -> None:
        super().__init__(scheduler)
        self.samples = torch.tensor(samples)

    def decode_probabilities(self, z0):
        n = z0.shape[0]
        s = len(self.samples)
        probs = self.samples[torch.arange(n) % s]  # batch is window-major: (W, S) flattened
        return probs.view(n, -1, *([1] * (z0.ndim - 2))).expand(n, -1, *z0.shape[2:]).clone()


@pytest.mark.parametrize(
    "samples, expected_mean, expected_unc",
    [
        # binary: p_fg = 0.2, 0.6 -> Var = 0.04 (the old sum over both classes gave 0.08)
        ([[0.8, 0.2], [0.4, 0.6]], [0.6, 0.4], 0.04),
        # 3 classes: Var = (0.04, 0, 0.04) -> foreground sum 0.04 (background not counted; old sum 0.08)
        ([[0.6, 0.4, 0.0], [0.2, 0.4, 0.4]], [0.4, 0.4, 0.2], 0.04),
    ],
)
def test_uncertainty_is_the_contract_foreground_variance(samples, expected_mean, expected_unc):
    sched = _scheduler()
    out = DDIMSlidingWindowInferer(
        (8, 8, 8), scheduler=sched, num_inference_steps=2, num_samples=2, return_uncertainty=True
    )(torch.zeros(1, 1, 8, 8, 8), FixedSamplesNet(sched, samples))
    n = len(expected_mean)
    assert out.shape == (1, n + 1, 8, 8, 8)
    for c, m in enumerate(expected_mean):
        assert torch.allclose(out[:, c], torch.full((1, 8, 8, 8), m), atol=1e-6)
    assert torch.allclose(out[:, n], torch.full((1, 8, 8, 8), expected_unc), atol=1e-6)


def test_condition_kwargs_are_split_per_image_and_ddpm_works():
    sched = _scheduler()
    net = OracleNet(sched)
    image = torch.zeros(2, 1, 8, 8, 8)
    shift = torch.tensor([-1.0, 1.0]).view(2, 1, 1, 1, 1)
    out = DDIMSlidingWindowInferer(8, scheduler=sched)(image, net, shift=shift)
    assert out[0, 1].max() < 0.1 and out[1, 1].min() > 0.9
    ddpm = DDPMScheduler(num_train_timesteps=50, schedule="cosine", clip_sample=False)
    out = DDIMSlidingWindowInferer(8, scheduler=ddpm, num_inference_steps=50)(
        torch.randn(1, 1, 8, 8, 8), OracleNet(ddpm)
    )
    assert out.shape == (1, 2, 8, 8, 8) and torch.isfinite(out).all()


def test_bad_inputs():
    sched = _scheduler()
    inferer = DDIMSlidingWindowInferer((8, 8, 8), scheduler=sched)
    with pytest.raises(BadInputError, match=r"image: expected a \(3D\) batch"):
        inferer(torch.zeros(1, 1, 8, 8), OracleNet(sched))
    with pytest.raises(TypeError, match="lacks"):
        inferer(torch.zeros(1, 1, 8, 8, 8), torch.nn.Conv3d(1, 1, 1))
    with pytest.raises(ValueError, match="num_samples"):
        DDIMSlidingWindowInferer(8, num_samples=0)
