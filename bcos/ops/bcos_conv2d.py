"""``bcos::conv2d_b2``: the B-cos convolution for B = 2 as one operator with its own backward.

It computes exactly what :class:`bcos.modules.BcosConv2d` writes in plain PyTorch for ``b=2``,
``max_out=1`` and zero padding (:func:`conv2d_b2_reference` is that formula)::

    lin = conv2d(x, w / ||w||)                  # unit-norm filters
    out = lin · |lin| / sqrt(Σ_patch x² + 1e-6)  # |cos(x, w)| · ŵᵀx

What it does differently is memory and passes:

* the patch norms: ``x²`` is summed over the channels first (one map per group), then over each
  window (:mod:`bcos.ops.window_sums`), instead of a second full convolution;
* the filter norms ``n`` are folded into the element-wise work in float32/float64: the
  convolution runs with ``w`` itself, ``r = conv(x, w) = n·lin`` and ``out = r·|r|·inv/n²``, so no
  normalised copy of the filters is made or kept (half-precision inputs, whose range ``r`` could
  exceed, convolve with the unit filters instead);
* for backward it keeps only the input, its own output (which the next layer keeps anyway), the
  inverse patch norms and the filter norms: ``|r|·inv/n²`` is recovered as ``sqrt(|out|·inv/n²)``; backward adds the
  patch-norm gradient into the convolution's input gradient in place and projects the filter
  gradient onto the unit sphere by hand;
* on the CPU the element-wise chains run as fused C++ kernels (:mod:`bcos.ops.cpu_kernels`).

Registered with ``torch.library`` with fake (meta) implementations, so ``torch.compile`` and
``torch.export`` see one operator with symbolic shapes. ``detach`` (explanation mode) makes
backward treat the dynamic scale ``|lin|/norm`` as a constant.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from bcos.errors import InputError
from bcos.ops import cpu_kernels
from bcos.ops.memory_format import memory_format_of
from bcos.ops.window_sums import Window, output_size, window_sum, window_sum_transposed

__all__ = ["conv2d_b2", "conv2d_b2_reference"]


def conv2d_b2(
    x: Tensor,
    weight: Tensor,
    stride: Sequence[int],
    padding: Sequence[int],
    dilation: Sequence[int],
    groups: int,
    detach: bool,
    encoded: bool = False,
) -> Tensor:
    """The B-cos (B = 2) convolution of ``x`` [N, C, H, W] with the (unnormalised) filters ``weight``.

    ``padding`` is symmetric zero padding per axis. Under autocast the convolution runs in the
    autocast dtype, as ``F.conv2d`` would; the filters are normalised in their own dtype first.
    ``encoded``: the caller guarantees ``x = [h, 1 - h]`` (one group); the convolution then reads
    ``h`` alone (same values, half the arithmetic; see :func:`_conv2d_over_encoding`).
    """
    if encoded and (groups != 1 or x.shape[1] % 2):
        raise InputError(
            f"an [x, 1 - x] input needs one group and an even number of channels (got groups={groups}, "
            f"{x.shape[1]} channels); call conv2d_b2 with encoded=False"
        )
    cast = _autocast_dtype(x.device.type)
    if cast is not None:
        x = x.to(cast)
    out, _, _ = torch.ops.bcos.conv2d_b2(
        x, weight, list(stride), list(padding), list(dilation), groups, detach, encoded
    )
    return out


def conv2d_b2_reference(
    x: Tensor,
    weight: Tensor,
    stride: Sequence[int],
    padding: Sequence[int],
    dilation: Sequence[int],
    groups: int,
    detach: bool,
    encoded: bool = False,
) -> tuple[Tensor, Tensor, Tensor]:
    """The operator's outputs (output, inverse patch norms, filter norms) in plain differentiable
    operations: what export decomposes it to, and what the tests compare it with (``encoded``
    changes only how the operator computes the same values)."""
    norm = _filter_norms(weight)
    unit = (weight / norm).to(x.dtype)
    lin = F.conv2d(x, unit, None, stride, padding, dilation, groups)
    ones = x.new_ones((groups, 1, *weight.shape[-2:]))
    squares = (x * x).unflatten(1, (groups, -1)).sum(2)
    patch_squares = F.conv2d(squares, ones, None, stride, padding, dilation, groups)
    inv_norm = (patch_squares + 1e-6).rsqrt()
    scale = _by_group(lin.abs(), groups) * _group_map(inv_norm, groups)
    if detach:
        scale = scale.detach()
    return _by_group(lin, groups).mul(scale).flatten(1, 2 if groups > 1 else 1), inv_norm.detach(), norm.detach()


# --------------------------------------------------------------------------------------------
# The operator
# --------------------------------------------------------------------------------------------


@torch.library.custom_op("bcos::conv2d_b2", mutates_args=())
def _conv2d_b2(
    x: Tensor,
    weight: Tensor,
    stride: list[int],
    padding: list[int],
    dilation: list[int],
    groups: int,
    detach: bool,
    encoded: bool,
) -> tuple[Tensor, Tensor, Tensor]:
    """Returns the output, the inverse patch norms [N, groups, H', W'] and the filter norms
    [O, 1, 1, 1] (both kept for backward)."""
    window = _window(weight, stride, padding, dilation)
    with _autocast_off(x.device.type):
        norm = _filter_norms(weight)
        conv_weight, channel_scale = _conv_filters(weight, norm, x.dtype)
        if encoded:
            lin = _conv2d_over_encoding(x, conv_weight, stride, padding, dilation)
        else:
            lin = F.conv2d(x, conv_weight, None, stride, padding, dilation, groups)
        # outputs in x's layout (a channels-last filter bank alone could make the convolution's
        # result channels-last), as the fake implementation promises
        lin = lin.contiguous(memory_format=memory_format_of(x))
        inv_norm = window_sum(_group_squares(x, groups), window).add_(1e-6).rsqrt_().contiguous()
        return _scale_output_(lin, inv_norm, channel_scale, groups), inv_norm, norm


@_conv2d_b2.register_fake
def _(x, weight, stride, padding, dilation, groups, detach, encoded):
    n, _, height, width = x.shape
    kh, kw = weight.shape[-2:]
    h_out = output_size(height, kh, stride[0], padding[0], dilation[0])
    w_out = output_size(width, kw, stride[1], padding[1], dilation[1])
    out = x.new_empty((n, weight.shape[0], h_out, w_out)).contiguous(memory_format=memory_format_of(x))
    return out, x.new_empty((n, groups, h_out, w_out)), weight.new_empty((weight.shape[0], 1, 1, 1))


def _setup_context(ctx: Any, inputs: tuple[Any, ...], output: tuple[Tensor, Tensor, Tensor]) -> None:
    x, weight, stride, padding, dilation, groups, detach, encoded = inputs
    out, inv_norm, norm = output
    ctx.mark_non_differentiable(inv_norm, norm)
    ctx.save_for_backward(x, weight, out, inv_norm, norm)
    ctx.arguments = (stride, padding, dilation, groups, detach, encoded)


def _backward(ctx: Any, grad: Tensor, _grad_inv_norm: Tensor, _grad_norm: Tensor) -> tuple[Tensor | None, ...]:
    x, weight, out, inv_norm, norm = ctx.saved_tensors
    need_x, need_w = ctx.needs_input_grad[:2]
    grad_x, grad_w = torch.ops.bcos.conv2d_b2_backward(
        grad, x, weight, out, inv_norm, norm, *ctx.arguments, need_x, need_w
    )
    return (grad_x if need_x else None), (grad_w if need_w else None), None, None, None, None, None, None


_conv2d_b2.register_autograd(_backward, setup_context=_setup_context)


@torch.library.custom_op("bcos::conv2d_b2_backward", mutates_args=())
def _conv2d_b2_backward(
    grad: Tensor,
    x: Tensor,
    weight: Tensor,
    out: Tensor,
    inv_norm: Tensor,
    norm: Tensor,
    stride: list[int],
    padding: list[int],
    dilation: list[int],
    groups: int,
    detach: bool,
    encoded: bool,
    need_x: bool,
    need_w: bool,
) -> tuple[Tensor, Tensor]:
    """Input and filter gradients (empty tensors for those not asked for)."""
    window = _window(weight, stride, padding, dilation)
    with _autocast_off(x.device.type):
        conv_weight, channel_scale = _conv_filters(weight, norm, x.dtype)
        grad_lin, minus_two_grad_s = _scale_backward(
            out, inv_norm, channel_scale, grad.to(out.dtype), groups, detach, need_x
        )
        layout = _grad_layout(x)
        grad_x, grad_conv_weight = _convolution_backward(
            grad_lin.contiguous(memory_format=layout),
            x.contiguous(memory_format=layout),
            conv_weight.contiguous(memory_format=layout),
            stride, padding, dilation, groups, need_x, need_w and not encoded,
        )  # fmt: skip
        if need_w and encoded:
            grad_conv_weight = _filter_grad_over_encoding(grad_lin, x, conv_weight, stride, padding, dilation)
        if need_x and minus_two_grad_s is not None:
            # out = lin·|lin|·(s + eps)^(-1/2), s = window_sum(Σ_c x²): dL/dx gains
            # 2x·window_sumᵀ(dL/ds) with dL/ds = -Σ_o(g·out)·inv²/2
            coef = window_sum_transposed(minus_two_grad_s, x.shape[-2:], window)
            _by_group(grad_x, groups).addcmul_(_by_group(x, groups), _group_map(coef.to(x.dtype), groups), value=-1)
        if need_w:
            folded = channel_scale is not None
            grad_conv_weight = _project_on_unit_sphere(grad_conv_weight.to(weight.dtype), weight, norm, folded)
    grad_x = grad_x.contiguous(memory_format=_grad_layout(x)) if need_x else x.new_empty(0)
    return grad_x, (grad_conv_weight.contiguous() if need_w else weight.new_empty(0))


@_conv2d_b2_backward.register_fake
def _(grad, x, weight, out, inv_norm, norm, stride, padding, dilation, groups, detach, encoded, need_x, need_w):
    grad_x = x.new_empty(x.shape).contiguous(memory_format=_grad_layout(x)) if need_x else x.new_empty(0)
    return grad_x, (weight.new_empty(weight.shape) if need_w else weight.new_empty(0))


def _no_second_derivative(ctx: Any, *grads: Tensor) -> None:
    raise RuntimeError(
        "second derivatives of the fused B-cos convolution are not implemented; build the model with "
        "bcos.ops.set_fused_ops(False) (or BCOS_FUSED_OPS=0) for its plain layers, which have them"
    )


_conv2d_b2_backward.register_autograd(_no_second_derivative, setup_context=lambda ctx, inputs, output: None)


# --------------------------------------------------------------------------------------------
# The pieces
# --------------------------------------------------------------------------------------------


def _window(weight: Tensor, stride: list[int], padding: list[int], dilation: list[int]) -> Window:
    kh, kw = weight.shape[-2:]
    return (kh, kw), (stride[0], stride[1]), (padding[0], padding[1]), (dilation[0], dilation[1])


def _filter_norms(weight: Tensor) -> Tensor:
    return torch.linalg.vector_norm(weight, dim=(1, 2, 3), keepdim=True)


def _by_group(t: Tensor, groups: int) -> Tensor:
    """[N, C, H, W] as [N, G, C/G, H, W] (a view) so per-group maps [N, G, 1, H, W] broadcast."""
    return t if groups == 1 else t.unflatten(1, (groups, -1))


def _group_map(t: Tensor, groups: int) -> Tensor:
    """A per-group map [N, G, H, W] shaped to broadcast against :func:`_by_group` tensors."""
    return t if groups == 1 else t.unsqueeze(2)


def _group_squares(x: Tensor, groups: int) -> Tensor:
    """``Σ x²`` over the channels of each group: [N, groups, H, W]."""
    if groups == 1 and cpu_kernels.usable(x):
        return torch.ops.bcos_cpu.channel_square_sums(x)
    return (x * x).unflatten(1, (groups, -1)).sum(2)


def _conv_filters(weight: Tensor, norm: Tensor, dtype: torch.dtype) -> tuple[Tensor, Tensor | None]:
    """The filters to convolve with and the per-channel factor ``1/n²`` that folds their norms
    ``norm`` into the output (None when the filters are the unit filters themselves: half
    precision)."""
    if dtype in (torch.float32, torch.float64):
        return weight, norm.square().reciprocal().flatten().to(dtype)
    return (weight / norm).to(dtype), None


def _scale_output_(lin: Tensor, inv_norm: Tensor, channel_scale: Tensor | None, groups: int) -> Tensor:
    """``lin·|lin|·inv_norm`` per group (times ``channel_scale`` per channel), written over ``lin``."""
    if groups == 1 and cpu_kernels.usable(lin, inv_norm):
        return torch.ops.bcos_cpu.scale_output_(lin, inv_norm, channel_scale)
    grouped = _by_group(lin, groups)
    factor = grouped.abs().mul_(_group_map(inv_norm.to(lin.dtype), groups))
    if channel_scale is not None:
        factor.mul_(_by_group(channel_scale.view(1, -1, 1, 1), groups))
    grouped.mul_(factor)
    return lin


def _scale_backward(
    out: Tensor,
    inv_norm: Tensor,
    channel_scale: Tensor | None,
    grad: Tensor,
    groups: int,
    detach: bool,
    need_x: bool,
) -> tuple[Tensor, Tensor | None]:
    """The gradient with respect to the convolution's result and, when the patch norms need a
    gradient, ``-2·dL/ds = Σ_o(g·out)·inv²`` per group (float32 or wider).

    ``d out / d lin = 2|lin|·inv = sqrt(4·|out|·inv)``, with a detached scale ``sqrt(|out|·inv)``;
    with folded filter norms ``channel_scale`` (``1/n²``) joins ``inv`` under the square root.
    """
    need_sums = need_x and not detach
    factor = 1.0 if detach else 4.0
    if groups == 1 and cpu_kernels.usable(out, inv_norm):
        grad_lin, sums = torch.ops.bcos_cpu.scale_backward(
            out, inv_norm, grad.contiguous(), channel_scale, factor, need_sums
        )
    else:
        grouped_out, grouped_grad = _by_group(out, groups), _by_group(grad, groups)
        sums = None
        if need_sums:
            accumulate = torch.promote_types(inv_norm.dtype, torch.float32)
            sums = (grouped_grad * grouped_out).sum(2 if groups > 1 else 1, keepdim=groups == 1, dtype=accumulate)
        scaled = (grouped_out * _group_map(inv_norm, groups).to(out.dtype)).mul_(factor)
        if channel_scale is not None:
            scaled.mul_(_by_group(channel_scale.view(1, -1, 1, 1), groups))
        grad_lin = scaled.abs_().sqrt_().mul_(grouped_grad).flatten(1, 2 if groups > 1 else 1)
    if not need_sums:
        return grad_lin, None
    inv = inv_norm.to(sums.dtype)
    return grad_lin, sums.mul_(inv).mul_(inv)


def _convolution_backward(
    grad: Tensor,
    x: Tensor,
    weight: Tensor,
    stride: list[int],
    padding: list[int],
    dilation: list[int],
    groups: int,
    need_x: bool,
    need_w: bool,
) -> tuple[Tensor | None, Tensor | None]:
    """Input and filter gradients of ``conv2d(x, weight)`` (no bias).

    On the CPU, oneDNN's filter gradient is much faster for 3 input channels (RGB) than for 6,
    the ``[x, 1 - x]`` input of B-cos stems: large-kernel filter gradients over a multiple of 3
    channels are computed 3 channels at a time there (the same arithmetic, bit-identical).
    """
    split = (
        need_w and x.device.type == "cpu" and groups == 1 and x.shape[1] in (6, 9, 12)
        and min(weight.shape[-2:]) >= 5
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
            for start in range(0, x.shape[1], 3)
        ]  # fmt: skip
        grad_w = torch.cat(parts, 1)
    return grad_x, grad_w


def _conv2d_over_encoding(
    x: Tensor, weight: Tensor, stride: list[int], padding: list[int], dilation: list[int]
) -> Tensor:
    """``conv2d(x, weight)`` for ``x = [h, 1 - h]`` (zero padding, one group), reading ``h`` alone.

    With zero padding ``1 - h`` is the padded map of ones minus ``h``, so
    ``conv([h, 1 - h], [w1, w2]) = conv(h, w1 - w2) + conv(1, Σ_c w2)``, where the second term is
    one single-channel map for the whole batch.
    """
    channels = x.shape[1] // 2
    half = x[:, :channels].contiguous(memory_format=memory_format_of(x))
    first, second = weight[:, :channels], weight[:, channels:]
    image_part = F.conv2d(half, first - second, None, stride, padding, dilation)
    ones = x.new_ones((1, 1, *x.shape[-2:]))
    return image_part.add_(F.conv2d(ones, second.sum(1, keepdim=True), None, stride, padding, dilation))


def _filter_grad_over_encoding(
    grad: Tensor, x: Tensor, weight: Tensor, stride: list[int], padding: list[int], dilation: list[int]
) -> Tensor:
    """The filter gradient of :func:`_conv2d_over_encoding`: ``[A, B - A]`` with
    ``A = corr(h, g)`` and ``B = corr(1, Σ_n g)``."""
    channels = x.shape[1] // 2
    half = x[:, :channels].contiguous()
    first = weight[:, :channels].contiguous()
    grad = grad.contiguous()
    from_image = torch.ops.aten.convolution_backward(
        grad, half, first, None, stride, padding, dilation, False, (0, 0), 1, (False, True, False)
    )[1]
    from_ones = torch.ops.aten.convolution_backward(
        grad.sum(0, keepdim=True), x.new_ones((1, 1, *x.shape[-2:])), first[:, :1], None, stride, padding,
        dilation, False, (0, 0), 1, (False, True, False),
    )[1]  # fmt: skip
    return torch.cat([from_image, from_ones.expand_as(from_image) - from_image], 1)


def _project_on_unit_sphere(grad_conv_weight: Tensor, weight: Tensor, norm: Tensor, folded: bool) -> Tensor:
    """The filter gradient, in place, from the convolution's filter gradient.

    With unit filters ``ŵ = w/n`` that is ``G = dL/dŵ`` and ``dL/dw = (G - ŵ·<G, ŵ>)/n``; with
    folded norms the convolution ran with ``w`` and gave ``G/n``, so ``dL/dw = G/n - w·<G/n, w>/n²``.
    """
    if cpu_kernels.usable(grad_conv_weight, weight, norm):
        return torch.ops.bcos_cpu.project_filter_grad_(grad_conv_weight, weight, norm, folded)
    along = torch.linalg.vecdot(grad_conv_weight.flatten(1), weight.flatten(1)).view(-1, 1, 1, 1)
    grad = grad_conv_weight.addcmul_(weight, along.div_(norm.square()).neg_())
    return grad if folded else grad.div_(norm)


def _grad_layout(x: Tensor) -> torch.memory_format:
    """The layout of the backward convolution and of the input gradient.

    oneDNN's CPU filter gradient corrupts the heap for some channels-last inputs (seen with small
    1x1 stride-2 convolutions, torch 2.14): the CPU backward runs contiguous.
    """
    return torch.contiguous_format if x.device.type == "cpu" else memory_format_of(x)


def _autocast_dtype(device_type: str) -> torch.dtype | None:
    if torch.amp.is_autocast_available(device_type) and torch.is_autocast_enabled(device_type):
        return torch.get_autocast_dtype(device_type)
    return None


def _autocast_off(device_type: str) -> torch.autocast:
    """Inside the operator the inputs are cast already: reductions must not be re-run in float32."""
    return torch.autocast(device_type=device_type, enabled=False)
