"""common.inferers.sampling: one interface (num_samples, seed, return_uncertainty, with_uncertainty) for every
bundle's sampling inferer, one uncertainty definition, one splitter."""

from __future__ import annotations

import pytest
import torch
from common.inferers.ddim_sliding_window import DDIMSlidingWindowInferer
from common.inferers.sampling import SamplingInferer, foreground_variance, split_uncertainty
from common.utils.bundles import bundle_scripts

with bundle_scripts("cdal"):
    from scripts.inferer import CDALInferer
with bundle_scripts("textdiff"):
    from scripts.inferer import TextGuidedFeatureInferer


class NoisyIdentity(SamplingInferer):
    """Sample s of a (B, 2, ...) input: softmax of the input plus seeded noise."""

    def sample(self, inputs, network, **kwargs):
        gen = self.generator(inputs.device)
        draws = torch.stack(
            [torch.softmax(inputs + torch.randn(inputs.shape, generator=gen), 1) for _ in range(self.num_samples)]
        )
        return draws.mean(0), foreground_variance(draws)


def test_base_contract_seed_flag_and_copy():
    x = torch.randn(2, 2, 5, 5)
    inf = NoisyIdentity(num_samples=4, seed=3)
    plain = inf(x, None)
    assert plain.shape == (2, 2, 5, 5) and not inf.return_uncertainty  # off by default: MONAI Label's call
    assert torch.equal(plain, inf(x, None))  # seed re-applied at every call
    assert not torch.equal(plain, NoisyIdentity(num_samples=4, seed=4)(x, None))
    with_unc = inf.with_uncertainty()
    full = with_unc(x, None)
    assert full.shape == (2, 3, 5, 5) and not inf.return_uncertainty and with_unc.return_uncertainty
    probs, unc = split_uncertainty(full, channel_dim=1)
    assert torch.equal(probs, plain) and (unc > 0).all()
    assert inf(x, None, return_uncertainty=True).shape == (2, 3, 5, 5)  # per-call flag
    one = NoisyIdentity(num_samples=1, seed=0).with_uncertainty()(x, None)
    assert torch.count_nonzero(one[:, 2]) == 0  # population variance: one sample gives 0
    with pytest.raises(ValueError, match="num_samples"):
        NoisyIdentity(num_samples=0)
    with pytest.raises(TypeError, match="keyword arguments only"):
        inf(x, None, "positional")
    with pytest.raises(NotImplementedError):
        SamplingInferer()(x, None)


@pytest.mark.parametrize("cls", [DDIMSlidingWindowInferer, CDALInferer, TextGuidedFeatureInferer])
def test_every_bundle_inferer_is_a_sampling_inferer_with_uncertainty_off(cls):
    assert issubclass(cls, SamplingInferer)
    kwargs = {
        DDIMSlidingWindowInferer: dict(roi_size=8),
        CDALInferer: {},
        TextGuidedFeatureInferer: dict(feature_extractor=torch.nn.Identity(), text_encoder=None, use_text=False),
    }
    inf = cls(**kwargs[cls])
    assert inf.return_uncertainty is False and inf.with_uncertainty().return_uncertainty is True


def test_split_uncertainty_rejects_a_single_channel():
    with pytest.raises(ValueError, match=">= 2 channels"):
        split_uncertainty(torch.zeros(1, 4, 4))
