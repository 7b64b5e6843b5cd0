"""TextDiff's model parts: the trainable head (exact parameter count), the frozen diffusion feature extractor,
the loss, the feature cache and the text-guided inferer (bundles/textdiff/docs/sources.md §2-§4)."""

from __future__ import annotations

import pytest
import torch
from common.errors import BadInputError
from common.networks.guided_diffusion import ADM_256_UNCOND, adm_output_block, adm_unet
from common.utils.bundles import REPO_ROOT, bundle_scripts

with bundle_scripts("textdiff"):
    from scripts.diffusion_features import DiffusionFeatureExtractor
    from scripts.feature_cache import FeatureCache
    from scripts.inferer import TextGuidedFeatureInferer
    from scripts.text_guided_head import TextGuidedPixelClassifier

#: the ADM-256 UNet's flags (3 -> 6 channels) at a tiny size
TINY_UNET = {
    **ADM_256_UNCOND,
    "image_size": 32,
    "model_channels": 32,
    "channel_mult": (1, 1, 2),
    "num_res_blocks": 1,
    "attention_resolutions": (8,),
    "num_head_channels": 32,
}
TINY_BLOCKS = (1, 2, 3, 5)
#: a small head over four given feature maps (24, 24, 8, 8 channels), with and without text
SMALL_HEAD = dict(feature_channels=(24, 24, 8, 8), proj_dim=8, decoder_channels=(8, 4), output_size=32)


@pytest.fixture(scope="module")
def extractor() -> DiffusionFeatureExtractor:
    unet = adm_unet(**TINY_UNET, init_seed=0, random_residuals=True, frozen=True)
    return DiffusionFeatureExtractor(unet, steps=(50, 150, 250), blocks=TINY_BLOCKS, noise_seed=40)


def tiny_head(extractor, context_dim=16, use_text=True) -> TextGuidedPixelClassifier:
    torch.manual_seed(0)
    return TextGuidedPixelClassifier(
        extractor.feature_channels(),
        context_dim=context_dim,
        proj_dim=32,
        num_heads=2,
        attention_dim=32,
        decoder_channels=(16, 8),
        output_size=32,
        use_text=use_text,
    )


class FakeTextEncoder(torch.nn.Module):
    """Deterministic text -> (B, 10, 16) tokens (a stand-in for the frozen BERT in unit tests)."""

    def forward(self, texts, case_ids=None):
        out = []
        for t in texts:
            g = torch.Generator().manual_seed(sum(map(ord, t)))
            out.append(torch.randn(10, 16, generator=g))

        class E:
            tokens = torch.stack(out)

        return E()


def test_head_parameter_count_matches_the_paper():
    """MoNuSeg config: 9,683,234 trainable parameters (paper: 9.68 M); QaTa config 10,862,882
    (bundles/textdiff/docs/sources.md §2.3)."""
    head = TextGuidedPixelClassifier(feature_channels=(1536, 1536, 768, 768))
    assert sum(p.numel() for p in head.parameters() if p.requires_grad) == 9_683_234
    assert sum(p.numel() for p in head.cross1.parameters()) == 3_745_536
    assert sum(p.numel() for p in head.decodes.parameters()) == 3_576_866
    assert sum(p.numel() for p in head.down1.parameters()) == 1_180_416
    qata = TextGuidedPixelClassifier(feature_channels=(3072, 1536, 1536, 768))
    assert sum(p.numel() for p in qata.parameters()) == 10_862_882
    # official init: conv weights ~ N(0, 0.02), biases 0, BN weights ~ N(1, 0.02)
    assert abs(float(head.decodes[0].weight.detach().std()) - 0.02) < 1e-3 and not head.decodes[0].bias.any()
    assert abs(float(head.decodes[1].weight.detach().mean()) - 1.0) < 0.01
    with pytest.raises(ValueError, match="share one projection"):
        TextGuidedPixelClassifier(feature_channels=(1536, 1536, 512, 768))


