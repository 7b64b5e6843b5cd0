"""cDAL building blocks: FIR resampling, adaptive GroupNorm, the registered VP schedule and its coefficients
(checked against numbers computed independently from the formulas of bundles/cdal/docs/sources.md §2.6), the CXR
converter."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from common.errors import BadInputError
from common.utils.bundles import bundle_scripts
from PIL import Image

with bundle_scripts("cdal"):
    from scripts.adaptive_norm import AdaptiveGroupNorm, PixelNorm, latent_mapping_network
    from scripts.fir import (
        FIRConvDownsample2d,
        fir_conv_downsample_2d,
        fir_downsample_2d,
        fir_upsample_2d,
        setup_fir_kernel,
        upfirdn2d,
    )
    from scripts.schedule import CDALSchedule
    from scripts.trainer import EMAUpdater
    from scripts.transforms import RandColorJitterd, rgb_to_gray


# ------------------------------------------------------------------------------------------------------------ FIR
def _upfirdn_reference(x: np.ndarray, k: np.ndarray, up: int, down: int, pad: tuple[int, int]) -> np.ndarray:
    """Loop implementation of StyleGAN2's upfirdn2d on one 2D array (true convolution)."""
    h, w = x.shape
    u = np.zeros((h * up, w * up))
    u[::up, ::up] = x
    p0, p1 = pad
    u = np.pad(u, ((max(p0, 0), max(p1, 0)), (max(p0, 0), max(p1, 0))))
    if p0 < 0:
        u = u[-p0:, -p0:]
    if p1 < 0:
        u = u[: u.shape[0] + p1, : u.shape[1] + p1]
    kf = k[::-1, ::-1]
    kh = k.shape[0]
    out = np.array(
        [
            [np.sum(u[i : i + kh, j : j + kh] * kf) for j in range(u.shape[1] - kh + 1)]
            for i in range(u.shape[0] - kh + 1)
        ]
    )
    return out[::down, ::down]


@pytest.mark.parametrize("up,down,pad", [(1, 2, (1, 1)), (2, 1, (2, 1)), (1, 1, (0, 0)), (2, 2, (1, -1))])
def test_upfirdn2d_matches_a_loop_reference(up, down, pad):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(7, 9))
    k = np.asarray(setup_fir_kernel([1, 3, 3, 1]) * 2.0)
    k = k + np.arange(16).reshape(4, 4) * 0.01  # asymmetric, so a missing flip would show
    ours = upfirdn2d(torch.tensor(x)[None, None].float(), torch.tensor(k).float(), up, down, pad)[0, 0].numpy()
    np.testing.assert_allclose(ours, _upfirdn_reference(x, k, up, down, pad), atol=1e-5)


def test_fir_resampling_shapes_gain_and_gradients():
    x = torch.ones(2, 3, 16, 16, requires_grad=True)
    down, up = fir_downsample_2d(x), fir_upsample_2d(x)
    assert down.shape == (2, 3, 8, 8) and up.shape == (2, 3, 32, 32)
    assert torch.allclose(down[:, :, 2:-2, 2:-2], torch.ones(1)) and torch.allclose(up[:, :, 4:-4, 4:-4], torch.ones(1))
    conv = FIRConvDownsample2d(3, 5)
    y = conv(x)
    assert y.shape == (2, 5, 8, 8)
    assert torch.allclose(y, fir_conv_downsample_2d(x, conv.weight) + conv.bias.view(1, -1, 1, 1))
    (g,) = torch.autograd.grad(y.square().sum(), x, create_graph=True)  # double backward for R1 works
    assert g.shape == x.shape and g.requires_grad


# --------------------------------------------------------------------------------------------------------- AdaGN
def test_adaptive_group_norm_starts_as_plain_groupnorm_and_follows_the_style():
    torch.manual_seed(0)
    norm = AdaptiveGroupNorm(4, 16, style_dim=8)
    x = torch.randn(2, 16, 5, 5)
    style = torch.randn(2, 8)
    with torch.no_grad():
        norm.style.weight.zero_()
    ref = torch.nn.functional.group_norm(x, 4, eps=1e-6)
    assert torch.allclose(norm(x, style), ref, atol=1e-5)
    torch.nn.init.normal_(norm.style.weight)
    a, b = norm(x, style), norm(x, style * 2)
    assert not torch.allclose(a, b)
    mapping = latent_mapping_network(10, 12, n_mlp=3)
    assert sum(isinstance(m, torch.nn.Linear) for m in mapping) == 4
    assert isinstance(mapping[0], PixelNorm) and mapping(torch.randn(3, 10)).shape == (3, 12)


