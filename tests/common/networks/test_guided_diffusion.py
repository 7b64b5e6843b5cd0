"""common.networks.guided_diffusion: ADM (guided-diffusion) weights in MONAI's DiffusionModelUNet, and the `textdiff`
checkpoint converter of tools/convert_checkpoint.py.

The official key names/shapes and the reference forward below are written independently of the module under test,
following guided-diffusion's ``UNetModel.__init__``/``forward`` (bundles/textdiff/docs/sources.md §2.1, §9).
"""

from __future__ import annotations

import math
import sys

import pytest
import torch
import torch.nn.functional as F
from common.errors import BadInputError
from common.networks.guided_diffusion import (
    ScaleShiftResnetBlock,
    adm_output_block,
    adm_output_block_shapes,
    adm_unet,
    convert_adm_state_dict,
    load_adm_weights,
)
from common.utils.bundles import REPO_ROOT

REPO = REPO_ROOT
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
TINY = dict(
    image_size=32,
    in_channels=3,
    out_channels=6,
    model_channels=32,
    channel_mult=(1, 2, 2),
    num_res_blocks=1,
    attention_resolutions=(16, 8),
    num_head_channels=16,
)


# ------------------------------------------------------------------------------------------- ADM reference
def official_adm_shapes(
    image_size,
    in_channels,
    out_channels,
    model_channels,
    channel_mult,
    num_res_blocks,
    attention_resolutions,
    num_head_channels,
) -> dict[str, tuple[int, ...]]:
    """State-dict names and shapes of guided-diffusion's UNetModel (use_scale_shift_norm, resblock_updown)."""
    shapes: dict[str, tuple[int, ...]] = {}

    def lin(p, i, o):
        shapes[p + ".weight"], shapes[p + ".bias"] = (o, i), (o,)

    def conv(p, i, o, k):
        shapes[p + ".weight"], shapes[p + ".bias"] = (o, i, k, k), (o,)

    def norm(p, c):
        shapes[p + ".weight"], shapes[p + ".bias"] = (c,), (c,)

    def res(p, ch, out, emb):
        norm(p + ".in_layers.0", ch)
        conv(p + ".in_layers.2", ch, out, 3)
        lin(p + ".emb_layers.1", emb, 2 * out)
        norm(p + ".out_layers.0", out)
        conv(p + ".out_layers.3", out, out, 3)
        if out != ch:
            conv(p + ".skip_connection", ch, out, 1)

    def attn(p, ch):
        norm(p + ".norm", ch)
        shapes[p + ".qkv.weight"], shapes[p + ".qkv.bias"] = (3 * ch, ch, 1), (3 * ch,)
        shapes[p + ".proj_out.weight"], shapes[p + ".proj_out.bias"] = (ch, ch, 1), (ch,)

    emb = 4 * model_channels
    lin("time_embed.0", model_channels, emb)
    lin("time_embed.2", emb, emb)
    attention_ds = [image_size // r for r in attention_resolutions]
    ch = model_channels
    conv("input_blocks.0.0", in_channels, ch, 3)
    chans, ds, k = [ch], 1, 1
    for level, mult in enumerate(channel_mult):
        for _ in range(num_res_blocks):
            res(f"input_blocks.{k}.0", ch, mult * model_channels, emb)
            ch = mult * model_channels
            if ds in attention_ds:
                attn(f"input_blocks.{k}.1", ch)
            chans.append(ch)
            k += 1
        if level != len(channel_mult) - 1:
            res(f"input_blocks.{k}.0", ch, ch, emb)
            chans.append(ch)
            ds *= 2
            k += 1
    res("middle_block.0", ch, ch, emb)
    attn("middle_block.1", ch)
    res("middle_block.2", ch, ch, emb)
    k = 0
    for level, mult in list(enumerate(channel_mult))[::-1]:
        for i in range(num_res_blocks + 1):
            ich = chans.pop()
            res(f"output_blocks.{k}.0", ch + ich, model_channels * mult, emb)
            ch = model_channels * mult
            sub = 1
            if ds in attention_ds:
                attn(f"output_blocks.{k}.1", ch)
                sub = 2
            if level and i == num_res_blocks:
                res(f"output_blocks.{k}.{sub}", ch, ch, emb)
                ds //= 2
            k += 1
    norm("out.0", ch)
    conv("out.2", ch, out_channels, 3)
    return shapes


def _gn(x, sd, p):
    return F.group_norm(x.float(), 32, sd[p + ".weight"], sd[p + ".bias"], 1e-5)


def ref_resblock(sd, p, x, emb, up=False, down=False):
    h = F.silu(_gn(x, sd, p + ".in_layers.0"))
    if up:
        h, x = F.interpolate(h, scale_factor=2, mode="nearest"), F.interpolate(x, scale_factor=2, mode="nearest")
    if down:
        h, x = F.avg_pool2d(h, 2), F.avg_pool2d(x, 2)
    h = F.conv2d(h, sd[p + ".in_layers.2.weight"], sd[p + ".in_layers.2.bias"], padding=1)
    e = F.linear(F.silu(emb), sd[p + ".emb_layers.1.weight"], sd[p + ".emb_layers.1.bias"])[..., None, None]
    scale, shift = e.chunk(2, dim=1)
    h = _gn(h, sd, p + ".out_layers.0") * (1 + scale) + shift
    h = F.conv2d(F.silu(h), sd[p + ".out_layers.3.weight"], sd[p + ".out_layers.3.bias"], padding=1)
    if p + ".skip_connection.weight" in sd:
        x = F.conv2d(x, sd[p + ".skip_connection.weight"], sd[p + ".skip_connection.bias"])
    return x + h


def ref_attention(sd, p, x, head_channels):
    b, c, *spatial = x.shape
    xf = x.reshape(b, c, -1)
    qkv = F.conv1d(_gn(xf, sd, p + ".norm"), sd[p + ".qkv.weight"], sd[p + ".qkv.bias"])
    heads = c // head_channels
    q, k, v = qkv.reshape(b * heads, 3 * head_channels, -1).split(head_channels, dim=1)  # legacy order
    s = 1 / math.sqrt(math.sqrt(head_channels))
    w = torch.softmax(torch.einsum("bct,bcs->bts", q * s, k * s), dim=-1)
    a = torch.einsum("bts,bcs->bct", w, v).reshape(b, c, -1)
    return (xf + F.conv1d(a, sd[p + ".proj_out.weight"], sd[p + ".proj_out.bias"])).reshape(b, c, *spatial)


def ref_adm_forward(sd, x, t, cfg, grab=()):
    """guided-diffusion UNetModel.forward from the official state dict; also returns output_blocks[i] outputs."""
    mc = cfg["model_channels"]
    half = mc // 2
    freqs = torch.exp(-math.log(10000) * torch.arange(half, dtype=torch.float32) / half)
    args = t[:, None].float() * freqs[None]
    temb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    emb = F.linear(
        F.silu(F.linear(temb, sd["time_embed.0.weight"], sd["time_embed.0.bias"])),
        sd["time_embed.2.weight"],
        sd["time_embed.2.bias"],
    )
    hc = cfg["num_head_channels"]

    def block(prefix, h):
        j = 0
        while f"{prefix}.{j}.in_layers.0.weight" in sd or f"{prefix}.{j}.norm.weight" in sd:
            p = f"{prefix}.{j}"
            if p + ".norm.weight" in sd:
                h = ref_attention(sd, p, h, hc)
            else:
                up = prefix.startswith("output_blocks") and j > 0
                h = ref_resblock(sd, p, h, emb, up=up, down=prefix in _DOWN_BLOCKS)
            j += 1
        return h

    h = F.conv2d(x, sd["input_blocks.0.0.weight"], sd["input_blocks.0.0.bias"], padding=1)
    hs = [h]
    k = 1
    while f"input_blocks.{k}.0.in_layers.0.weight" in sd:
        h = block(f"input_blocks.{k}", h)
        hs.append(h)
        k += 1
    h = block("middle_block", h)
    grabbed = {}
    k = 0
    while f"output_blocks.{k}.0.in_layers.0.weight" in sd:
        h = block(f"output_blocks.{k}", torch.cat([h, hs.pop()], dim=1))
        grabbed[k] = h
        k += 1
    out = F.conv2d(F.silu(_gn(h, sd, "out.0")), sd["out.2.weight"], sd["out.2.bias"], padding=1)
    return out, [grabbed[i] for i in grab]


_DOWN_BLOCKS: set[str] = set()


def _mark_down_blocks(cfg) -> None:
    """input_blocks indices that are down-sampling ResBlocks (after each level but the last)."""
    _DOWN_BLOCKS.clear()
    k = 1
    for level in range(len(cfg["channel_mult"])):
        k += cfg["num_res_blocks"]
        if level != len(cfg["channel_mult"]) - 1:
            _DOWN_BLOCKS.add(f"input_blocks.{k}")
            k += 1


def random_official_state_dict(cfg, seed=0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {k: torch.randn(s, generator=g) * 0.1 for k, s in official_adm_shapes(**cfg).items()}


# ------------------------------------------------------------------------------------------------- tests
def test_full_adm_matches_the_official_checkpoint_layout():
    """256x256 uncond: 552,814,086 parameters; every official key maps onto a MONAI key of the same shape."""
    cfg = dict(
        image_size=256,
        in_channels=3,
        out_channels=6,
        model_channels=256,
        channel_mult=(1, 1, 2, 2, 4, 4),
        num_res_blocks=2,
        attention_resolutions=(32, 16, 8),
        num_head_channels=64,
    )
    with torch.device("meta"):
        unet = adm_unet(**cfg)
        official = {k: torch.empty(s) for k, s in official_adm_shapes(**cfg).items()}
    assert sum(p.numel() for p in unet.parameters()) == 552_814_086
    assert sum(math.prod(s) for s in official_adm_shapes(**cfg).values()) == 552_814_086
    converted = convert_adm_state_dict(official, unet)
    assert set(converted) == set(unet.state_dict())
    for k, v in unet.state_dict().items():
        assert converted[k].shape == v.shape, k
    assert sum(isinstance(m, ScaleShiftResnetBlock) for m in unet.modules()) == 42
    # hook points and shapes of output_blocks (bundles/textdiff/docs/sources.md §2.1 table, §9)
    names = {id(m): n for n, m in unet.named_modules()}
    expected = {
        4: "up_blocks.1.attentions.1",
        6: "up_blocks.2.attentions.0",
        8: "up_blocks.2.upsampler",
        12: "up_blocks.4.resnets.0",
        16: "up_blocks.5.resnets.1",
    }
    for i, name in expected.items():
        assert names[id(adm_output_block(unet, i))] == name
    shapes = adm_output_block_shapes(unet, 256)
    assert [shapes[i] for i in (6, 8, 12, 16)] == [(512, 32), (512, 64), (256, 128), (256, 256)]
    assert [shapes[i] for i in (4, 6, 8, 12)] == [(1024, 16), (512, 32), (512, 64), (256, 128)]
    assert shapes[2] == (1024, 16) and shapes[14] == (256, 256) and len(shapes) == 18
    with pytest.raises(ValueError, match="out of range"):
        adm_output_block(unet, 18)


def test_converted_tiny_adm_matches_reference_forward():
    """Strict load of official names; outputs and hooked output_blocks equal the ADM reference forward."""
    torch.manual_seed(0)
    official = random_official_state_dict(TINY)
    unet = adm_unet(**TINY)
    load_adm_weights(unet, official)
    unet.eval()
    _mark_down_blocks(TINY)
    x = torch.randn(2, 3, 32, 32)
    t = torch.tensor([50, 250])
    n_out = len(adm_output_block_shapes(unet, 32))
    grabbed = {}
    hooks = [
        adm_output_block(unet, i).register_forward_hook(lambda m, a, o, i=i: grabbed.__setitem__(i, o))
        for i in range(n_out)
    ]
    with torch.no_grad():
        out = unet(x, t)
        ref_out, ref_blocks = ref_adm_forward(official, x, t, TINY, grab=range(n_out))
    for h in hooks:
        h.remove()
    assert out.shape == (2, 6, 32, 32)
    assert torch.allclose(out, ref_out, atol=1e-5, rtol=1e-5), (out - ref_out).abs().max()
    for i in range(n_out):
        assert grabbed[i].shape == ref_blocks[i].shape
        assert torch.allclose(grabbed[i], ref_blocks[i], atol=1e-5, rtol=1e-5), (
            i,
            (grabbed[i] - ref_blocks[i]).abs().max(),
        )


def test_wrong_architecture_is_rejected_with_the_keys_listed():
    official = random_official_state_dict(TINY)
    other = adm_unet(**{**TINY, "model_channels": 64})
    with pytest.raises(BadInputError, match="shape mismatch"):
        load_adm_weights(other, official)
    broken = dict(official)
    broken.pop("middle_block.1.qkv.weight")
    broken["extra.weight"] = torch.zeros(1)
    with pytest.raises(BadInputError, match=r"not used: \[.extra.weight.\].*missing key"):
        convert_adm_state_dict(broken, adm_unet(**TINY))


def _convert_cli(*args: str) -> int:
    from tools.convert_checkpoint import main

    return main(["textdiff", *args])


def test_convert_checkpoint_textdiff_cli(tmp_path, capsys):
    official = random_official_state_dict(TINY, seed=1)
    src = tmp_path / "256x256_diffusion_uncond.pt"
    torch.save(official, src)
    dst = tmp_path / "unet.pt"
    flags = [
        "--image-size",
        "32",
        "--model-channels",
        "32",
        "--channel-mult",
        "1,2,2",
        "--num-res-blocks",
        "1",
        "--attention-resolutions",
        "16,8",
        "--num-head-channels",
        "16",
    ]
    assert _convert_cli("--src", str(src), "--dst", str(dst), *flags) == 0
    ckpt = torch.load(dst, weights_only=True)
    unet = adm_unet(**TINY)
    unet.load_state_dict(ckpt["model"], strict=True)  # the converted file loads strictly
    direct = adm_unet(**TINY, checkpoint=src)  # official file loads directly too
    again = adm_unet(**TINY, checkpoint=dst)  # and so does the converted one
    x, t = torch.randn(1, 3, 32, 32), torch.tensor([150])
    with torch.no_grad():
        assert torch.equal(unet(x, t), direct(x, t)) and torch.equal(direct(x, t), again(x, t))
    # a corrupt checkpoint: clear message, exit code 1
    bad = tmp_path / "bad.pt"
    bad.write_bytes(src.read_bytes()[:1000])
    capsys.readouterr()
    assert _convert_cli("--src", str(bad), "--dst", str(tmp_path / "x.pt"), *flags) == 1
    err = capsys.readouterr().err
    assert "bad.pt" in err and "corrupt" in err and not (tmp_path / "x.pt").exists()
    # the full-size default architecture refuses the tiny checkpoint with the mismatch listed
    with pytest.raises(BadInputError, match="not a guided-diffusion checkpoint of this architecture"):
        load_adm_weights(adm_unet(**{**TINY, "channel_mult": (1, 2)}), official)
