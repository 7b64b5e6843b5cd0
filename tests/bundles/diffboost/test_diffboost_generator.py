"""DiffBoost generator: tiny offline SD parts, ControlNet fine-tune step, conditioned sampling, resumable synthesis."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from common.errors import BadInputError
from common.utils.bundles import bundle_scripts
from monai.transforms import Compose, LoadImaged, Resized
from PIL import Image

SIZE = 32


with bundle_scripts("diffboost"):
    from scripts import controlnet_training as cn_training
    from scripts import sd_parts as sd_parts_mod
    from scripts import synthesis, transforms
    from scripts.edges import EdgeMapd


@pytest.fixture(scope="module")
def tiny_sd(tmp_path_factory: pytest.TempPathFactory):
    folder = tmp_path_factory.mktemp("tiny_sd")
    sd_parts_mod.build_tiny_sd_parts(folder, seed=0)
    return sd_parts_mod.load_sd_parts(str(folder))


@pytest.fixture(scope="module")
def trained_like_controlnet(tiny_sd):
    """A ControlNet whose zero convolutions are no longer zero (as after fine-tuning), so the hint matters."""
    torch.manual_seed(0)
    cn = sd_parts_mod.make_controlnet(tiny_sd.unet, (16, 32))
    with torch.no_grad():
        for block in [*cn.controlnet_down_blocks, cn.controlnet_mid_block, cn.controlnet_cond_embedding.conv_out]:
            block.weight.normal_(0.0, 0.2)
    return cn.eval()


def test_tiny_parts_load_offline_and_missing_parts_are_named(tmp_path: Path, tiny_sd, monkeypatch) -> None:
    assert tiny_sd.vae_scale_factor == 2 and tiny_sd.tokenizer.model_max_length == 77
    assert not any(p.requires_grad for m in (tiny_sd.vae, tiny_sd.unet, tiny_sd.text_encoder) for p in m.parameters())
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(BadInputError) as err:
        sd_parts_mod.load_sd_parts("no-such-org/no-such-sd-model")
    msg = str(err.value)
    assert (
        msg.startswith("no-such-org/no-such-sd-model: Stable Diffusion parts not available offline")
        and "sd_model" in msg
    )
    partial = tmp_path / "partial_sd"
    (partial / "vae").mkdir(parents=True)
    with pytest.raises(
        BadInputError, match=r"lacks the subfolder\(s\) \['unet', 'text_encoder', 'tokenizer', 'scheduler'\]"
    ):
        sd_parts_mod.load_sd_parts(str(partial))


def test_controlnet_step_trains_only_the_controlnet_starting_from_zero_residuals(tiny_sd) -> None:
    torch.manual_seed(0)
    cn = sd_parts_mod.make_controlnet(tiny_sd.unet, (16, 32))
    step = cn_training.ControlNetIteration(tiny_sd)
    batch = {
        "image": torch.rand(2, 1, SIZE, SIZE) * 2 - 1,
        "edge": torch.rand(2, 1, SIZE, SIZE),
        "text": ["Spleen, CT"] * 2,
    }
    z = torch.randn(2, 4, SIZE // 2, SIZE // 2)
    ctx = step.prompts(batch["text"], torch.device("cpu"))
    assert ctx.shape == (2, 77, 32)
    with torch.no_grad():
        down, mid = cn(
            z,
            torch.tensor([10, 500]),
            encoder_hidden_states=ctx,
            controlnet_cond=batch["edge"].expand(-1, 3, -1, -1),
            return_dict=False,
        )
    assert all(float(d.abs().max()) == 0 for d in down) and float(mid.abs().max()) == 0  # zero convs at init
    loss = step.loss(cn, batch, torch.device("cpu"))
    loss.backward()
    assert torch.isfinite(loss) and loss.item() > 0
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in cn.parameters())
    assert all(p.grad is None for m in (tiny_sd.unet, tiny_sd.vae, tiny_sd.text_encoder) for p in m.parameters())
    with pytest.raises(BadInputError, match=r"image\[0\]: no report text for this case"):
        step.loss(cn, {"image": batch["image"], "edge": batch["edge"]}, torch.device("cpu"))


def test_prompt_and_edge_map_change_the_generated_image(tiny_sd, trained_like_controlnet) -> None:
    sampler = synthesis.ControlNetSampler(tiny_sd, trained_like_controlnet, num_inference_steps=2)
    edge = torch.zeros(1, SIZE, SIZE)
    edge[:, 8:24, 8] = 1.0
    other_edge = torch.zeros(1, SIZE, SIZE)
    other_edge[:, 20, 4:28] = 1.0
    a = sampler.sample(edge, "Spleen, CT", [11], [0])
    assert a.shape == (1, 1, SIZE, SIZE) and float(a.min()) >= -1 and float(a.max()) <= 1
    assert torch.equal(a, sampler.sample(edge, "Spleen, CT", [11], [0]))  # same seed/prompt/edge: same image
    d_edge = (a - sampler.sample(other_edge, "Spleen, CT", [11], [0])).abs().mean()
    d_prompt = (a - sampler.sample(edge, "Prostate, MRI", [11], [0])).abs().mean()
    d_seed = (a - sampler.sample(edge, "Spleen, CT", [12], [0])).abs().mean()
    assert d_edge > 1e-4 and d_prompt > 1e-4 and d_seed > 1e-2  # (measured: 8e-4, 1.5e-3, 0.17)
    c1, n1 = sampler.embeddings("Spleen, CT", [0, 1])
    assert c1.shape == n1.shape == (2, 77, 32) and not torch.allclose(c1[0], c1[1])  # per-sample augmentation text
    with pytest.raises(BadInputError, match="multiple of the VAE factor"):
        sampler.sample(torch.zeros(1, 31, 31), "x", [0], [0])


def _write_case(folder: Path, name: str, empty: bool = False) -> dict:
    rng = np.random.default_rng(len(name))
    img = (rng.random((SIZE, SIZE)) * 255).astype(np.uint8)
    lbl = np.zeros((SIZE, SIZE), np.uint8)
    if not empty:
        lbl[10:20, 12:22] = 1
    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(img).save(folder / f"{name}.png")
    Image.fromarray(lbl).save(folder / f"{name}_label.png")
    return {
        "case_id": name,
        "image": str(folder / f"{name}.png"),
        "label": str(folder / f"{name}_label.png"),
        "text": "Breast, Ultrasound",
    }


def _preprocessing() -> Compose:
    return Compose(
        [
            LoadImaged(keys=["image", "label"], ensure_channel_first=True),
            Resized(keys=["image", "label"], spatial_size=(SIZE, SIZE), mode=("bilinear", "nearest")),
            transforms.PercentileScaled(keys="image"),
            EdgeMapd(keys=("image", "label")),
        ]
    )


class CountingSampler:
    def __init__(self, sampler) -> None:
        self.sampler, self.calls = sampler, []

    def __getattr__(self, name):
        return getattr(self.sampler, name)

    def sample(self, edge, prompt, seeds, indices):
        self.calls.append(list(indices))
        return self.sampler.sample(edge, prompt, seeds, indices)


def test_synthesis_resumes_without_redoing_finished_images_and_records_provenance(
    tmp_path: Path, tiny_sd, trained_like_controlnet, monkeypatch
) -> None:
    data = [_write_case(tmp_path / "data", "case_a"), _write_case(tmp_path / "data", "case_b")]
    real = synthesis.ControlNetSampler(tiny_sd, trained_like_controlnet, num_inference_steps=2)
    monkeypatch.setattr(synthesis, "ControlNetSampler", CountingSampler)  # isinstance checks accept the wrapper
    counting = CountingSampler(real)
    out = tmp_path / "syn"
    syn = synthesis.Synthesizer(counting, data, _preprocessing(), out, num_per_slice=2, batch_size=2, seed=5)
    assert syn.run() == {"cases": 2, "generated": 4, "skipped": 0}
    assert counting.calls == [[0, 1], [0, 1]]
    manifest = json.loads((out / "manifest.json").read_text())
    rec = {r["file"]: r for r in manifest["images"]}
    r = rec["case_b/case_b_syn001.nii"]
    assert r["case_id"] == "case_b" and r["prompt"] == "Breast, Ultrasound" and r["index"] == 1
    assert r["seed"] == synthesis.sample_seed(5, "case_b", 1) and r["augmentation_text"] == "High resolution"
    assert r["source_image"].endswith("case_b.png") and r["sampler"]["guidance_scale"] == 9.0
    assert (out / "case_a" / "case_a_edge.nii").is_file()
    before = np.asarray(nib.load(str(out / "case_b" / "case_b_syn001.nii")).dataobj)
    assert before.shape == (SIZE, SIZE) and before.min() >= -1 and before.max() <= 1
    # a finished run does nothing; a run killed after case_a (one image of case_b missing) redoes only that image
    counting.calls.clear()
    assert synthesis.Synthesizer(counting, data, _preprocessing(), out, num_per_slice=2, seed=5).run()["generated"] == 0
    assert counting.calls == []
    (out / "case_b" / "case_b_syn001.nii").unlink()
    resumed = synthesis.Synthesizer(counting, data, _preprocessing(), out, num_per_slice=2, seed=5)
    assert resumed.run() == {"cases": 2, "generated": 1, "skipped": 3} and counting.calls == [[1]]
    after = np.asarray(nib.load(str(out / "case_b" / "case_b_syn001.nii")).dataobj)
    assert np.allclose(before, after, atol=1e-5)  # per-image seeds: the same image as the uninterrupted run
    assert len(json.loads((out / "manifest.json").read_text())["images"]) == 4
    # attach_synthetic reads the manifest for training
    assert [len(e["synthetic"]) for e in transforms.attach_synthetic(data, out)] == [2, 2]


def test_synthesis_rejects_an_empty_label_with_the_case_named(tmp_path: Path, tiny_sd, trained_like_controlnet) -> None:
    data = [_write_case(tmp_path / "data", "empty_case", empty=True)]
    sampler = synthesis.ControlNetSampler(tiny_sd, trained_like_controlnet, num_inference_steps=1)
    with pytest.raises(BadInputError, match="case empty_case: label .* has no foreground"):
        synthesis.Synthesizer(sampler, data, _preprocessing(), tmp_path / "syn", num_per_slice=1).run()
    with pytest.raises(BadInputError, match="num_synthetic: must be >= 1"):
        synthesis.Synthesizer(sampler, data, _preprocessing(), tmp_path / "syn", num_per_slice=0)


def test_controlnet_prompts_use_resolve_texts_naming_the_case_and_default_text(tiny_sd) -> None:
    step = cn_training.ControlNetIteration(tiny_sd)
    assert step._texts({"text": ["Spleen, CT", "Breast, Ultrasound"], "case_id": ["a", "b"]}, 2) == [
        "Spleen, CT",
        "Breast, Ultrasound",
    ]
    with pytest.raises(BadInputError, match=r"^case b: no report text for this case \(got ''\)"):
        step._texts({"text": ["Spleen, CT", ""], "case_id": ["a", "b"]}, 2)
    with pytest.raises(BadInputError, match=r"^case a: no report text"):
        step._texts({"case_id": ["a", "b"]}, 2)
    filled = cn_training.ControlNetIteration(tiny_sd, default_text="Spleen, CT")
    assert filled._texts({"text": [None, "Prostate, MRI"], "case_id": ["a", "b"]}, 2) == ["Spleen, CT", "Prostate, MRI"]
    assert filled._texts({}, 3) == ["Spleen, CT"] * 3


def test_synthesis_without_text_and_default_names_the_case(tmp_path: Path, tiny_sd, trained_like_controlnet) -> None:
    entry = {**_write_case(tmp_path / "data", "mute_case"), "text": ""}
    sampler = synthesis.ControlNetSampler(tiny_sd, trained_like_controlnet, num_inference_steps=1)
    with pytest.raises(BadInputError, match="^case mute_case: no report text"):
        synthesis.Synthesizer(sampler, [entry], _preprocessing(), tmp_path / "syn", num_per_slice=1).run()
    syn = synthesis.Synthesizer(
        sampler, [entry], _preprocessing(), tmp_path / "syn2", num_per_slice=1, default_text="Breast, Ultrasound"
    )
    assert syn.run()["generated"] == 1
    assert json.loads((tmp_path / "syn2" / "manifest.json").read_text())["images"][0]["prompt"] == "Breast, Ultrasound"


def test_synthesis_resume_refuses_images_made_with_other_settings(
    tmp_path: Path, tiny_sd, trained_like_controlnet
) -> None:
    data = [_write_case(tmp_path / "data", "case_a")]
    weights = tmp_path / "controlnet.pt"
    weights.write_bytes(b"weights v1")
    out = tmp_path / "syn"
    sampler = synthesis.ControlNetSampler(tiny_sd, trained_like_controlnet, num_inference_steps=1)

    def make(sampler=sampler, seed=5, data=data, **kw):
        kw = {"num_per_slice": 1, "weights_files": {"controlnet_weights": weights, "hed_weights": None}, **kw}
        return synthesis.Synthesizer(sampler, data, _preprocessing(), out, seed=seed, **kw)

    assert make(provenance={"image_size": SIZE}).run()["generated"] == 1
    doc = json.loads((out / "manifest.json").read_text())
    assert doc["header"]["weights"]["controlnet_weights"]["sha256"] == hashlib.sha256(b"weights v1").hexdigest()
    assert doc["header"]["weights"]["hed_weights"] is None and doc["header"]["sampler"]["num_inference_steps"] == 1
    assert doc["header"]["seed"] == 5 and doc["header"]["num_per_slice"] == 1
    # identical settings (the weights file moved: same content) -> resumes, nothing redone
    moved = tmp_path / "moved.pt"
    moved.write_bytes(b"weights v1")
    same = make(weights_files={"controlnet_weights": moved, "hed_weights": None}, provenance={"image_size": SIZE})
    assert same.run() == {"cases": 1, "generated": 0, "skipped": 1}
    manifest = str(out / "manifest.json")
    weights.write_bytes(b"weights v2")  # a newer ControlNet
    with pytest.raises(BadInputError) as err:
        make(provenance={"image_size": SIZE}).run()
    msg = str(err.value)
    assert msg.startswith(f"{manifest}: made with other settings (weights.controlnet_weights.s")
    assert msg.endswith("delete the folder or set another synthetic_dir")
    weights.write_bytes(b"weights v1")
    with pytest.raises(BadInputError, match=r"made with other settings \(seed: was 5, now 6\)"):
        make(seed=6, provenance={"image_size": SIZE}).run()
    with pytest.raises(BadInputError, match=r"provenance.image_size: was 32, now 64"):
        make(provenance={"image_size": 64}).run()
    with pytest.raises(BadInputError, match=r"num_per_slice: was 1, now 2"):
        make(num_per_slice=2, provenance={"image_size": SIZE}).run()
    two_steps = synthesis.ControlNetSampler(tiny_sd, trained_like_controlnet, num_inference_steps=2, guidance_scale=3)
    with pytest.raises(BadInputError, match=r"sampler.guidance_scale: was 9.0, now 3.0; sampler.num_inference_steps"):
        make(sampler=two_steps, provenance={"image_size": SIZE}).run()
    with pytest.raises(BadInputError, match=r"case case_a: prompt was 'Breast, Ultrasound', now 'Spleen, CT'"):
        make(data=[{**data[0], "text": "Spleen, CT"}], provenance={"image_size": SIZE}).run()
    assert len(list(out.glob("*/*_syn*.nii"))) == 1  # nothing was overwritten or added
    # a corrupt manifest is an error naming it (not rebuilt with the current settings)
    (out / "manifest.json").write_text("{not json")
    with pytest.raises(BadInputError, match=rf"^{manifest}: unreadable synthesis manifest \(JSONDecodeError"):
        make(provenance={"image_size": SIZE}).run()
    # images without a manifest: their settings are unknown
    (out / "manifest.json").unlink()
    with pytest.raises(BadInputError, match=r"holds 1 synthetic image\(s\) \(e.g. case_a_syn000.nii\) but no manifest"):
        make(provenance={"image_size": SIZE}).run()
