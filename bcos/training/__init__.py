"""Training on Lightning: the LightningModule, callbacks, EMA, AGC and ``run_training``.

Names are imported on first use, so ``from bcos.training.agc import adaptive_clip_grad_`` (or the
EMA) does not pull in Lightning; ``ClassificationLitModel`` and ``run_training`` need the
``training`` extra.
"""

from __future__ import annotations

import importlib
from typing import Any

# name -> submodule that defines it
_LAZY = {
    "ClassificationLitModel": "trainer",
    "NonFiniteLossError": "trainer",
    "run_training": "run",
    "TrainOptions": "run",
    "ExponentialMovingAverage": "ema",
    "adaptive_clip_grad_": "agc",
    "RunFolderLock": "run_lock",
}

__all__ = list(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