def test_head_forward_shapes_and_text_dependence():
    head = TextGuidedPixelClassifier(**SMALL_HEAD, context_dim=16, num_heads=2, attention_dim=8).eval()
    feats = [torch.randn(2, 24, 4, 4), torch.randn(2, 24, 8, 8), torch.randn(2, 8, 16, 16), torch.randn(2, 8, 32, 32)]
    ctx_a, ctx_b = torch.randn(2, 10, 16), torch.randn(2, 10, 16)
    out = head(feats, ctx_a)
    assert out.shape == (2, 2, 32, 32)
    assert head(feats, ctx_a, output_size=(20, 24)).shape == (2, 2, 20, 24)
    assert not torch.allclose(out, head(feats, ctx_b))  # the text changes the logits
    with pytest.raises(BadInputError, match="scale 1: expected"):
        head([feats[0], feats[2], feats[2], feats[3]], ctx_a)
    with pytest.raises(BadInputError, match="needs the text tokens"):
        head(feats, None)
    no_text = TextGuidedPixelClassifier(**SMALL_HEAD, use_text=False)
    assert no_text.cross1 is None and no_text(feats, None).shape == (2, 2, 32, 32)


def test_feature_extractor_shapes_noise_and_hooks(extractor):
    x0 = torch.rand(2, 3, 32, 32) * 2 - 1
    feats = extractor(x0)
    assert [tuple(f.shape) for f in feats] == [(2, 3 * c, s, s) for c, s in [(64, 16), (32, 16), (32, 32), (32, 32)]]
    assert extractor.feature_shapes(32) == [(192, 16), (96, 16), (96, 32), (96, 32)]
    assert all(torch.equal(a, b) for a, b in zip(feats, extractor(x0)))  # one fixed noise draw
    other = extractor(x0, noise_index=1)
    assert not torch.allclose(feats[0], other[0])
    assert torch.equal(
        extractor.noise((1, 3, 32, 32), 0), torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(40))
    )
    # same values as a plain full forward of the UNet hooked by hand (the early stop changes nothing)
    unet = extractor.unet
    eps = extractor.noise((1, 3, 32, 32), 0)
    grabbed = []
    hooks = [adm_output_block(unet, b).register_forward_hook(lambda m, a, o: grabbed.append(o)) for b in TINY_BLOCKS]
    try:
        with torch.no_grad():
            for t in (50, 150, 250):
                ab = extractor.scheduler.alphas_cumprod[t]
                unet(ab.sqrt() * x0 + (1 - ab).sqrt() * eps, torch.full((2,), t))
    finally:
        for h in hooks:
            h.remove()
    by_block = [torch.cat(grabbed[k::4], dim=1) for k in range(4)]
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(feats, by_block))
    # DDPM linear schedule coefficients (bundles/textdiff/docs/sources.md §2.2)
    ab = extractor.scheduler.alphas_cumprod
    assert [round(float(ab[t].sqrt()), 5) for t in (50, 150, 250)] == [0.98486, 0.8865, 0.7221]
    assert not any(p.requires_grad for p in unet.parameters())
    extractor.train()
    assert not unet.training
    with pytest.raises(BadInputError, match=r"expected a \(B, 3, H, W\)"):
        extractor(torch.rand(1, 1, 32, 32))
    with pytest.raises(BadInputError, match="multiple of 4"):
        extractor(torch.rand(1, 3, 30, 30))


def test_loss_is_ce_plus_1p5_dice_on_raw_logits():
    """train.json's DiceCELoss config equals the official CE + 1.5 * DiceLoss(softmax=False)
    (bundles/textdiff/docs/sources.md §4)."""
    from monai.losses import DiceCELoss

    loss = DiceCELoss(
        include_background=True,
        to_onehot_y=True,
        softmax=False,
        squared_pred=True,
        smooth_nr=1e-5,
        smooth_dr=1e-5,
        batch=True,
        lambda_dice=1.5,
        lambda_ce=1.0,
    )
    torch.manual_seed(0)
    logits, y = torch.randn(1, 2, 16, 16), (torch.rand(1, 1, 16, 16) > 0.7).long()
    onehot = torch.cat([1 - y, y], dim=1).float()
    dice = (
        sum(
            1
            - (2 * (logits[:, c] * onehot[:, c]).sum() + 1e-5)
            / ((logits[:, c] ** 2).sum() + (onehot[:, c] ** 2).sum() + 1e-5)
            for c in range(2)
        )
        / 2
    )
    ce = torch.nn.functional.cross_entropy(logits, y[:, 0])
    assert torch.allclose(loss(logits, y), ce + 1.5 * dice, atol=1e-6)