# ------------------------------------------------------------------------------------------------------ schedule
def _spec_numbers(T: int) -> dict[str, np.ndarray]:  # noqa: N803 -- the paper's symbol
    """bundles/cdal/docs/sources.md §2.6 formulas, in float64 numpy, independently of the implementation."""
    eps = 1e-3
    tau = np.arange(T + 1) / T * (1 - eps) + eps
    abar = np.exp(-0.5 * tau**2 * (20.0 - 0.1) - tau * 0.1)
    beta = 1 - abar[1:] / abar[:-1]
    ac = np.cumprod(1 - beta)
    prev = np.concatenate([[1.0], ac[:-1]])
    return {
        "beta": beta,
        "sqrt_abar": np.sqrt(ac),
        "sqrt_1m_abar": np.sqrt(1 - ac),
        "c1": beta * np.sqrt(prev) / (1 - ac),
        "c2": (1 - prev) * np.sqrt(1 - beta) / (1 - ac),
        "var": beta * (1 - prev) / (1 - ac),
    }


@pytest.mark.parametrize("T", [4, 2])
def test_schedule_coefficients_match_the_spec_formulas(T):  # noqa: N803 -- the paper's symbol
    s = CDALSchedule(T)
    ref = _spec_numbers(T)
    np.testing.assert_allclose(s.scheduler.betas.numpy(), ref["beta"], rtol=1e-5)
    np.testing.assert_allclose(s.a_s_cum[1:].numpy(), ref["sqrt_abar"], rtol=1e-4)
    np.testing.assert_allclose(s.sigmas_cum[1:].numpy(), ref["sqrt_1m_abar"], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(s.posterior_mean_coef1.numpy(), ref["c1"], rtol=1e-4)
    np.testing.assert_allclose(s.posterior_mean_coef2.numpy(), ref["c2"], rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(s.posterior_variance.numpy(), ref["var"], rtol=1e-4, atol=1e-7)


def test_schedule_rounded_values_printed_in_the_spec():
    s4, s2 = CDALSchedule(4), CDALSchedule(2)
    np.testing.assert_allclose(s4.scheduler.betas.numpy(), [0.4783, 0.8492, 0.9564, 0.9874], atol=1e-4)
    np.testing.assert_allclose(s4.a_s_cum[1:].numpy(), [0.7223, 0.2805, 0.0586, 0.0066], atol=1e-4)
    np.testing.assert_allclose(s4.posterior_mean_coef1.numpy(), [1, 0.6658, 0.2692, 0.0578], atol=1e-4)
    np.testing.assert_allclose(s4.posterior_mean_coef2.numpy(), [0, 0.2016, 0.1930, 0.1119], atol=1e-4)
    np.testing.assert_allclose(s4.posterior_variance.numpy(), [0, 0.4408, 0.8842, 0.9841], atol=1e-4)
    np.testing.assert_allclose(s2.scheduler.betas.numpy(), [0.9213, 0.9995], atol=1e-4)
    np.testing.assert_allclose(s2.posterior_mean_coef1.numpy(), [1, 0.2804], atol=1e-4)
    np.testing.assert_allclose(s2.posterior_variance.numpy(), [0, 0.9209], atol=1e-4)


def test_batched_posterior_equals_monai_step_and_pairs_have_the_right_moments():
    s = CDALSchedule(4)
    x0 = torch.ones(4000, 1, 1, 1) * 0.5
    x_hi = torch.randn(4000, 1, 1, 1)
    for t in range(4):
        g1, g2 = torch.Generator().manual_seed(t), torch.Generator().manual_seed(t)
        batched = s.sample_posterior(x0, x_hi, torch.full((4000,), t), generator=g1)
        monai = s.step(x0, t, x_hi, generator=g2)
        assert torch.allclose(batched, monai, atol=1e-5)
    assert torch.allclose(
        s.sample_posterior(x0, x_hi, torch.zeros(4000, dtype=torch.long)), x0.expand_as(x_hi), atol=1e-6
    )
    t = torch.full((20000,), 1)
    x_lo, x_hi = s.q_sample_pairs(torch.ones(20000, 1, 1, 1), t, generator=torch.Generator().manual_seed(0))
    # code t = 1 is the pair (level 1, level 2): sqrt(abar) 0.7223 / 0.2805, sqrt(1 - abar) 0.6916 / 0.9599
    assert abs(x_lo.mean().item() - 0.7223) < 0.02 and abs(x_lo.std().item() - 0.6916) < 0.02
    assert abs(x_hi.mean().item() - 0.7223 * math.sqrt(1 - 0.8492)) < 0.02 and abs(x_hi.std().item() - 0.9599) < 0.02
    with pytest.raises(ValueError, match="time index must be in 0..3"):
        s.q_sample_pairs(torch.ones(1, 1, 2, 2), torch.tensor([4]))


# ----------------------------------------------------------------------------------------------- CXR converter
def _make_cxr(root: Path, n_mont: int = 3, n_shen: int = 5, size: int = 24) -> None:
    rng = np.random.default_rng(0)
    (root / "CXR_png").mkdir(parents=True)
    (root / "masks").mkdir()
    names = [f"MCUCXR_{i:04d}_0" for i in range(n_mont)] + [f"CHNCXR_{i:04d}_0" for i in range(n_shen + 1)]
    for name in names:
        Image.fromarray(rng.integers(0, 255, (size, size), dtype=np.uint8)).save(root / "CXR_png" / f"{name}.png")
    mask = np.zeros((size, size), np.uint8)
    mask[4:12, 3:10] = 255
    for name in names[:n_mont]:
        Image.fromarray(mask).save(root / "masks" / f"{name}.png")
    for name in names[n_mont:-1]:  # the last Shenzhen image has no mask
        Image.fromarray(mask).save(root / "masks" / f"{name}_mask.png")


def test_cxr_converter_official_folds_and_polarity(tmp_path):
    from common.data.converters import get_converter
    from common.data.datalist import read_datalist

    src = tmp_path / "Lung Segmentation"
    _make_cxr(src)
    conv = get_converter("cxr_lungs")
    d0 = read_datalist(conv.convert(src, tmp_path / "f0"))
    assert {c["case_id"] for c in d0["test"]} == {f"MCUCXR_{i:04d}_0" for i in range(3)}
    assert len(d0["training"]) == 5 and d0["validation"] == []
    lab = np.asarray(Image.open(tmp_path / "f0" / d0["test"][0]["label"]))
    assert set(np.unique(lab)) == {0, 1} and lab[5, 5] == 1 and lab[0, 0] == 0  # lung = 1 (official inverted it)
    d1 = read_datalist(conv.convert(src, tmp_path / "f1", fold=1))
    d2 = read_datalist(conv.convert(src, tmp_path / "f2", fold=2))
    assert [c["case_id"] for c in d1["test"]] == [f"CHNCXR_{i:04d}_0" for i in range(3)]
    assert [c["case_id"] for c in d2["test"]] == [f"CHNCXR_{i:04d}_0" for i in range(2, 5)]
    assert len(d1["training"]) == len(d2["training"]) == 5


def test_cxr_converter_bad_layouts_name_the_file(tmp_path):
    from common.data.converters import get_converter

    conv = get_converter("cxr_lungs")
    with pytest.raises(BadInputError, match="masks: missing folder"):
        (tmp_path / "a" / "CXR_png").mkdir(parents=True)
        conv.convert(tmp_path / "a", tmp_path / "out")
    src = tmp_path / "b"
    _make_cxr(src)
    Image.fromarray(np.zeros((24, 24), np.uint8)).save(src / "masks" / "CHNCXR_0099_0_mask.png")
    with pytest.raises(BadInputError, match="CHNCXR_0099_0_mask.png: mask without its image"):
        conv.convert(src, tmp_path / "out")
    (src / "masks" / "CHNCXR_0099_0_mask.png").unlink()
    bad = np.zeros((24, 24), np.uint8)
    bad[0, 0], bad[1, 1] = 100, 255
    Image.fromarray(bad).save(src / "masks" / "CHNCXR_0000_0_mask.png")
    with pytest.raises(BadInputError, match="CHNCXR_0000_0_mask.png: mask is not binary"):
        conv.convert(src, tmp_path / "out")
    with pytest.raises(BadInputError, match="fold"):
        conv.convert(tmp_path / "b", tmp_path / "out2", fold=3)


# ------------------------------------------------------------------------------------------ jitter and EMA
def test_color_jitter_follows_torchvision_semantics():
    img = torch.rand(3, 8, 8) * 255
    same = RandColorJitterd("image", brightness=0, contrast=0, saturation=0, hue=0)({"image": img})["image"]
    assert torch.allclose(same, img, atol=1e-3)
    bright = RandColorJitterd("image", brightness=0.4, contrast=0, saturation=0, hue=0)
    bright.set_random_state(0)
    out = bright({"image": img / 4})["image"]
    ratio = (out / (img / 4)).flatten()
    assert torch.allclose(ratio, ratio[0].expand_as(ratio), atol=1e-4) and 0.6 <= ratio[0] <= 1.4
    gray = torch.full((3, 4, 4), 100.0)  # hue and saturation leave gray pixels unchanged
    jit = RandColorJitterd("image", brightness=0, contrast=0, saturation=0.4, hue=0.1)
    jit.set_random_state(1)
    assert torch.allclose(jit({"image": gray})["image"], gray, atol=1e-3)
    assert torch.allclose(rgb_to_gray(gray), torch.full((1, 4, 4), 100.0))
    with pytest.raises(ValueError, match="RGB"):
        RandColorJitterd("image")({"image": torch.rand(1, 4, 4)})


def test_ema_update_rule():
    net, ema = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    ema.load_state_dict(net.state_dict())
    updater = EMAUpdater(net, ema, decay=0.9)
    before = ema.weight.detach().clone()
    with torch.no_grad():
        net.weight.add_(1.0)
    updater.update()
    assert torch.allclose(ema.weight, 0.9 * before + 0.1 * net.weight)
    assert not ema.weight.requires_grad
    # DDGAN's EMA.py starts the average at the weights after the first optimiser step (issue 12 §2)
    with torch.no_grad():
        net.weight.add_(1.0)
    updater.update(first=True)
    assert torch.equal(ema.weight, net.weight)
