"""Factories that strip the affine shift (``NoBias``) or the whole affine map (``Unaffine``) from a norm.

A norm's bias adds an input-independent offset, so the contributions of a B-cos network would no
longer sum to its logit; ``NoBias`` ("-linear" in config names) removes it, ``Unaffine``
("-unaffine") removes weight and bias. The built layers have no such keys in their state dict and
show as ``<Class>NoBias`` / ``<Class>Unaffine`` when printed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from bcos.errors import ConfigError

__all__ = ["NoBias", "Unaffine"]


class _ShownName:
    """Replacement for a module's ``_get_name`` (a picklable callable, unlike a closure)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __call__(self) -> str:
        return self.name


def _factory_name(make_layer: Callable[..., nn.Module]) -> str | None:
    name = getattr(make_layer, "__name__", None)
    if name is None:  # e.g. functools.partial(SomeNorm, eps=1e-6)
        name = getattr(getattr(make_layer, "func", None), "__name__", None)
    return name


class _StripAffine:
    """A norm-layer factory that builds ``make_layer(*args, **kwargs)`` and removes affine parameters."""

    suffix = ""
    remove = ("bias",)

    def __init__(self, make_layer: Callable[..., nn.Module]) -> None:
        if not callable(make_layer):
            raise ConfigError(
                f"{type(self).__name__} expects a norm-layer class or factory, got {make_layer!r}"
            )
        self.make_layer = make_layer
        base = _factory_name(make_layer)
        if base is not None:
            self.__name__ = base + self.suffix
            self.__qualname__ = getattr(make_layer, "__qualname__", base) + self.suffix

    def __call__(self, *args: Any, **kwargs: Any) -> nn.Module:
        layer = self.make_layer(*args, **kwargs)
        if getattr(layer, "bias", None) is None:
            raise ConfigError(
                f"{type(self).__name__} needs a layer with a bias, but {type(layer).__name__} has none "
                "(affine=False?); use the layer without the wrapper"
            )
        for name in self.remove:
            setattr(layer, name, None)
        layer._get_name = _ShownName(type(layer).__name__ + self.suffix)
        return layer

    def __repr__(self) -> str:
        shown = getattr(self.make_layer, "__name__", None) or repr(self.make_layer)
        return f"{type(self).__name__}({shown})"

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other.make_layer == self.make_layer  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash((type(self), self.make_layer))


class NoBias(_StripAffine):
    """``NoBias(make_layer)``: a factory whose layers have ``bias = None`` (shown as "<Class>NoBias")."""

    suffix = "NoBias"
    remove = ("bias",)


class Unaffine(_StripAffine):
    """``Unaffine(make_layer)``: a factory whose layers have ``weight = bias = None`` ("<Class>Unaffine")."""

    suffix = "Unaffine"
    remove = ("weight", "bias")
