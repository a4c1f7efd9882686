"""Convolutions over the ``[x, 1 - x]`` input encoding at the cost of ``x`` alone.

B-cos models take images as ``[x, 1 - x]`` (``AddInverse``), which doubles the input channels of
the first convolution. With zero padding, ``1 - x`` is the padded map of ones minus ``x``, so

    conv([x, 1 - x], [w1, w2]) = conv(x, w1 - w2) + conv(1, w2)

where ``conv(1, w2)`` does not depend on the image (one single-channel map for the whole batch),
and likewise the filter gradient is ``[A, B - A]`` with ``A = corr(x, g)`` and ``B = corr(1, Σ_n g)``.
That halves the first layer's arithmetic (the ImageNet stem is the largest single convolution of
a ResNet). The results equal the direct convolution up to float rounding.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from bcos.modules.memory_format import memory_format_of

__all__ = ["encoded_half", "conv2d_over_encoding", "filter_grad_over_encoding"]


def encoded_half(x: Tensor) -> Tensor | None:
    """``x``'s first half of channels (dense, in ``x``'s memory format) if ``x`` is exactly
    ``[h, 1 - h]``, else ``None``.

    The test recomputes ``1 - h`` as ``AddInverse`` does, so real encoded batches match bit for bit;
    anything else (mixed or perturbed inputs) returns ``None``.
    """
    channels = x.shape[1]
    if channels % 2 or x.dim() != 4:
        return None
    first_row, second_row = x[:1, : channels // 2, :1], x[:1, channels // 2 :, :1]
    if not torch.equal(second_row, 1 - first_row):  # most other inputs fail here, cheaply
        return None
    half = x[:, : channels // 2].contiguous(memory_format=memory_format_of(x))  # keeps channels-last
    return half if torch.equal(x[:, channels // 2 :], 1 - half) else None


def _ones_map(half: Tensor) -> Tensor:
    """A single image of ones, one channel, the size of ``half``'s maps."""
    return half.new_ones((1, 1, *half.shape[-2:]))


def conv2d_over_encoding(
    half: Tensor,
    weight: Tensor,
    stride: tuple[int, int],
    padding: tuple[int, int],
    dilation: tuple[int, int],
) -> Tensor:
    """``conv2d([half, 1 - half], weight)`` with zero padding and one group."""
    channels = half.shape[1]
    first, second = weight[:, :channels], weight[:, channels:]
    image_part = F.conv2d(half, first - second, None, stride, padding, dilation)
    constant_part = F.conv2d(_ones_map(half), second.sum(1, keepdim=True), None, stride, padding, dilation)
    return image_part.add_(constant_part)


def filter_grad_over_encoding(
    grad: Tensor,
    half: Tensor,
    weight: Tensor,
    stride: tuple[int, int],
    padding: tuple[int, int],
    dilation: tuple[int, int],
) -> Tensor:
    """The filter gradient of ``conv2d([half, 1 - half], weight)`` for the output gradient ``grad``."""
    channels = half.shape[1]
    first = weight[:, :channels].contiguous()
    from_image = torch.ops.aten.convolution_backward(
        grad, half, first, None, stride, padding, dilation, False, (0, 0), 1, (False, True, False)
    )[1]
    from_ones = torch.ops.aten.convolution_backward(
        grad.sum(0, keepdim=True), _ones_map(half), first[:, :1], None, stride, padding, dilation,
        False, (0, 0), 1, (False, True, False),
    )[1]  # fmt: skip
    return torch.cat([from_image, from_ones.expand_as(from_image) - from_image], 1)
