"""The shipped paper-scale configs build the papers' networks: parameter counts from the configs as shipped.

Fast: the networks are instantiated on torch's ``meta`` device (shapes only, no memory, no forward pass). The
numbers are the official ones (TextDiff paper Table 1: 9.68 M head; ADM 256x256 uncond 552,814,086; cDAL generator
and discriminator counted from the authors' code) or counted from the architectures stated in each model card
(TextDiffSeg: label encoder + decoder, image encoder, fusion, denoiser; DiffBoost: MONAI AttentionUnet, and the
ControlNet of SD v1.5). The full runs at paper size are ``tests/tools/test_paper_scale_check.py`` (opt-in).
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from common.utils.bundles import REPO_ROOT, bundle_scripts

REPO = REPO_ROOT


def build_on_meta(
    bundle: str, files: list[str], ident: str, overrides: dict[str, Any] | None = None, cpu_first: tuple[str, ...] = ()
) -> torch.nn.Module:
    """``ident`` of the merged shipped configs, instantiated on the meta device (``cpu_first`` ids on CPU before)."""
    from monai.bundle import ConfigParser

    has_scripts = (REPO / "bundles" / bundle / "scripts").is_dir()  # TextDiff's code is all in common/
    with bundle_scripts(bundle) if has_scripts else contextlib.nullcontext():
        parser = ConfigParser(
            ConfigParser.load_config_files([str(REPO / "bundles" / bundle / "configs" / f) for f in files])
        )
        parser["bundle_root"] = str(REPO / "bundles" / bundle)
        parser["device"] = "$torch.device('cpu')"
        for k, v in (overrides or {}).items():
            parser[k] = v
        for cid in cpu_first:
            parser.get_parsed_content(cid)
        with torch.device("meta"):
            return parser.get_parsed_content(ident)


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


#: the shipped configs that build each network: training and inference must build the same one
CONFIGS = ("train.json", "inference.json")


@pytest.mark.parametrize("config", CONFIGS)
@pytest.mark.parametrize(
    "overlay, expected",
    [([], 9_683_234), (["qata.json"], 10_862_882)],  # paper Table 1 (9.68 M); QaTa blocks 4, 6, 8, 12
)
def test_textdiff_head_paper_size(config: str, overlay: list[str], expected: int) -> None:
    head = build_on_meta("textdiff", [config, *overlay], "network_def")
    assert n_params(head) == expected


@pytest.mark.parametrize("config", CONFIGS)
def test_textdiff_adm_unet_paper_size(config: str) -> None:
    """The frozen ImageNet ADM UNet of TextDiff's configs (checkpoint loading switched off: shapes only)."""
    unet = build_on_meta("textdiff", [config], "diffusion_unet_def", {"adm_checkpoint": None})
    assert n_params(unet) == 552_814_086
    assert all(not p.requires_grad for p in unet.parameters())


@pytest.mark.parametrize(
    "overlay, generator, discriminator",
    [
        ([], 41_666_753, 27_736_705),  # MoNuSeg: authors' NCSN++ generator, large discriminator
        (["cxr.json"], 8_843_777, 27_736_705),
        (["hippocampus.json"], 3_682_275, 12_462_849),  # 3D; small discriminator
    ],
)
def test_cdal_networks_paper_size(overlay: list[str], generator: int, discriminator: int) -> None:
    assert n_params(build_on_meta("cdal", ["train.json", *overlay], "discriminator_def")) == discriminator
    for config in CONFIGS:
        assert n_params(build_on_meta("cdal", [config, *overlay], "network_def")) == generator


# TextDiffSeg (model card, architecture): image encoder 627,089; image-latent norm 2; cross-modal fusion 98,433;
# denoiser 2,610,641; label autoencoder 1,395,475 + 865 per extra class (its first and last convolutions)
@pytest.mark.parametrize(
    "overlay, n_classes", [("kits21.json", 4), ("lits.json", 3), ("pancreas.json", 2), ("colon.json", 2)]
)
def test_textdiffseg_network_paper_size(overlay: str, n_classes: int) -> None:
    for config in CONFIGS:
        net = build_on_meta("textdiffseg", [config, overlay], "network_def", cpu_first=("scheduler",))
        parts = {name: n_params(m) for name, m in net.named_children()}
        assert parts["image_encoder"] == 627_089
        assert parts["fusion"] == 98_433
        assert parts["denoiser"] == 2_610_641
        assert parts["label_autoencoder"] == 1_395_475 + 865 * (n_classes - 2)
        assert n_params(net) == 4_731_640 + 865 * (n_classes - 2)


def _parser(bundle: str, files: list[str]) -> Any:
    from monai.bundle import ConfigParser

    cfg = REPO / "bundles" / bundle / "configs"
    parser = ConfigParser(ConfigParser.load_config_files([str(cfg / f) for f in files]))
    parser["bundle_root"] = str(REPO / "bundles" / bundle)
    return parser


