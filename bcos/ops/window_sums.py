"""Sums of a map over every window a convolution sees, and their transpose (eager operations).

The patch norms of a B-cos convolution need ``Σ x²`` over each patch. The fused operator sums the
squares over the channels first and then over the window of each output position, so the window
sum runs on ``groups`` channels only. On the CPU, ``avg_pool2d`` costs as much as several passes
over a full activation; the window is separable, so two rounds of shifted (strided) slice
additions are far cheaper, and centred stride-1 windows (every 3x3 ResNet convolution) add their
neighbours in place (one C++ kernel, :mod:`bcos.ops.cpu_kernels`). Elsewhere one pooling kernel is
cheapest. Dilated windows, and padding beyond half the kernel (which pooling refuses), use a
ones-kernel convolution.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from bcos.ops import cpu_kernels

__all__ = ["Window", "output_size", "window_sum", "window_sum_transposed"]

# kernel_size, stride, padding, dilation: (height, width) each
Window = tuple[tuple[int, int], tuple[int, int], tuple[int, int], tuple[int, int]]


def output_size(size: int, kernel: int, stride: int, padding: int, dilation: int) -> int:
    """The output length of a convolution along one axis."""
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


def window_sum(q: Tensor, window: Window) -> Tensor:
    """Sum of ``q`` [N, G, H, W] over every window of the convolution (zero padding)."""
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = window
    if (dh, dw) != (1, 1) or not _poolable(window):
        ones = q.new_ones((q.shape[1], 1, kh, kw))
        return F.conv2d(q, ones, None, (sh, sw), (ph, pw), (dh, dw), q.shape[1])
    if q.device.type != "cpu":
        return F.avg_pool2d(q, (kh, kw), (sh, sw), (ph, pw), divisor_override=1)
    if _is_centred(window):
        return _centred_window_sum(q, kh, kw)
    h_out = output_size(q.shape[-2], kh, sh, ph, dh)
    w_out = output_size(q.shape[-1], kw, sw, pw, dw)
    if ph or pw:
        q = F.pad(q, (pw, pw, ph, ph))
    rows = q[..., _tap(0, w_out, sw)].clone()
    for j in range(1, kw):
        rows.add_(q[..., _tap(j, w_out, sw)])
    sums = rows[..., _tap(0, h_out, sh), :].clone()
    for i in range(1, kh):
        sums.add_(rows[..., _tap(i, h_out, sh), :])
    return sums


def window_sum_transposed(grad: Tensor, input_size: tuple[int, int], window: Window) -> Tensor:
    """The adjoint of :func:`window_sum`: each input position gets the sum over its windows."""
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = window
    height, width = input_size
    n, g, h_out, w_out = grad.shape
    shape_only = grad.new_empty((n, g, height, width))  # the backward ops read only its shape
    if (dh, dw) != (1, 1) or not _poolable(window):
        ones = grad.new_ones((g, 1, kh, kw))
        return torch.ops.aten.convolution_backward(
            grad, shape_only, ones, None, (sh, sw), (ph, pw), (dh, dw), False, (0, 0), g,
            (True, False, False),
        )[0]  # fmt: skip
    if grad.device.type != "cpu":
        return torch.ops.aten.avg_pool2d_backward(
            grad, shape_only, (kh, kw), (sh, sw), (ph, pw), False, True, 1
        )
    if _is_centred(window):
        return _centred_window_sum(grad, kh, kw)  # a centred window of ones is self-adjoint
    rows = grad.new_zeros((n, g, height + 2 * ph, w_out))
    for i in range(kh):
        rows[..., _tap(i, h_out, sh), :].add_(grad)
    result = grad.new_zeros((n, g, height + 2 * ph, width + 2 * pw))
    for j in range(kw):
        result[..., _tap(j, w_out, sw)].add_(rows)
    return result[..., ph : ph + height, pw : pw + width]


def _poolable(window: Window) -> bool:
    """Whether ``avg_pool2d`` can pad like the convolution: at most half the kernel."""
    (kh, kw), _, (ph, pw), _ = window
    return 2 * ph <= kh and 2 * pw <= kw


def _tap(start: int, count: int, stride: int) -> slice:
    """Positions ``start, start + stride, ...`` (``count`` of them) of one kernel tap."""
    return slice(start, start + stride * (count - 1) + 1, stride)


def _is_centred(window: Window) -> bool:
    """Stride 1, odd kernel, padding (k - 1)/2 on both axes: windows centred on every position."""
    kernel_size, stride, padding, _ = window
    return all(s == 1 and k % 2 == 1 and p == k // 2 for k, s, p in zip(kernel_size, stride, padding))


def _centred_window_sum(q: Tensor, kh: int, kw: int) -> Tensor:
    """Sums over centred windows, the map keeping its size: each position adds its neighbours in
    place, so the zero padding needs no padded copy."""
    if cpu_kernels.usable(q):
        return torch.ops.bcos_cpu.same_window_sum(q, kh, kw)
    rows = q.clone()
    for d in range(1, kw // 2 + 1):
        rows[..., d:].add_(q[..., :-d])
        rows[..., :-d].add_(q[..., d:])
    sums = rows.clone()
    for d in range(1, kh // 2 + 1):
        sums[..., d:, :].add_(rows[..., :-d, :])
        sums[..., :-d, :].add_(rows[..., d:, :])
    return sums
