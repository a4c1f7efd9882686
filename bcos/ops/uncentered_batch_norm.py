"""``bcos::uncentered_batch_norm``: the training-mode uncentered batch norm as one operator.

It computes what :class:`bcos.modules.norms.BatchNormUncentered2d` writes in plain PyTorch in
training mode: ``y = x · w / sqrt(var_c + eps) + b``, the biased variance taken over (N, H, W) of
each channel and the mean *not* subtracted. It also returns that variance (for the running
statistics; not differentiable).

On the CPU one C++ kernel (:mod:`bcos.ops.cpu_kernels`) takes the statistics in one pass (float64
moments) and writes the output in a second, forward and backward. Elsewhere torch's fused batch
norm runs and the mean's term is added back per channel: ``x·w/σ = BN(x) + μ·w/σ``, and the
uncentered gradient is the centered one (taken with mean 0) plus a per-channel constant. With
``detach`` (explanation mode) backward treats the variance as a constant.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from bcos.ops import cpu_kernels
from bcos.ops.memory_format import memory_format_of

__all__ = ["uncentered_batch_norm", "uncentered_batch_norm_reference"]


def uncentered_batch_norm(
    x: Tensor, weight: Tensor | None, bias: Tensor | None, eps: float, detach: bool
) -> tuple[Tensor, Tensor]:
    """``(y, var)`` for ``x`` [N, C, H, W] in training mode; see the module docstring."""
    y, var, _, _ = torch.ops.bcos.uncentered_batch_norm(x, weight, bias, eps, detach)
    return y, var


def uncentered_batch_norm_reference(
    x: Tensor, weight: Tensor | None, bias: Tensor | None, eps: float, detach: bool
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The operator's outputs (``y``, variance, mean, ``1/σ``) in plain differentiable operations:
    what export decomposes it to, and what the tests compare it with."""
    source = x.detach() if detach else x
    var, mean = torch.var_mean(source, dim=(0, 2, 3), correction=0)
    invstd = (var + eps).rsqrt()
    scale = invstd if weight is None else invstd * weight
    y = x * scale.view(1, -1, 1, 1)
    if bias is not None:
        y = y + bias.view(1, -1, 1, 1)
    return y, var.detach(), mean.detach(), invstd.detach()


