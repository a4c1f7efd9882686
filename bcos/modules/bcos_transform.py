"""The B-cos transform, written once for the convolution and the linear layer.

Given the response ``lin = ŵᵀx`` of unit-norm weights and the input norm ``||x||`` (same shape or
broadcastable), the B-cos output is ``|cos(x, w)|^(B-1) · ŵᵀx`` with ``cos = lin / ||x||``.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Mapping
from typing import Any

from torch import Tensor

from bcos.errors import ConfigError, UnknownArgumentError, closest_match

__all__ = ["bcos_scale", "max_out_reduce", "check_layer_arguments"]


def bcos_scale(linear_out: Tensor, norm: Tensor, b: float, detach: bool) -> Tensor:
    """Return ``|linear_out / norm|^(b-1) * linear_out``.

    ``detach`` (explanation mode) treats the dynamic scale as a constant, so the gradient only flows
    through the final ``linear_out`` factor. ``b == 2`` needs no ``pow`` and adds no epsilon (as the
    reference); other ``b`` add 1e-6 to ``|cos|`` before the power.
    """
    if b == 2:
        scale = linear_out.abs() / norm
    else:
        scale = (linear_out / norm).abs().add(1e-6).pow(b - 1)
    if detach:
        scale = scale.detach()
    return scale * linear_out


def max_out_reduce(x: Tensor, dim: int, num_outputs: int, max_out: int) -> Tensor:
    """MaxOut over ``max_out`` consecutive units: unit m of output o is index ``o * max_out + m``."""
    return x.unflatten(dim, (num_outputs, max_out)).max(dim=dim + 1 if dim >= 0 else dim).values


def check_layer_arguments(
    layer: str,
    unexpected: Mapping[str, Any],
    valid: Iterable[str],
    *,
    b: float,
    max_out: int,
    bias: bool,
) -> None:
    """Validate the B-cos specific constructor arguments shared by conv and linear layers.

    Unknown keyword arguments raise an ``UnknownArgumentError`` (a ``TypeError``) that names the valid ones (the reference
    silently ignored them, so typos went unnoticed).
    """
    if unexpected:
        valid = list(valid)
        name = sorted(unexpected)[0]
        suggestion = closest_match(name, valid)
        hint = f"; did you mean {suggestion!r}?" if suggestion else ""
        raise UnknownArgumentError(
            f"{layer} got unexpected keyword argument(s) {', '.join(sorted(unexpected))}{hint} "
            f"(valid: {', '.join(valid)})"
        )
    if bias:
        raise ConfigError(f"{layer} has no bias (B-cos layers are bias-free); remove bias=True")
    if isinstance(max_out, bool) or not isinstance(max_out, numbers.Integral) or max_out < 1:
        raise ConfigError(f"{layer}: max_out must be a positive integer, got {max_out!r}")
    if isinstance(b, bool) or not isinstance(b, numbers.Real) or not 1 <= b < math.inf:  # NaN fails too
        raise ConfigError(f"{layer}: b must be a finite number >= 1 (b=1 is a plain normed layer), got {b!r}")
