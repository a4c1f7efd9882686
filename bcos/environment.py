"""On/off switches read from environment variables (``BCOS_FUSED_OPS``, ``BCOS_CPU_KERNELS``,
``BCOS_KEEP_FREED_MEMORY``): one spelling of yes and no for all of them, and a clear error for
anything else instead of a silent default."""

from __future__ import annotations

import os

from bcos.errors import ConfigError

__all__ = ["environment_flag"]

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


def environment_flag(name: str, default: bool) -> bool:
    """The switch ``name``: ``default`` when unset or empty, else one of 1/true/yes/on or
    0/false/no/off (any case); other values raise :class:`~bcos.errors.ConfigError`."""
    value = os.environ.get(name, "").strip().lower()
    if not value:
        return default
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ConfigError(f"{name}={os.environ[name]!r} is not a switch: set it to 1 or 0 (or unset it)")
