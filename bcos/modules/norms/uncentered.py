"""Uncentered normalisation layers: divide by the standard deviation without subtracting the mean.

"Uncentered" means the mean is NOT subtracted, but the divisor is the usual (centered, biased)
standard deviation ``sqrt(var + eps)``. Without a bias these layers are linear in the input once the
variance is fixed, so in explanation mode the variance is computed from the detached input (batch
norms in eval mode use their constant running variance anyway).

The per-channel batch norm in training runs as one custom autograd function built on torch's fused
batch-norm kernels: ``x·w/σ = BN(x) + μ·w/σ``, and the uncentered gradient is the centered one
(with mean 0) plus a per-channel constant, so forward and backward cost what ``nn.BatchNorm2d``
costs. On the CPU, fused kernels (:mod:`bcos.modules.cpu_kernels`) do it without the constant's
extra pass, forward and backward.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from bcos.errors import ConfigError
from bcos.modules import cpu_kernels
from bcos.modules.explanation_mode import DetachableModule
from bcos.modules.norms._common import (
    channel_view,
    check_4d,
    check_groups,
    groups_to_channels,
    scale_shift,
)

__all__ = [
    "BatchNormUncentered2d",
    "AllNormUncentered2d",
    "group_norm_uncentered",
    "GroupNormUncentered2d",
    "GNInstanceNormUncentered2d",
    "GNLayerNormUncentered2d",
    "PositionNormUncentered2d",
]


class _UncenteredBatchNorm(torch.autograd.Function):
    """Training-mode ``x·w/sqrt(var_c + eps) + b`` over (N, *spatial) with the fused batch-norm kernels.

    Returns the output and the biased batch variance (for the running statistics, not
    differentiable). With ``detach`` (explanation mode) the variance is a constant in backward.
    """

    @staticmethod
    def forward(
        ctx: Any, x: Tensor, weight: Tensor | None, bias: Tensor | None, eps: float, detach: bool
    ) -> tuple[Tensor, Tensor]:
        parameters = [t for t in (weight, bias) if t is not None]
        ctx.fused = x.dim() == 4 and cpu_kernels.usable(x, *parameters)
        if ctx.fused:  # one statistics pass and one output pass (bcos.modules.cpu_kernels)
            out, mean, invstd = torch.ops.bcos_cpu.uncentered_batch_norm(x, weight, bias, eps)
        else:
            out, mean, invstd = torch.native_batch_norm(x, weight, None, None, None, True, 0.0, eps)
            # the kernel subtracted the mean: add back mean·w/σ (and the bias) per channel
            shift = mean * invstd if weight is None else mean * invstd * weight
            if bias is not None:
                shift = shift + bias
            out = out.add_(shift.to(out.dtype).view(1, -1, *([1] * (x.dim() - 2))))
        var = invstd.pow(-2).sub_(eps)
        ctx.mark_non_differentiable(var)
        ctx.save_for_backward(x, weight, mean, invstd)
        ctx.eps = eps
        ctx.detach = detach
        ctx.has_bias = bias is not None
        return out, var

    @staticmethod
    def backward(ctx: Any, grad: Tensor, _grad_var: Tensor | None) -> tuple[Tensor | None, ...]:
        x, weight, mean, invstd = ctx.saved_tensors
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        dims = [0, *range(2, x.dim())]
        view = (1, -1, *([1] * (x.dim() - 2)))
        grad_x = grad_w = grad_b = None
        # x is contiguous already: the fused forward took only contiguous inputs
        dense_grad = grad.contiguous() if ctx.fused and not ctx.detach else None
        if dense_grad is not None and cpu_kernels.usable(dense_grad, x):
            grad_x, grad_w, grad_b = torch.ops.bcos_cpu.uncentered_batch_norm_backward(
                dense_grad, x, weight, mean, invstd, need_x, need_w, need_b
            )
            return (
                grad_x if need_x else None, grad_w if need_w else None,
                grad_b if need_b else None, None, None,
            )  # fmt: skip
        if ctx.detach:
            scale = invstd if weight is None else invstd * weight
            if need_x:
                grad_x = grad * scale.to(grad.dtype).view(view)
            if need_w:
                grad_w = (grad * x).sum(dims, dtype=invstd.dtype).mul_(invstd)
            if need_b:
                grad_b = grad.sum(dims, dtype=invstd.dtype)
        else:
            # centered backward with mean 0 gives g·w/σ - x·w/σ³·mean(g·x) - w/σ·mean(g); the
            # uncentered gradient g·w/σ - (x - μ)·w/σ³·mean(g·x) differs by the per-channel
            # constant w/σ·(mean(g) + μ/σ²·mean(g·x))
            grad_x, grad_w0, grad_b = torch.ops.aten.native_batch_norm_backward(
                grad, x, weight, None, None, torch.zeros_like(mean), invstd, True, ctx.eps,
                [need_x, True, True],
            )  # fmt: skip
            if need_x:
                count = grad.numel() // grad.shape[1]
                shift = grad_b + mean * invstd * grad_w0  # grad_w0 = Σ g·x / σ
                shift = shift * invstd if weight is None else shift * invstd * weight
                grad_x = grad_x.add_(shift.div_(count).to(grad_x.dtype).view(view))
            grad_w = grad_w0 if need_w else None
        if not need_b:
            grad_b = None
        return grad_x, grad_w, grad_b, None, None


class _UncenteredBatchStatistics(nn.BatchNorm2d, DetachableModule):
    """Batch-norm bookkeeping (running variance, momentum, counters) for uncentered batch norms.

    ``running_mean`` exists only for state-dict compatibility with ``nn.BatchNorm2d``; it is never
    read or updated. Subclasses choose the dimensions the variance is taken over.
    """

    _variance_dims: tuple[int, ...] | None = None  # None: over every element

    def forward(self, input: Tensor) -> Tensor:
        check_4d(self._get_name(), input)
        factor = 0.0 if self.momentum is None else self.momentum
        update = self.training and self.track_running_stats and self.running_var is not None
        if self.training and self.track_running_stats and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
            if self.momentum is None:  # cumulative moving average
                factor = 1.0 / float(self.num_batches_tracked)

        if self._variance_dims == (0, 2, 3) and (self.training or self.running_var is None):
            out, var = _UncenteredBatchNorm.apply(input, self.weight, self.bias, self.eps, self.detach)
            if update:
                with torch.no_grad():  # (1 - factor)·running + factor·var, in one operation
                    self.running_var.lerp_(var.to(self.running_var.dtype), factor)
            return out

        if self.training or self.running_var is None:
            source = input.detach() if self.detach else input
            if self._variance_dims is None:
                var = source.var(correction=0).reshape(1)
            else:
                var = source.var(dim=self._variance_dims, correction=0)
            if update:
                with torch.no_grad():
                    self.running_var.lerp_(var.detach().to(self.running_var.dtype), factor)
        else:
            var = self.running_var

        scale = (var + self.eps).rsqrt()
        if self.weight is not None:
            scale = scale * self.weight
        shift = None if self.bias is None else channel_view(self.bias, 4)
        return scale_shift(input, channel_view(scale, 4), shift)


class BatchNormUncentered2d(_UncenteredBatchStatistics):
    """Per-channel uncentered batch norm: ``x / sqrt(var_c + eps) · w_c + b_c``.

    Training: biased variance over (N, H, W) of the batch, which also updates ``running_var``
    (exponential average with ``momentum``, cumulative average if ``momentum=None``). Eval:
    ``running_var``. Same constructor and state dict as ``nn.BatchNorm2d``.
    """

    _variance_dims = (0, 2, 3)


class AllNormUncentered2d(_UncenteredBatchStatistics):
    """Uncentered norm with one variance over the whole batch tensor; scalar weight, bias and running stats.

    ``num_features`` is accepted for a uniform norm-layer interface but unused.
    """

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(1, eps, momentum, affine, track_running_stats, device, dtype)


def group_norm_uncentered(
    input: Tensor,
    num_groups: int,
    weight: Tensor | None = None,
    bias: Tensor | None = None,
    eps: float = 1e-5,
    detach: bool = False,
) -> Tensor:
    """Uncentered group norm of ``input`` [N, C, *]: ``x / sqrt(var_group + eps) · w + b``.

    The variance is the biased, centered variance of each sample's group; with ``detach`` it is
    computed from the detached input (explanation mode).
    """
    check_groups("group_norm_uncentered", input, num_groups)
    n, c = input.shape[:2]
    grouped = (input.detach() if detach else input).unflatten(1, (num_groups, c // num_groups))
    var = grouped.var(dim=tuple(range(2, grouped.dim())), correction=0)
    scale = groups_to_channels((var + eps).rsqrt(), c)
    if weight is not None:
        scale = scale * weight
    shift = None if bias is None else channel_view(bias, input.dim())
    return scale_shift(input, scale.view(n, c, *([1] * (input.dim() - 2))), shift)


class GroupNormUncentered2d(nn.GroupNorm, DetachableModule):
    """Uncentered group norm (same constructor and state dict as ``nn.GroupNorm``)."""

    def __init__(
        self,
        num_groups: int,
        num_channels: int,
        eps: float = 1e-5,
        affine: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(num_groups, num_channels, eps, affine, device, dtype)

    def forward(self, input: Tensor) -> Tensor:
        return group_norm_uncentered(
            input, self.num_groups, self.weight, self.bias, self.eps, detach=self.detach
        )


class GNInstanceNormUncentered2d(GroupNormUncentered2d):
    """Uncentered instance norm (one group per channel)."""

    def __init__(
        self,
        num_channels: int,
        eps: float = 1e-5,
        affine: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(num_channels, num_channels, eps, affine, device, dtype)


class GNLayerNormUncentered2d(GroupNormUncentered2d):
    """Uncentered layer norm over (C, H, W) of each sample (a single group)."""

    def __init__(
        self,
        num_channels: int,
        eps: float = 1e-5,
        affine: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(1, num_channels, eps, affine, device, dtype)


class PositionNormUncentered2d(nn.LayerNorm, DetachableModule):
    """Uncentered norm over the channels at each position of [N, C, H, W]; weight and bias of shape [C]."""

    def __init__(
        self,
        features: int,
        eps: float = 1e-5,
        affine: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        if isinstance(features, bool) or not isinstance(features, int):
            raise ConfigError(f"{type(self).__name__}: features must be an int, got {features!r}")
        super().__init__(features, eps=eps, elementwise_affine=affine, device=device, dtype=dtype)
        self.features = features

    def forward(self, input: Tensor) -> Tensor:
        check_4d(self._get_name(), input)
        var = input.var(dim=1, correction=0, keepdim=True)
        if self.detach:
            var = var.detach()
        normed = input * (var + self.eps).rsqrt()
        if self.weight is None:
            return normed if self.bias is None else normed + channel_view(self.bias, 4)
        shift = None if self.bias is None else channel_view(self.bias, 4)
        return scale_shift(normed, channel_view(self.weight, 4), shift)
