"""TextDiffSeg bundle: training lowers the loss, reload-identical checkpoints, the prompt selects the structure,
NIfTI geometry is preserved, and bad inputs (2D image, label/image geometry mismatch, missing text) are named.

One tiny model is trained in-process per test module from ``configs/train.json`` + ``configs/demo.json`` with
smaller windows (16^3) and shared by the tests (synthetic MSD-layout kidney data: 0 bg, 1 kidney, 2 tumour).
"""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from common.data.converters import get_converter
from common.data.synthetic import make_msd_like
from common.errors import BadInputError
from common.utils.bundles import REPO_ROOT, bundle_run_paths
from monai.bundle import ConfigParser

REPO = REPO_ROOT
BUNDLE = REPO / "bundles" / "textdiffseg"


TINY = {
    "roi_size": [16, 16, 16],
    "label_ae_channels": [8, 16],
    "image_encoder_channels": [8, 16],
    "image_attention_levels": [False, True],
    "max_epochs": 16,
    "patches_per_volume": 4,
    "learning_rate": 0.003,
    "save_interval": 7,
    "num_samples": 2,
    "sampling_seed": 0,
}


def _parser(configs: list[str], data: dict, **overrides) -> ConfigParser:
    p = ConfigParser()
    p.read_config([str(BUNDLE / "configs" / c) for c in configs])
    p.read_meta(str(BUNDLE / "configs" / "metadata.json"))
    for k, v in {**TINY, **data, **overrides}.items():
        p[k] = v
    p["bundle_root"] = str(BUNDLE)
    p["device"] = "$torch.device('cpu')"
    return p


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("tds_data")
    make_msd_like(root / "raw", n_train=8, n_test=2, shape_range=(24, 28), seed=3)
    datalist = get_converter("msd").convert(root / "raw", root / "msd", seed=0)
    return bundle_run_paths(datalist, root, output="out")


@pytest.fixture(scope="module")
def trained(data) -> dict:
    torch.manual_seed(0)
    p = _parser(["train.json", "demo.json"], data)
    p.get_parsed_content("initialize")  # seed_everything(seed)
    trainer = p.get_parsed_content("train#trainer")
    losses: list[float] = []
    from ignite.engine import Events

    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: losses.append(float(e.state.output[0]["loss"])))
    trainer.run()
    return {"losses": losses, "network": p.get_parsed_content("network"), "parser": p}


