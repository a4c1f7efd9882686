"""A small, printable description of a learning-rate schedule (with optional warmup).

Configs hold an :class:`LRSchedulerFactory`; the training code calls :meth:`LRSchedulerFactory.create`
with the optimizer and the number of optimizer steps of the whole run, and hands the result to
Lightning (it is the ``"lr_scheduler"`` entry of ``configure_optimizers``).
"""

from __future__ import annotations

import math

import warnings
from typing import Any, Literal

import torch
from torch.optim import lr_scheduler

from bcos.errors import ConfigError, unknown_name

__all__ = ["LRSchedulerFactory"]

_SCHEDULERS = ("steplr", "cosineannealinglr", "exponentiallr")
_WARMUP_METHODS = ("constant", "linear")
_INTERVALS = ("epoch", "step")


def _positive(value: object) -> bool:
    """Whether ``value`` is a finite number > 0 (NaN fails every comparison, so ``<= 0`` lets it through)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0


class LRSchedulerFactory:
    """Builds a StepLR, CosineAnnealingLR or ExponentialLR schedule, optionally after a warmup.

    Args:
        name: ``"steplr"``, ``"cosineannealinglr"`` or ``"exponentiallr"`` (case-insensitive).
        step_size: StepLR period in epochs (converted to steps for ``interval="step"``).
        gamma: decay factor of StepLR and ExponentialLR.
        epochs: length of the schedule in epochs; needed for cosine annealing and for
            ``interval="step"`` (to know the number of steps per epoch).
        lr_min: final learning rate of cosine annealing.
        interval: ``"epoch"`` (the scheduler steps once per epoch) or ``"step"`` (once per
            optimizer step).
        warmup_epochs: warmup length in epochs (either interval).
        warmup_steps: warmup length in optimizer steps (only with ``interval="step"``).
        warmup_method: ``"linear"`` (from ``warmup_decay * lr`` up to ``lr``) or ``"constant"``
            (``warmup_decay * lr`` during the warmup).
        warmup_decay: the warmup's starting factor, in (0, 1].

    With warmup, the main schedule starts when the warmup ends and runs for the remaining time
    (cosine annealing: ``epochs - warmup_epochs`` epochs, or the total steps minus ``warmup_steps``).
    """

    def __init__(
        self,
        name: str,
        step_size: int = 30,
        gamma: float = 0.1,
        epochs: int | None = None,
        lr_min: float = 0.0,
        interval: Literal["epoch", "step"] = "epoch",
        warmup_epochs: int | None = None,
        warmup_steps: int | None = None,
        warmup_method: str = "constant",
        warmup_decay: float = 0.01,
    ) -> None:
        if not isinstance(name, str) or name.lower() not in _SCHEDULERS:
            raise unknown_name("lr scheduler", str(name), _SCHEDULERS)
        if not isinstance(warmup_method, str) or warmup_method.lower() not in _WARMUP_METHODS:
            raise unknown_name("warmup method", str(warmup_method), _WARMUP_METHODS)
        if interval not in _INTERVALS:
            raise unknown_name("scheduler interval", str(interval), _INTERVALS)
        if epochs is not None and not _positive(epochs):
            raise ConfigError(f"lr scheduler epochs must be positive, got {epochs}")
        if not _positive(step_size):
            raise ConfigError(f"lr scheduler step_size must be a positive number of epochs, got {step_size!r}")
        if name.lower() == "cosineannealinglr" and epochs is None:
            raise ConfigError("the cosineannealinglr scheduler needs epochs=<number of epochs>")
        if interval == "step" and epochs is None:
            raise ConfigError('interval="step" needs epochs=<number of epochs> (steps per epoch)')
        if warmup_epochs is not None and warmup_steps is not None:
            raise ConfigError("give either warmup_epochs or warmup_steps, not both")
        if warmup_steps is not None and interval != "step":
            raise ConfigError('warmup_steps needs interval="step" (or use warmup_epochs)')
        if warmup_epochs is not None and not _positive(warmup_epochs):
            raise ConfigError(f"warmup_epochs must be positive (or None), got {warmup_epochs}")
        if warmup_steps is not None and not _positive(warmup_steps):
            raise ConfigError(f"warmup_steps must be positive (or None), got {warmup_steps}")
        if not (isinstance(warmup_decay, (int, float)) and 0 < warmup_decay <= 1):
            raise ConfigError(f"warmup_decay must be in (0, 1], got {warmup_decay}")
        for key, value in (("gamma", gamma), ("lr_min", lr_min)):  # NaN passes every comparison
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise ConfigError(f"lr scheduler {key} must be a finite non-negative number, got {value!r}")
        if (
            name.lower() == "cosineannealinglr"
            and warmup_epochs is not None
            and epochs is not None
            and warmup_epochs >= epochs
        ):
            raise ConfigError(
                f"warmup_epochs ({warmup_epochs}) must be fewer than epochs ({epochs})"
            )

        self.name = name
        self.step_size = step_size
        self.gamma = gamma
        self.epochs = epochs
        self.lr_min = lr_min
        self.interval = interval
        self.warmup_epochs = warmup_epochs
        self.warmup_steps = warmup_steps
        self.warmup_method = warmup_method
        self.warmup_decay = warmup_decay

    @property
    def has_warmup(self) -> bool:
        """Whether the schedule starts with a warmup."""
        return bool(self.warmup_epochs or self.warmup_steps)

    def create(
        self, optimizer: torch.optim.Optimizer, total_steps: int | None = None
    ) -> dict[str, Any]:
        """Build the schedule for ``optimizer``.

        Args:
            optimizer: the optimizer whose learning rate is scheduled.
            total_steps: optimizer steps of the whole run (Lightning's
                ``trainer.estimated_stepping_batches``); required for ``interval="step"``.

        Returns:
            ``{"scheduler": <torch scheduler>, "interval": "epoch" | "step"}``, the form Lightning
            accepts as the ``"lr_scheduler"`` entry of ``configure_optimizers``.
        """
        steps_per_epoch = 1
        if self.interval == "step":
            if total_steps is None or total_steps <= 0:
                raise ConfigError(
                    'interval="step" needs total_steps (the number of optimizer steps of the run)'
                )
            assert self.epochs is not None  # checked in __init__
            steps_per_epoch = max(1, total_steps // self.epochs)

        if self.warmup_steps is not None:
            warmup_length = self.warmup_steps
        elif self.warmup_epochs is not None:
            warmup_length = self.warmup_epochs * steps_per_epoch
        else:
            warmup_length = 0

        name = self.name.lower()
        main: lr_scheduler.LRScheduler
        if name == "steplr":
            main = lr_scheduler.StepLR(
                optimizer, step_size=self.step_size * steps_per_epoch, gamma=self.gamma
            )
        elif name == "cosineannealinglr":
            assert self.epochs is not None  # checked in __init__
            t_max = self.epochs * steps_per_epoch - warmup_length
            if t_max < 1:
                warnings.warn(
                    f"the run ({self.epochs * steps_per_epoch} {self.interval}s) is not longer "
                    f"than the warmup ({warmup_length}); cosine annealing gets 1 {self.interval}",
                    stacklevel=2,
                )
                t_max = 1
            main = lr_scheduler.CosineAnnealingLR(optimizer, T_max=t_max, eta_min=self.lr_min)
        else:
            main = lr_scheduler.ExponentialLR(optimizer, gamma=self.gamma)

        scheduler: lr_scheduler.LRScheduler = main
        if warmup_length:
            warmup: lr_scheduler.LRScheduler
            if self.warmup_method.lower() == "linear":
                warmup = lr_scheduler.LinearLR(
                    optimizer, start_factor=self.warmup_decay, total_iters=warmup_length
                )
            else:
                warmup = lr_scheduler.ConstantLR(
                    optimizer, factor=self.warmup_decay, total_iters=warmup_length
                )
            scheduler = lr_scheduler.SequentialLR(
                optimizer, schedulers=[warmup, main], milestones=[warmup_length]
            )
        return {"scheduler": scheduler, "interval": self.interval}

    def _settings(self) -> dict[str, Any]:
        return dict(
            name=self.name,
            step_size=self.step_size,
            gamma=self.gamma,
            epochs=self.epochs,
            lr_min=self.lr_min,
            interval=self.interval,
            warmup_epochs=self.warmup_epochs,
            warmup_steps=self.warmup_steps,
            warmup_method=self.warmup_method,
            warmup_decay=self.warmup_decay,
        )

    def with_epochs(self, epochs: int | None) -> LRSchedulerFactory:
        """A copy with another number of epochs and every other setting (warmup included) kept."""
        return type(self)(**{**self._settings(), "epochs": epochs})

    def _described_settings(self) -> dict[str, Any]:
        """The settings that matter for this scheduler kind, in a fixed order."""
        name = self.name.lower()
        result: dict[str, Any] = {}
        if name == "steplr":
            result.update(step_size=self.step_size, gamma=self.gamma)
        elif name == "cosineannealinglr":
            result.update(epochs=self.epochs, lr_min=self.lr_min)
        else:
            result.update(gamma=self.gamma)
        if self.has_warmup:
            result.update(
                warmup_method=self.warmup_method,
                warmup_epochs=self.warmup_epochs,
                warmup_steps=self.warmup_steps,
                warmup_decay=self.warmup_decay,
            )
        result.update(interval=self.interval)
        return result

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, LRSchedulerFactory):
            return NotImplemented
        return self._settings() == other._settings()

    def __repr__(self) -> str:
        args = "".join(f", {k}={v!r}" for k, v in self._described_settings().items())
        return f"{type(self).__name__}(scheduler={self.name.lower()!r}{args})"

    def __to_config__(self) -> dict[str, Any]:
        """Plain-data description (see ``bcos.experiments.utils.sanitize_config``)."""
        return dict(name=self.name.lower(), **self._described_settings())
