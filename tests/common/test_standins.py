"""Random-weight stand-ins (``common.standins``, ``tools/make_standins.py``).

Full-size parameter counts are checked on the ``meta`` device (no memory); the writers themselves run on small
configs (the same functions the full-size run uses) and are re-opened with the bundles' real loaders. Nothing here
writes the 3.4 GB UNet or the 2.2 GB ADM checkpoint.
"""

from __future__ import annotations

import json
import logging
import subprocess

import pytest
import torch
from common import standins as S
from common.networks.guided_diffusion import adm_unet, convert_adm_state_dict, is_adm_state_dict, load_adm_weights
from common.utils.bundles import REPO_ROOT, bundle_scripts, tool_command

REPO = REPO_ROOT
HIPPOCAMPUS = REPO / "bundles" / "cdal" / "configs" / "hippocampus.json"

#: the ADM stand-in's flags (3 -> 6 channels) at a small size
SMALL_ADM = {
    **S.adm_standin_config(),
    "image_size": 32,
    "model_channels": 32,
    "channel_mult": (1, 2),
    "num_res_blocks": 1,
    "attention_resolutions": (16,),
    "num_head_channels": 16,
}

#: SD v1.5's UNet and VAE (x8, four levels) at a small size
TINY_SD_UNET = {
    **S.sd_unet_config(),
    "sample_size": 16,
    "layers_per_block": 1,
    "block_out_channels": (32, 64),
    "down_block_types": ("CrossAttnDownBlock2D", "DownBlock2D"),
    "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D"),
    "cross_attention_dim": 32,
    "norm_num_groups": 8,
    "attention_head_dim": 4,
}
TINY_SD_VAE = {
    **S.sd_vae_config(),
    "block_out_channels": [8, 8, 16, 16],
    "norm_num_groups": 8,
    "layers_per_block": 1,
    "sample_size": 64,
}

#: width and depth of the small text encoders (BERT, CLIP text tower) the writers are tried with
SMALL_TEXT = {"hidden_size": 32, "num_hidden_layers": 2}

CLINICAL_SENTENCES = (
    "The nuclei density in the upper right is high.",
    "A computerized tomography of a kidney tumor.",
    "Bilateral pulmonary infection, two infected areas, upper left lung and upper right lung.",
)


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# ------------------------------------------------------------------------------------- (a) full-size counts (meta)
def test_adm_standin_config_is_textdiffs_paper_config_with_the_released_counts_and_names():
    cfg = S.adm_standin_config()
    train = json.loads((REPO / "bundles" / "textdiff" / "configs" / "train.json").read_text())
    assert (
        cfg["image_size"],
        cfg["model_channels"],
        list(cfg["channel_mult"]),
        cfg["num_res_blocks"],
        list(cfg["attention_resolutions"]),
        cfg["num_head_channels"],
    ) == (
        train["image_size"],
        train["unet_model_channels"],
        train["unet_channel_mult"],
        train["unet_num_res_blocks"],
        train["unet_attention_resolutions"],
        train["unet_num_head_channels"],
    )
    with torch.device("meta"):
        state = S.monai_to_adm_state_dict(adm_unet(**cfg))
    assert len(state) == S.ADM_TENSORS == 566
    assert sum(v.numel() for v in state.values()) == S.ADM_PARAMS == 552_814_086
    assert all(v.dtype == torch.float32 for v in state.values())
    keys = list(state)
    assert keys[0] == "time_embed.0.weight" and keys[-1] == "out.2.bias"  # ADM's own key order
    assert keys.index("input_blocks.0.0.weight") < keys.index("middle_block.0.in_layers.0.weight")
    assert keys.index("middle_block.2.out_layers.3.bias") < keys.index("output_blocks.0.0.in_layers.0.weight")
    assert state["input_blocks.0.0.weight"].shape == (256, 3, 3, 3)
    assert state["middle_block.1.qkv.weight"].shape == (3 * 1024, 1024, 1)  # fused Conv1d, legacy layout
    assert state["middle_block.1.proj_out.weight"].shape == (1024, 1024, 1)
    assert state["output_blocks.17.0.out_layers.3.weight"].shape == (256, 256, 3, 3)
    assert state["out.2.weight"].shape == (6, 256, 3, 3)
    assert "output_blocks.17.1.qkv.weight" not in state and "output_blocks.8.2.in_layers.0.weight" in state


