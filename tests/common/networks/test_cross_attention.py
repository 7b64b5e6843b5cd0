"""Tests of common.networks.cross_attention (masked cross-attention of 2D/3D feature maps over text tokens)."""

from __future__ import annotations

import pytest
import torch
from common.errors import BadInputError
from common.networks.cross_attention import (
    MaskedCrossAttentionBlock,
    TextConditionedTransformerBlock,
    TextCrossAttention,
)
from monai.networks.blocks import CrossAttentionBlock


def _inputs(spatial, channels=8, batch=2, tokens=6, context_dim=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, channels, *spatial, generator=g)
    context = torch.randn(batch, tokens, context_dim, generator=g)
    mask = torch.ones(batch, tokens, dtype=torch.bool)
    mask[1, 3:] = False  # sample 1 has 3 real tokens, 3 padding tokens
    return x, context, mask


def _modules(spatial_dims, channels=8, context_dim=16):
    torch.manual_seed(0)
    return [
        TextCrossAttention(spatial_dims, channels, context_dim, hidden_size=16, num_heads=4),
        TextConditionedTransformerBlock(
            spatial_dims, channels, context_dim, hidden_size=16, num_heads=4, num_cross_attention=2, out_norm=True
        ),
        TextConditionedTransformerBlock(spatial_dims, channels, context_dim, num_heads=2, feed_forward="gelu_linear"),
    ]


@pytest.mark.parametrize("spatial", [(6, 5), (4, 3, 5)])
def test_output_shape_2d_3d(spatial):
    x, context, mask = _inputs(spatial)
    for module in _modules(len(spatial)):
        y = module(x, context, mask)
        assert y.shape == x.shape and torch.isfinite(y).all()
        assert not torch.allclose(y, x)  # the text changed the features


def test_textdiffseg_one_channel_latent():
    """bundles/textdiffseg/docs/sources.md §2.5: 1-channel 12^3 latent, 64 wide, 4 heads, 768-d text, residual."""
    fuse = TextCrossAttention(3, in_channels=1, context_dim=768, hidden_size=64, num_heads=4, norm=False)
    assert sum(p.numel() for p in fuse.parameters()) == 98_433  # bundles/textdiffseg/docs/sources.md §2.5: 0.098 M
    z = torch.randn(2, 1, 12, 12, 12)
    text = torch.randn(2, 5, 768)
    assert fuse(z, text).shape == (2, 1, 12, 12, 12)
    with pytest.raises(ValueError, match="norm=False"):
        TextCrossAttention(3, in_channels=1, context_dim=768, hidden_size=64, num_heads=4, norm=True)


def test_textdiff_block_parameter_count():
    """bundles/textdiff/docs/sources.md §2.3: cross1 = 2 cross-attns (8 x 64) with post-LN, GELU->Linear FF: 3,745,536
    parameters."""
    block = TextConditionedTransformerBlock(
        2, 768, 768, hidden_size=512, num_heads=8, num_cross_attention=2, feed_forward="gelu_linear", out_norm=True
    )
    assert sum(p.numel() for p in block.parameters()) == 3_745_536


@pytest.mark.parametrize("spatial", [(6, 5), (4, 3, 5)])
def test_padding_tokens_have_no_effect(spatial):
    x, context, mask = _inputs(spatial)
    changed = context.clone()
    changed[1, 3:] = 1000.0 * torch.randn(3, context.shape[2])  # only padding positions of sample 1
    for module in _modules(len(spatial)):
        module.eval()
        y = module(x, context, mask)
        y_changed = module(x, changed, mask)
        torch.testing.assert_close(y_changed, y, atol=1e-6, rtol=0)
        # same as attending only the 3 real tokens of sample 1, without any padding
        y_short = module(x[1:], context[1:, :3], mask[1:, :3])
        torch.testing.assert_close(y[1:], y_short, atol=1e-5, rtol=1e-5)
        # and without the mask the padding does change the output
        assert not torch.allclose(module(x, changed), module(x, context), atol=1e-3)


def test_output_changes_with_text():
    x, context, mask = _inputs((6, 5))
    other = context.clone()
    other[:, 1] = torch.randn(2, context.shape[2])  # a real token of both samples
    for module in _modules(2):
        y, y_other = module(x, context, mask), module(x, other, mask)
        assert not torch.allclose(y[0], y_other[0], atol=1e-4) and not torch.allclose(y[1], y_other[1], atol=1e-4)