def test_feature_cache_round_trip_and_fingerprint(tmp_path, extractor):
    cache = FeatureCache(tmp_path / "c", fingerprint=extractor.fingerprint())
    feats = [f[0] for f in extractor(torch.zeros(1, 3, 32, 32))]
    assert cache.get("case/1@0") is None and "case/1@0" not in cache
    cache.put("case/1@0", feats)
    back = FeatureCache(tmp_path / "c", fingerprint=extractor.fingerprint()).get("case/1@0")
    assert all(torch.equal(a, b) for a, b in zip(feats, back))
    half = FeatureCache(tmp_path / "h", fingerprint="x", dtype="float16")
    half.put("a", feats)
    assert all(torch.allclose(a, b, atol=2e-3 * a.abs().max()) for a, b in zip(feats, half.get("a")))
    with pytest.raises(BadInputError, match="other settings"):
        FeatureCache(tmp_path / "c", fingerprint="another unet")


def test_inferer_text_default_uncertainty_and_cache(tmp_path, extractor):
    head = tiny_head(extractor).eval()
    image = torch.rand(2, 3, 32, 32) * 2 - 1
    inf = TextGuidedFeatureInferer(extractor, FakeTextEncoder(), num_samples=3)
    probs = inf(image, head, texts=["The nuclei are evenly distributed.", "Lesion in the upper left lung."])
    assert probs.shape == (2, 2, 32, 32) and torch.allclose(probs.sum(1), torch.ones(2, 32, 32), atol=1e-5)
    with pytest.raises(BadInputError, match=r"case case-7: no report text for this case.*default_text"):
        inf(image[:1], head, texts=None, case_ids=["case-7"])
    with_default = TextGuidedFeatureInferer(
        extractor, FakeTextEncoder(), default_text="The nuclei are evenly distributed."
    )
    assert torch.allclose(
        with_default(image[:1], head), with_default(image[:1], head, texts=["The nuclei are evenly distributed."])
    )
    unc = inf.with_uncertainty()(image, head, texts=["a", "b"])
    assert unc.shape == (2, 3, 32, 32) and (unc[:, 2] >= 0).all() and unc[:, 2].max() > 0
    one_unc = TextGuidedFeatureInferer(extractor, FakeTextEncoder()).with_uncertainty()(image, head, texts=["a", "b"])
    assert one_unc.shape == (2, 3, 32, 32) and torch.count_nonzero(one_unc[:, 2]) == 0  # K = 1 (the paper): 0
    one = TextGuidedFeatureInferer(extractor, FakeTextEncoder())
    logits = TextGuidedFeatureInferer(extractor, FakeTextEncoder(), output="logits")(image, head, texts=["a", "b"])
    assert torch.allclose(torch.softmax(logits, 1), one(image, head, texts=["a", "b"]), atol=1e-6)
    cache = FeatureCache(tmp_path / "cache", fingerprint=extractor.fingerprint())
    cached = TextGuidedFeatureInferer(extractor, FakeTextEncoder(), output="logits", feature_cache=cache)
    first = cached(image, head, texts=["a", "b"], case_ids=["c1", "c2"])
    second = cached(image, head, texts=["a", "b"], case_ids=["c1", "c2"])
    assert cache.misses == 2 and cache.hits == 2
    assert torch.allclose(first, logits, atol=1e-5) and torch.allclose(second, logits, atol=1e-5)
    # issue 13 defect 2: other images under the same case ids get their own features, not the stored ones
    other = -image
    changed = cached(other, head, texts=["a", "b"], case_ids=["c1", "c2"])
    assert cache.misses == 4 and cache.hits == 2
    expected = TextGuidedFeatureInferer(extractor, FakeTextEncoder(), output="logits")(other, head, texts=["a", "b"])
    assert torch.allclose(changed, expected, atol=1e-5) and not torch.allclose(changed, first, atol=1e-3)


