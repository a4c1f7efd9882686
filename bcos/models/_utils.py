"""Helpers shared by the CNN architecture files (resnet, densenet, vgg, convnext).

Logit-layer defaults, builder keyword checking, the refusal of ``pretrained=True`` on raw
architecture builders, and row-mode stochastic depth.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Collection, Mapping
from typing import Any

import torch
from torch import nn

from bcos.errors import ConfigError, UnknownArgumentError, closest_match
from bcos.modules import LogitLayer

__all__ = [
    "default_logit_bias",
    "make_logit_layer",
    "check_builder_kwargs",
    "refuse_pretrained",
    "linear_drop_probs",
    "StochasticDepth",
]

def default_logit_bias(num_classes: int) -> float:
    """The logit bias ``-log(C - 1)`` that makes every sigmoid output start at the prior ``1/C``.

    With a single class there is no prior to encode, so the bias is 0.
    """
    if num_classes < 1:
        raise ConfigError(f"num_classes must be at least 1, got {num_classes}")
    return -math.log(num_classes - 1) if num_classes > 1 else 0.0


def make_logit_layer(
    num_classes: int, logit_bias: float | None, logit_temperature: float | None
) -> LogitLayer:
    """The final :class:`LogitLayer`: ``logit_bias=None`` means :func:`default_logit_bias`;
    any explicit value (0.0 included) is used as given."""
    bias = default_logit_bias(num_classes) if logit_bias is None else float(logit_bias)
    return LogitLayer(logit_temperature=logit_temperature, logit_bias=bias)


def check_builder_kwargs(
    builder: str,
    kwargs: Mapping[str, Any],
    target: Callable[..., Any],
    fixed: Collection[str] = (),
    also_valid: Collection[str] = (),
) -> None:
    """Raise a TypeError naming the valid keywords when ``kwargs`` has one that is not valid.

    Valid are the parameters of ``target`` except ``fixed`` (those the builder sets itself, e.g.
    the depth, which callers may not override), plus ``also_valid`` (the builder's own ones).
    """
    params = inspect.signature(target).parameters
    valid = [
        name
        for name, p in params.items()
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and name not in fixed
    ]
    valid += [name for name in also_valid if name not in valid]
    unknown = [k for k in kwargs if k not in valid]
    if not unknown:
        return
    name = unknown[0]
    hint = closest_match(name, valid)
    did_you_mean = f"did you mean {hint!r}? " if hint else ""
    raise UnknownArgumentError(
        f"{builder}() got an unexpected keyword argument {name!r}; {did_you_mean}"
        f"valid keyword arguments: {', '.join(valid)}"
    )


def refuse_pretrained(builder: str, pretrained: bool) -> None:
    """Architecture builders never download weights; point to the registry that does."""
    if pretrained:
        raise ConfigError(
            f"{builder}(pretrained=True) is not supported: architecture builders create untrained "
            f"models; load published weights with bcos.create_model(name, pretrained=True) "
            f"(names in bcos.models.registry)"
        )


def linear_drop_probs(max_prob: float, num_blocks: int) -> list[float]:
    """Stochastic-depth probabilities growing linearly from 0 (first block) to ``max_prob``."""
    if num_blocks <= 1:
        return [0.0] * num_blocks
    return [max_prob * i / (num_blocks - 1) for i in range(num_blocks)]


class StochasticDepth(nn.Module):
    """Drop a residual branch for a random subset of the samples while training ("row" mode of
    torchvision's ``StochasticDepth``, which it replaces to keep ``import bcos.models`` light).

    Each sample's branch is zeroed with probability ``p`` and the kept ones are scaled by
    ``1 / (1 - p)``; in eval mode (or with ``p == 0``) it is the identity. No parameters.
    """

    def __init__(self, p: float) -> None:
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise ConfigError(f"stochastic depth probability must be in [0, 1], got {p}")
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        survival = 1.0 - self.p
        keep = torch.empty((x.shape[0],) + (1,) * (x.dim() - 1), dtype=x.dtype, device=x.device)
        keep.bernoulli_(survival)
        if survival > 0.0:
            keep.div_(survival)
        return x * keep

    def extra_repr(self) -> str:
        return f"p={self.p}"
