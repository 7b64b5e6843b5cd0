"""TextDiffSeg network: the paper-scale config instantiates and maps a 96^3 window; text fusion modes; bad inputs.

The 96^3 check runs the full default network of ``configs/inference.json`` (4.7 M parameters, channels as in
``bundles/textdiffseg/docs/sources.md`` §2) once without gradients, part by part: image window -> z_it (1 x 12^3), label
-> standardised latent, denoiser, decoder -> class probabilities at 96^3. The text context is a random (1, 9, 768) token
tensor (Clinical BioBERT's width; the encoder itself is not available offline).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from common.errors import BadInputError
from common.utils.bundles import REPO_ROOT, bundle_scripts
from monai.bundle import ConfigParser

BUNDLE = REPO_ROOT / "bundles" / "textdiffseg"


def _parser(*overrides: str) -> ConfigParser:
    p = ConfigParser()
    p.read_config([str(BUNDLE / "configs" / "inference.json"), *[str(BUNDLE / "configs" / o) for o in overrides]])
    p["device"] = "$torch.device('cpu')"
    return p


def _small(**kw):
    from scripts.network import TextDiffSegNet

    args = dict(
        num_classes=3,
        text_dim=16,
        label_ae_channels=(8, 16),
        image_encoder_channels=(8, 16),
        norm_num_groups=8,
        denoiser_channels=(8, 16),
        denoiser_attention_levels=(False, True),
        denoiser_norm_groups=8,
        fusion_hidden_size=16,
    )
    args.update(kw)
    return TextDiffSegNet(**args)


def test_full_config_maps_a_96_cube_window():
    torch.manual_seed(0)
    net = _parser().get_parsed_content("network_def").eval()
    n_params = sum(p.numel() for p in net.parameters())
    assert 4.5e6 < n_params < 5.0e6  # bundles/textdiffseg/docs/sources.md §7: ~4.7 M trainable (N = 3)
    assert net.downsample_factor == 8 and net.num_classes == 3
    x = torch.rand(1, 1, 96, 96, 96)
    ctx, mask = torch.randn(1, 9, 768), torch.ones(1, 9, dtype=torch.bool)
    with torch.no_grad():
        z_it = net.condition(x, ctx, mask)
        assert z_it.shape == (1, 1, 12, 12, 12)
        label = torch.zeros(1, 1, 96, 96, 96, dtype=torch.long)
        label[:, :, 30:60, 30:60, 30:60] = 1
        label[:, :, 40:50, 40:50, 40:50] = 2
        z0 = net.label_autoencoder.encode(net.label_autoencoder.one_hot(label))
        assert z0.shape == (1, 1, 12, 12, 12) and abs(float(z0.mean())) < 1e-4
        assert net.latent_shape((96, 96, 96)) == (1, 12, 12, 12)
        eps = net.predict_noise(z0, torch.tensor([500]), z_it)
        assert eps.shape == (1, 1, 12, 12, 12)
        probs = net.decode_probabilities(z0 - eps)
    assert probs.shape == (1, 3, 96, 96, 96)
    assert torch.allclose(probs.sum(1), torch.ones(1, 96, 96, 96), atol=1e-4)


def test_training_forward_shapes_and_decoder_input_modes():
    torch.manual_seed(0)
    x = torch.rand(2, 1, 16, 16, 16)
    y = torch.randint(0, 3, (2, 1, 16, 16, 16))
    ctx = torch.randn(2, 5, 16)
    for mode in ("z_minus_eps", "x0_estimate"):
        out = _small(decoder_input=mode)(x, y, ctx)
        assert out.logits.shape == (2, 3, 16, 16, 16)
        assert out.noise_pred.shape == out.noise.shape == (2, 1, 8, 8, 8)
    with pytest.raises(ValueError, match="decoder_input"):
        _small(decoder_input="x0")


def test_pooled_text_is_a_constant_offset_and_tokens_are_not():
    """Paper eq 2 with one pooled text vector: one key, softmax = 1, the same value added to every voxel."""
    torch.manual_seed(0)
    z_i = torch.randn(1, 1, 4, 4, 4)
    ctx, mask = torch.randn(1, 6, 16), torch.ones(1, 6, dtype=torch.bool)
    pooled = _small(text_pooling="pooled").eval()
    delta = pooled.fuse(z_i, ctx, mask) - z_i
    assert torch.allclose(delta, delta.flatten()[0].expand_as(delta), atol=1e-6)
    tokens = _small(text_pooling="tokens").eval()
    delta = tokens.fuse(z_i, ctx, mask) - z_i
    assert delta.std() > 1e-4


def test_bad_inputs_have_clear_messages():
    net = _small().eval()
    ctx = torch.randn(1, 3, 16)
    with pytest.raises(BadInputError, match="a 2D image was given"):
        net.condition(torch.rand(1, 1, 16, 16), ctx)
    with pytest.raises(BadInputError, match="needs a text context"):
        net.condition(torch.rand(1, 1, 16, 16, 16), None)
    with pytest.raises(BadInputError, match="divisible by the autoencoder's down factor"):
        net.condition(torch.rand(1, 1, 15, 16, 16), ctx)
    with pytest.raises(BadInputError, match="differ in batch/size"):
        net(torch.rand(1, 1, 16, 16, 16), torch.zeros(1, 1, 8, 16, 16, dtype=torch.long), ctx)


def test_bundle_validates_with_the_demo_override():
    """``tools/validate_bundle.py bundles/textdiffseg --override configs/demo.json`` without its network step (layout,
    metadata schema, every config alone and with demo.json, references). The network step -- ``inferer(image,
    network)`` on a (1, 1, 96, 96, 96) image through 27 demo windows x 2 prompts x 2 samples -- takes about a minute
    on CPU; the same inferer is exercised on NIfTI volumes by test_textdiffseg_bundle.py."""
    if str(BUNDLE.parents[1]) not in sys.path:
        sys.path.insert(0, str(BUNDLE.parents[1]))
    from tools.validate_bundle import validate_bundle

    report = validate_bundle(BUNDLE, override="configs/demo.json", network=False)
    assert not report.failed, str(report)
    assert str(report).count("[PASS] configs") == 8


def test_bundle_scripts_helper_switches_and_restores_the_scripts_package():
    """common/utils/bundles.py: inside, ``scripts`` is the named bundle's; after, the earlier one is back."""
    import importlib
    import sys

    from common.utils.bundles import BUNDLES_DIR

    outer = sys.modules["scripts"]
    assert Path(outer.__file__).parent == BUNDLE / "scripts"  # this module's autouse this_bundles_scripts fixture
    outer_network = importlib.import_module("scripts.network")
    path_before = list(sys.path)
    with bundle_scripts("cdal") as folder:
        assert folder == BUNDLES_DIR / "cdal" and sys.path[0] == str(folder)
        assert "scripts" not in sys.modules and "scripts.network" not in sys.modules  # the earlier ones are out
        cdal_networks = importlib.import_module("scripts.networks")
        assert Path(cdal_networks.__file__).parent == BUNDLES_DIR / "cdal" / "scripts"
    assert sys.path == path_before
    assert sys.modules["scripts"] is outer and sys.modules["scripts.network"] is outer_network
    assert "scripts.networks" not in sys.modules  # the cdal module is gone
    with pytest.raises(RuntimeError, match="boom"):
        with bundle_scripts("diffboost"):
            raise RuntimeError("boom")
    assert sys.path == path_before and sys.modules["scripts"] is outer  # restored even when the block raised
    with pytest.raises(FileNotFoundError, match="no_such_bundle"):
        with bundle_scripts("no_such_bundle"):
            pass
    assert sys.path == path_before
