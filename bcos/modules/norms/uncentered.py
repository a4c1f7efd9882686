"""Uncentered normalisation layers: divide by the standard deviation without subtracting the mean.

"Uncentered" means the mean is NOT subtracted, but the divisor is the usual (centered, biased)
standard deviation ``sqrt(var + eps)``. Without a bias these layers are linear in the input once the
variance is fixed, so in explanation mode the variance is computed from the detached input (batch
norms in eval mode use their constant running variance anyway).

The per-channel batch norm in training mode has a fused operator
(:mod:`bcos.ops.uncentered_batch_norm`: one statistics pass and one output pass, C++ kernels on the
CPU), chosen once when the layer is built (:func:`bcos.ops.use_fused_ops`).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from bcos import ops
from bcos.errors import ConfigError
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


class _UncenteredBatchStatistics(nn.BatchNorm2d, DetachableModule):
    """Batch-norm bookkeeping (running variance, momentum, counters) for uncentered batch norms.

    ``running_mean`` exists only for state-dict compatibility with ``nn.BatchNorm2d``; it is never
    read or updated. Subclasses choose the dimensions the variance is taken over.
    """

    _variance_dims: tuple[int, ...] | None = None  # None: over every element

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        # decided once: the per-channel norm has a fused training-mode operator
        self.fused = ops.use_fused_ops() and self._variance_dims == (0, 2, 3)

    def forward(self, input: Tensor) -> Tensor:
        check_4d(self._get_name(), input)
        factor = 0.0 if self.momentum is None else self.momentum
        update = self.training and self.track_running_stats and self.running_var is not None
        if self.training and self.track_running_stats and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
            if self.momentum is None:  # cumulative moving average
                factor = 1.0 / float(self.num_batches_tracked)
        batch_statistics = self.training or self.running_var is None

        if batch_statistics and self.fused:  # the same computation as below, as one operator
            out, var = ops.uncentered_batch_norm(input, self.weight, self.bias, self.eps, self.detach)
        else:
            if batch_statistics:
                source = input.detach() if self.detach else input
                # statistics in float32 at least (bfloat16 under autocast loses the variance)
                source = source.to(torch.promote_types(source.dtype, torch.float32))
                dims = self._variance_dims
                var = source.var(correction=0).reshape(1) if dims is None else source.var(dim=dims, correction=0)
            else:
                var = self.running_var
            scale = (var + self.eps).rsqrt()
            if self.weight is not None:
                scale = scale * self.weight
            # in the input's dtype, as torch's batch norm under autocast (statistics stay float32)
            shift = None if self.bias is None else channel_view(self.bias.to(input.dtype), 4)
            out = scale_shift(input, channel_view(scale.to(input.dtype), 4), shift)
        if update:
            with torch.no_grad():  # (1 - factor)·running + factor·var, in one operation
                self.running_var.lerp_(var.detach().to(self.running_var.dtype), factor)
        return out


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
