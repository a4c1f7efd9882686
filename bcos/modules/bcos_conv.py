"""B-cos 2D convolution: ``|cos(x, w)|^(B-1) · ŵᵀx`` for every input patch x.

``BcosConv2d`` holds a :class:`NormedConv2d` as ``self.linear`` (state-dict key
``<name>.linear.weight``, shape ``[out_channels * max_out, in_channels // groups, kh, kw]``) so the
reference's weights load unchanged.

The patch norms ``||x||`` are computed without a second full convolution: the squared input is
summed over the channels of each group first, then a window sum over the kernel's footprint gives
``sum(x²)`` per patch (shifted slice additions on the CPU, where ``avg_pool2d`` is slow, in place
for centred stride-1 windows; an average pool elsewhere). Padding modes other than zeros pad that channel-summed map with the same
mode as the convolution, and dilation uses a ones-kernel convolution on the ``groups``-channel map
(still only ``groups`` channels, not ``in_channels``).

The default layer (``b=2``, ``max_out=1``) runs as one custom autograd function
(:class:`_BcosConv2dB2`): for backward it keeps only the input, its output (which the next layer
keeps anyway), the per-group patch norms and the filter norms, and its backward adds the
patch-norm gradient into the convolution's input gradient in place. Without autocast, filters
at least as large as the output are used as they are, their norms folded into the element-wise
work; on the CPU, large outputs are processed in cache-sized batch blocks
(:mod:`bcos.modules.batch_blocks`), written over the convolution's result. Everything else
(other ``b``, MaxOut, hooks on ``.linear``) takes the plain autograd path; both compute the same
values.
"""

from __future__ import annotations

import math
import numbers
import warnings
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from bcos.errors import ConfigError, InputError, unknown_name
from bcos.modules import cpu_kernels
from bcos.modules.batch_blocks import batch_blocks
from bcos.modules.bcos_transform import (
    autocast_disabled,
    autocast_dtype,
    b2_scale_grad,
    bcos_scale,
    check_layer_arguments,
    max_out_reduce,
)
from bcos.modules.explanation_mode import DetachableModule
from bcos.modules.inverse_encoding import (
    conv2d_over_encoding,
    encoded_half,
    filter_grad_over_encoding,
)
from bcos.modules.memory_format import memory_format_of

__all__ = ["NormedConv2d", "BcosConv2d", "BcosConv2dWithScale"]

_IntOrPair = int | tuple[int, int]

_PADDING_MODES = ("zeros", "reflect", "replicate", "circular")

_CONV_ARGUMENTS = (
    "in_channels",
    "out_channels",
    "kernel_size",
    "stride",
    "padding",
    "dilation",
    "groups",
    "padding_mode",
    "device",
    "dtype",
    "b",
    "max_out",
    "bias",
)


class NormedConv2d(nn.Conv2d):
    """``nn.Conv2d`` whose filters are rescaled to unit L2 norm at every forward (no epsilon)."""

    def forward(self, input: Tensor) -> Tensor:
        weight = self.weight / torch.linalg.vector_norm(self.weight, dim=(1, 2, 3), keepdim=True)
        return self._conv_forward(input, weight, self.bias)


