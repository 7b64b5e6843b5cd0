"""Convert third-party checkpoints into the weights our bundles load (``.pt`` files).

Runs from the source repository and from a packaged bundle (the bundle folder, where ``common`` and ``scripts``
are importable)::

    python -m common.io.convert_checkpoint --list
    python -m common.io.convert_checkpoint generative --network CONFIG.json#network_def --src old.pt --dst new.pt
    python -m common.io.convert_checkpoint textdiff --src models/256x256_diffusion_uncond.pt --dst models/adm_monai.pt
    python -m common.io.convert_checkpoint cdal --src netG_....pth --dst models/model.pt  # cDAL bundle folder

``generative``: a checkpoint of the frozen ``monai-generative`` package (DiffusionModelUNet, AutoencoderKL,
ControlNet, ...) into the MONAI core class built from ``--network`` (a bundle config file and the id of the network
definition in it, or a JSON file with a ``_target_`` component), saved as a flat state dict (the model zoo's
``models/model.pt`` form). Every old key must map to a new one and every new key must be filled; otherwise the tool
stops with the list of keys (see ``common.io.checkpoints``).

``textdiff``: an official guided-diffusion (ADM) checkpoint into a MONAI ``DiffusionModelUNet``.

Bundles register their own converters (authors' released weights) with ``@register_checkpoint_converter`` in a
``scripts/convert.py``; they appear here as further sub-commands. The modules imported for that are the
repository's :data:`CONVERTER_MODULES` (when the source repository is importable) and, when this copy of
``common`` sits in a packaged bundle folder, that bundle's own ``scripts.convert`` (when it exists). The source
repository's ``tools/convert_checkpoint.py`` is a wrapper of :func:`main` with the same command line.

Exit codes: 0 on success (and for ``--list``), 1 on bad input (a clear message, no traceback), 2 without a
sub-command.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from common.errors import BadInputError
from common.io.checkpoints import (
    available_checkpoint_converters,
    convert_generative_state_dict,
    get_checkpoint_converter,
    load_state_dict_file,
    register_checkpoint_converter,
)

if TYPE_CHECKING:
    import torch

__all__ = [
    "CONVERTER_MODULES",
    "PACKAGE_CONVERTER_MODULE",
    "build_network",
    "build_parser",
    "convert_generative",
    "convert_textdiff",
    "import_converter_modules",
    "main",
    "package_root",
]

#: modules of the source repository that register bundle-specific converters when imported
CONVERTER_MODULES: tuple[str, ...] = ("bundles.cdal.scripts.convert",)
#: the module of a packaged bundle that registers its converters (``<bundle>/scripts/convert.py``)
PACKAGE_CONVERTER_MODULE = "scripts.convert"
#: the program name shown in help and usage messages when run with ``python -m``
MODULE_PROG = "python -m common.io.convert_checkpoint"


def package_root() -> Path | None:
    """The bundle folder when this ``common`` is the copy inside a packaged bundle (``<bundle>/common``), else None.

    A packaged bundle folder holds ``configs/`` and ``scripts/`` next to ``common/``; the source repository does not.
    """
    root = Path(__file__).resolve().parents[2]
    if (root / "configs").is_dir() and (root / "scripts" / "__init__.py").is_file():
        return root
    return None


def _import_if_present(module: str) -> bool:
    """Import ``module``; False when it (or a package above it) does not exist.

    Any other failure -- an import error raised while running a module that exists, including a missing
    dependency of it -- propagates.
    """
    try:
        importlib.import_module(module)
    except ModuleNotFoundError as err:
        missing = err.name or ""
        if missing and (module == missing or module.startswith(missing + ".")):
            return False
        raise
    return True


def import_converter_modules(
    modules: Sequence[str] = CONVERTER_MODULES, package: Path | None | bool = True
) -> list[str]:
    """Import the modules that register bundle-specific converters; returns the names imported.

    ``modules``: repository module names, each imported when importable. ``package``: the packaged bundle folder
    whose ``scripts.convert`` is imported too (when it exists); True (default) finds it with :func:`package_root`,
    None/False skips it.
    """
    imported = [name for name in modules if _import_if_present(name)]
    root = package_root() if package is True else (package or None)
    if root is not None:
        if str(root) not in sys.path:
            sys.path.insert(0, str(root))
        if _import_if_present(PACKAGE_CONVERTER_MODULE):
            imported.append(PACKAGE_CONVERTER_MODULE)
    return imported


def build_network(spec: str) -> torch.nn.Module:
    """Instantiate the network described by ``FILE.json#id`` (a bundle config id) or ``FILE.json`` (a component)."""
    from monai.bundle import ConfigParser

    file, _, cid = spec.partition("#")
    if not Path(file).is_file():
        raise BadInputError(file, "network config file not found")
    parser = ConfigParser()
    parser.read_config(file)
    if "device" in parser:
        parser["device"] = "$torch.device('cpu')"
    if not cid:
        return parser.get_parsed_content()
    if cid not in parser:
        raise BadInputError(file, f"no id {cid!r} in the config")
    return parser.get_parsed_content(cid)


