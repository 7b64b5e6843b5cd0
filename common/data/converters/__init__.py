"""Dataset converters: official dataset release layout -> project datalist (:mod:`common.data.datalist`).

Adding a dataset is one new module in this package with a decorated :class:`DatasetConverter` subclass::

    # common/data/converters/busi.py
    from common.data.converters import register_converter
    from common.data.converters.base import DatasetConverter

    @register_converter("busi")
    class BUSIConverter(DatasetConverter):
        description = "BUSI breast ultrasound (Dataset_BUSI_with_GT/{benign,malignant,normal})"
        expected_layout = "..."
        def check_layout(self, src): ...
        def build(self, layout, dst, **options): ...

Modules of this package (except ``base`` and names starting with ``_``) are imported on the first call of
:func:`get_converter` / :func:`available_converters`, so nothing else needs editing.

Usage::

    from common.data.converters import get_converter
    datalist_path = get_converter("monuseg").convert(src, dst, seed=0, val_fraction=0.2)
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

from common.errors import BadInputError

if TYPE_CHECKING:
    from common.data.converters.base import DatasetConverter

__all__ = ["available_converters", "get_converter", "register_converter"]

_REGISTRY: dict[str, type[DatasetConverter]] = {}
_DISCOVERED = False
_C = TypeVar("_C", bound="type[DatasetConverter]")


def register_converter(name: str) -> Callable[[_C], _C]:
    """Class decorator registering a :class:`~common.data.converters.base.DatasetConverter` under ``name``."""

    def decorate(cls: _C) -> _C:
        from common.data.converters.base import DatasetConverter

        if not (isinstance(cls, type) and issubclass(cls, DatasetConverter)):
            raise TypeError(f"@register_converter({name!r}) needs a DatasetConverter subclass, got {cls!r}")
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(f"converter name {name!r} is already taken by {_REGISTRY[name].__qualname__}")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return decorate


def _discover() -> None:
    """Import every converter module of this package once (they register themselves)."""
    global _DISCOVERED
    if _DISCOVERED:
        return
    for info in pkgutil.iter_modules(__path__):
        if info.name != "base" and not info.name.startswith("_"):
            importlib.import_module(f"{__name__}.{info.name}")
    _DISCOVERED = True


def available_converters() -> dict[str, str]:
    """``{name: one-line description}`` of all registered converters, sorted by name."""
    _discover()
    return {name: _REGISTRY[name].description for name in sorted(_REGISTRY)}


def get_converter(name: str) -> DatasetConverter:
    """A new instance of the converter registered as ``name``; :class:`BadInputError` listing the known names."""
    _discover()
    if name not in _REGISTRY:
        raise BadInputError(name, f"unknown dataset converter; available: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]()
