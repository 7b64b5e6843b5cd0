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

from collections.abc import Callable, Mapping
from os import PathLike
from pathlib import Path

import torch

from common.errors import BadInputError

__all__ = [
    "extract_state_dict",
    "load_state_dict_file",
    "convert_generative_state_dict",
    "register_checkpoint_converter",
    "get_checkpoint_converter",
    "available_checkpoint_converters",
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
                source, f"no weights found: top-level keys {sorted(obj)[:10]} hold no tensors and none of {STATE_DICT_KEYS}"
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
        raise BadInputError(source, f"{type(network).__name__} has no load_old_state_dict: not a monai-generative network")
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