@torch.library.custom_op("bcos::uncentered_batch_norm", mutates_args=())
def _uncentered_batch_norm(
    x: Tensor, weight: Tensor | None, bias: Tensor | None, eps: float, detach: bool
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Returns ``y``, the variance, and the mean and ``1/σ`` per channel (kept for backward)."""
    parameters = [t for t in (weight, bias) if t is not None]
    with torch.autocast(x.device.type, enabled=False):  # the inputs are cast already
        if cpu_kernels.usable(x, *parameters):
            y, mean, invstd = torch.ops.bcos_cpu.uncentered_batch_norm(x, weight, bias, eps)
        else:
            y, mean, invstd = torch.native_batch_norm(x, weight, None, None, None, True, 0.0, eps)
            # the kernel subtracted the mean: add back mean·w/σ (and the bias) per channel
            shift = mean * invstd if weight is None else mean * invstd * weight
            if bias is not None:
                shift = shift + bias
            y = y.add_(shift.to(y.dtype).view(1, -1, 1, 1))
    # statistics in float32 at least, whatever the kernel kept; the output in x's layout
    statistics = torch.promote_types(x.dtype, torch.float32)
    mean, invstd = mean.to(statistics), invstd.to(statistics)
    var = invstd.pow(-2).sub_(eps).clamp_min_(0)  # σ² = var + eps, as the kernels define 1/σ
    return y.contiguous(memory_format=memory_format_of(x)), var, mean, invstd


@_uncentered_batch_norm.register_fake
def _(x, weight, bias, eps, detach):
    channels = x.shape[1]
    statistics = x.new_empty(channels, dtype=torch.promote_types(x.dtype, torch.float32))
    y = x.new_empty(x.shape).contiguous(memory_format=memory_format_of(x))
    return y, statistics, statistics.clone(), statistics.clone()


def _setup_context(ctx: Any, inputs: tuple[Any, ...], output: tuple[Tensor, ...]) -> None:
    x, weight, bias, eps, detach = inputs
    _, var, mean, invstd = output
    ctx.mark_non_differentiable(var, mean, invstd)
    ctx.save_for_backward(x, weight, mean, invstd)
    ctx.eps, ctx.detach, ctx.has_weight = eps, detach, weight is not None


def _backward(ctx: Any, grad: Tensor, *_unused: Tensor) -> tuple[Tensor | None, ...]:
    x, weight, mean, invstd = ctx.saved_tensors
    need_x, need_w, need_b = ctx.needs_input_grad[:3]
    grad_x, grad_w, grad_b = torch.ops.bcos.uncentered_batch_norm_backward(
        grad, x, weight, mean, invstd, ctx.eps, ctx.detach, need_x, need_w, need_b
    )
    return (
        grad_x if need_x else None,
        grad_w if need_w and ctx.has_weight else None,
        grad_b if need_b else None,
        None,
        None,
    )


_uncentered_batch_norm.register_autograd(_backward, setup_context=_setup_context)


@torch.library.custom_op("bcos::uncentered_batch_norm_backward", mutates_args=())
def _uncentered_batch_norm_backward(
    grad: Tensor,
    x: Tensor,
    weight: Tensor | None,
    mean: Tensor,
    invstd: Tensor,
    eps: float,
    detach: bool,
    need_x: bool,
    need_w: bool,
    need_b: bool,
) -> tuple[Tensor, Tensor, Tensor]:
    """Gradients for ``x``, the weight and the bias (empty tensors for those not asked for)."""
    dense = grad.contiguous()
    if not detach and cpu_kernels.usable(dense, x):
        grad_x, grad_w, grad_b = torch.ops.bcos_cpu.uncentered_batch_norm_backward(
            dense, x, weight, mean, invstd, need_x, need_w, need_b
        )
    elif detach:
        dims, view = [0, 2, 3], (1, -1, 1, 1)
        scale = invstd if weight is None else invstd * weight
        grad_x = grad * scale.to(grad.dtype).view(view) if need_x else None
        grad_w = (grad * x).sum(dims, dtype=invstd.dtype).mul_(invstd) if need_w else None
        grad_b = grad.sum(dims, dtype=invstd.dtype) if need_b else None
    else:
        # centered backward with mean 0 gives g·w/σ - x·w/σ³·mean(g·x) - w/σ·mean(g); the
        # uncentered gradient g·w/σ - (x - μ)·w/σ³·mean(g·x) differs by the per-channel
        # constant w/σ·(mean(g) + μ/σ²·mean(g·x))
        # the statistics in the dtype the kernel expects: the parameters' on the CPU, the
        # accumulation type (what the forward kernel returned) elsewhere
        kernel_invstd = invstd.to(weight.dtype) if weight is not None and x.is_cpu else invstd
        grad_x, grad_w, grad_b = torch.ops.aten.native_batch_norm_backward(
            grad, x, weight, None, None, torch.zeros_like(kernel_invstd), kernel_invstd, True, eps,
            [need_x, True, True],
        )  # fmt: skip
        if need_x:
            count = grad.numel() // grad.shape[1]
            shift = grad_b + mean * invstd * grad_w  # grad_w = Σ g·x / σ
            shift = shift * invstd if weight is None else shift * invstd * weight
            grad_x = grad_x.add_(shift.div_(count).to(grad_x.dtype).view(1, -1, 1, 1))
    return (  # outputs must not alias each other: a new empty tensor for each one not asked for
        grad_x.contiguous(memory_format=memory_format_of(x)) if need_x and grad_x is not None else x.new_empty(0),
        grad_w if need_w and grad_w is not None else mean.new_empty(0),
        grad_b if need_b and grad_b is not None else mean.new_empty(0),
    )


@_uncentered_batch_norm_backward.register_fake
def _(grad, x, weight, mean, invstd, eps, detach, need_x, need_w, need_b):
    return (
        x.new_empty(x.shape).contiguous(memory_format=memory_format_of(x)) if need_x else x.new_empty(0),
        mean.new_empty(mean.shape) if need_w else mean.new_empty(0),
        mean.new_empty(mean.shape) if need_b else mean.new_empty(0),
    )