def test_gradient_flows_to_parameters_and_input():
    x, context, mask = _inputs((4, 3, 5))
    x.requires_grad_(True)
    for module in _modules(3):
        x.grad = None
        module(x, context, mask).square().mean().backward()
        assert x.grad is not None and x.grad.abs().sum() > 0
        for name, p in module.named_parameters():
            assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_bad_mask_raises():
    x, context, mask = _inputs((6, 5))
    module = _modules(2)[0]
    empty = mask.clone()
    empty[1] = False
    with pytest.raises(BadInputError, match=r"context_mask: sample\(s\) \[1\] have no real text token"):
        module(x, context, empty)
    with pytest.raises(ValueError, match="bool tensor"):
        module(x, context, mask.long())
    with pytest.raises(ValueError, match=r"\(2, 6\).*got \(2, 5\)"):
        module(x, context, mask[:, :5])


def test_wrong_shapes_raise():
    x, context, mask = _inputs((6, 5))
    module = _modules(2)[0]
    with pytest.raises(ValueError, match=r"\(B, 8, H, W\).*got \(2, 8, 6, 5, 1\)"):
        module(x[..., None], context, mask)
    with pytest.raises(ValueError, match=r"8 channels\), got \(2, 4, 6, 5\)"):
        module(x[:, :4], context, mask)
    with pytest.raises(ValueError, match=r"\(B, L, 16\).*got \(2, 6, 12\)"):
        module(x, context[..., :12], mask)
    with pytest.raises(ValueError, match=r"B = 2"):
        module(x, torch.cat([context, context]), None)
    with pytest.raises(ValueError, match="divisible"):
        TextCrossAttention(2, 8, 16, hidden_size=10, num_heads=4)
    with pytest.raises(ValueError, match="spatial_dims"):
        TextCrossAttention(4, 8, 16)
    with pytest.raises(ValueError, match="feed_forward"):
        TextConditionedTransformerBlock(2, 8, 16, feed_forward="geglu")


def test_shared_context_batch_of_one():
    """One fixed prompt for the whole batch (TextDiffSeg) broadcasts like an explicit copy."""
    x, context, _ = _inputs((4, 3, 5))
    for module in _modules(3):
        shared = module(x, context[:1], torch.ones(1, 6, dtype=torch.bool))
        torch.testing.assert_close(shared, module(x, context[:1].expand(2, -1, -1)), atol=1e-6, rtol=0)


def test_masked_block_matches_monai_cross_attention_without_mask():
    """Builds on MONAI: same parameters, same result as CrossAttentionBlock when nothing is masked."""
    torch.manual_seed(0)
    ours = MaskedCrossAttentionBlock(32, 4, hidden_input_size=8, context_input_size=16, dim_head=8)
    monai_block = CrossAttentionBlock(32, 4, hidden_input_size=8, context_input_size=16, dim_head=8)
    monai_block.load_state_dict(ours.state_dict())
    x, context = torch.randn(2, 30, 8), torch.randn(2, 6, 16)
    torch.testing.assert_close(ours(x, context), monai_block(x, context), atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(
        ours(x, context, torch.ones(2, 6, dtype=torch.bool)), monai_block(x, context), atol=1e-6, rtol=1e-5
    )


def test_dropout_only_in_training():
    x, context, mask = _inputs((6, 5))
    module = TextCrossAttention(2, 8, 16, hidden_size=16, num_heads=4, dropout=0.5).eval()
    torch.testing.assert_close(module(x, context, mask), module(x, context, mask), atol=0, rtol=0)
    module.train()
    torch.manual_seed(1)
    assert not torch.allclose(module(x, context, mask), module(x, context, mask))


def test_with_frozen_text_encoder_batch_independent(tiny_bert_dir, monkeypatch):
    """End to end: a text's result does not depend on the lengths of the other texts in its batch."""
    from common.text.encoder import FrozenTextEncoder

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    encoder = FrozenTextEncoder(tiny_bert_dir)
    fuse = TextCrossAttention(2, in_channels=8, context_dim=encoder.hidden_size, hidden_size=16, num_heads=4)
    x = torch.randn(2, 8, 5, 5)
    texts = ["the nuclei are evenly distributed in the tissue .", "lesion"]
    batch = encoder(texts)
    alone = encoder(texts[1:])
    assert batch.tokens.shape[1] > alone.tokens.shape[1]
    torch.testing.assert_close(
        fuse(x, batch.tokens, batch.mask)[1:], fuse(x[1:], alone.tokens, alone.mask), atol=1e-6, rtol=1e-5
    )