def test_sd_configs_have_the_sd_v1_5_parameter_counts():
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    with torch.device("meta"):
        assert _count(UNet2DConditionModel(**S.sd_unet_config())) == S.SD_UNET_PARAMS == 859_520_964
        assert _count(AutoencoderKL(**S.sd_vae_config())) == S.SD_VAE_PARAMS == 83_653_863
        text = CLIPTextModel(CLIPTextConfig(**S.sd_text_encoder_config()))
        assert _count(text) == S.SD_TEXT_ENCODER_PARAMS == 123_060_480
    # the CLIP ViT-L/14 text tower counted by hand: token + position embeddings, 12 layers, final LayerNorm
    d, f, v, n = 768, 3072, 49408, 77
    layer = 4 * (d * d + d) + 2 * 2 * d + (d * f + f) + (f * d + d)
    assert v * d + n * d + 12 * layer + 2 * d == 123_060_480
    assert S.sd_scheduler_config()["_class_name"] == "PNDMScheduler"
    assert set(S.sd_model_index()) >= {"unet", "vae", "text_encoder", "tokenizer", "scheduler"}


def test_bert_config_is_bert_base_cased_with_108_310_272_parameters():
    from transformers import BertConfig, BertModel

    cfg = S.bert_standin_config()
    with torch.device("meta"):
        model = BertModel(BertConfig(**cfg))
    assert model.pooler is not None
    assert _count(model) == S.BERT_PARAMS == 108_310_272
    # counted by hand: word/position/type embeddings + LayerNorm, 12 x (attention, output, FFN, 2 LayerNorms), pooler
    d, f = 768, 3072
    embeddings = 28996 * d + 512 * d + 2 * d + 2 * d
    layer = 4 * (d * d + d) + 2 * 2 * d + (d * f + f) + (f * d + d)
    assert embeddings + 12 * layer + (d * d + d) == 108_310_272
    assert (cfg["vocab_size"], cfg["layer_norm_eps"], cfg["hidden_act"]) == (28996, 1e-12, "gelu")


def test_cdal_config_is_the_monuseg_paper_config_with_41_666_753_parameters():
    inference = json.loads((REPO / "bundles" / "cdal" / "configs" / "inference.json").read_text())
    cfg = S.cdal_standin_config()
    assert all(inference[k] == v for k, v in cfg.items())  # what the converter builds by default
    with bundle_scripts("cdal"):
        from scripts.networks import CDALGenerator

        with torch.device("meta"):
            assert _count(CDALGenerator(**cfg)) == S.CDAL_PARAMS == 41_666_753
    assert S.cdal_standin_config([HIPPOCAMPUS])["nz"] == 50


def test_hed_network_has_the_bsds500_parameter_count():
    with bundle_scripts("diffboost"):
        from scripts.edges import HEDNetwork

    state = HEDNetwork().state_dict()
    assert (len(state), sum(v.numel() for v in state.values())) == (38, S.HED_PARAMS)


# ----------------------------------------------------------------------------------------- (b) CLIP tokenizer
def test_clip_tokenizer_files_are_a_valid_49408_token_bpe_that_clip_tokenizer_loads(tmp_path):
    from transformers import CLIPTokenizer

    folder = S.write_clip_tokenizer(tmp_path / "tokenizer")
    vocab = json.loads((folder / "vocab.json").read_text(encoding="utf-8"))
    lines = (folder / "merges.txt").read_text(encoding="utf-8").splitlines()
    assert lines[0] == "#version: 0.2" and len(lines) - 1 == S.CLIP_NUM_MERGES == 48_894
    assert len(vocab) == S.CLIP_VOCAB_SIZE == 49_408 and sorted(vocab.values()) == list(range(49_408))
    assert (vocab["<|startoftext|>"], vocab["<|endoftext|>"]) == (49406, 49407)
    assert vocab["!"] == 0 and vocab["!</w>"] == 256  # CLIP's byte order, then the </w> forms
    for rank, line in enumerate(lines[1:]):  # every merge joins two earlier tokens into the next new one
        a, b = line.split(" ")
        assert vocab[a + b] == 512 + rank and vocab[a] < vocab[a + b] and vocab[b] < vocab[a + b]
        assert not a.endswith("</w>")

    tok = CLIPTokenizer.from_pretrained(str(folder), local_files_only=True)
    assert len(tok) == 49_408 and tok.get_vocab() == vocab
    assert (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id, tok.model_max_length) == (49406, 49407, 49407, 77)
    prompt = "A computerized tomography of a kidney tumor."
    pieces = tok.convert_ids_to_tokens(tok(prompt).input_ids)
    assert pieces == [
        "<|startoftext|>",
        "a</w>",
        "computerized</w>",
        "tomography</w>",
        "of</w>",
        "a</w>",
        "kidney</w>",
        "tumor</w>",
        ".</w>",
        "<|endoftext|>",
    ]
    decoded = tok.decode(tok(prompt).input_ids, skip_special_tokens=True)
    assert decoded == "a computerized tomography of a kidney tumor ."
    padded = tok(["Kidney, CT,best quality, extremely detailed"], padding="max_length", max_length=77).input_ids
    assert len(padded[0]) == 77 and padded[0][-1] == 49407
    odd = tok("Xyzzy qwertz").input_ids  # unseen words fall apart into known pieces, never an unknown token
    assert len(odd) > 4 and all(i < 49406 for i in odd[1:-1])


