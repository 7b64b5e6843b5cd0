"""Reading checkpoints of the frozen ``monai-generative`` package into MONAI core (>= 1.4) networks.

MONAI core ships the key-rename logic as ``load_old_state_dict`` on ``DiffusionModelUNet``, ``AutoencoderKL``,
``ControlNet`` (and the transformer/ViT networks). That method starts from the network's *current* weights and
leaves any key it does not find untouched, so a checkpoint of another configuration (or a truncated one) would
load "successfully" into a half-random network. :func:`convert_generative_state_dict` wraps it with strict
accounting: every old key must be consumed and every new key must be filled, otherwise a
:class:`~common.errors.BadInputError` lists the offending keys.

Bundle converters of the authors' own checkpoints (TextDiff's guided-diffusion UNet, cDAL's generator) register
with :func:`register_checkpoint_converter` and are exposed by ``tools/convert_checkpoint.py NAME``.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable, Mapping, Sequence
from os import PathLike
from pathlib import Path
from typing import Any

import torch
from common.errors import MAX_LISTED, BadInputError, format_list, short_message
from common.io.images import check_file_exists
from common.networks.utils import unwrap_network

__all__ = [
    "extract_state_dict",
    "load_state_dict_file",
    "convert_generative_state_dict",
    "register_checkpoint_converter",
    "get_checkpoint_converter",
    "available_checkpoint_converters",
    "load_checkpoint",
    "describe_state_dict_mismatch",
    "unwrap_network",
    "load_network_weights",
]

_CONVERTERS: dict[str, Callable[..., Path]] = {}

#: top-level keys under which training scripts commonly nest the weights
STATE_DICT_KEYS = ("model", "state_dict", "network", "net", "model_state_dict", "ema")


def extract_state_dict(obj: object, source: str | PathLike, key: str | None = None) -> dict[str, torch.Tensor]:
    """Return the flat ``{name: tensor}`` state dict held by a loaded checkpoint object.

    Args:
        obj: what ``torch.load`` returned: a state dict, or a dict nesting one under ``key`` or one of
            :data:`STATE_DICT_KEYS`.
        source: file name used in error messages.
        key: explicit top-level key holding the weights.
    """
    if not isinstance(obj, Mapping):
        raise BadInputError(source, f"not a state dict: the file holds a {type(obj).__name__}")
    if key is not None:
        if key not in obj:
            raise BadInputError(source, f"no key {key!r} in the checkpoint (top-level keys: {sorted(obj)[:10]})")
        obj = obj[key]
    elif not all(isinstance(v, torch.Tensor) for v in obj.values()):
        nested = [k for k in STATE_DICT_KEYS if isinstance(obj.get(k), Mapping)]
        if not nested:
            raise BadInputError(
                source,
                f"no weights found: top-level keys {sorted(obj)[:10]} hold no tensors and none of {STATE_DICT_KEYS}",
            )
        obj = obj[nested[0]]
    sd = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not sd:
        raise BadInputError(source, "the checkpoint holds no tensors")
    return sd


def load_state_dict_file(path: str | PathLike, key: str | None = None) -> dict[str, torch.Tensor]:
    """Load a ``.pt``/``.pth``/``.ckpt`` (``torch.load(weights_only=True)``) or ``.safetensors`` file's state dict."""
    path = Path(path)
    if not path.is_file():
        raise BadInputError(path, "checkpoint file not found")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            obj: object = load_file(str(path))
        else:
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 -- any reader failure means a corrupt or foreign file
        raise BadInputError(path, f"cannot read the checkpoint (corrupt, truncated or not a torch file): {e}") from e
    return extract_state_dict(obj, path, key)


def convert_generative_state_dict(
    network: torch.nn.Module, old_state_dict: Mapping[str, torch.Tensor], source: str | PathLike = "<state dict>"
) -> dict[str, torch.Tensor]:
    """Map a ``monai-generative`` state dict onto ``network`` (a MONAI core network) and return the new state dict.

    The network must be built with the same architecture arguments as the old one (the zoo's ported configs add
    ``include_fc: false`` and ``use_combined_linear: false`` for attention blocks). ``network`` is loaded with the
    result as a side effect.

    Raises:
        BadInputError: ``network`` has no ``load_old_state_dict``, keys are left over on either side, or shapes differ.
    """
    if not hasattr(network, "load_old_state_dict"):
        raise BadInputError(
            source, f"{type(network).__name__} has no load_old_state_dict: not a monai-generative network"
        )
    remaining = dict(old_state_dict)
    n_old, n_new = len(remaining), len(network.state_dict())
    try:
        network.load_old_state_dict(remaining)  # pops every key it consumes from ``remaining``
    except KeyError as e:
        raise BadInputError(
            source, f"checkpoint from another network: key {e} expected by {type(network).__name__} is missing"
        ) from e
    except RuntimeError as e:
        raise BadInputError(source, f"checkpoint from another network (shape mismatch): {e}") from e
    consumed = n_old - len(remaining)
    if n_old == n_new and not remaining and consumed == n_old:
        return network.state_dict()
    raise BadInputError(
        source,
        f"checkpoint from another network: {len(remaining)} old key(s) unused "
        f"({sorted(remaining)[:5]}), {n_new - consumed} new key(s) left at their initial values; "
        "build the network with the architecture arguments the checkpoint was trained with",
    )