def _window_padding(
    padding: str | tuple[int, ...], kernel_size: tuple[int, int], dilation: tuple[int, int]
) -> tuple[int, int, int, int]:
    """The conv's padding as ``F.pad`` amounts (left, right, top, bottom)."""
    if padding == "valid":
        return (0, 0, 0, 0)
    if padding == "same":
        amounts: list[int] = []
        for k, d in zip(reversed(kernel_size), reversed(dilation)):
            total = d * (k - 1)
            amounts += [total // 2, total - total // 2]  # same split as nn.Conv2d
        return tuple(amounts)  # type: ignore[return-value]
    ph, pw = padding  # type: ignore[misc]
    return (pw, pw, ph, ph)


def _by_group(t: Tensor, groups: int) -> Tensor:
    """[N, C, H, W] as [N, G, C/G, H, W] (a view) so per-group maps [N, G, 1, H, W] broadcast."""
    return t if groups == 1 else t.unflatten(1, (groups, -1))


def _group_map(t: Tensor, groups: int) -> Tensor:
    """A per-group map [N, G, H, W] shaped to broadcast against :func:`_by_group` tensors."""
    return t if groups == 1 else t.unsqueeze(2)


class _BcosConv2dB2(torch.autograd.Function):
    """B-cos convolution with B = 2 and zero (symmetric) padding, weight normalisation included.

    Forward: ``lin = conv(x, w/||w||)`` per filter, ``inv = 1/sqrt(window_sum(Σ_c x²) + 1e-6)`` per
    group and ``out = lin·|lin|·inv``.

    Where the filters are at least about as large as the output (the late, wide layers of
    ImageNet networks at small batches) and autocast is off, the filters are never normalised as
    tensors: the convolution runs with ``w`` itself and the filter norms ``n`` are folded into
    the element-wise chain (``out = r·|r|·inv/n²`` with ``r = conv(x, w) = n·lin``) and into
    backward, whose convolution gradient then comes out as the gradient with respect to ``w``
    before the unit-sphere projection. That saves passes over large filters (the normalised copy
    and a rescaling of the filter gradient) for two multiplications over a small output.
    Otherwise the normalised filters are computed once and kept for backward (small next to the
    activations; under autocast their cast copy exists anyway, and the unnormalised response could
    exceed the float16 range).

    Saved: ``x`` and ``w`` (as a plain convolution), the normalised filters if used, ``out``
    (which the next layer keeps anyway), ``inv`` (``groups`` channels) and the filter norms.
    Backward recovers ``|lin|·inv = sqrt(|out|·inv)`` instead of keeping ``lin``, adds the
    patch-norm gradient into the convolution's input gradient in place, and projects the filter
    gradient onto the unit sphere by hand: few, large element-wise operations.
    """

    @staticmethod
    def forward(
        ctx: Any,
        x: Tensor,
        weight: Tensor,
        kernel_size: tuple[int, int],
        stride: tuple[int, int],
        padding: tuple[int, int],
        dilation: tuple[int, int],
        groups: int,
        detach: bool,
    ) -> Tensor:
        weight_norm = torch.linalg.vector_norm(weight, dim=(1, 2, 3), keepdim=True)
        device_type = x.device.type
        cast = autocast_dtype(device_type)
        window = (kernel_size, stride, padding, dilation)
        if cast is not None:  # what autocast would do inside F.conv2d, so backward sees the same
            x, conv_weight, channel_scale = x.to(cast), (weight / weight_norm).to(cast), None
        elif not _raw_filters_pay_off(x, weight, window):
            conv_weight, channel_scale = weight / weight_norm, None
        else:
            conv_weight, channel_scale = weight, _channel_scale(weight_norm, groups)
        half = None
        if cast is None and _encoding_may_pay_off(x, groups, ctx.needs_input_grad[0]):
            half = encoded_half(x)
        with autocast_disabled(device_type, cast is not None):
            if half is None:
                lin = F.conv2d(x, conv_weight, None, stride, padding, dilation, groups)
            else:
                lin = conv2d_over_encoding(half, conv_weight, stride, padding, dilation)
            inv_norm = _window_sum(_group_squares(x, groups), *window).add_(1e-6).rsqrt_()
            out = _scale_output(lin, inv_norm, channel_scale, groups)
        kept = None if channel_scale is not None else conv_weight
        ctx.save_for_backward(x, weight, kept, weight_norm, out, inv_norm)
        ctx.conv = (window, groups)
        ctx.detach = detach
        ctx.device_type = device_type
        ctx.cast = cast is not None
        ctx.encoded = half is not None
        return out

    @staticmethod
    @once_differentiable  # the backward works in place; second derivatives raise a clear error
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        x, weight, kept, weight_norm, out, inv_norm = ctx.saved_tensors
        window, groups = ctx.conv
        _, stride, padding, dilation = window
        need_x, need_w = ctx.needs_input_grad[:2]
        grad_x = grad_w = None
        # with the raw filters, the gradient is taken with respect to r = n·lin (see the class)
        raw = kept is None
        conv_weight = weight if raw else kept
        channel_scale = _channel_scale(weight_norm, groups) if raw else None
        with autocast_disabled(ctx.device_type, ctx.cast):
            grad = grad.to(out.dtype)
            coef = None
            grad_lin, g_out = _scale_backward(
                out, inv_norm, channel_scale, grad, groups, ctx.detach, need_x
            )
            if g_out is not None:
                # out = lin·|lin|·(s + eps)^(-1/2), s = window_sum(q), q = Σ_c x²:
                # dL/ds = -Σ_o(g·out)·inv²/2 and dL/dx = 2x·window_sumᵀ(dL/ds)
                inv = inv_norm.to(g_out.dtype)
                minus_two_grad_s = g_out.mul_(inv).mul_(inv)
                coef = _window_sum_transposed(minus_two_grad_s, x.shape[-2:], *window)
            # oneDNN's CPU filter gradient corrupts the heap for some channels-last inputs (seen
            # with small 1x1 stride-2 convolutions, torch 2.14): the CPU backward runs contiguous
            layout = torch.contiguous_format if x.device.type == "cpu" else memory_format_of(x)
            if ctx.encoded:  # only when the input needs no gradient
                grad_x = grad_conv_weight = None
                if need_w:
                    half = x[:, : x.shape[1] // 2].contiguous()
                    grad_conv_weight = filter_grad_over_encoding(
                        grad_lin.contiguous(), half, conv_weight, stride, padding, dilation
                    )
            else:
                grad_x, grad_conv_weight = _convolution_backward(
                    grad_lin.contiguous(memory_format=layout),
                    x.contiguous(memory_format=layout),
                    conv_weight.contiguous(memory_format=layout),
                    stride, padding, dilation, groups, need_x, need_w,
                )  # fmt: skip
            if coef is not None:
                _by_group(grad_x, groups).addcmul_(
                    _by_group(x, groups), _group_map(coef.to(x.dtype), groups), value=-1
                )
            if need_w:
                # ŵ = w/n (n = ||w|| per filter) and G = dL/dŵ: dL/dw = (G - w·<G, w>/n²)/n.
                # With the raw filters the convolution gradient is G/n already.
                grad_w = grad_conv_weight.to(weight.dtype)
                if cpu_kernels.usable(grad_w, weight, weight_norm):
                    grad_w = torch.ops.bcos_cpu.project_filter_grad_(grad_w, weight, weight_norm, raw)
                else:
                    along = _filter_dot(grad_w, weight).div_(weight_norm.square()).neg_()
                    grad_w = grad_w.addcmul_(weight, along)
                    if not raw:
                        grad_w = grad_w.div_(weight_norm)
        return grad_x, grad_w, None, None, None, None, None, None


def _raw_filters_pay_off(x: Tensor, weight: Tensor, window: tuple[tuple[int, int], ...]) -> bool:
    """Whether folding the filter norms into the element-wise work is cheaper than normalising.

    Normalising costs passes over the filters (the normalised copy in forward, a rescaling of the
    filter gradient in backward); folding costs two multiplications over the output. Folding wins
    for filters at least about as large as the output: the late, wide layers of ImageNet networks
    at small batches (measured 7% faster on a 512-channel 7x7 layer at batch 8; folded everywhere,
    a CIFAR ResNet-20 step got slower).
    """
    out_h, out_w = (_out_size(size, *geometry) for size, *geometry in zip(x.shape[-2:], *window))
    return weight.numel() >= x.shape[0] * weight.shape[0] * out_h * out_w


def _encoding_may_pay_off(x: Tensor, groups: int, need_x: bool) -> bool:
    """Whether to test ``x`` for the ``[h, 1 - h]`` encoding (:mod:`bcos.modules.inverse_encoding`).

    Only on the CPU (the test reads the values: on an accelerator it would wait for the device),
    outside compilation (a data-dependent branch), for one group and an image-like input (at most
    12 channels) that needs no gradient: the image batch of a first layer (explanations, which
    need the input gradient, take the plain path).
    """
    return (
        x.device.type == "cpu" and groups == 1 and not need_x and x.shape[1] in (2, 4, 6, 8, 10, 12)
        and not torch.compiler.is_compiling()
    )  # fmt: skip


def _channel_scale(weight_norm: Tensor, groups: int) -> Tensor:
    """``1/n²`` per filter, shaped to broadcast against :func:`_by_group` outputs."""
    scale = weight_norm.square().reciprocal_().view(1, -1, 1, 1)
    return scale if groups == 1 else scale.view(1, groups, -1, 1, 1)


def _convolution_backward(
    grad: Tensor,
    x: Tensor,
    weight: Tensor,
    stride: tuple[int, int],
    padding: tuple[int, int],
    dilation: tuple[int, int],
    groups: int,
    need_x: bool,
    need_w: bool,
) -> tuple[Tensor | None, Tensor | None]:
    """Input and filter gradients of ``conv2d(x, weight)`` (no bias).

    On the CPU, oneDNN's filter gradient is much faster for 3 input channels (RGB) than for 6,
    the ``[x, 1 - x]`` input of B-cos stems: there, large-kernel filter gradients over a multiple
    of 3 channels are computed 3 channels at a time (the same arithmetic, bit-identical).
    """
    channels, kernel = x.shape[1], weight.shape[-2:]
    split = (
        need_w and x.device.type == "cpu" and groups == 1 and channels in (6, 9, 12)
        and min(kernel) >= 5
    )  # fmt: skip
    grad_x, grad_w, _ = torch.ops.aten.convolution_backward(
        grad, x, weight, None, stride, padding, dilation, False, (0, 0), groups,
        (need_x, need_w and not split, False),
    )  # fmt: skip
    if split:
        parts = [
            torch.ops.aten.convolution_backward(
                grad, x[:, start : start + 3].contiguous(), weight[:, start : start + 3].contiguous(),
                None, stride, padding, dilation, False, (0, 0), 1, (False, True, False),
            )[1]
            for start in range(0, channels, 3)
        ]  # fmt: skip
        grad_w = torch.cat(parts, 1)
    return grad_x, grad_w


def _filter_dot(a: Tensor, b: Tensor) -> Tensor:
    """``<a_o, b_o>`` for every filter o of two weight-shaped tensors, shape [O, 1, 1, 1]."""
    if a.is_contiguous() and b.is_contiguous():  # one fused dot product per row, no temporary
        return torch.linalg.vecdot(a.flatten(1), b.flatten(1)).view(-1, 1, 1, 1)
    return (a * b).sum(dim=(1, 2, 3), keepdim=True)


def _group_squares(x: Tensor, groups: int) -> Tensor:
    """``Σ x²`` over the channels of each group: [N, groups, H, W].

    Without autograd (the fused layer's forward): one fused kernel on the CPU
    (:mod:`bcos.modules.cpu_kernels`), else cache-sized batch blocks for large inputs.
    """
    if groups == 1 and cpu_kernels.usable(x):
        return torch.ops.bcos_cpu.channel_square_sums(x)
    blocks = batch_blocks(x)
    if len(blocks) == 1 or (x.requires_grad and torch.is_grad_enabled()):
        squares = x * x
        if groups == 1:
            return squares.sum(1, keepdim=True)
        return squares.unflatten(1, (groups, -1)).sum(2)
    n, _, height, width = x.shape
    sums = x.new_empty((n, groups, height, width))
    for block in blocks:
        part = x[block]
        squares = part * part
        if groups == 1:
            torch.sum(squares, 1, keepdim=True, out=sums[block])
        else:
            torch.sum(squares.unflatten(1, (groups, -1)), 2, out=sums[block])
    return sums


def _scale_output(
    lin: Tensor, inv_norm: Tensor, channel_scale: Tensor | None, groups: int
) -> Tensor:
    """``lin·|lin|·inv_norm`` (times ``channel_scale`` per output channel, if given), per group.

    On the CPU one fused kernel writes over ``lin`` (:mod:`bcos.modules.cpu_kernels`). Otherwise
    large outputs are computed in cache-sized batch blocks, written over ``lin``; when the batch
    is one block, a new tensor (measured faster for mid-sized maps than working in place).
    """
    if groups == 1 and cpu_kernels.usable(lin, inv_norm):
        scale = None if channel_scale is None else channel_scale.to(lin.dtype).flatten()
        return torch.ops.bcos_cpu.scale_output_(lin, inv_norm, scale)
    grouped, inv = _by_group(lin, groups), _group_map(inv_norm, groups).to(lin.dtype)
    blocks = batch_blocks(lin)
    if len(blocks) == 1:
        factor = grouped.abs().mul_(inv)
        if channel_scale is not None:
            factor.mul_(channel_scale)
        out = factor.mul_(grouped)
        return out.flatten(1, 2) if groups > 1 else out
    for block in blocks:
        part = grouped[block]
        factor = part.abs().mul_(inv[block])
        if channel_scale is not None:
            factor.mul_(channel_scale)
        part.mul_(factor)
    return lin


def _scale_backward(
    out: Tensor,
    inv_norm: Tensor,
    channel_scale: Tensor | None,
    grad: Tensor,
    groups: int,
    detach: bool,
    need_norm_grad: bool,
) -> tuple[Tensor, Tensor | None]:
    """The gradient of :func:`_scale_output` with respect to its input, and ``Σ_o g·out``.

    The input is ``lin``, or ``r = n·lin`` when ``channel_scale`` (``1/n²``) is given.

    The channel sums (per group, [N, G, H, W], float32 or wider; ``None`` in explanation mode or
    when ``need_norm_grad`` is false) feed the patch-norm gradient. The product ``g·out`` lives in
    the memory of the result, which then overwrites it (block by block for large outputs). On
    the CPU one fused kernel computes both (:mod:`bcos.modules.cpu_kernels`).
    """
    need_sums = need_norm_grad and not detach
    if groups == 1 and cpu_kernels.usable(out, inv_norm):
        scale = None if channel_scale is None else channel_scale.to(out.dtype).flatten()
        grad_lin, sums = torch.ops.bcos_cpu.scale_backward(
            out, inv_norm, grad.contiguous(), scale, 1.0 if detach else 4.0, need_sums
        )
        return grad_lin, (sums if need_sums else None)
    grouped_out, grouped_grad = _by_group(out, groups), _by_group(grad, groups)
    inv = _group_map(inv_norm, groups)
    channels = 2 if groups > 1 else 1
    sums: Tensor | None = None
    accumulate = torch.promote_types(inv_norm.dtype, torch.float32)
    blocks = batch_blocks(out)
    if len(blocks) == 1:
        product = grouped_grad * grouped_out
        if need_sums:
            sums = product.sum(channels, keepdim=groups == 1, dtype=accumulate)
        # the product is not needed any more: its memory takes the gradient of lin
        grad_lin = b2_scale_grad(
            grouped_out, inv, grouped_grad, detach, buffer=product, scale=channel_scale
        )
        return (grad_lin.flatten(1, 2) if groups > 1 else grad_lin), sums
    grad_lin = torch.empty_like(out)
    grouped_result = _by_group(grad_lin, groups)
    if need_sums:
        sums = inv_norm.new_empty(inv_norm.shape, dtype=accumulate)
    for block in blocks:
        part_out, part_grad, part = grouped_out[block], grouped_grad[block], grouped_result[block]
        if sums is not None:
            torch.mul(part_grad, part_out, out=part)
            torch.sum(part, channels, keepdim=groups == 1, dtype=accumulate, out=sums[block])
        b2_scale_grad(part_out, inv[block], part_grad, detach, buffer=part, scale=channel_scale)
    return grad_lin, sums


def _out_size(size: int, kernel: int, stride: int, padding: int, dilation: int) -> int:
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


def _tap(start: int, count: int, stride: int) -> slice:
    """Positions ``start, start + stride, ...`` (``count`` of them) of one kernel tap."""
    return slice(start, start + stride * (count - 1) + 1, stride)


def _window_sum(
    q: Tensor,
    kernel_size: tuple[int, int],
    stride: tuple[int, int],
    padding: tuple[int, int],
    dilation: tuple[int, int],
    pooled: bool | None = None,
) -> Tensor:
    """Sum of ``q`` [N, G, H, W] over every window the convolution sees (zeros padded).

    ``pooled``: use ``avg_pool2d`` (one kernel; the default off the CPU) instead of shifted
    slice additions (the default on the CPU). Dilated windows use a ones-kernel convolution over
    the ``groups`` channels.
    """
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = kernel_size, stride, padding, dilation
    if (dh, dw) != (1, 1):
        ones = torch.ones((q.shape[1], 1, kh, kw), dtype=q.dtype, device=q.device)
        return F.conv2d(q, ones, None, stride, padding, dilation, q.shape[1])
    if pooled is None:
        pooled = q.device.type != "cpu"
    if pooled:
        return F.avg_pool2d(q, kernel_size, stride, padding).mul_(kh * kw)
    # On CPU, avg_pool2d costs as much as several passes over the full activation; the window is
    # separable, so two rounds of shifted (strided) slice additions are far cheaper.
    if _is_same_window(kernel_size, stride, padding):
        return _same_window_sum(q, kernel_size)
    h_out = _out_size(q.shape[-2], kh, sh, ph, dh)
    w_out = _out_size(q.shape[-1], kw, sw, pw, dw)
    if ph or pw:
        q = F.pad(q, (pw, pw, ph, ph))
    rows = q[..., _tap(0, w_out, sw)].clone()
    for j in range(1, kw):
        rows.add_(q[..., _tap(j, w_out, sw)])
    sums = rows[..., _tap(0, h_out, sh), :].clone()
    for i in range(1, kh):
        sums.add_(rows[..., _tap(i, h_out, sh), :])
    return sums


def _is_same_window(
    kernel_size: tuple[int, int], stride: tuple[int, int], padding: tuple[int, int]
) -> bool:
    """Stride 1, odd kernel, padding (k - 1)/2 on both axes: windows centred on every position."""
    return all(s == 1 and k % 2 == 1 and p == k // 2 for k, s, p in zip(kernel_size, stride, padding))


def _same_window_sum(q: Tensor, kernel_size: tuple[int, int]) -> Tensor:
    """Sums over centred windows, the map keeping its size: every position adds its neighbours
    in place, so the zero padding needs no padded copy (the 3x3 convolutions of every ResNet)."""
    kh, kw = kernel_size
    if cpu_kernels.usable(q):
        return torch.ops.bcos_cpu.same_window_sum(q, kh, kw)
    rows = q.clone() if kw > 1 else q
    for d in range(1, kw // 2 + 1):
        rows[..., d:].add_(q[..., :-d])
        rows[..., :-d].add_(q[..., d:])
    sums = rows.clone()
    for d in range(1, kh // 2 + 1):
        sums[..., d:, :].add_(rows[..., :-d, :])
        sums[..., :-d, :].add_(rows[..., d:, :])
    return sums


def _window_sum_transposed(
    grad: Tensor,
    input_size: tuple[int, int],
    kernel_size: tuple[int, int],
    stride: tuple[int, int],
    padding: tuple[int, int],
    dilation: tuple[int, int],
    pooled: bool | None = None,
) -> Tensor:
    """The backward of :func:`_window_sum`: each input position gets the sum over its windows."""
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = kernel_size, stride, padding, dilation
    height, width = input_size
    n, g, h_out, w_out = grad.shape
    if (dh, dw) != (1, 1):
        # the convolution's input gradient reads only the shape of its input, never its values
        shape_only = grad.new_empty((n, g, height, width))
        ones = torch.ones((g, 1, kh, kw), dtype=grad.dtype, device=grad.device)
        result, _, _ = torch.ops.aten.convolution_backward(
            grad, shape_only, ones, None, stride, padding, dilation, False, (0, 0), g,
            (True, False, False),
        )  # fmt: skip
        return result
    if pooled is None:
        pooled = grad.device.type != "cpu"
    if not pooled and _is_same_window(kernel_size, stride, padding):
        return _same_window_sum(grad, kernel_size)  # a centred window of ones is self-adjoint
    if pooled:
        shape_only = grad.new_empty((n, g, height, width))  # the op reads only its shape
        return torch.ops.aten.avg_pool2d_backward(
            grad, shape_only, kernel_size, stride, padding, False, True, None
        ).mul_(kh * kw)
    rows = grad.new_zeros((n, g, height + 2 * ph, w_out))
    for i in range(kh):
        rows[..., _tap(i, h_out, sh), :].add_(grad)  # in place on the view: no write-back copy
    result = grad.new_zeros((n, g, height + 2 * ph, width + 2 * pw))
    for j in range(kw):
        result[..., _tap(j, w_out, sw)].add_(rows)
    return result[..., ph : ph + height, pw : pw + width]


class BcosConv2d(DetachableModule):
    """B-cos convolution (no bias): output ``|cos(x, w)|^(B-1) · ŵᵀx`` per patch.

    Arguments follow ``nn.Conv2d`` plus ``b`` (the exponent B; ``b=1`` is a plain normed conv) and
    ``max_out`` (MaxOut units per output channel; the linear conv then has
    ``out_channels * max_out`` filters, unit m of output o being filter ``o * max_out + m``, and the
    maximum is taken on the linear response). ``bias=False`` is accepted for convenience;
    ``bias=True`` and unknown keyword arguments raise.

    In explanation mode the dynamic scale ``|cos|^(B-1)`` is treated as a constant.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: _IntOrPair = 1,
        stride: _IntOrPair = 1,
        padding: _IntOrPair | str = 0,
        dilation: _IntOrPair = 1,
        groups: int = 1,
        padding_mode: str = "zeros",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        b: float = 2,
        max_out: int = 1,
        bias: bool = False,
        **unexpected: object,
    ) -> None:
        check_layer_arguments(
            type(self).__name__, unexpected, _CONV_ARGUMENTS, b=b, max_out=max_out, bias=bias
        )
        if padding_mode not in _PADDING_MODES:
            raise unknown_name("padding_mode", str(padding_mode), _PADDING_MODES)
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = kernel_size
        self.stride = stride
        self.padding = padding
        self.dilation = dilation
        self.groups = groups
        self.padding_mode = padding_mode
        self.bias = False
        self.b = b
        self.max_out = int(max_out)

        self.linear = NormedConv2d(
            in_channels,
            out_channels * self.max_out,
            kernel_size,
            stride=stride,
            padding=padding,
            dilation=dilation,
            groups=groups,
            bias=False,
            padding_mode=padding_mode,
            device=device,
            dtype=dtype,
        )
        conv = self.linear
        self.patch_size = math.prod(conv.kernel_size)

        # Static plan for the patch norms (decided once, so forward has no data-dependent branches).
        left, right, top, bottom = _window_padding(conv.padding, conv.kernel_size, conv.dilation)
        self._dilated = tuple(conv.dilation) != (1, 1)
        symmetric = left == right and top == bottom
        # avg_pool2d only pads with zeros and at most half the kernel
        pool_can_pad = 2 * top <= conv.kernel_size[0] and 2 * left <= conv.kernel_size[1]
        if padding_mode == "zeros" and symmetric and (self._dilated or pool_can_pad):
            self._explicit_pad: tuple[int, int, int, int] | None = None
            self._inner_padding = (top, left)
        else:
            self._explicit_pad = (left, right, top, bottom)
            self._inner_padding = (0, 0)
        self._pad_mode = "constant" if padding_mode == "zeros" else padding_mode

    def forward(self, input: Tensor) -> Tensor:
        """Apply the layer to ``input`` of shape [N, C, H, W]."""
        if input.dim() != 4:
            raise InputError(
                f"{type(self).__name__} expects a 4D input [N, C, H, W], got shape {tuple(input.shape)}; "
                "add a batch dimension with x.unsqueeze(0)"
            )
        if self.b == 2 and self.max_out == 1 and self._fused_path_allowed():
            conv = self.linear
            if self._explicit_pad is not None:
                input = F.pad(input, self._explicit_pad, mode=self._pad_mode)
            return _BcosConv2dB2.apply(
                input, conv.weight, conv.kernel_size, conv.stride, self._inner_padding, conv.dilation,
                self.groups, self.detach,
            )  # fmt: skip

        out = self.linear(input)
        if self.max_out > 1:
            out = max_out_reduce(out, 1, self.out_channels, self.max_out)
        if self.b == 1:
            return out

        norm = self.calc_patch_norms(input)
        if self.groups == 1:
            return bcos_scale(out, norm, self.b, self.detach)
        # align each group's norm [N, G, H, W] with its output channels without copying
        out = out.unflatten(1, (self.groups, self.out_channels // self.groups))
        return bcos_scale(out, norm.unsqueeze(2), self.b, self.detach).flatten(1, 2)

    def _fused_path_allowed(self) -> bool:
        # hooks on the inner convolution only run when it is called as a module
        conv = self.linear
        return type(conv) is NormedConv2d and not (conv._forward_hooks or conv._forward_pre_hooks)

    def calc_patch_norms(self, input: Tensor) -> Tensor:
        """``sqrt(sum(x²) + 1e-6)`` over every patch the convolution sees, per group.

        Shape [N, groups, H_out, W_out]; the padding (mode and amount), stride and dilation are
        those of the convolution.
        """
        squares = _group_squares(input, self.groups)
        if self._explicit_pad is not None:
            squares = F.pad(squares, self._explicit_pad, mode=self._pad_mode)
        conv = self.linear
        sums = _window_sum(squares, conv.kernel_size, conv.stride, self._inner_padding, conv.dilation)
        return sums.add_(1e-6).sqrt_()

    def extra_repr(self) -> str:
        text = f"B={self.b}"
        if self.max_out > 1:
            text += f", max_out={self.max_out}"
        return text


class BcosConv2dWithScale(BcosConv2d):
    """Deprecated B-cos v1 layer: a :class:`BcosConv2d` whose output is divided by a fixed ``scale``.

    Default ``scale = k · sqrt(in_channels) / scale_factor`` (``k = sqrt(kh · kw)`` for a kernel
    given as a pair). Kept only to load v1-style models.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: _IntOrPair = 1,
        stride: _IntOrPair = 1,
        padding: _IntOrPair | str = 0,
        dilation: _IntOrPair = 1,
        groups: int = 1,
        padding_mode: str = "zeros",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        b: float = 2,
        max_out: int = 1,
        scale: float | None = None,
        scale_factor: float = 100.0,
        bias: bool = False,
        **unexpected: object,
    ) -> None:
        if unexpected:
            # name the extra valid arguments of this class in the error too
            check_layer_arguments(
                type(self).__name__,
                unexpected,
                (*_CONV_ARGUMENTS, "scale", "scale_factor"),
                b=b,
                max_out=max_out,
                bias=bias,
            )
        super().__init__(
            in_channels,
            out_channels,
            kernel_size,
            stride,
            padding,
            dilation,
            groups,
            padding_mode,
            device,
            dtype,
            b,
            max_out,
            bias,
        )
        if scale is None:
            if isinstance(kernel_size, Sequence):
                kernel_scale = math.sqrt(math.prod(kernel_size))
            else:
                kernel_scale = float(kernel_size)
            scale = kernel_scale * math.sqrt(in_channels) / scale_factor
        elif not isinstance(scale, numbers.Real) or scale == 0:
            raise ConfigError(f"BcosConv2dWithScale: scale must be a non-zero number, got {scale!r}")
        elif scale == 1.0:
            raise ConfigError("BcosConv2dWithScale with scale=1.0 is a plain BcosConv2d; use BcosConv2d")
        self.scale = float(scale)
        warnings.warn(
            "BcosConv2dWithScale is deprecated (B-cos v1 compatibility) and will be removed; "
            "use BcosConv2d, which needs no output scale (set use_bcos_scale=False in configs)",
            DeprecationWarning,
            stacklevel=2,
        )

    def forward(self, input: Tensor) -> Tensor:
        """The :class:`BcosConv2d` output divided by ``scale``."""
        return super().forward(input) / self.scale

    def extra_repr(self) -> str:
        return f"scale={self.scale:.3f}, " + super().extra_repr()