# ----------------------------------------------------------------------------------------- (c) BERT tokenizer
def test_bert_vocab_has_bert_cased_layout_and_clinical_sentences_have_no_unk(tmp_path):
    from transformers import AutoTokenizer

    vocab = S.bert_standin_vocab()
    assert len(vocab) == len(set(vocab)) == S.BERT_VOCAB_SIZE == 28_996
    assert [vocab[i] for i in (0, 1, 99, 100, 101, 102, 103)] == [
        "[PAD]",
        "[unused1]",
        "[unused99]",
        "[UNK]",
        "[CLS]",
        "[SEP]",
        "[MASK]",
    ]
    folder = S.write_bert_tokenizer(tmp_path / "bert")
    assert (folder / "vocab.txt").read_text(encoding="utf-8").splitlines() == vocab
    assert json.loads((folder / "tokenizer_config.json").read_text())["do_lower_case"] is False
    tok = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    assert len(tok) == 28_996
    assert (tok.pad_token_id, tok.unk_token_id, tok.cls_token_id, tok.sep_token_id, tok.mask_token_id) == (
        0,
        100,
        101,
        102,
        103,
    )
    for sentence in CLINICAL_SENTENCES:
        ids = tok(sentence).input_ids
        assert tok.unk_token_id not in ids
        assert len(ids) == len(sentence.replace(",", " ,").replace(".", " .").split()) + 2  # one piece per word
    assert tok.convert_ids_to_tokens(tok("The the").input_ids)[1:3] == ["The", "the"]  # cased
    pieces = tok.tokenize("Pneumothorax")
    assert len(pieces) > 1 and all(p.startswith("##") for p in pieces[1:]) and "[UNK]" not in pieces


# ----------------------------------------------------------------------------------------- (d) ADM round trip
def test_monai_to_adm_fuses_qkv_in_the_legacy_head_order():
    torch.manual_seed(0)
    unet = adm_unet(**SMALL_ADM, random_residuals=True)
    adm = S.monai_to_adm_state_dict(unet)
    attn = unet.down_blocks[1].attentions[0].attn  # 64 channels, 4 heads of 16 at 16x16
    qkv = adm["input_blocks.3.1.qkv.weight"]
    ch, heads = 16, int(attn.num_heads)
    assert qkv.shape == (3 * 64, 64, 1) and heads == 4
    for h in range(heads):  # QKVAttentionLegacy: rows of head h are [q_h; k_h; v_h]
        rows = qkv[h * 3 * ch : (h + 1) * 3 * ch, :, 0]
        for j, lin in enumerate((attn.to_q, attn.to_k, attn.to_v)):
            assert torch.equal(rows[j * ch : (j + 1) * ch], lin.weight[h * ch : (h + 1) * ch])
    back = convert_adm_state_dict(adm, unet)
    assert all(torch.equal(back[k], v) for k, v in unet.state_dict().items())


def test_adm_writer_round_trips_through_load_adm_weights(tmp_path):
    path = S.write_adm_standin(tmp_path / "gd", seed=3, config=SMALL_ADM)
    assert path.name == "256x256_diffusion_uncond.pt" and S.standin_complete(path.parent, seed=3)
    state = torch.load(path, map_location="cpu", weights_only=True)
    assert is_adm_state_dict(state) and all(isinstance(v, torch.Tensor) for v in state.values())
    assert "time_embed.0.weight" in state and "out.2.weight" in state
    assert not any(v.ndim > 1 and not v.any() for v in state.values())  # no zero-initialised layers left
    expected = adm_unet(**SMALL_ADM, init_seed=3, random_residuals=True).state_dict()
    fresh = load_adm_weights(adm_unet(**SMALL_ADM, init_seed=99), path)
    assert all(torch.equal(fresh.state_dict()[k], v) for k, v in expected.items())
    again = torch.load(S.write_adm_standin(tmp_path / "gd2", seed=3, config=SMALL_ADM), weights_only=True)
    assert all(torch.equal(again[k], v) for k, v in state.items())  # seeded: same tensors
    other = torch.load(S.write_adm_standin(tmp_path / "gd3", seed=4, config=SMALL_ADM), weights_only=True)
    assert not torch.equal(other["input_blocks.0.0.weight"], state["input_blocks.0.0.weight"])


