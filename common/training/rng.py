"""Capture and restore every random state a training run draws from, so a resumed run repeats the same draws.

:class:`RNGState` covers:

- Python ``random``, the numpy global generator, torch CPU (and CUDA, when available) default generators;
- the ``.R`` random state of every MONAI ``Randomizable`` reachable from the given sources (datasets, data loaders,
  ``Compose`` chains nested at any depth, MONAI engines via their ``data_loader``); with ``num_workers=0`` MONAI's
  ``DataLoader`` runs the transforms in the main process with these states;
- explicit ``torch.Generator`` objects (e.g. a ``DataLoader(generator=...)`` or a ``RandomSampler``'s).

Why not only ``monai.utils.set_determinism``: it seeds the global generators once; each MONAI random transform has
its own ``numpy.random.RandomState`` that evolves during training, so after a restart the augmentations would
differ from an uninterrupted run unless those states are saved too.

With ``num_workers > 0`` every epoch's workers re-seed the transforms from the torch generator (MONAI's
``worker_init_fn``), so restoring the torch state suffices -- unless ``persistent_workers=True``, whose worker
states live in other processes and cannot be captured (resume is then not bit-exact).
"""

from __future__ import annotations

import logging
import random
import types
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from common.training.checkpoint import to_weights_only_safe
from monai.transforms import Randomizable, Transform

__all__ = ["RNGState", "find_random_states", "get_global_rng_state", "set_global_rng_state"]

logger = logging.getLogger(__name__)

_LEAF_TYPES = (
    str,
    bytes,
    int,
    float,
    complex,
    bool,
    type(None),
    torch.Tensor,
    np.ndarray,
    np.generic,
    type,
    types.ModuleType,
    types.FunctionType,
    types.BuiltinFunctionType,
    types.MethodType,
    torch.nn.Module,
    torch.optim.Optimizer,
    logging.Logger,
)


def _is_engine(obj: Any) -> bool:
    try:
        from ignite.engine import Engine
    except ImportError:  # pragma: no cover - ignite is a dependency
        return False
    return isinstance(obj, Engine)


def _descend(obj: Any) -> bool:
    """Whether to look inside ``obj.__dict__`` (MONAI / torch data objects only, never networks or loggers)."""
    return (
        isinstance(
            obj,
            (Transform, Randomizable, torch.utils.data.Dataset, torch.utils.data.DataLoader, torch.utils.data.Sampler),
        )
        or type(obj).__module__.split(".")[0] == "monai"
    )


def find_random_states(sources: Any) -> dict[str, Any]:
    """All ``Randomizable`` objects and ``torch.Generator``\\s reachable from ``sources``, keyed by access path.

    Args:
        sources: an object, a sequence, or a ``{name: object}`` mapping of datasets, data loaders, transforms,
            ``Compose`` chains or ignite/MONAI engines (an engine contributes its ``data_loader`` or
            ``state.dataloader``).

    Returns:
        ``{"train.dataset.transform.transforms[3]": RandFlipd(...), ...}`` in a deterministic traversal order.
        An object reachable by several paths is listed once (first path).
    """
    found: dict[str, Any] = {}
    seen: set[int] = set()

    def visit(obj: Any, path: str) -> None:
        if isinstance(obj, _LEAF_TYPES) or id(obj) in seen:
            return
        seen.add(id(obj))
        if isinstance(obj, torch.Generator):
            found[path] = obj
            return
        if isinstance(obj, Randomizable) and isinstance(
            getattr(obj, "R", None), (np.random.RandomState, np.random.Generator)
        ):
            found[path] = obj
        if _is_engine(obj):
            loader = getattr(obj, "data_loader", None)
            if loader is None:
                loader = getattr(obj.state, "dataloader", None)
            visit(loader, f"{path}.data_loader")
            return
        if isinstance(obj, Mapping):
            for k, v in obj.items():
                visit(v, f"{path}[{k!r}]")
        elif isinstance(obj, (list, tuple)):
            for i, v in enumerate(obj):
                visit(v, f"{path}[{i}]")
        elif hasattr(obj, "__dict__") and _descend(obj):
            for k, v in vars(obj).items():
                if k.startswith("__") or k in ("R", "_iterator"):
                    continue
                visit(v, f"{path}.{k}")

    if isinstance(sources, Mapping):
        for name, src in sources.items():
            visit(src, str(name))
    elif isinstance(sources, (list, tuple)):
        for i, src in enumerate(sources):
            visit(src, f"source{i}")
    elif sources is not None:
        visit(sources, "source0")
    return found


def _numpy_state(rs: np.random.RandomState | np.random.Generator) -> Any:
    if isinstance(rs, np.random.Generator):
        return {"generator": rs.bit_generator.state}
    return rs.get_state(legacy=True)


