"""The shipped paper-scale configs build the papers' networks: parameter counts from the configs as shipped.

Fast: the networks are instantiated on torch's ``meta`` device (shapes only, no memory, no forward pass). The
numbers are the official ones (TextDiff paper Table 1: 9.68 M head; ADM 256x256 uncond 552,814,086; cDAL generator
and discriminator counted from the authors' code) or counted from the architectures stated in each model card
(TextDiffSeg: label encoder + decoder, image encoder, fusion, denoiser; DiffBoost: MONAI AttentionUnet, and the
ControlNet of SD v1.5). The full runs at paper size are ``tests/test_paper_scale_check.py`` (opt-in).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


@contextmanager
def bundle_scripts(bundle: str) -> Iterator[None]:
    """Import ``scripts`` from ``bundles/<bundle>`` (as ``monai.bundle run`` does from the bundle folder)."""
    saved = {k: sys.modules.pop(k) for k in list(sys.modules) if k == "scripts" or k.startswith("scripts.")}
    root = str(REPO / "bundles" / bundle)
    sys.path.insert(0, root)
    try:
        yield
    finally:
        sys.path.remove(root)
        for k in [k for k in sys.modules if k == "scripts" or k.startswith("scripts.")]:
            del sys.modules[k]
        sys.modules.update(saved)


def build_on_meta(bundle: str, files: list[str], ident: str, overrides: dict[str, Any] | None = None,
                  cpu_first: tuple[str, ...] = ()) -> torch.nn.Module:
    """``ident`` of the merged shipped configs, instantiated on the meta device (``cpu_first`` ids on CPU before)."""
    from monai.bundle import ConfigParser

    with bundle_scripts(bundle):
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


@pytest.mark.parametrize(
    "overlay, expected",
    [([], 9_683_234), (["qata.json"], 10_862_882)],  # paper Table 1 (9.68 M); QaTa blocks 4, 6, 8, 12
)
def test_textdiff_head_paper_size(overlay, expected):
    head = build_on_meta("textdiff", ["train.json", *overlay], "network_def")
    assert n_params(head) == expected


def test_textdiff_adm_unet_paper_size():
    """The frozen ImageNet ADM UNet of TextDiff's train.json (checkpoint loading switched off: shapes only)."""
    unet = build_on_meta("textdiff", ["train.json"], "diffusion_unet_def", {"adm_checkpoint": None})
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
def test_cdal_networks_paper_size(overlay, generator, discriminator):
    files = ["train.json", *overlay]
    assert n_params(build_on_meta("cdal", files, "network_def")) == generator
    assert n_params(build_on_meta("cdal", files, "discriminator_def")) == discriminator


# TextDiffSeg (model card, architecture): image encoder 627,089; image-latent norm 2; cross-modal fusion 98,433;
# denoiser 2,610,641; label autoencoder 1,395,475 + 865 per extra class (its first and last convolutions)
@pytest.mark.parametrize(
    "overlay, n_classes",
    [("kits21.json", 4), ("lits.json", 3), ("pancreas.json", 2), ("colon.json", 2)],
)
def test_textdiffseg_network_paper_size(overlay, n_classes):
    net = build_on_meta("textdiffseg", ["train.json", overlay], "network_def", cpu_first=("scheduler",))
    parts = {name: n_params(m) for name, m in net.named_children()}
    assert parts["image_encoder"] == 627_089
    assert parts["fusion"] == 98_433
    assert parts["denoiser"] == 2_610_641
    assert parts["label_autoencoder"] == 1_395_475 + 865 * (n_classes - 2)
    assert n_params(net) == 4_731_640 + 865 * (n_classes - 2)


def test_textdiffseg_overlays_select_their_dataset():
    from monai.bundle import ConfigParser

    cfg = REPO / "bundles" / "textdiffseg" / "configs"
    for overlay, name, classes in (("kits21.json", "kits21", 4), ("lits.json", "lits", 3),
                                   ("pancreas.json", "msd_pancreas", 2), ("colon.json", "msd_colon", 2)):
        parser = ConfigParser(ConfigParser.load_config_files([str(cfg / "train.json"), str(cfg / overlay)]))
        assert parser.get_parsed_content("dataset_name") == name
        assert parser.get_parsed_content("num_classes") == classes
        assert len(parser.get_parsed_content("dataset_prompts")) == classes - 1
    pancreas = ConfigParser(ConfigParser.load_config_files([str(cfg / "train.json"), str(cfg / "pancreas.json")]))
    assert pancreas["label_orig"] == [0, 1, 2] and pancreas["label_target"] == [0, 1, 1]  # paper 3.1: merged


@pytest.mark.parametrize("overlay", [[], ["spleen.json"], ["prostate.json"]])
def test_diffboost_segmenter_paper_size(overlay):
    net = build_on_meta("diffboost", ["train.json", *overlay], "network_def")
    assert n_params(net) == 2_742_830  # MONAI AttentionUnet, channels (16, 32, 64, 128, 128, 256)


def test_diffboost_controlnet_paper_size():
    """train_controlnet.json's network_def (ControlNetModel.from_unet) on SD v1.5's UNet: the UNet's encoder copied,
    zero convolutions and the (16, 32, 96, 256) hint embedding; SD v1.5 UNet 859,520,964 (model card)."""
    from types import SimpleNamespace

    from diffusers import UNet2DConditionModel

    from common.standins import sd_unet_config

    with torch.device("meta"):
        unet = UNet2DConditionModel(**sd_unet_config())
    assert n_params(unet) == 859_520_964
    controlnet = build_on_meta("diffboost", ["train_controlnet.json"], "network_def",
                               {"sd_parts": SimpleNamespace(unet=unet)})
    assert n_params(controlnet) == 361_279_120
    assert controlnet.config.conditioning_embedding_out_channels == (16, 32, 96, 256)