# ---------------------------------------------------------------------------------------- (e) cDAL round trip
def test_cdal_writer_writes_the_authors_ddp_format_and_the_converter_cli_takes_it(tmp_path):
    path = S.write_cdal_standin(tmp_path / "cdal", seed=1, overrides=[HIPPOCAMPUS], check_converter_cli=True)
    official = torch.load(path, map_location="cpu", weights_only=True)
    assert all(k.startswith(("module.all_modules.", "module.z_transform.")) for k in official)
    with bundle_scripts("cdal"):
        from scripts.convert import convert_official_generator_state_dict
        from scripts.networks import CDALGenerator

        with S._seeded(1):
            net = CDALGenerator(**S.cdal_standin_config([HIPPOCAMPUS]))
        n_modules = len(net.official_module_order)
        new = convert_official_generator_state_dict(CDALGenerator(**S.cdal_standin_config([HIPPOCAMPUS])), official)
    assert {int(k.split(".")[2]) for k in official if ".all_modules." in k} == set(range(n_modules))
    assert torch.equal(official["module.all_modules.0.weight"], net.time_embed[0].weight)
    assert all(torch.equal(new[k], v) for k, v in net.state_dict().items())
    assert "overrides:" in (path.parent / S.STANDIN_MARKER).read_text()


# -------------------------------------------------------------------------------------------- (f) the warning
def test_warn_if_standin_logs_once_per_path_and_detects_only_marked_folders(tmp_path, caplog):
    marked = tmp_path / "marked"
    (marked / "unet").mkdir(parents=True)
    (marked / S.STANDIN_MARKER).write_text("stand-in\n")
    weights = marked / "w.pt"
    weights.write_bytes(b"x")
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "w.pt").write_bytes(b"x")
    with caplog.at_level(logging.WARNING, logger="common.standins"):
        assert S.warn_if_standin(weights, "test weights") is True
        assert S.warn_if_standin(weights, "test weights") is True
        assert S.warn_if_standin(str(weights), "test weights") is True
        assert S.warn_if_standin(marked, "test folder") is True
        assert S.warn_if_standin(marked / "unet", "test subfolder") is True
        assert S.warn_if_standin(plain, "plain folder") is False
        assert S.warn_if_standin(plain / "w.pt", "plain weights") is False
        assert S.warn_if_standin(tmp_path / "missing.pt", "missing") is False
    messages = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(messages) == 3
    assert sum("test weights" in m for m in messages) == 1 and "random-weight STAND-IN" in messages[0]
    assert str(weights) in messages[0] and "meaningless" in messages[0]


# ---------------------------------------------------------------------------------------------------- (g) HED
def test_hed_standin_uses_the_annotator_key_names_and_loads_with_from_file(tmp_path, caplog):
    with bundle_scripts("diffboost"):
        from scripts.edges import HEDNetwork

    path = S.write_hed_standin(tmp_path / "hed", seed=2)
    state = torch.load(path, map_location="cpu", weights_only=True)
    assert path.name == "network-bsds500.pth" and all(k.startswith("module") for k in state)
    assert "moduleVggOne.0.weight" in state and "moduleCombine.0.bias" in state
    with caplog.at_level(logging.WARNING, logger="common.standins"):
        net = HEDNetwork.from_file(path)
    assert any("HED weights" in r.getMessage() and "STAND-IN" in r.getMessage() for r in caplog.records)
    assert torch.equal(net.netVggFiv[-2].weight, state["moduleVggFiv.5.weight"])
    edges = net(torch.rand(1, 3, 32, 32))
    assert edges.shape == (1, 1, 32, 32) and 0 <= float(edges.min()) <= float(edges.max()) <= 1


