"""B-cosified convolution and linear layers: the original layer with the B-cos scale on top.

A B-cosified layer keeps the original weight ``w`` (not rescaled to unit norm) and, optionally, its
bias ``β``, and computes, per output unit and input patch ``x``::

    out = |cos(x, w)|^(B-1) · wᵀx  (+ β)        cos(x, w) = wᵀx / (||w|| · ||x||)

With ``B = 1`` the scale is 1 and the layer *is* the original layer (the same operation on the same
tensors), which is what makes a converted model reproduce the original's logits. For ``B > 1`` it
is a B-cos layer whose output is scaled by the filter norm ``||w||`` (a constant per output unit,
so the weights of the original network keep their meaning while B grows). In explanation mode the
scale is detached: the layer is the linear map ``x -> scale · wᵀx``, plus ``β`` when a bias is kept.

``b`` is a plain attribute, read at every forward, so a schedule may raise it during fine-tuning
(:func:`bcos.bcosification.set_b`).
"""

from __future__ import annotations

import math
import numbers

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bcos.errors import ConfigError, InputError
from bcos.modules.bcos_transform import bcos_scale
from bcos.modules.explanation_mode import DetachableModule

__all__ = ["BcosifiedConv2d", "BcosifiedLinear", "check_b"]


def check_b(b: object) -> float:
    """``b`` as a float, or a ConfigError for anything but a finite real number >= 1."""
    if isinstance(b, bool) or not isinstance(b, numbers.Real) or not (b >= 1 and math.isfinite(b)):
        raise ConfigError(f"b must be a finite number >= 1 (b=1 keeps the original layers' outputs), got {b!r}")
    return float(b)


class BcosifiedConv2d(DetachableModule):
    """A B-cos convolution initialised from (and holding) an ``nn.Conv2d``.

    ``conv`` is kept as ``self.conv`` (state-dict keys ``<name>.conv.weight`` / ``.conv.bias``);
    ``keep_bias=False`` drops its bias. Any ``groups`` (depthwise convolutions too), stride,
    dilation and padding mode of ``nn.Conv2d`` work: the patch norm ``||x||`` is taken per group
    over the same windows the convolution sees.
    """

    def __init__(self, conv: nn.Conv2d, b: float = 2, keep_bias: bool = True) -> None:
        super().__init__()
        if type(conv) is not nn.Conv2d:
            raise ConfigError(f"BcosifiedConv2d wraps a torch.nn.Conv2d, got {type(conv).__name__}")
        if not keep_bias and conv.bias is not None:
            conv.bias = None
        self.conv = conv
        self.b = check_b(b)

    @property
    def in_channels(self) -> int:
        """Input channels of the convolution."""
        return self.conv.in_channels

    @property
    def out_channels(self) -> int:
        """Output channels of the convolution."""
        return self.conv.out_channels

    def forward(self, input: Tensor) -> Tensor:
        """Apply the layer to ``input`` [N, C, H, W]."""
        if input.dim() != 4:
            raise InputError(
                f"{type(self).__name__} expects a 4D input [N, C, H, W], got shape {tuple(input.shape)}; "
                "add a batch dimension with x.unsqueeze(0)"
            )
        conv = self.conv
        if self.b == 1:  # exactly the original layer
            return conv(input)
        out = conv._conv_forward(input, conv.weight, None)
        weight_norm = torch.linalg.vector_norm(conv.weight, dim=(1, 2, 3))  # [C_out]
        patch_norm = self.patch_norms(input)  # [N, groups, H', W']
        groups = conv.groups
        if groups > 1:  # each group's outputs are divided by that group's patch norms
            out = out.unflatten(1, (groups, -1))
            norm = patch_norm.unsqueeze(2) * weight_norm.view(1, groups, -1, 1, 1)
            out = bcos_scale(out, norm, self.b, self.detach).flatten(1, 2)
        else:
            out = bcos_scale(out, patch_norm * weight_norm.view(1, -1, 1, 1), self.b, self.detach)
        if conv.bias is not None:
            out = out + conv.bias.view(1, -1, 1, 1)
        return out

    def patch_norms(self, input: Tensor) -> Tensor:
        """``sqrt(sum(x²) + 1e-6)`` over every window the convolution sees, per group: [N, G, H', W']."""
        conv = self.conv
        groups = conv.groups
        squares = (input * input).unflatten(1, (groups, -1)).sum(2)
        ones = squares.new_ones((groups, 1, *conv.kernel_size))
        padding = conv.padding
        if conv.padding_mode != "zeros":
            squares = F.pad(squares, conv._reversed_padding_repeated_twice, mode=conv.padding_mode)
            padding = 0
        sums = F.conv2d(squares, ones, None, conv.stride, padding, conv.dilation, groups)
        return (sums + 1e-6).sqrt()

    def extra_repr(self) -> str:
        return f"B={self.b}"


class BcosifiedLinear(DetachableModule):
    """A B-cos linear layer initialised from (and holding) an ``nn.Linear``, on inputs ``(*, in_features)``.

    ``linear`` is kept as ``self.linear`` (state-dict keys ``<name>.linear.weight`` / ``.bias``);
    ``keep_bias=False`` drops its bias. The input norm is ``||x|| + 1e-12`` over the last dimension.
    """

    def __init__(self, linear: nn.Linear, b: float = 2, keep_bias: bool = True) -> None:
        super().__init__()
        if type(linear) is not nn.Linear:
            raise ConfigError(f"BcosifiedLinear wraps a torch.nn.Linear, got {type(linear).__name__}")
        if not keep_bias and linear.bias is not None:
            linear.bias = None
        self.linear = linear
        self.b = check_b(b)

    @property
    def in_features(self) -> int:
        """Input features of the layer."""
        return self.linear.in_features

    @property
    def out_features(self) -> int:
        """Output features of the layer."""
        return self.linear.out_features

    def forward(self, input: Tensor) -> Tensor:
        """Apply the layer to ``input`` of shape ``(*, in_features)``."""
        linear = self.linear
        if self.b == 1:  # exactly the original layer
            return linear(input)
        out = F.linear(input, linear.weight)
        weight_norm = torch.linalg.vector_norm(linear.weight, dim=1)
        norm = (torch.linalg.vector_norm(input, dim=-1, keepdim=True) + 1e-12) * weight_norm
        out = bcos_scale(out, norm, self.b, self.detach)
        if linear.bias is not None:
            out = out + linear.bias
        return out

    def extra_repr(self) -> str:
        return f"B={self.b}"
