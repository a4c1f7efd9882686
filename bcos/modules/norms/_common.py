"""Small helpers shared by the normalisation layers."""

from __future__ import annotations

import torch
from torch import Tensor

from bcos.errors import ConfigError, InputError


def channel_view(t: Tensor, ndim: int) -> Tensor:
    """A per-channel vector [C] shaped to broadcast against [N, C, *] with ``ndim`` dimensions."""
    return t.view(1, -1, *([1] * (ndim - 2)))


def scale_shift(x: Tensor, scale: Tensor, shift: Tensor | None) -> Tensor:
    """``x * scale + shift`` in one kernel when there is a shift (tensors already broadcastable)."""
    if shift is None:
        return x * scale
    return torch.addcmul(shift, x, scale)


def groups_to_channels(stat: Tensor, num_channels: int) -> Tensor:
    """Expand per-group statistics [N, G] to per-channel values [N, C] (channel c is in group c // (C/G))."""
    n, g = stat.shape
    return stat.unsqueeze(2).expand(n, g, num_channels // g).reshape(n, num_channels)


def check_groups(layer: str, x: Tensor, num_groups: int) -> None:
    """Raise when ``x`` has fewer than 2 dimensions or channels not divisible into the groups."""
    if x.dim() < 2 or x.shape[1] % num_groups != 0:
        raise InputError(
            f"{layer} expects input [N, C, *] with C divisible by num_groups={num_groups}, "
            f"got shape {tuple(x.shape)}; check the layer's channel count"
        )


def check_4d(layer: str, x: Tensor) -> None:
    """Raise when ``x`` is not a batch of feature maps [N, C, H, W]."""
    if x.dim() != 4:
        raise InputError(
            f"{layer} expects a 4D input [N, C, H, W], got shape {tuple(x.shape)}; "
            "add a batch dimension with x.unsqueeze(0)"
        )


def check_eval_for_explanation(layer: str, training: bool, activate: bool) -> None:
    """Centered batch statistics are only affine in eval mode, where explanation mode is exact."""
    if activate and training:
        raise ConfigError(
            f"{layer} (centered batch statistics) supports explanation mode only in eval mode; "
            "call model.eval() before explaining"
        )