def register_checkpoint_converter(name: str) -> Callable[[Callable[..., Path]], Callable[..., Path]]:
    """Decorator registering ``fn(args: argparse.Namespace) -> Path`` as ``tools/convert_checkpoint.py NAME``.

    The decorated function must carry an ``add_arguments(parser)`` attribute declaring its CLI options.
    """

    def deco(fn: Callable[..., Path]) -> Callable[..., Path]:
        known = _CONVERTERS.get(name)
        # the same source file imported under two module names (``scripts.convert`` from a bundle folder and
        # ``bundles.<name>.scripts.convert`` from the tools) registers the same converter again: keep the newest
        if known is not None and _origin(known) != _origin(fn):
            raise ValueError(f"checkpoint converter {name!r} is already registered by {_origin(known)}")
        _CONVERTERS[name] = fn
        return fn

    return deco


def _origin(fn: Callable[..., Path]) -> tuple[str, str]:
    code = getattr(fn, "__code__", None)
    return (str(Path(code.co_filename).resolve()) if code else repr(fn), getattr(fn, "__qualname__", ""))


def get_checkpoint_converter(name: str) -> Callable[..., Path]:
    if name not in _CONVERTERS:
        raise BadInputError(name, f"unknown checkpoint converter; available: {sorted(_CONVERTERS)}")
    return _CONVERTERS[name]


def available_checkpoint_converters() -> list[str]:
    return sorted(_CONVERTERS)


def _checkpoint_read_problem(path: Path, err: BaseException) -> str:
    with open(path, "rb") as f:
        head = f.read(9)
    text = str(err)
    if isinstance(err, pickle.UnpicklingError) and "Unsupported global" in text:
        detail = " ".join(text[text.find("Unsupported global") :].split())
        detail = detail.split(" was not an allowed global")[0]
        return (
            f"checkpoint contains Python objects that are not allowed with torch.load(weights_only=True) "
            f"({detail}); it was not saved as plain state dicts (or it is not trustworthy). "
            "Re-save it as {'model': network.state_dict(), ...}"
        )
    if len(head) == 9 and head[8:9] == b"{":  # safetensors: u64 header length, then a JSON header
        return "this is a safetensors file, not a PyTorch checkpoint; load it with safetensors.torch.load_file"
    if not (head.startswith(b"PK\x03\x04") or head[:1] == b"\x80"):
        return f"not a PyTorch checkpoint file (it starts with {head[:8]!r}, neither a zip archive nor a pickle)"
    if "WeightsUnpickler error:" in text:  # keep torch's specific reason, drop its generic preamble
        reason = " ".join(text.split("WeightsUnpickler error:", 1)[1].split("Check the documentation")[0].split())
        detail = f"{type(err).__name__}: {reason}"
    else:
        detail = short_message(err, 120)
    if head.startswith(b"PK\x03\x04"):
        return (
            f"checkpoint is truncated or corrupt (incomplete PyTorch zip archive; {detail}); "
            "it was probably not saved completely -- use an earlier checkpoint or re-download it"
        )
    if head[:1] == b"\x80":
        return f"checkpoint (legacy PyTorch format) is truncated or corrupt ({detail})"
    return f"not a readable PyTorch checkpoint ({short_message(err, 120)})"


def load_checkpoint(
    path: str | PathLike, required_keys: Sequence[str] = ("model",), map_location: str | torch.device | None = "cpu"
) -> dict:
    """Load a checkpoint with ``torch.load(..., weights_only=True)`` and check its top-level keys.

    Args:
        path: the ``.pt``/``.pth`` file.
        required_keys: top-level keys that must be present (e.g. ``("model",)``, or those of a training state).
        map_location: passed to ``torch.load`` (default CPU).

    Returns:
        the checkpoint dict.

    Raises:
        BadInputError: missing/empty file, truncated or non-torch file, disallowed Python objects, not a dict,
            or missing required keys.
    """
    p = check_file_exists(path, "checkpoint")
    try:
        ckpt = torch.load(p, map_location=map_location, weights_only=True)
    except (MemoryError, KeyboardInterrupt):
        raise
    except Exception as e:
        raise BadInputError(p, _checkpoint_read_problem(p, e)) from e
    if not isinstance(ckpt, Mapping):
        raise BadInputError(p, f"checkpoint holds a {type(ckpt).__name__}, expected a dict such as {{'model': ...}}")
    missing = [k for k in required_keys if k not in ckpt]
    if missing:
        raise BadInputError(
            p,
            f"checkpoint is missing the top-level key(s) {format_list(missing)} "
            f"(found {format_list(sorted(map(str, ckpt)))}); it is a partial checkpoint or one of another bundle",
        )
    return dict(ckpt)


