"""cDAL networks, training step, checkpoints, sampling/uncertainty and the authors'-checkpoint converter."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from common import standins as S
from common.errors import BadInputError
from common.training import ResumableCheckpointer
from common.utils.bundles import REPO_ROOT, bundle_scripts, tool_command
from ignite.engine import Events

REPO = REPO_ROOT
BUNDLE = REPO / "bundles" / "cdal"

with bundle_scripts("cdal"):
    from scripts.convert import convert_official_generator_state_dict
    from scripts.inferer import CDALInferer
    from scripts.networks import CDALDiscriminator, CDALGenerator, discriminator_attention_map
    from scripts.schedule import CDALSchedule
    from scripts.trainer import CDALTrainer, labels_to_signed


def generator_config(overlay: str) -> dict:
    """``CDALGenerator`` kwargs of the bundle's ``network_def`` with ``configs/<overlay>`` on train.json."""
    return S.cdal_standin_config([BUNDLE / "configs" / overlay])


#: the released Hippocampus generator (configs/hippocampus.json)
HIPPOCAMPUS = generator_config("hippocampus.json")
TINY = dict(
    image_size=32,
    num_channels=16,
    channel_mult=(1, 2, 2),
    num_res_blocks=1,
    attn_resolutions=(8,),
    encoder_layers=1,
    encoder_res_blocks=2,
    nz=8,
    z_emb_dim=16,
)


def tiny_generator(**kw) -> CDALGenerator:
    torch.manual_seed(0)
    return CDALGenerator(**{**TINY, **kw})


def toy_loader(n: int = 8, size: int = 32, batch: int = 4, seed: int = 0):
    """Images whose first channel is the label (a disc), so the task is learnable in a few steps."""
    from monai.data import DataLoader

    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    data = []
    for _ in range(n):
        cy, cx = torch.randint(8, size - 8, (2,), generator=g)
        lab = (((yy - cy) ** 2 + (xx - cx) ** 2) < 36).float()[None]
        img = torch.cat(
            [lab * 2 - 1 + 0.1 * torch.randn(1, size, size, generator=g), torch.randn(2, size, size, generator=g)]
        )
        data.append({"image": img, "label": lab})
    return DataLoader(data, batch_size=batch, shuffle=False)


def make_trainer(g, d, loader, epochs: int, handlers=None, lr_g: float = 2e-3):
    opt_g = torch.optim.Adam(g.parameters(), lr_g, betas=(0.5, 0.9))
    opt_d = torch.optim.Adam(d.parameters(), 1e-4, betas=(0.5, 0.9))
    tr = CDALTrainer(
        "cpu",
        epochs,
        loader,
        g,
        d,
        opt_g,
        opt_d,
        CDALSchedule(4),
        label_channels=1,
        attn_layer=2,
        lazy_reg=2,
        train_handlers=handlers,
    )
    return tr, opt_g, opt_d


# ------------------------------------------------------------------------------------------------------- shapes
@pytest.mark.parametrize(
    "cfg,params",
    [
        ({}, 41.67),  # MoNuSeg (bundles/cdal/docs/sources.md §2.1: 41.67 M, encoder 0.37 M)
        (generator_config("cxr.json"), 8.84),  # CXR
        (HIPPOCAMPUS, 3.68),  # Hippocampus (released checkpoint)
    ],
)
def test_paper_scale_generators_have_the_spec_parameter_counts(cfg, params):
    g = CDALGenerator(**cfg)
    assert round(sum(p.numel() for p in g.parameters()) / 1e6, 2) == params
    if not cfg:
        assert round(sum(p.numel() for p in g.image_encoder.parameters()) / 1e6, 2) == 0.37


