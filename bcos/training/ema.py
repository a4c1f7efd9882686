"""Exponential moving average (EMA) of a model's weights, as in torchvision's classification recipe.

The average lives in ``ema.module`` (a copy of the model) and the update counter in
``ema.n_averaged``, so a Lightning checkpoint stores it under ``ema.module.*`` / ``ema.n_averaged``
exactly like the reference does, and the checkpoint loaders find it there.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from bcos.errors import ConfigError

__all__ = ["ExponentialMovingAverage", "adjusted_ema_decay"]


class ExponentialMovingAverage(nn.Module):
    """Keeps ``avg = decay * avg + (1 - decay) * current`` for every parameter and buffer.

    The first update (``n_averaged == 0``) copies the weights. Integer buffers (such as batch-norm
    ``num_batches_tracked``) are copied rather than averaged.
    """

    n_averaged: torch.Tensor

    def __init__(self, model: nn.Module, decay: float) -> None:
        super().__init__()
        if not 0.0 <= decay <= 1.0:
            raise ConfigError(f"EMA decay must lie in [0, 1], got {decay}; fix config['ema']['decay']")
        self.decay = float(decay)
        self.module = copy.deepcopy(model)
        self.module.requires_grad_(False)
        self.register_buffer("n_averaged", torch.tensor(0, dtype=torch.long))

    def forward(self, *args, **kwargs):
        """Run the averaged model."""
        return self.module(*args, **kwargs)

    @torch.no_grad()
    def update_parameters(self, model: nn.Module) -> None:
        """Fold the current weights of ``model`` (same architecture) into the average."""
        averaged = [*self.module.parameters(), *self.module.buffers()]
        current = [*model.parameters(), *model.buffers()]
        if len(averaged) != len(current):
            raise ValueError("EMA update with a model of a different architecture")
        first = int(self.n_averaged) == 0
        floats_avg, floats_cur = [], []
        for avg, cur in zip(averaged, current):
            cur = cur.detach().to(avg.device)
            if first or not avg.is_floating_point():
                avg.copy_(cur)
            else:
                floats_avg.append(avg)
                floats_cur.append(cur.to(avg.dtype))
        if floats_avg:
            # lerp: avg + (1 - decay) * (cur - avg) == decay * avg + (1 - decay) * cur
            torch._foreach_lerp_(floats_avg, floats_cur, 1.0 - self.decay)
        self.n_averaged += 1


def adjusted_ema_decay(
    decay: float,
    *,
    steps: int,
    batch_size: int,
    world_size: int = 1,
    accumulate_grad_batches: int = 1,
    max_epochs: int,
) -> float:
    """Per-update decay for an EMA updated every ``steps`` optimizer steps (torchvision's rule).

    ``decay`` is stated per training sample seen over the whole run; this rescales it to one update
    that happens every ``world_size * accumulate_grad_batches * batch_size * steps`` samples:
    ``alpha = min(1, (1 - decay) * that / max_epochs)``, result ``1 - alpha``.
    """
    if steps < 1 or max_epochs < 1:
        raise ConfigError(f"EMA needs steps >= 1 and max_epochs >= 1, got steps={steps}, max_epochs={max_epochs}")
    adjust = world_size * accumulate_grad_batches * batch_size * steps / max_epochs
    alpha = min(1.0, (1.0 - decay) * adjust)
    return 1.0 - alpha