def _set_numpy_state(rs: np.random.RandomState | np.random.Generator, state: Any) -> None:
    if isinstance(rs, np.random.Generator):
        rs.bit_generator.state = state["generator"]
        return
    name, keys, pos, has_gauss, cached = state
    keys = keys.cpu().numpy() if isinstance(keys, torch.Tensor) else np.asarray(keys)
    rs.set_state((str(name), keys.astype(np.uint32), int(pos), int(has_gauss), float(cached)))


def get_global_rng_state(include_cuda: bool = True) -> dict[str, Any]:
    """Python, numpy global and torch CPU (+CUDA) generator states as a ``weights_only``-safe dict."""
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": np.random.get_state(legacy=True),
        "torch": torch.get_rng_state(),
    }
    if include_cuda and torch.cuda.is_available():
        state["cuda"] = list(torch.cuda.get_rng_state_all())
    return to_weights_only_safe(state)


def set_global_rng_state(state: Mapping[str, Any]) -> None:
    """Restore what :func:`get_global_rng_state` captured (CUDA only if available with the same device count)."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(int(v) for v in internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    keys = keys.cpu().numpy() if isinstance(keys, torch.Tensor) else np.asarray(keys)
    np.random.set_state((str(name), keys.astype(np.uint32), int(pos), int(has_gauss), float(cached)))
    torch.set_rng_state(state["torch"].cpu().to(torch.uint8))
    cuda = state.get("cuda")
    if cuda and torch.cuda.is_available():
        if len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all([c.cpu().to(torch.uint8) for c in cuda])
        else:
            logger.warning(
                f"CUDA RNG states of {len(cuda)} devices saved, {torch.cuda.device_count()} visible: "
                "not restored, the resumed run is not bit-exact"
            )


class RNGState:
    """Stateful view of all random generators of a training run (global ones + transforms of ``sources``).

    Put it in a checkpoint dict; ``state_dict()`` is ``torch.load(weights_only=True)``-safe.

    Args:
        sources: datasets, data loaders, transform chains or engines whose ``Randomizable`` transforms (and
            ``torch.Generator``\\s) are captured; see :func:`find_random_states`. The structure must be the same
            when loading (same transforms in the same places); mismatches are logged as warnings.
        include_cuda: also capture CUDA generators (when CUDA is available).

    Example::

        rng = RNGState([train_loader])
        torch.save({"rng": rng.state_dict(), ...}, path)
        ...
        rng.load_state_dict(torch.load(path, weights_only=True)["rng"])
    """

    def __init__(self, sources: Any = (), include_cuda: bool = True) -> None:
        self.sources = sources
        self.include_cuda = include_cuda

    def state_dict(self) -> dict[str, Any]:
        """``{"global": {...}, "transforms": {path: state}, "generators": {path: ByteTensor}}``."""
        transforms: dict[str, Any] = {}
        generators: dict[str, torch.Tensor] = {}
        for path, obj in find_random_states(self.sources).items():
            if isinstance(obj, torch.Generator):
                generators[path] = obj.get_state()
            else:
                transforms[path] = _numpy_state(obj.R)
        return to_weights_only_safe(
            {"global": get_global_rng_state(self.include_cuda), "transforms": transforms, "generators": generators}
        )

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> dict[str, int]:
        """Restore the generators; returns counts ``{"transforms": n, "generators": m}`` restored.

        Transforms are restored in place (``R.set_state``), so transforms sharing one ``RandomState`` keep sharing it.
        """
        set_global_rng_state(state_dict["global"])
        current = find_random_states(self.sources)
        saved_t = dict(state_dict.get("transforms", {}))
        saved_g = dict(state_dict.get("generators", {}))
        n_t = n_g = 0
        unmatched = []
        for path, obj in current.items():
            if isinstance(obj, torch.Generator) and path in saved_g:
                obj.set_state(saved_g.pop(path).cpu().to(torch.uint8))
                n_g += 1
            elif not isinstance(obj, torch.Generator) and path in saved_t:
                _set_numpy_state(obj.R, saved_t.pop(path))
                n_t += 1
            else:
                unmatched.append(path)
        leftover = list(saved_t) + list(saved_g)
        if unmatched or leftover:
            logger.warning(
                "random states do not match the saved ones (transform pipeline changed?): not in checkpoint "
                f"{unmatched[:5]}, not found now {leftover[:5]}; augmentations after resume will differ from an "
                "uninterrupted run"
            )
        return {"transforms": n_t, "generators": n_g}

    def describe(self) -> str:
        """One line: what is captured (for logs)."""
        found = find_random_states(self.sources)
        n_g = sum(isinstance(o, torch.Generator) for o in found.values())
        cuda = "+CUDA " if self.include_cuda and torch.cuda.is_available() else ""
        return f"python/numpy/torch {cuda}generators, {len(found) - n_g} random transform(s), {n_g} torch.Generator(s)"
