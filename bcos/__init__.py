"""bcos: B-cos networks, interpretable by design.

Importing ``bcos`` is cheap: it never imports Lightning, Captum or the training stack, and the
names below are imported on first use.

    >>> import bcos
    >>> model = bcos.create_model("resnet50", pretrained=True)  # doctest: +SKIP
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.2.0"

if TYPE_CHECKING:
    from bcos.models.registry import create_model, list_models

# public name -> module that defines it (imported lazily by __getattr__)
_LAZY_EXPORTS = {
    "create_model": "bcos.models.registry",
    "list_models": "bcos.models.registry",
    "bcosify": "bcos.bcosification",
}

__all__ = ["__version__", *_LAZY_EXPORTS]


def __getattr__(name: str) -> Any:
    module = _LAZY_EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'bcos' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY_EXPORTS})
