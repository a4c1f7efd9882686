"""The B-cos transform, written once for the convolution and the linear layer.

Given the response ``lin = ŵᵀx`` of unit-norm weights and the input norm ``||x||`` (same shape or
broadcastable), the B-cos output is ``|cos(x, w)|^(B-1) · ŵᵀx`` with ``cos = lin / ||x||``.

For the default ``B = 2`` the transform is a custom autograd function that keeps nothing but its
own output and the (small) norm for the backward pass: with ``out = lin·|lin|/norm`` the factor
``|lin|/norm`` equals ``sqrt(|out|/norm)``, and ``out`` is usually kept by the next layer anyway
(a norm or a convolution saves its input), so B-cos layers add almost no activation memory.
"""

from __future__ import annotations

import contextlib
import numbers
from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import Tensor

from bcos.errors import ConfigError, UnknownArgumentError, closest_match

__all__ = [
    "bcos_scale",
    "b2_scale_grad",
    "max_out_reduce",
    "check_layer_arguments",
    "autocast_dtype",
    "autocast_disabled",
]


def autocast_dtype(device_type: str) -> torch.dtype | None:
    """The autocast dtype active for ``device_type``, or None when autocast is off there."""
    if torch.amp.is_autocast_available(device_type) and torch.is_autocast_enabled(device_type):
        return torch.get_autocast_dtype(device_type)
    return None


def autocast_disabled(device_type: str, active: bool) -> contextlib.AbstractContextManager:
    """Autocast switched off for the body of a custom function (its inputs are cast already):
    otherwise reductions such as ``sum`` would be run in float32 on full-size copies.

    Not while ``torch.compile`` traces: dynamo then leaves autocast off for the rest of the graph
    (torch 2.14: the next B-cos layer saw no autocast and mixed dtypes), and the compiler fuses
    the casts of such reductions anyway.
    """
    if active and not torch.compiler.is_compiling():
        return torch.autocast(device_type=device_type, enabled=False)
    return contextlib.nullcontext()


def b2_scale_grad(
    out: Tensor,
    inv_norm: Tensor,
    grad: Tensor,
    detach: bool,
    buffer: Tensor | None = None,
    scale: Tensor | None = None,
) -> Tensor:
    """Gradient of ``out = lin·|lin|/norm`` with respect to ``lin``, from the output alone.

    ``d out / d lin = 2|lin|/norm = 2·sqrt(|out|/norm)``; in explanation mode the scale is a constant
    and the derivative is ``|lin|/norm = sqrt(|out|/norm)``. ``inv_norm`` (``1/norm``) must
    broadcast against ``out``. ``scale`` (broadcastable, non-negative) multiplies the square
    root's argument: the gradient with respect to ``r = lin/sqrt(scale)``. ``buffer`` (shaped like
    ``out``, contents not needed any more) receives the result instead of a new tensor.
    """
    factor = (inv_norm if detach else inv_norm * 4).to(out.dtype)
    result = torch.mul(out, factor, out=buffer)
    if scale is not None:
        result = result.mul_(scale.to(out.dtype))
    return result.abs_().sqrt_().mul_(grad)


class _B2Transform(torch.autograd.Function):
    """``lin·|lin|/norm`` (B = 2) saving only the output and the norm for backward."""

    @staticmethod
    def forward(ctx: Any, linear_out: Tensor, norm: Tensor, detach: bool) -> Tensor:
        inv_norm = norm.reciprocal().to(linear_out.dtype)
        out = linear_out.abs().mul_(inv_norm).mul_(linear_out)
        ctx.save_for_backward(out, norm)
        ctx.detach = detach
        return out

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, Tensor | None, None]:
        out, norm = ctx.saved_tensors
        inv_norm = norm.reciprocal()
        grad_lin = b2_scale_grad(out, inv_norm, grad, ctx.detach) if ctx.needs_input_grad[0] else None
        grad_norm = None
        if ctx.needs_input_grad[1] and not ctx.detach:
            # d out / d norm = -out / norm, summed over the dimensions norm was broadcast along
            grad_norm = (grad * out).sum_to_size(norm.shape).to(norm.dtype).mul_(inv_norm).neg_()
        return grad_lin, grad_norm, None


def bcos_scale(linear_out: Tensor, norm: Tensor, b: float, detach: bool) -> Tensor:
    """Return ``|linear_out / norm|^(b-1) * linear_out``.

    ``detach`` (explanation mode) treats the dynamic scale as a constant, so the gradient only flows
    through the final ``linear_out`` factor. ``b == 2`` avoids ``pow`` and adds no epsilon (as the
    reference); other ``b`` add 1e-6 to ``|cos|`` before the power.
    """
    if b == 2:
        return _B2Transform.apply(linear_out, norm, detach)
    scale_lin = linear_out.detach() if detach else linear_out
    scale_norm = norm.detach() if detach else norm
    scale = (scale_lin / scale_norm).abs().add_(1e-6).pow(b - 1)
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
    if isinstance(b, bool) or not isinstance(b, numbers.Real) or b < 1:
        raise ConfigError(f"{layer}: b must be a number >= 1 (b=1 is a plain normed layer), got {b!r}")