def test_training_the_head_lowers_the_loss(extractor):
    from monai.losses import DiceCELoss

    head = tiny_head(extractor)
    inf = TextGuidedFeatureInferer(extractor, FakeTextEncoder(), output="logits")
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=False, squared_pred=True, batch=True, lambda_dice=1.5)
    opt = torch.optim.Adam(head.parameters(), lr=1e-3)
    torch.manual_seed(0)
    image = torch.rand(1, 3, 32, 32) * 2 - 1
    label = (image[:, :1] > 0.2).float()
    losses = []
    for _ in range(15):
        opt.zero_grad()
        loss = loss_fn(inf(image, head, texts=["The nuclei are evenly distributed."]), label)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.7 * losses[0], losses
    assert all(p.grad is None for p in extractor.unet.parameters())


def test_split_uncertainty_is_decided_by_num_classes_not_guessed():
    """A 3-class prediction without uncertainty keeps all 3 classes; a 3-class one with uncertainty (4 channels)
    is split; any other channel count is a named error; num_classes is required; the TextDiff config passes it."""

    from common.transforms.inference import SplitUncertaintyd
    from monai.bundle import ConfigParser
    from monai.data import MetaTensor

    three = torch.rand(3, 6, 6)
    kept = SplitUncertaintyd(num_classes=3)({"pred": three, "case_id": "c1"})
    assert torch.equal(kept["pred"], three) and "uncertainty" not in kept  # no class lost
    with_unc = torch.cat([torch.rand(3, 6, 6), torch.full((1, 6, 6), 0.3)])
    split = SplitUncertaintyd(num_classes=3)({"pred": with_unc, "case_id": "c1"})
    assert torch.equal(split["pred"], with_unc[:3]) and split["uncertainty"].shape == (1, 6, 6)
    assert torch.equal(split["uncertainty"], torch.full((1, 6, 6), 0.3))  # unscaled (bundles/README.md "Outputs")
    assert split["uncertainty"].dtype == torch.float32
    with pytest.raises(BadInputError, match=r"^case c1: 'pred' has 5 channels; expected 3 class channels, or 4 "):
        SplitUncertaintyd(num_classes=3)({"pred": torch.rand(5, 6, 6), "case_id": "c1"})
    named_by_file = MetaTensor(torch.rand(1, 6, 6), meta={"filename_or_obj": "img_07.png"})
    with pytest.raises(BadInputError, match=r"^img_07.png: 'pred' has 1 channels; expected 2 class channels"):
        SplitUncertaintyd(num_classes=2)({"pred": named_by_file})
    for bad in (None, 0, 2.0, True):
        with pytest.raises(BadInputError, match="SplitUncertaintyd: num_classes must be"):
            SplitUncertaintyd(num_classes=bad)
    p = ConfigParser()
    p.read_config(str(REPO_ROOT / "bundles" / "textdiff" / "configs" / "inference.json"))
    split_t = p.get_parsed_content("postprocessing").transforms[0]
    assert isinstance(split_t, SplitUncertaintyd) and split_t.num_classes == p["network_def"]["num_classes"] == 2
    saver = next(t for t in p["postprocessing"]["transforms"] if t.get("output_postfix") == "uncertainty")
    # the uncertainty writer: float32 TIFF, unscaled
    assert saver["keys"] == "uncertainty" and saver["output_ext"] == ".tif" and saver["scale"] is None
    assert saver["output_dtype"] == "$numpy.float32"