# ------------------------------------------------------------------------------ small BERT and SD through loaders
def test_bert_writer_folder_loads_through_frozen_text_encoder(tmp_path, caplog):
    from common.text.encoder import FrozenTextEncoder

    small = {**S.bert_standin_config(), **SMALL_TEXT, "num_attention_heads": 2, "intermediate_size": 64}
    folder = S.write_bert_standin(tmp_path / "Bio_ClinicalBERT", seed=0, config=small)
    assert {"config.json", "model.safetensors", "vocab.txt", "tokenizer_config.json", "STANDIN"} <= {
        p.name for p in folder.iterdir()
    }
    assert json.loads((folder / "config.json").read_text())["model_type"] == "bert"
    with caplog.at_level(logging.WARNING, logger="common.standins"):
        encoder = FrozenTextEncoder(name_or_path=folder)
    assert any("text encoder" in r.getMessage() and "STAND-IN" in r.getMessage() for r in caplog.records)
    emb = encoder(list(CLINICAL_SENTENCES[:2]))
    assert emb.tokens.shape[0] == 2 and emb.tokens.shape[2] == 32 and emb.tokens.shape[1] >= 10


def test_sd_writer_folder_loads_through_load_sd_parts_and_make_controlnet(tmp_path, caplog):
    text = {
        **S.sd_text_encoder_config(),
        **SMALL_TEXT,
        "intermediate_size": 37,
        "num_attention_heads": 4,
        "projection_dim": 32,
    }
    folder = S.write_sd_standin(
        tmp_path / "sd", seed=0, unet_config=TINY_SD_UNET, vae_config=TINY_SD_VAE, text_encoder_config=text
    )
    assert json.loads((folder / "model_index.json").read_text()) == S.sd_model_index()
    assert json.loads((folder / "scheduler" / "scheduler_config.json").read_text()) == S.sd_scheduler_config()
    assert (folder / "unet" / "diffusion_pytorch_model.safetensors").is_file()
    assert (folder / "text_encoder" / "model.safetensors").is_file()
    assert S.standin_complete(folder, seed=0) and not S.standin_complete(folder, seed=1)
    with bundle_scripts("diffboost"):
        from scripts.sd_parts import load_sd_parts, make_controlnet

        with caplog.at_level(logging.WARNING, logger="common.standins"):
            parts = load_sd_parts(folder)
        controlnet = make_controlnet(parts.unet)
    assert any("Stable Diffusion" in r.getMessage() and "STAND-IN" in r.getMessage() for r in caplog.records)
    assert parts.vae_scale_factor == 8 and len(parts.tokenizer) == 49_408
    assert parts.noise_scheduler.config.beta_schedule == "scaled_linear" and _count(controlnet) > 0
    ids = parts.tokenizer(["Kidney, CT"], padding="max_length", max_length=77, return_tensors="pt").input_ids
    assert parts.text_encoder(ids).last_hidden_state.shape == (1, 77, 32)


# ------------------------------------------------------------------------------------ driver: skip, force, CLI
def test_make_standins_skips_complete_parts_and_rewrites_incomplete_or_forced_ones(tmp_path):
    lines: list[str] = []
    out = tmp_path / "out"
    paths = S.make_standins(out, parts="hed", log=lines.append)
    hed = out / "hed" / "network-bsds500.pth"
    assert paths == {"hed": hed} and S.standin_complete(hed.parent, seed=0)
    assert any(line.startswith("[hed] done in") for line in lines)
    stamp = hed.stat().st_mtime_ns
    lines.clear()
    assert S.make_standins(out, parts=["hed"], log=lines.append) == {"hed": hed}
    assert hed.stat().st_mtime_ns == stamp and any("skipped" in line for line in lines)
    S.make_standins(out, parts=["hed"], force=True, log=None)
    assert hed.stat().st_mtime_ns != stamp
    stamp = hed.stat().st_mtime_ns
    S.make_standins(out, parts=["hed"], seed=1, log=None)  # another seed is not "complete"
    assert hed.stat().st_mtime_ns != stamp and S.standin_complete(hed.parent, seed=1)
    with open(hed, "ab") as f:  # a damaged file (size differs from the marker's) is not complete
        f.write(b"0")
    assert not S.standin_complete(hed.parent)
    (hed.parent / S.STANDIN_MARKER).unlink()
    assert not S.standin_complete(hed.parent)
    with pytest.raises(ValueError, match="unknown stand-in part"):
        S.make_standins(out, parts=["hed", "gpt"])


def test_cli_rejects_unknown_parts_and_writes_the_chosen_ones(tmp_path, capsys):
    r = subprocess.run(tool_command("make_standins.py", tmp_path, "--parts", "bogus"), capture_output=True, text=True)
    assert r.returncode == 2 and "unknown part" in r.stderr
    from tools import make_standins as cli

    assert cli.main([str(tmp_path / "o"), "--parts", "hed", "--seed", "5"]) == 0
    assert "hed:" in capsys.readouterr().out and S.standin_complete(tmp_path / "o" / "hed", seed=5)