def test_generator_and_discriminator_shapes_and_feature_tap():
    g = tiny_generator(label_channels=3, image_channels=1)
    x, img, t = torch.randn(2, 3, 32, 32), torch.randn(2, 1, 32, 32), torch.tensor([0, 3])
    y = g(x, t, img, torch.randn(2, 8))
    assert y.shape == (2, 3, 32, 32) and y.abs().max() < 1
    d = CDALDiscriminator(label_channels=3, ngf=4, t_emb_dim=16, variant="small", init_normal_std=None)
    assert d(x, t, x).shape == (2, 1)
    feats = d.get_features(x, t, x)
    assert [tuple(f.shape[1:]) for f in feats] == [(8, 32, 32), (8, 32, 32), (16, 16, 16), (32, 8, 8), (32, 4, 4)]
    dl = CDALDiscriminator(label_channels=1, ngf=4, t_emb_dim=16, variant="large")
    xl = torch.randn(3, 1, 64, 64)
    assert dl(xl, torch.tensor([0, 1, 2]), xl).shape == (3, 1)  # batch 3: minibatch-stddev group 3
    assert [f.shape[-1] for f in dl.get_features(xl, torch.tensor([0, 1, 2]), xl)] == [64, 32, 16, 8, 4, 2, 1]
    assert CDALDiscriminator(1, 64, 256, "large").feature_channels == (128, 256, 512, 512, 512, 512, 512)


def test_small_discriminator_final_conv_starts_near_zero_as_ddgan():
    """DDGAN's Discriminator_small: ``final_conv`` at init_scale 0 (official weight std 1.5e-7); the large one at 1."""
    torch.manual_seed(0)
    small = CDALDiscriminator(1, 64, 128, "small", init_normal_std=None)
    assert small.final_conv.weight.std() < 1e-6 and small.blocks[0].conv1[0].weight.std() > 1e-3
    large = CDALDiscriminator(1, 64, 256, "large", init_normal_std=None)
    assert large.final_conv.weight.std() > 1e-3


def test_attention_map_is_the_upsampled_channel_mean_of_the_chosen_feature_map():
    d = CDALDiscriminator(label_channels=1, ngf=4, t_emb_dim=16, variant="large")
    x_lo, x_hi, t = torch.randn(2, 1, 64, 64), torch.randn(2, 1, 64, 64), torch.tensor([1, 2])
    a = discriminator_attention_map(d, x_lo, t, x_hi, layer=3)
    f = d.get_features(x_lo, t, x_hi)[3]
    assert f.shape[-1] == 8
    expected = F.interpolate(f.mean(1, keepdim=True), size=(64, 64), mode="bilinear", align_corners=False)
    assert a.shape == (2, 1, 64, 64) and torch.equal(a, expected)
    assert (a < 0).any() and (
        a > 0
    ).any()  # raw features: no abs / sigmoid / normalisation (bundles/cdal/docs/sources.md §3.2)
    with pytest.raises(ValueError, match="attention layer 9 out of range"):
        discriminator_attention_map(d, x_lo, t, x_hi, layer=9)


def test_latent_z_changes_the_prediction():
    g = tiny_generator()
    for m in g.modules():  # the official near-zero init of every residual branch's last conv hides z at step 0
        if isinstance(m, torch.nn.Conv2d):
            torch.nn.init.normal_(m.weight, std=0.1)
    x, img, t = torch.randn(1, 1, 32, 32), torch.randn(1, 3, 32, 32), torch.tensor([2])
    z1, z2 = torch.randn(1, 8), torch.randn(1, 8)
    with torch.no_grad():
        a, b, c = g(x, t, img, z1), g(x, t, img, z2), g(x, t, img, z1)
    assert torch.equal(a, c) and (a - b).abs().max() > 1e-3
    inf = CDALInferer(num_timesteps=4, num_samples=4, seed=0, roi_size=32, return_uncertainty=True)
    out = inf(img, g)
    assert out.shape == (1, 3, 32, 32) and out[:, 2].max() > 0  # samples differ -> non-zero variance