def test_training_lowers_the_loss_and_writes_checkpoints(trained, data):
    losses = trained["losses"]
    n = max(5, len(losses) // 5)
    assert np.mean(losses[-n:]) < 0.7 * np.mean(losses[:n]), (losses[:n], losses[-n:])
    assert (Path(data["ckpt_dir"]) / "model.pt").is_file()
    assert sorted(p.name for p in (Path(data["ckpt_dir"]) / "checkpoints").glob("*.pt"))


def test_paper_default_ema_export_writes_the_ema_weights_to_model_pt(tmp_path, data):
    """train.json's default ``final_weights: "ema"`` (paper: EMA weights are the released model): at the end of
    training models/model.pt holds the EMA model's state dict, not the raw network's, and inference loads it.
    (The demo and the shared fixture export ``"model"``.) One case, one patch, one epoch: a single iteration."""
    from common.io.checkpoints import load_network_weights

    defaults = ConfigParser()
    defaults.read_config(str(BUNDLE / "configs" / "train.json"))
    assert defaults["final_weights"] == "ema" and defaults["ema_decay"] == 0.999
    doc = json.loads(Path(data["datalist"]).read_text())
    base = Path(data["datalist"]).parent
    one = {k: (str(base / v) if k in ("image", "label") else v) for k, v in doc["training"][0].items()}
    small = tmp_path / "one_case" / "datalist.json"
    small.parent.mkdir()
    small.write_text(json.dumps({**doc, "training": [one], "validation": [], "test": []}))
    ckpt_dir = tmp_path / "models"
    torch.manual_seed(0)
    p = _parser(
        ["train.json", "demo.json"],
        {**data, "datalist": str(small), "ckpt_dir": str(ckpt_dir)},
        final_weights="ema",
        ema_decay=0.5,
        max_epochs=1,
        warmup_epochs=0,
        patches_per_volume=1,
        resume=False,
    )
    p.get_parsed_content("initialize")
    trainer = p.get_parsed_content("train#trainer")
    init = {k: v.detach().clone() for k, v in p.get_parsed_content("network").named_parameters()}
    trainer.run()
    assert trainer.state.iteration == 1
    ema_state = p.get_parsed_content("ema").ema_model.state_dict()
    raw_state = p.get_parsed_content("network").state_dict()
    saved = torch.load(ckpt_dir / "model.pt", map_location="cpu", weights_only=True)
    assert saved.keys() == ema_state.keys() == raw_state.keys()  # flat state dict (the model zoo's model.pt)
    assert all(torch.equal(saved[k], ema_state[k]) for k in ema_state)
    # after one step (no lr warm-up) with decay 0.5 the EMA is halfway between init and the trained weights
    assert any(not torch.equal(ema_state[k], raw_state[k]) for k in init)
    assert all(torch.allclose(ema_state[k], 0.5 * init[k] + 0.5 * raw_state[k], atol=1e-6) for k in init)
    net = _parser(["inference.json", "demo.json"], data).get_parsed_content("network_def")
    load_network_weights(net, ckpt_dir / "model.pt")
    assert all(torch.equal(net.state_dict()[k], ema_state[k]) for k in ema_state)


def test_reloaded_checkpoint_is_identical(trained, data):
    from common.io.checkpoints import load_network_weights

    p = _parser(["inference.json", "demo.json"], data)
    net = p.get_parsed_content("network_def")
    load_network_weights(net, Path(data["ckpt_dir"]) / "model.pt")
    ref = trained["network"].state_dict()
    got = net.state_dict()
    assert ref.keys() == got.keys()
    assert all(torch.equal(ref[k], got[k]) for k in ref)
    inferer = p.get_parsed_content("inferer")
    x = torch.rand(1, 1, 20, 18, 16)
    with torch.no_grad():
        a = inferer(x, trained["network"].eval())
        b = inferer(x, net.eval())
    assert torch.equal(a, b)


def test_prompt_selects_the_structure(trained, data):
    """Class-prompt model: the kidney prompt segments the kidney (incl. tumour), the tumour prompt much less."""
    p = _parser(["inference.json", "demo.json"], data)
    pre = p.get_parsed_content("preprocessing")
    conditioner = p.get_parsed_content("conditioner")
    sampler = p.get_parsed_content("sampler")
    net = trained["network"].eval()
    prompts = p.get_parsed_content("class_prompts")
    kid_fg, tum_fg = [], []
    dl = json.loads(Path(data["datalist"]).read_text())
    base = Path(data["datalist"]).parent
    for case in dl["training"][:2] + dl["test"]:
        d = pre({"image": str(base / case["image"]), "case_id": case["case_id"]})
        outs = []
        with torch.no_grad():
            for prompt in prompts:
                ctx, mask = conditioner.encode_sentences([[prompt["text"]]])
                outs.append(sampler(d["image"][None], net, context=ctx, context_mask=mask)[0, 1])
        assert (outs[0] - outs[1]).abs().max() > 0.5  # the text changes the output
        kid_fg.append(int((outs[0] > 0.5).sum()))
        tum_fg.append(int((outs[1] > 0.5).sum()))
    assert sum(kid_fg) > 100 and sum(kid_fg) > 2 * sum(tum_fg), (kid_fg, tum_fg)


def test_typed_prompt_segments_only_its_structure(trained, data):
    """MONAI Label's ``text`` option (``displayable_configs#text`` -> the inferer's ``prompt``): in class-prompt mode
    a typed class prompt fills only its own channel; it equals that prompt's pass of the full inferer's output
    where no later prompt overrides it; a prompt the model did not learn is a named error."""
    from scripts.text import TextGuidedInferer

    p = _parser(["inference.json", "demo.json"], data)
    prompts = p.get_parsed_content("class_prompts")
    pre = p.get_parsed_content("preprocessing")
    case = json.loads(Path(data["datalist"]).read_text())["test"][0]
    image = pre({"image": str(Path(data["datalist"]).parent / case["image"]), "case_id": case["case_id"]})["image"]
    net = trained["network"].eval()
    p["displayable_configs"].update({"text": "  " + prompts[0]["text"].upper() + " "})  # what MONAI Label does
    p.parse()
    typed = p.get_parsed_content("inferer")
    assert isinstance(typed, TextGuidedInferer) and typed.prompt == prompts[0]["text"].upper()
    full = p.get_parsed_content("sampler")
    full_inferer = TextGuidedInferer(full, p.get_parsed_content("conditioner"), prompts)
    with torch.no_grad():
        out = typed(image[None], net)
        ref = full_inferer(image[None], net)
    assert out.shape == ref.shape == (1, len(prompts) + 1, *image.shape[1:])
    assert torch.allclose(out.sum(1), torch.ones_like(out[:, 0]), atol=1e-5)
    assert float(out[:, 2].abs().max()) == 0.0 and float(out[:, 1].max()) > 0.5
    # the full output paints prompt 0 first and prompt 1 over it: p0_full = p0 * (1 - p1)
    assert torch.allclose(ref[:, 1], out[:, 1] * (1 - ref[:, 2]), atol=1e-5)
    p["displayable_configs"].update({"text": "A computerized tomography of a spleen."})
    p.parse()
    with pytest.raises(RuntimeError) as err:  # MONAI's instantiate wraps the cause
        p.get_parsed_content("inferer")
    assert isinstance(err.value.__cause__, BadInputError)
    assert "spleen" in str(err.value.__cause__) and "not one of this model's class prompts" in str(err.value.__cause__)


def test_inference_writes_nifti_with_input_geometry_and_uncertainty(trained, data):
    out = Path(data["output_dir"]) / "infer"
    p = _parser(["inference.json", "demo.json"], data, output_dir=str(out))
    p.get_parsed_content("initialize")  # loads models/model.pt
    p.get_parsed_content("evaluator").run()
    dl = json.loads(Path(data["datalist"]).read_text())
    base = Path(data["datalist"]).parent
    for case in dl["test"]:
        img = nib.load(str(base / case["image"]))
        stem = Path(case["image"]).name.replace(".nii.gz", "")
        seg = nib.load(str(out / f"{stem}_seg.nii.gz"))
        unc = nib.load(str(out / f"{stem}_uncertainty.nii.gz"))
        assert seg.shape == img.shape and unc.shape == img.shape
        assert np.allclose(seg.affine, img.affine, atol=1e-4) and np.allclose(unc.affine, img.affine, atol=1e-4)
        values = set(np.unique(np.asarray(seg.dataobj)).tolist())
        assert values <= {0, 1, 2}
        u = np.asarray(unc.dataobj)
        # float32, unscaled: sum over the foreground classes of the probability variances (bundles/README.md)
        assert u.dtype == np.float32 and np.isfinite(u).all()
        assert float(u.min()) >= 0.0 and float(u.max()) <= 0.25 * (p.get_parsed_content("output_classes") - 1) + 1e-6


def _bad_input(fn, *args) -> str:
    """The BadInputError message raised by ``fn(*args)`` (MONAI's Compose wraps it in a RuntimeError chain)."""
    from common.errors import find_bad_input_error

    with pytest.raises((BadInputError, RuntimeError)) as info:
        fn(*args)
    err = find_bad_input_error(info.value)
    assert err is not None, f"no BadInputError in {info.value!r}"
    return str(err)


def test_bad_inputs_have_clear_messages(tmp_path, data):
    base = Path(data["datalist"]).parent
    dl = json.loads(Path(data["datalist"]).read_text())
    case = dl["training"][0]
    img = nib.load(str(base / case["image"]))
    # 2D image given
    flat = tmp_path / "flat.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((24, 24), dtype=np.int16), np.eye(4)), str(flat))
    p = _parser(["inference.json", "demo.json"], data)
    pre = p.get_parsed_content("preprocessing")
    msg = _bad_input(pre, {"image": str(flat), "case_id": "flat", "text": "x"})
    assert "flat.nii.gz" in msg and "expected a 3D volume" in msg
    net = p.get_parsed_content("network_def")
    with pytest.raises(BadInputError, match="a 2D image was given"):
        p.get_parsed_content("inferer")(torch.rand(1, 1, 24, 24), net)
    # label on another grid than its image
    shifted = tmp_path / "label_shifted.nii.gz"
    aff = img.affine.copy()
    aff[:3, 3] += 7.0
    nib.save(nib.Nifti1Image(np.asarray(nib.load(str(base / case["label"])).dataobj), aff), str(shifted))
    pt = _parser(["train.json", "demo.json"], data)
    tpre = pt.get_parsed_content("train#preprocessing")
    msg = _bad_input(tpre, {"image": str(base / case["image"]), "label": str(shifted), "case_id": "c", "text": "t"})
    assert "label_shifted.nii.gz" in msg and Path(case["image"]).name in msg
    # missing text when the case text is used and no default_text is set
    pu = _parser(["inference.json", "demo.json"], data, use_case_text=True, default_text=None, class_prompts=[])
    pre_u = pu.get_parsed_content("preprocessing")
    msg = _bad_input(pre_u, {"image": str(base / case["image"]), "case_id": "nt"})
    assert "case nt: no report text for this case (got None)" in msg and "set 'default_text'" in msg
    inferer = pu.get_parsed_content("inferer")
    with pytest.raises(BadInputError, match=r"image\[0\]: no report text for this case \(got None\).*'default_text'"):
        inferer(torch.rand(1, 1, 16, 16, 16), torch.nn.Identity())


def test_case_text_resolution_is_the_shared_one():
    """CaseTextd and TextConditioner resolve texts with common.text.prompts.resolve_texts: same rule, same messages."""
    from common.text.prompts import resolve_texts
    from scripts.text import CaseTextd, TextConditioner

    conditioner = TextConditioner("not-loaded-for-texts_for", use_case_text=True)  # encoder loads on first encode
    transform = CaseTextd("text", use_case_text=True)
    for missing in (None, "", "   ", 7):
        with pytest.raises(BadInputError) as shared:
            resolve_texts([missing], 1, None, ["k9"])
        with pytest.raises(BadInputError) as from_conditioner:
            conditioner.texts_for([missing], 1, case_ids=["k9"])
        with pytest.raises(BadInputError) as from_transform:
            transform({"case_id": "k9", "text": missing})
        assert str(from_conditioner.value) == str(from_transform.value) == str(shared.value)
        assert str(shared.value).startswith(f"case k9: no report text for this case (got {missing!r})")
    with pytest.raises(BadInputError, match=r"case k9: no report text for this case \(got None\)"):
        transform({"case_id": "k9"})  # no 'text' entry at all
    with pytest.raises(BadInputError, match="text: 2 texts for a batch of 3 images"):
        conditioner.texts_for(["a", "b"], 3)
    fallback = TextConditioner("not-loaded", use_case_text=True, default_text="CT of the abdomen.")
    assert fallback.texts_for(["left kidney", None], 2) == [["left kidney"], ["CT of the abdomen."]]
    assert CaseTextd("text", use_case_text=True, default_text="d")({"case_id": "x"})["text"] == "d"
    assert CaseTextd("text", use_case_text=True)({"case_id": "x", "text": "real"})["text"] == "real"
    assert CaseTextd("text", use_case_text=False)({"case_id": "x", "text": "real"})["text"] == ""
    prompts = TextConditioner("not-loaded", dataset_prompts=["p1", "p2"])
    assert prompts.texts_for(None, 2) == [["p1", "p2"], ["p1", "p2"]]


def test_dataset_prompts_and_per_case_text(trained):
    from scripts.text import TextConditioner
    from scripts.training import TextBatch

    encoder = trained["parser"].get_parsed_content("text_encoder")
    prompts = ["A computerized tomography of a liver.", "A computerized tomography of a liver tumor."]
    fixed = TextConditioner(encoder, dataset_prompts=prompts)
    tokens, mask = fixed(["ignored report"], 1)
    single = [int(encoder([p]).mask.sum()) for p in prompts]
    assert int(mask.sum()) == sum(single) and tokens.shape[-1] == encoder.hidden_size  # sentences concatenated
    per_case = TextConditioner(encoder, dataset_prompts=prompts, use_case_text=True)
    a, ma = per_case(["CT of the abdomen showing the left kidney."], 1)
    b, mb = per_case(["CT of the abdomen showing the right kidney."], 1)
    assert a.shape == b.shape and not torch.allclose(a, b)
    with pytest.raises(BadInputError, match=r"case c7: no report text for this case \(got None\).*'default_text'"):
        per_case([None], 1, case_ids=["c7"])
    fallback = TextConditioner(encoder, use_case_text=True, default_text="CT of the abdomen.")
    assert fallback.texts_for([""], 1) == [["CT of the abdomen."]]
    # the evaluator's prepare_batch hands the datalist texts to the inferer
    image = torch.zeros(1, 1, 4, 4, 4)
    _, _, args, kwargs = TextBatch()({"image": image, "text": ["a report"], "case_id": ["k1"]}, "cpu")
    assert args == () and kwargs["text"] == ["a report"] and kwargs["case_ids"] == ["k1"]


def test_postprocessing_splits_uncertainty_only_when_present(data):
    """The evaluator's inferer appends the uncertainty channel; MONAI Label calls ``inferer`` (no extra channel) and
    reuses the same postprocessing, which must then keep every class."""
    p = _parser(["inference.json", "demo.json"], data)
    post = p.get_parsed_content("postprocessing")
    split = post.transforms[:3]  # CopyItemsd + the two Lambdad
    n = p.get_parsed_content("output_classes")
    with_unc = {"pred": torch.rand(n + 1, 4, 4, 4)}
    for t in split:
        with_unc = t(with_unc)
    assert with_unc["pred"].shape[0] == n and with_unc["uncertainty"].shape[0] == 1
    plain = {"pred": torch.rand(n, 4, 4, 4)}
    for t in split:
        plain = t(plain)
    assert plain["pred"].shape[0] == n and torch.count_nonzero(plain["uncertainty"]) == 0


def test_typed_prompt_replaces_the_dataset_prompts(tiny_bert_dir):
    """Dataset-prompt mode (the paper's): a typed prompt conditions every image instead of the dataset prompts,
    also when the evaluator passes (empty) case texts; with use_case_text the case text wins."""
    from common.text.encoder import FrozenTextEncoder
    from scripts.text import TextConditioner, TextGuidedInferer

    seen = []

    def sampler(inputs, network, context, context_mask, **kw):
        seen.append((context.clone(), context_mask.clone()))
        return torch.zeros(inputs.shape[0], 3, *inputs.shape[2:])

    enc = FrozenTextEncoder(str(tiny_bert_dir), truncation=False, padding="longest")
    dataset = TextConditioner(enc, dataset_prompts=["computerized tomography of a liver", "liver tumor"])
    image = torch.zeros(2, 1, 4, 4, 4)
    TextGuidedInferer(sampler, dataset)(image, None)
    TextGuidedInferer(sampler, dataset, prompt="the liver")(image, None, text=["", ""])
    TextGuidedInferer(sampler, dataset, prompt="  ")(image, None)  # blank: no prompt
    ref_prompt, _ = dataset.encode_sentences([["the liver"]] * 2)
    ref_dataset, _ = dataset.encode_sentences([dataset.dataset_prompts] * 2)
    assert torch.equal(seen[0][0], ref_dataset) and torch.equal(seen[2][0], ref_dataset)
    assert torch.equal(seen[1][0], ref_prompt) and not torch.equal(seen[1][0][:, : ref_dataset.shape[1]], ref_dataset)
    per_case = TextConditioner(enc, use_case_text=True)
    TextGuidedInferer(sampler, per_case, prompt="the liver")(image, None, text=["liver tumor", "a cyst"])
    assert torch.equal(seen[3][0], ref_prompt)  # a typed prompt replaces the case texts too (never ignored)
    TextGuidedInferer(sampler, per_case)(image, None, text=["liver tumor", "a cyst"])
    assert torch.equal(seen[4][0], per_case.encode_sentences([["liver tumor"], ["a cyst"]])[0])


def test_text_settings_that_would_be_ignored_are_refused_or_said(tiny_bert_dir, caplog):
    """Issue 13 defect 11: use_case_text with class prompts is an error (the case texts would be ignored); an empty
    typed prompt says what is used instead; a too long case text names its case, not ``text[0]``."""
    import logging

    from common.errors import BadInputError
    from common.text.encoder import FrozenTextEncoder
    from scripts.text import TextConditioner, TextGuidedInferer
    from scripts.training import TrainingForward

    enc = FrozenTextEncoder(str(tiny_bert_dir), truncation=False, padding="longest")
    per_case = TextConditioner(enc, use_case_text=True)
    prompts = [{"text": "a kidney", "labels": [1]}]
    for build in (lambda: TextGuidedInferer(None, per_case, prompts), lambda: TrainingForward(per_case, True, prompts)):
        with pytest.raises(BadInputError, match="^use_case_text: is true but class_prompts are set"):
            build()
    with caplog.at_level(logging.WARNING):
        TextGuidedInferer(None, TextConditioner(enc, dataset_prompts=["a liver"]), prompt="")
    assert "the typed prompt is empty: the dataset prompts are used" in caplog.text
    long_text = " ".join(["kidney"] * 80)  # the tiny BERT takes 64 positions
    with pytest.raises(BadInputError) as info:
        per_case(["a cyst", long_text], 2, case_ids=["case_00001", "case_00002"])
    assert str(info.value).startswith("case 'case_00002' text: ") and "text[" not in str(info.value)