def test_foreground_variance_is_the_contract_definition():
    """Hand-computed: binary -> Var of p(foreground); multi-class -> sum over classes >= 1 of Var (not background)."""
    from common.inferers.sampling import foreground_variance

    # 2 samples of a 2-class softmax at one pixel: p_fg = 0.2, 0.6 -> mean 0.4, variance (0.2^2 + 0.2^2) / 2 = 0.04
    binary = torch.tensor([[0.8, 0.2], [0.4, 0.6]]).view(2, 1, 2, 1, 1)  # (N, B, C, H, W)
    assert foreground_variance(binary).shape == (1, 1, 1, 1)
    assert torch.allclose(foreground_variance(binary), torch.full((1, 1, 1, 1), 0.04))
    # 3 classes: Var(bg) = 0.04, Var(c1) = 0, Var(c2) = 0.04 -> 0.04 (the old all-class sum gave 0.08, the mean 0.0267)
    multi = torch.tensor([[0.6, 0.4, 0.0], [0.2, 0.4, 0.4]]).view(2, 1, 3, 1, 1)
    assert foreground_variance(multi).shape == (1, 1, 1, 1)
    assert torch.allclose(foreground_variance(multi), torch.full((1, 1, 1, 1), 0.04))
    # sample axis after the channel axis, single-channel (sigmoid) maps, N = 1 -> exactly 0
    sig = torch.tensor([0.2, 0.6]).view(1, 1, 2)  # (B, C=1, N)
    assert torch.allclose(foreground_variance(sig, sample_dim=-1, channel_dim=1), torch.tensor([[0.04]]))
    assert foreground_variance(sig, sample_dim=-1, channel_dim=1).shape == (1, 1)
    assert torch.count_nonzero(foreground_variance(binary[:1])) == 0
    assert foreground_variance(binary).dtype == torch.float32
    with pytest.raises(ValueError, match="sample_dim and channel_dim"):
        foreground_variance(binary, sample_dim=1, channel_dim=1)


def test_text_guided_inferer_uncertainty_is_hand_computed_variance():
    """K = 2 draws whose softmax foreground is 0.2 and 0.6 at every pixel -> uncertainty channel 0.04 (unscaled)."""
    inferer_cls = TextGuidedFeatureInferer

    class Draws(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.draw = 0

        def forward(self, features, context, size):
            p = (0.2, 0.6)[self.draw % 2]
            self.draw += 1
            logit = torch.log(torch.tensor(p / (1 - p)))
            return torch.stack([torch.zeros(1, *size), torch.full((1, *size), float(logit))], dim=1)

    inf = inferer_cls(lambda image, noise_index=0: [image], None, num_samples=2, use_text=False)
    out = inf.with_uncertainty()(torch.zeros(1, 3, 4, 4), Draws())
    assert out.shape == (1, 3, 4, 4)
    assert torch.allclose(out[:, 1], torch.full((1, 4, 4), 0.4)) and torch.allclose(
        out[:, 2], torch.full((1, 4, 4), 0.04)
    )


def test_inference_transforms():
    from common.transforms.inference import FillTextd, ResizeToOriginald, SplitUncertaintyd
    from monai.data import MetaTensor

    assert FillTextd(default_text="p")({"case_id": "a"})["text"] == "p"
    assert FillTextd(default_text="p")({"case_id": "a", "text": "real"})["text"] == "real"
    with pytest.raises(BadInputError, match=r"case a: no report text for this case.*default_text"):
        FillTextd()({"case_id": "a", "text": "  "})
    pred = torch.rand(3, 8, 8) * 0.25
    d = SplitUncertaintyd(num_classes=2)({"pred": pred})
    assert d["pred"].shape == (2, 8, 8) and torch.equal(d["uncertainty"], pred[2:3])
    assert "uncertainty" not in SplitUncertaintyd(num_classes=2)({"pred": torch.rand(2, 8, 8)})
    image = MetaTensor(torch.zeros(3, 8, 8), meta={"spatial_shape": (20, 12), "filename_or_obj": "x.png"})
    out = ResizeToOriginald(["pred", "uncertainty"])({"image": image, "pred": torch.rand(2, 8, 8)})
    assert out["pred"].shape == (2, 20, 12) and out["pred"].meta["filename_or_obj"] == "x.png"
    with pytest.raises(BadInputError, match="spatial_shape"):
        ResizeToOriginald("pred")({"image": torch.zeros(3, 8, 8), "pred": torch.rand(2, 8, 8)})
