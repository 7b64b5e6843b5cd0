"""The authors' cDAL generator checkpoints -> this bundle's ``CDALGenerator`` weights (``tools/convert_checkpoint.py
cdal``).

The official generator (``score_sde/models/ncsnpp_generator_adagn.py``, class ``NCSNpp``) keeps its layers in one flat
``nn.ModuleList`` (``all_modules.<i>.*``) plus the mapping network ``z_transform.*``; checkpoints saved from
``DistributedDataParallel`` add a ``module.`` prefix (``netG_<epoch>_mIoU_..._F1_....pth``, released on Hugging
Face as Hejrati/cDAL). :class:`scripts.networks.CDALGenerator` builds the same layers in the same order with the
same inner parameter names and records that order (``official_module_order``), so the mapping is positional:

- ``all_modules.<i>.<rest>`` -> ``<official_module_order[i]>.<rest>`` (image-encoder blocks drop the ``0.`` of the
  official ``ModuleSequential`` wrapper);
- ``z_transform.<rest>`` unchanged.

Every official key must be used and every network key filled with a tensor of the same shape, otherwise
:class:`common.errors.BadInputError` lists the offending keys (a checkpoint of another configuration never loads
half-way). The network is built from a bundle config with the checkpoint's architecture (``--network
configs/inference.json#network_def`` plus ``--override configs/cxr.json`` etc.).

    python tools/convert_checkpoint.py cdal --src netG_....pth --dst bundles/cdal/models/model.pt \
        [--override bundles/cdal/configs/cxr.json]
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping
from os import PathLike
from pathlib import Path

import torch
from common.errors import BadInputError
from common.io.atomic import atomic_torch_save
from common.io.checkpoints import describe_state_dict_mismatch, load_state_dict_file, register_checkpoint_converter
from common.standins import warn_if_standin

BUNDLE_ROOT = Path(__file__).resolve().parents[1]

__all__ = ["official_key_map", "convert_official_generator_state_dict", "convert_cdal", "build_generator"]


def official_key_map(network: torch.nn.Module) -> dict[str, str]:
    """``{our key: official key}`` for every entry of ``network.state_dict()``."""
    order = list(network.official_module_order)
    ours = network.state_dict()
    mapping: dict[str, str] = {}
    prefix_index = sorted(((name + ".", i) for i, name in enumerate(order)), key=lambda p: -len(p[0]))
    for key in ours:
        if key.startswith("z_transform."):
            mapping[key] = key
            continue
        for prefix, i in prefix_index:
            if key.startswith(prefix):
                rest = key[len(prefix) :]
                wrapped = prefix.startswith("image_encoder.blocks.")
                mapping[key] = f"all_modules.{i}." + ("0." if wrapped else "") + rest
                break
        else:
            raise KeyError(f"network key {key!r} belongs to no module of official_module_order")
    return mapping


def convert_official_generator_state_dict(
    network: torch.nn.Module, official: Mapping[str, torch.Tensor], source: str | PathLike = "<state dict>"
) -> dict[str, torch.Tensor]:
    """Map an official ``NCSNpp`` state dict onto ``network`` (a ``CDALGenerator``); returns our state dict.

    Raises:
        BadInputError: keys left over on either side or shape mismatches (listed).
    """
    if not hasattr(network, "official_module_order"):
        raise BadInputError(source, f"{type(network).__name__} is not a CDALGenerator (no official_module_order)")
    sd = dict(official)
    if sd and all(k.startswith("module.") for k in sd):
        sd = {k[len("module.") :]: v for k, v in sd.items()}
    mapping = official_key_map(network)
    ours = network.state_dict()
    renamed = {k: sd[o] for k, o in mapping.items() if o in sd}  # official tensors under our names
    problems = []
    missing = [o for o in mapping.values() if o not in sd]  # named as in the official checkpoint
    if missing:
        problems.append(f"{len(missing)} official key(s) missing from the checkpoint {missing[:5]}")
    unused = sorted(set(sd) - set(mapping.values()))
    if unused:
        problems.append(f"{len(unused)} checkpoint key(s) unused {unused[:5]}")
    mismatch = describe_state_dict_mismatch(ours, renamed, strict=False)  # shape mismatches
    if mismatch:
        problems.append(mismatch)
    if problems:
        raise BadInputError(
            source,
            "checkpoint does not fit this generator configuration: "
            + ", ".join(problems)
            + ". Build the network with the checkpoint's dataset config (e.g. --override configs/cxr.json)",
        )
    return {k: v.detach().clone().to(ours[k].dtype) for k, v in renamed.items()}


def build_generator(config: str, overrides: list[str] | None = None) -> torch.nn.Module:
    """``network_def`` of a bundle config (``FILE.json`` or ``FILE.json#id``) merged with override files, on CPU."""
    from monai.bundle import ConfigParser

    if str(BUNDLE_ROOT) not in sys.path:
        sys.path.insert(0, str(BUNDLE_ROOT))
    file, _, cid = config.partition("#")
    files = [file] + list(overrides or [])
    for f in files:
        if not Path(f).is_file():
            raise BadInputError(f, "config file not found")
    parser = ConfigParser()
    parser.read_config(files)
    parser["device"] = "$torch.device('cpu')"
    parser["bundle_root"] = str(BUNDLE_ROOT)
    return parser.get_parsed_content(cid or "network_def")


@register_checkpoint_converter("cdal")
def convert_cdal(args: argparse.Namespace) -> Path:
    """cDAL authors' generator checkpoint (NCSNpp all_modules.* keys) -> CDALGenerator weights."""
    warn_if_standin(args.src, "cDAL generator checkpoint")
    net = build_generator(args.network, args.override)
    official = load_state_dict_file(args.src, key=args.key)
    new = convert_official_generator_state_dict(net, official, source=args.src)
    net.load_state_dict(new, strict=True)
    atomic_torch_save(net.state_dict(), args.dst)  # flat, as the model zoo ships models/model.pt
    print(f"converted {len(official)} tensors of {args.src} into CDALGenerator -> {args.dst}")
    return Path(args.dst)


def _cdal_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--src", required=True, help="official generator checkpoint (netG_*.pth, DDP 'module.' keys ok)")
    p.add_argument("--dst", required=True, help="output .pt holding {'model': state_dict}")
    p.add_argument(
        "--network",
        default=str(BUNDLE_ROOT / "configs" / "inference.json") + "#network_def",
        help="bundle config holding the generator definition (default: cdal inference.json#network_def)",
    )
    p.add_argument(
        "--override", nargs="*", default=[], help="dataset override configs, e.g. bundles/cdal/configs/cxr.json"
    )
    p.add_argument("--key", default=None, help="top-level key holding the weights in --src (auto-detected if omitted)")


convert_cdal.add_arguments = _cdal_args  # type: ignore[attr-defined]
