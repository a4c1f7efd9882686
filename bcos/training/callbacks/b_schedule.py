"""The B schedule of B-cosification: B grows linearly from its start value to the target over the first epochs.

A B-cosified model with ``b = 1`` computes what the original computed (``bcos.bcosify``), so
fine-tuning can start from the original function and raise B step by step, as the
B-cosification paper's ablation does. The value of each epoch follows from the epoch number
alone, so a resumed run continues the schedule exactly.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import lightning.pytorch as pl

from bcos.bcosification import set_b
from bcos.errors import ConfigError

__all__ = ["BSchedule", "b_of_epoch"]


def b_of_epoch(epoch: int, start: float, end: float, epochs: int) -> float:
    """B during (0-based) ``epoch``: ``start`` at epoch 0, ``end`` from epoch ``epochs`` on."""
    if epochs <= 0:
        return float(end)
    return float(start + (end - start) * min(1.0, epoch / epochs))


class BSchedule(pl.Callback):
    """Sets B of every B-cosified layer of the trained model at the start of each training epoch."""

    def __init__(self, start: float, end: float, epochs: int) -> None:
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v >= 1 for v in (start, end)):
            raise ConfigError(f"the B schedule needs finite start and end >= 1, got {start!r} and {end!r}")
        if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 0:
            raise ConfigError(f"the B schedule's epochs must be a whole number >= 0, got {epochs!r}")
        self.start, self.end, self.epochs = float(start), float(end), int(epochs)

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> BSchedule:
        """From a config's ``b_schedule`` section: ``{"start": 1, "end": 2, "epochs": 3}``."""
        unknown = sorted(set(config) - {"start", "end", "epochs"})
        missing = sorted({"start", "end", "epochs"} - set(config))
        if unknown or missing:
            raise ConfigError(f"b_schedule takes the keys start, end and epochs; got unknown {unknown} and missing {missing}")
        return cls(config["start"], config["end"], config["epochs"])

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        b = b_of_epoch(trainer.current_epoch, self.start, self.end, self.epochs)
        models = [pl_module.model] + ([pl_module.ema.module] if getattr(pl_module, "ema", None) is not None else [])
        for model in models:
            set_b(model, b)
        pl_module.log("b", b, on_epoch=True, on_step=False, sync_dist=False)