def test_generator_rejects_wrong_inputs_with_clear_messages():
    g = tiny_generator()
    with pytest.raises(ValueError, match="1 label and 3 image channel"):
        g(torch.randn(1, 2, 32, 32), torch.tensor([0]), torch.randn(1, 3, 32, 32))
    with pytest.raises(ValueError, match="multiple of 4"):
        g(torch.randn(1, 1, 30, 30), torch.tensor([0]), torch.randn(1, 3, 30, 30))
    with pytest.raises(BadInputError, match="outside 0..1"):
        labels_to_signed(torch.full((1, 1, 4, 4), 255.0), 1, source="case_7")
    assert torch.equal(labels_to_signed(torch.tensor([[[[0.0, 2.0]]]]), 3)[0, :, 0, 1], torch.tensor([-1.0, -1.0, 1.0]))


# ----------------------------------------------------------------------------------------------------- training
@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny generator trained for 12 epochs (24 iterations) on the toy set, with per-iteration losses."""
    torch.manual_seed(0)
    g = tiny_generator()
    d = CDALDiscriminator(label_channels=1, ngf=4, t_emb_dim=16, variant="small")
    tr, *_ = make_trainer(g, d, toy_loader(), epochs=12)
    losses: list[float] = []
    tr.add_event_handler(Events.ITERATION_COMPLETED, lambda e: losses.append(e.state.output[0]["loss_g"]))
    tr.run()
    return g, d, losses, tr


def test_training_lowers_the_generator_loss(trained):
    _, _, losses, tr = trained
    assert len(losses) == 24 and set(tr.state.output[0]) >= {"loss_g", "loss_d", "r1", "loss_d_real", "loss_d_fake"}
    first, last = sum(losses[:4]) / 4, sum(losses[-4:]) / 4
    assert last < 0.6 * first, (first, last)


def test_trained_sampler_is_seed_reproducible_and_segments_the_toy_disc(trained):
    g = trained[0]
    batch = next(iter(toy_loader(n=4, seed=5)))
    img, lab = batch["image"][:1], batch["label"][:1]
    inf = CDALInferer(num_timesteps=4, num_samples=5, seed=123, roi_size=32, return_uncertainty=True)
    a, b = inf(img, g), inf(img, g)
    assert torch.equal(a, b)  # same seed -> exactly the same mask and uncertainty
    c = CDALInferer(num_timesteps=4, num_samples=5, seed=7, roi_size=32, return_uncertainty=True)(img, g)
    assert not torch.equal(a[:, 2], c[:, 2])
    scores = a[:, :2]  # (1 - m, m): class scores that sum to 1
    assert torch.allclose(scores.sum(1), torch.ones_like(scores[:, 0])) and scores.min() >= 0
    mask = scores.argmax(1, keepdim=True).float()
    assert torch.equal(mask, (scores[:, 1:2] > 0.5).float())  # argmax = the paper's 0.5 threshold on the mean
    dice = 2 * (mask * lab).sum() / (mask.sum() + lab.sum())
    assert dice > 0.5
    unc = a[:, 2]
    assert unc.min() >= 0 and unc.max() <= 0.25  # variance of [0, 1] samples


def test_inferer_tiles_2d_and_slices_3d():
    g = tiny_generator(image_channels=1)
    out = CDALInferer(num_timesteps=2, num_samples=2, seed=0, roi_size=32, resize_to=64, return_uncertainty=True)(
        torch.randn(1, 1, 50, 70), g
    )
    assert out.shape == (1, 3, 50, 70)
    g3 = tiny_generator(image_channels=1, label_channels=3)
    vol = torch.randn(1, 1, 20, 36, 24)
    inf3 = CDALInferer(
        num_timesteps=2, num_samples=2, seed=0, roi_size=(32, 32, 32), overlap=0.5, return_uncertainty=True
    )
    out3 = inf3(vol, g3)
    assert out3.shape == (1, 4, 20, 36, 24)  # 3 one-hot class scores + uncertainty
    plain = inf3.with_uncertainty(False)(vol, g3)
    assert plain.shape == (1, 3, 20, 36, 24) and torch.equal(plain, out3[:, :3]) and inf3.return_uncertainty


class _FixedSamplesGenerator(torch.nn.Module):
    """Stands in for the generator: the cDAL attributes only (sampling is monkeypatched)."""

    nz, image_channels = 1, 1

    def __init__(self, label_channels: int) -> None:
        super().__init__()
        self.label_channels = label_channels


@pytest.mark.parametrize(
    "samples, expected",
    [
        ([[0.2], [0.6]], 0.04),  # binary: Var of the foreground map over N = 2 samples
        # one-hot 3 classes: Var = (0.04, 0, 0.04) -> foreground sum 0.04 (the old channel mean gave 0.0267)
        ([[0.6, 0.4, 0.0], [0.2, 0.4, 0.4]], 0.04),
    ],
)
@pytest.mark.parametrize("spatial", [(8, 8), (8, 8, 4)])
def test_inferer_uncertainty_is_the_contract_foreground_variance(monkeypatch, samples, expected, spatial):
    module_globals = CDALInferer._predictor_2d.__globals__  # scripts.inferer (bundle_scripts unloads the module name)
    fixed = torch.tensor(samples)  # (N, Cl)

    def fake_sample_label_maps(network, schedule, image, num_samples, generator=None):
        n, cl = fixed.shape
        assert num_samples == n
        return fixed.view(n, 1, cl, 1, 1).expand(n, image.shape[0], cl, *image.shape[2:]).clone()

    monkeypatch.setitem(module_globals, "sample_label_maps", fake_sample_label_maps)
    g = _FixedSamplesGenerator(label_channels=len(samples[0]))
    out = CDALInferer(num_timesteps=2, num_samples=2, seed=0, roi_size=8, return_uncertainty=True)(
        torch.zeros(1, 1, *spatial), g
    )
    k = 2 if len(samples[0]) == 1 else len(samples[0])
    assert out.shape == (1, k + 1, *spatial)
    assert torch.allclose(out[:, k], torch.full((1, *spatial), expected), atol=1e-6)


def test_inferer_bad_inputs():
    g = tiny_generator()
    inf = CDALInferer(num_timesteps=4, num_samples=1, roi_size=32)
    with pytest.raises(BadInputError, match="1 channel"):
        inf(torch.randn(1, 1, 32, 32), g)
    with pytest.raises(BadInputError, match=r"expected a batch \[B, C, H, W\]"):
        inf(torch.randn(3, 32, 32), g)
    bad = torch.randn(1, 3, 32, 32)
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(BadInputError, match="NaN"):
        inf(bad, g)
    with pytest.raises(BadInputError, match="not a cDAL generator"):
        inf(torch.randn(1, 3, 32, 32), torch.nn.Conv2d(3, 1, 1))
    with pytest.raises(ValueError, match="num_samples"):
        CDALInferer(num_samples=0)


def test_checkpoints_reload_identically_and_resume_matches_an_uninterrupted_run(tmp_path):
    def run(epochs: int, folder: Path):
        torch.manual_seed(1)
        g = tiny_generator()
        d = CDALDiscriminator(label_channels=1, ngf=4, t_emb_dim=16, variant="small")
        tr, opt_g, opt_d = make_trainer(g, d, toy_loader(n=4), epochs)
        ckpt = ResumableCheckpointer(
            folder,
            {"model": g, "discriminator": d, "optimizer_g": opt_g, "optimizer_d": opt_d},
            final_model_path=folder / "model.pt",
        )
        ckpt.attach(tr)
        tr.run()
        return g, d

    g_full, d_full = run(3, tmp_path / "full")
    run(2, tmp_path / "resumed")
    g_res, d_res = run(3, tmp_path / "resumed")  # resumes from epoch 2
    for a, b in ((g_full, g_res), (d_full, d_res)):
        for (k, v), w in zip(a.state_dict().items(), b.state_dict().values()):
            assert torch.equal(v, w), k
    from common.io.checkpoints import load_network_weights

    fresh = load_network_weights(tiny_generator(), tmp_path / "full" / "model.pt")
    x, img, z = torch.randn(1, 1, 32, 32), torch.randn(1, 3, 32, 32), torch.randn(1, 8)
    with torch.no_grad():
        assert torch.equal(fresh(x, torch.tensor([1]), img, z), g_full(x, torch.tensor([1]), img, z))


# ---------------------------------------------------------------------------------------------------- converter
def official_ncsnpp_keys(
    image_size, label_ch, image_ch, nf, ch_mult, nrb, attn_res, enc_layers, enc_blocks, nz, zemb, n_mlp=3
) -> dict[str, tuple[int, ...]]:
    """Key names and shapes of the official ``NCSNpp`` state dict, enumerated from its ``__init__``
    (score_sde/models/ncsnpp_generator_adagn.py: conditional, positional, biggan, progressive none,
    progressive_input residual), independently of CDALGenerator."""
    keys: dict[str, tuple[int, ...]] = {}
    i = 0

    def add(rest: dict[str, tuple[int, ...]]) -> None:
        nonlocal i
        keys.update({f"all_modules.{i}.{k}": v for k, v in rest.items()})
        i += 1

    lin = lambda o, n: {"weight": (o, n), "bias": (o,)}  # noqa: E731
    conv = lambda o, n, k=3: {"weight": (o, n, k, k), "bias": (o,)}  # noqa: E731

    def resblock(cin, cout, resample=False):
        r = {
            "GroupNorm_0.style.weight": (2 * cin, zemb),
            "GroupNorm_0.style.bias": (2 * cin,),
            "Conv_0.weight": (cout, cin, 3, 3),
            "Conv_0.bias": (cout,),
            "Dense_0.weight": (cout, 4 * nf),
            "Dense_0.bias": (cout,),
            "GroupNorm_1.style.weight": (2 * cout, zemb),
            "GroupNorm_1.style.bias": (2 * cout,),
            "Conv_1.weight": (cout, cout, 3, 3),
            "Conv_1.bias": (cout,),
        }
        if cin != cout or resample:
            r.update({"Conv_2.weight": (cout, cin, 1, 1), "Conv_2.bias": (cout,)})
        return r

    def attn(c):
        r = {"GroupNorm_0.weight": (c,), "GroupNorm_0.bias": (c,)}
        for k in range(4):
            r.update({f"NIN_{k}.W": (c, c), f"NIN_{k}.b": (c,)})
        return r

    res = [image_size // 2**k for k in range(len(ch_mult))]
    add(lin(4 * nf, nf))
    add(lin(4 * nf, 4 * nf))
    add(conv(nf, image_ch))
    for _ in range(enc_layers * enc_blocks):
        add(
            {
                f"0.{k}": v
                for k, v in {
                    "in_layers.0.weight": (nf,),
                    "in_layers.0.bias": (nf,),
                    "in_layers.2.weight": (nf, nf, 3, 3),
                    "in_layers.2.bias": (nf,),
                    "out_layers.0.weight": (nf,),
                    "out_layers.0.bias": (nf,),
                    "out_layers.3.weight": (nf, nf, 3, 3),
                    "out_layers.3.bias": (nf,),
                }.items()
            }
        )
    add(conv(nf, label_ch))
    hs_c, in_ch, pyr = [nf], nf, label_ch
    for lv, m in enumerate(ch_mult):
        for _ in range(nrb):
            add(resblock(in_ch, nf * m))
            in_ch = nf * m
            if res[lv] in attn_res:
                add(attn(in_ch))
            hs_c.append(in_ch)
        if lv != len(ch_mult) - 1:
            add(resblock(in_ch, in_ch, resample=True))
            add({"Conv2d_0.weight": (in_ch, pyr, 3, 3), "Conv2d_0.bias": (in_ch,)})
            pyr = in_ch
            hs_c.append(in_ch)
    in_ch = hs_c[-1]
    add(resblock(in_ch, in_ch))
    add(attn(in_ch))
    add(resblock(in_ch, in_ch))
    for lv in reversed(range(len(ch_mult))):
        for _ in range(nrb + 1):
            add(resblock(in_ch + hs_c.pop(), nf * ch_mult[lv]))
            in_ch = nf * ch_mult[lv]
        if res[lv] in attn_res:
            add(attn(in_ch))
        if lv != 0:
            add(resblock(in_ch, in_ch, resample=True))
    add({"weight": (in_ch,), "bias": (in_ch,)})
    add(conv(label_ch, in_ch))
    keys.update({"z_transform.1.weight": (zemb, nz), "z_transform.1.bias": (zemb,)})
    for k in range(n_mlp):
        keys.update({f"z_transform.{3 + 2 * k}.weight": (zemb, zemb), f"z_transform.{3 + 2 * k}.bias": (zemb,)})
    return keys


def test_convert_official_generator_checkpoint(tmp_path):
    # the official argument order is CDALGenerator's without dropout
    shapes = official_ncsnpp_keys(*(v for k, v in HIPPOCAMPUS.items() if k != "dropout"))
    gen = torch.Generator().manual_seed(0)
    official = {f"module.{k}": torch.randn(s, generator=gen) for k, s in shapes.items()}  # saved from DDP
    net = CDALGenerator(**HIPPOCAMPUS)
    new = convert_official_generator_state_dict(net, official, source="netG.pth")
    net.load_state_dict(new, strict=True)
    assert len(new) == len(official)
    assert torch.equal(net.time_embed[0].weight, official["module.all_modules.0.weight"])
    assert torch.equal(
        net.image_encoder.blocks[0].in_layers[2].weight, official["module.all_modules.3.0.in_layers.2.weight"]
    )
    assert torch.equal(net.out_conv.weight, official[f"module.all_modules.{len(net.official_module_order) - 1}.weight"])
    assert torch.equal(net.z_transform[7].weight, official["module.z_transform.7.weight"])

    src = tmp_path / "netG_10_mIoU_0.9_F1_0.9.pth"
    torch.save(official, src)
    dst = tmp_path / "model.pt"
    import subprocess

    hip = BUNDLE / "configs" / "hippocampus.json"
    r = subprocess.run(
        tool_command("convert_checkpoint.py", "cdal", "--src", src, "--dst", dst, "--override", hip),
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr
    saved = torch.load(dst, weights_only=True)  # flat state dict
    assert saved.keys() == new.keys() and all(torch.equal(saved[k], v) for k, v in new.items())
    # a checkpoint of another configuration is refused with the key/shape problems listed
    with pytest.raises(BadInputError, match="does not fit this generator configuration.*shape mismatch"):
        convert_official_generator_state_dict(
            CDALGenerator(**{**TINY, "image_channels": 1, "label_channels": 3}), official
        )
    del official["module.all_modules.5.0.in_layers.0.weight"]
    with pytest.raises(BadInputError, match=r"1 official key\(s\) missing"):
        convert_official_generator_state_dict(net, official, source="netG.pth")


def test_a_training_set_smaller_than_one_batch_is_an_error_not_an_empty_run():
    g = tiny_generator()
    d = CDALDiscriminator(label_channels=1, ngf=4, t_emb_dim=16, variant="small")
    from monai.data import DataLoader

    small = DataLoader(toy_loader(n=2).dataset, batch_size=4, drop_last=True)  # as train.json (drop_last: true)
    with pytest.raises(BadInputError, match="the data loader yields no batch: 2 case"):
        make_trainer(g, d, small, epochs=1)