@register_checkpoint_converter("generative")
def convert_generative(args: argparse.Namespace) -> Path:
    """monai-generative checkpoint -> MONAI core network weights."""
    from common.io.atomic import atomic_torch_save

    net = build_network(args.network)
    old = load_state_dict_file(args.src, key=args.key)
    new = convert_generative_state_dict(net, old, source=args.src)
    atomic_torch_save(new, args.dst)  # flat, as the model zoo ships models/model.pt
    print(f"converted {len(old)} tensors of {args.src} into {type(net).__name__} -> {args.dst}")
    return Path(args.dst)


def _checkpoint_args(p: argparse.ArgumentParser, src: str, dst: str, key: str) -> None:
    """``--src`` / ``--dst`` (required) and ``--key`` with these helps."""
    p.add_argument("--src", required=True, help=src)
    p.add_argument("--dst", required=True, help=dst)
    p.add_argument("--key", default=None, help=key)


def _generative_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--network", required=True, help="CONFIG.json#network_def (bundle config + id) or a component JSON")
    _checkpoint_args(
        p,
        src="monai-generative checkpoint (.pt/.pth/.safetensors)",
        dst="output .pt holding {'model': state_dict}",
        key="top-level key holding the weights in --src (auto-detected if omitted)",
    )


convert_generative.add_arguments = _generative_args  # type: ignore[attr-defined]


@register_checkpoint_converter("textdiff")
def convert_textdiff(args: argparse.Namespace) -> Path:
    """guided-diffusion (ADM) checkpoint, e.g. 256x256_diffusion_uncond.pt -> MONAI DiffusionModelUNet weights."""
    from common.io.atomic import atomic_torch_save
    from common.networks.guided_diffusion import ADM_256_UNCOND, adm_unet, convert_adm_state_dict, is_adm_state_dict

    flags = dict(ADM_256_UNCOND)
    for name in ("image_size", "model_channels", "num_res_blocks", "num_head_channels", "in_channels", "out_channels"):
        value = getattr(args, name, None)
        if value is not None:
            flags[name] = int(value)
    if getattr(args, "channel_mult", None):
        flags["channel_mult"] = tuple(int(c) for c in str(args.channel_mult).split(","))
    if getattr(args, "attention_resolutions", None):
        flags["attention_resolutions"] = tuple(int(c) for c in str(args.attention_resolutions).split(","))
    unet = adm_unet(**flags)
    state = load_state_dict_file(args.src, key=args.key)
    if not is_adm_state_dict(state):
        raise BadInputError(args.src, "no guided-diffusion keys (input_blocks.*, output_blocks.*) in this checkpoint")
    converted = convert_adm_state_dict(state, unet, args.src)
    unet.load_state_dict(converted, strict=True)
    flags_json = {k: list(v) if isinstance(v, tuple) else v for k, v in flags.items()}
    atomic_torch_save({"model": converted, "adm_flags": flags_json}, args.dst)
    print(f"converted {len(state)} guided-diffusion tensors of {args.src} into DiffusionModelUNet -> {args.dst}")
    return Path(args.dst)


#: the guided-diffusion flags ``convert_textdiff`` takes from the command line: (name, type, help)
_ADM_FLAG_ARGS = (
    ("image_size", int, "default 256"),
    ("model_channels", int, "default 256"),
    ("channel_mult", None, "default 1,1,2,2,4,4"),
    ("num_res_blocks", int, "default 2"),
    ("attention_resolutions", None, "default 32,16,8"),
    ("num_head_channels", int, "default 64"),
    ("in_channels", int, "default 3"),
    ("out_channels", int, "default 6 (learn_sigma)"),
)


def _textdiff_args(p: argparse.ArgumentParser) -> None:
    _checkpoint_args(
        p,
        src="guided-diffusion checkpoint (e.g. 256x256_diffusion_uncond.pt)",
        dst="output .pt holding {'model': MONAI state dict}",
        key="top-level key holding the weights in --src (auto if omitted)",
    )
    for name, kind, help_text in _ADM_FLAG_ARGS:
        p.add_argument("--" + name.replace("_", "-"), dest=name, type=kind, default=None, help=help_text)


convert_textdiff.add_arguments = _textdiff_args  # type: ignore[attr-defined]


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    """The argument parser with one sub-command per registered converter (import the converter modules first)."""
    ap = argparse.ArgumentParser(prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--list", action="store_true", help="list the available converters")
    sub = ap.add_subparsers(dest="name")
    for name in available_checkpoint_converters():
        fn = get_checkpoint_converter(name)
        p = sub.add_parser(name, help=(fn.__doc__ or "").strip().split("\n")[0] or None)
        fn.add_arguments(p)
    return ap


def main(argv: Sequence[str] | None = None, prog: str | None = None, modules: Sequence[str] = CONVERTER_MODULES) -> int:
    """Run the command line on ``argv`` (default ``sys.argv[1:]``); returns the exit code.

    ``modules``: the repository modules registering bundle converters (see :func:`import_converter_modules`).
    """
    import_converter_modules(modules)
    ap = build_parser(prog)
    args = ap.parse_args(None if argv is None else list(argv))
    if args.list or not args.name:
        print("available converters:", ", ".join(available_checkpoint_converters()))
        return 0 if args.list else 2
    try:
        get_checkpoint_converter(args.name)(args)
    except BadInputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(prog=MODULE_PROG))
