"""Centered normalisation layers (the mean is subtracted) that know about explanation mode.

In explanation mode the variance is detached (treated as a constant); the mean stays in the graph
because subtracting an input-dependent mean is linear in the input. Batch-statistics norms
(:class:`BatchNorm2d`, :class:`AllNorm2d`) are affine only in eval mode, so they allow explanation
mode only there.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bcos.errors import ConfigError
from bcos.modules.explanation_mode import DetachableModule
from bcos.modules.norms._common import (
    channel_view,
    check_4d,
    check_eval_for_explanation,
    check_groups,
    groups_to_channels,
    scale_shift,
)
from bcos.ops.memory_format import memory_format_of

__all__ = [
    "AllNorm2d",
    "BatchNorm2d",
    "DetachableGroupNorm2d",
    "DetachableGNInstanceNorm2d",
    "DetachableGNLayerNorm2d",
    "DetachableLayerNorm",
    "DetachablePositionNorm2d",
]


class AllNorm2d(nn.BatchNorm3d, DetachableModule):
    """One mean and variance over batch, channels and space (a ``BatchNorm3d(1)`` on [N, 1, C, H, W]).

    ``num_features`` is accepted for a uniform norm-layer interface but unused: weight, bias and the
    running statistics are scalars (shape [1]).
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

    def forward(self, input: Tensor) -> Tensor:
        check_4d(type(self).__name__, input)
        return super().forward(input.unsqueeze(1)).squeeze(1)

    def set_explanation_mode(self, activate: bool = True) -> None:
        """Allowed only in eval mode (then the layer is affine and needs no detaching)."""
        check_eval_for_explanation(self._get_name(), self.training, activate)
        self.detach = bool(activate)


class BatchNorm2d(nn.BatchNorm2d, DetachableModule):
    """``nn.BatchNorm2d`` that allows explanation mode only in eval mode."""

    def set_explanation_mode(self, activate: bool = True) -> None:
        """Allowed only in eval mode (then the layer is affine and needs no detaching)."""
        check_eval_for_explanation(self._get_name(), self.training, activate)
        self.detach = bool(activate)


class DetachableGroupNorm2d(nn.GroupNorm, DetachableModule):
    """``nn.GroupNorm`` whose variance is detached in explanation mode (fused kernel otherwise)."""

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
        check_groups(type(self).__name__, input, self.num_groups)
        if not self.detach:
            return F.group_norm(input, self.num_groups, self.weight, self.bias, self.eps)

        n, c = input.shape[:2]
        grouped = input.unflatten(1, (self.num_groups, c // self.num_groups))
        var, mean = torch.var_mean(grouped, dim=tuple(range(2, grouped.dim())), correction=0)
        inv_std = (var.detach() + self.eps).rsqrt()
        # [N, G] statistics broadcast to [N, C, 1, ...]
        mean = groups_to_channels(mean, c).view(n, c, *([1] * (input.dim() - 2)))
        scale = groups_to_channels(inv_std, c)
        if self.weight is not None:
            scale = scale * self.weight
        scale = scale.view_as(mean)
        shift = None if self.bias is None else channel_view(self.bias, input.dim())
        return scale_shift(input - mean, scale, shift)


class DetachableGNInstanceNorm2d(DetachableGroupNorm2d):
    """Instance norm as a group norm with one group per channel."""

    def __init__(
        self,
        num_channels: int,
        eps: float = 1e-5,
        affine: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(num_channels, num_channels, eps, affine, device, dtype)


class DetachableGNLayerNorm2d(DetachableGroupNorm2d):
    """Layer norm over (C, H, W) of each sample, as a group norm with a single group."""

    def __init__(
        self,
        num_channels: int,
        eps: float = 1e-5,
        affine: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(1, num_channels, eps, affine, device, dtype)


class DetachableLayerNorm(nn.LayerNorm, DetachableModule):
    """``nn.LayerNorm`` over the last dimensions (for transformers), variance detached in explanation mode."""

    def forward(self, input: Tensor) -> Tensor:
        if not self.detach:
            return F.layer_norm(input, self.normalized_shape, self.weight, self.bias, self.eps)
        dims = tuple(range(-len(self.normalized_shape), 0))
        var, mean = torch.var_mean(input, dim=dims, correction=0, keepdim=True)
        normed = (input - mean) * (var.detach() + self.eps).rsqrt()
        if self.weight is None:
            return normed if self.bias is None else normed + self.bias
        return scale_shift(normed, self.weight, self.bias)


class DetachablePositionNorm2d(nn.LayerNorm, DetachableModule):
    """Layer norm over the channels at each spatial position of [N, C, H, W] (positional norm)."""

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
        check_4d(type(self).__name__, input)
        if not self.detach:
            out = F.layer_norm(
                input.permute(0, 2, 3, 1), self.normalized_shape, self.weight, self.bias, self.eps
            )
            # back in the input's layout: a permuted (channels-last) result would change the
            # memory format of every following layer
            return out.permute(0, 3, 1, 2).contiguous(memory_format=memory_format_of(input))
        var, mean = torch.var_mean(input, dim=1, correction=0, keepdim=True)
        normed = (input - mean) * (var.detach() + self.eps).rsqrt()
        if self.weight is None:
            return normed if self.bias is None else normed + channel_view(self.bias, 4)
        shift = None if self.bias is None else channel_view(self.bias, 4)
        return scale_shift(normed, channel_view(self.weight, 4), shift)