def _is_state_dict(obj: Any) -> bool:
    return isinstance(obj, Mapping) and len(obj) > 0 and all(isinstance(v, torch.Tensor) for v in obj.values())


def describe_state_dict_mismatch(
    expected: Mapping[str, torch.Tensor], given: Mapping[str, Any], strict: bool = True, limit: int = MAX_LISTED
) -> str | None:
    """How a state dict ``given`` fails to fit ``expected`` (a network's ``state_dict()``); ``None`` if it fits.

    Lists up to ``limit`` missing keys, unexpected keys and shape mismatches (checkpoint shape vs network shape).
    Missing/unexpected keys count only if ``strict``; shape mismatches always count.
    """
    missing = [k for k in expected if k not in given]
    unexpected = [k for k in given if k not in expected]
    mismatched = [
        f"{k!r}: checkpoint {tuple(given[k].shape)} vs network {tuple(expected[k].shape)}"
        for k in expected
        if k in given and isinstance(given[k], torch.Tensor) and tuple(given[k].shape) != tuple(expected[k].shape)
    ]
    parts = []
    if strict and missing:
        parts.append(f"{len(missing)} missing key(s) {format_list(missing, limit)}")
    if strict and unexpected:
        parts.append(f"{len(unexpected)} unexpected key(s) {format_list(unexpected, limit)}")
    if mismatched:
        shown = "; ".join(mismatched[:limit]) + ("; ..." if len(mismatched) > limit else "")
        parts.append(f"{len(mismatched)} shape mismatch(es) ({shown})")
    return ", ".join(parts) if parts else None


def load_network_weights(
    network: torch.nn.Module,
    path_or_state: str | PathLike | Mapping,
    key: str | None = "model",
    strict: bool = True,
    source: str | None = None,
    map_location: str | torch.device | None = "cpu",
) -> torch.nn.Module:
    """Load weights into ``network`` after checking that they belong to it.

    Args:
        network: the module (``DataParallel``/``DistributedDataParallel`` are unwrapped).
        path_or_state: a checkpoint file (loaded with :func:`load_checkpoint`, ``weights_only=True``) or a dict.
        key: the entry holding the state dict (``{"model": state_dict}``, MONAI's convention). A raw state dict
            (all values tensors) is accepted too. ``None``: the dict is the state dict.
        strict: require exactly the network's keys; ``False`` still rejects shape mismatches (a checkpoint of
            another network configuration must not be half-loaded silently).
        source: name for the message when a dict is given.
        map_location: device for ``torch.load``.

    Returns:
        ``network`` (so configs can write ``$load_network_weights(@network_def, path)``).

    Raises:
        BadInputError: unreadable checkpoint, missing ``key``, or keys/shapes that do not fit the network
            (lists a few missing, unexpected and shape-mismatched keys).
    """
    if isinstance(path_or_state, Mapping):
        ckpt, src = path_or_state, source or "<state dict>"
    else:
        ckpt, src = load_checkpoint(path_or_state, required_keys=(), map_location=map_location), str(path_or_state)
    if key is not None and key in ckpt:
        state = ckpt[key]
    elif key is None or _is_state_dict(ckpt):
        state = ckpt
    else:
        raise BadInputError(
            src,
            f"checkpoint has no {key!r} entry (found {format_list(sorted(map(str, ckpt)))}) and is not a state dict",
        )
    if not _is_state_dict(state):
        raise BadInputError(src, f"checkpoint entry {key!r} is not a state dict of tensors")
    net = unwrap_network(network)
    expected = net.state_dict()
    if all(k.startswith("module.") for k in state) and not any(k.startswith("module.") for k in expected):
        state = {k[len("module.") :]: v for k, v in state.items()}  # saved from a DataParallel/DDP wrapper
    problem = describe_state_dict_mismatch(expected, state, strict=strict)
    if problem:
        raise BadInputError(
            src,
            f"weights do not fit the network {type(net).__name__}: {problem}. The checkpoint is probably from "
            "another network or another network configuration (channels, spatial_dims, ...)",
        )
    net.load_state_dict(state, strict=strict)
    return network