@pytest.mark.parametrize(
    "overlay, name, classes",
    [
        ("kits21.json", "kits21", 4),
        ("lits.json", "lits", 3),
        ("pancreas.json", "msd_pancreas", 2),
        ("colon.json", "msd_colon", 2),
    ],
)
def test_textdiffseg_overlays_select_their_dataset(overlay: str, name: str, classes: int) -> None:
    for config in CONFIGS:
        parser = _parser("textdiffseg", [config, overlay])
        assert parser.get_parsed_content("dataset_name") == name
        assert parser.get_parsed_content("num_classes") == classes
        assert len(parser.get_parsed_content("dataset_prompts")) == classes - 1


def test_textdiffseg_pancreas_merges_tumour_into_pancreas_for_training_and_evaluation() -> None:
    """Paper section 3.1: pancreas (1) and tumour (2) are one class. The training transforms map the labels, and
    the evaluation maps the ground truth the same way (else 'label value 2 is not below num_classes=2')."""
    with bundle_scripts("textdiffseg"):
        parser = _parser("textdiffseg", ["train.json", "pancreas.json"])
        mapper = next(
            t
            for t in parser.get_parsed_content("train#preprocessing").transforms
            if type(t).__name__ == "MapLabelValued"
        )
        label = torch.tensor([[[[0, 1, 2, 2]]]])
        assert mapper({"label": label})["label"].flatten().tolist() == [0, 1, 1, 1]
        evaluation = _parser("textdiffseg", ["inference.json", "evaluate.json", "pancreas.json"])
        assert evaluation.get_parsed_content("evaluation").label_mapping == {0: 0, 1: 1, 2: 1}
        plain = _parser("textdiffseg", ["inference.json", "evaluate.json", "lits.json"])
        assert plain.get_parsed_content("evaluation").label_mapping is None


def test_evaluation_label_mapping_merges_before_the_metrics(tmp_path: Path) -> None:
    import nibabel as nib
    from common.evaluation import evaluate_cases

    label = np.zeros((8, 8, 4), np.uint8)
    label[2:4, 2:4, :2], label[4:6, 4:6, :2] = 1, 2
    pred = (label > 0).astype(np.uint8)
    for name, arr in (("label", label), ("pred", pred)):
        nib.save(nib.Nifti1Image(arr, np.eye(4)), tmp_path / f"{name}.nii.gz")
    case = {"case_id": "c", "label": str(tmp_path / "label.nii.gz"), "pred": str(tmp_path / "pred.nii.gz")}
    summary = evaluate_cases([case], 2, tmp_path / "out", overlay=False, label_mapping={2: 1})
    assert summary["over_classes"]["dice"]["mean"] == pytest.approx(1.0)
    from common.errors import BadInputError

    with pytest.raises(BadInputError, match="label value 2"):
        evaluate_cases([case], 2, tmp_path / "out2", overlay=False)


@pytest.mark.parametrize("config", CONFIGS)
@pytest.mark.parametrize("overlay", [[], ["spleen.json"], ["prostate.json"]])
def test_diffboost_segmenter_paper_size(config: str, overlay: list[str]) -> None:
    net = build_on_meta("diffboost", [config, *overlay], "network_def")
    assert n_params(net) == 2_742_830  # MONAI AttentionUnet, channels (16, 32, 64, 128, 128, 256)


@pytest.mark.parametrize(
    "overlay, ext, name", [("spleen.json", ".nii.gz", "spleen"), ("prostate.json", ".nii.gz", "prostate")]
)
def test_diffboost_dataset_overlays(overlay: str, ext: str, name: str) -> None:
    for configs in (
        ["train.json", "train_controlnet.json"],
        ["train.json", "synthesize.json"],
        ["train.json"],
        ["inference.json"],
    ):
        parser = _parser("diffboost", [*configs, overlay])
        assert parser.get_parsed_content("dataset_dir").endswith(name)
    inference = _parser("diffboost", ["inference.json", overlay])
    assert inference.get_parsed_content("output_ext") == ext and inference["class_name"] == name
    assert (
        _parser("diffboost", ["train.json", "train_controlnet.json", overlay]).get_parsed_content("controlnet_epochs")
        == 400
    )


def test_diffboost_controlnet_paper_size() -> None:
    """train_controlnet.json's network_def (ControlNetModel.from_unet) on SD v1.5's UNet: the UNet's encoder copied,
    zero convolutions and the (16, 32, 96, 256) hint embedding; SD v1.5 UNet 859,520,964 (model card)."""
    from types import SimpleNamespace

    from common.standins import sd_unet_config
    from diffusers import UNet2DConditionModel

    with torch.device("meta"):
        unet = UNet2DConditionModel(**sd_unet_config())
    assert n_params(unet) == 859_520_964
    controlnet = build_on_meta(
        "diffboost", ["train.json", "train_controlnet.json"], "network_def", {"sd_parts": SimpleNamespace(unet=unet)}
    )
    assert n_params(controlnet) == 361_279_120
    assert controlnet.config.conditioning_embedding_out_channels == (16, 32, 96, 256)
