"""``bcos::conv2d_b2``: the B-cos convolution for B = 2 as one operator with its own backward.

It computes exactly what :class:`bcos.modules.BcosConv2d` writes in plain PyTorch for ``b=2``,
``max_out=1`` and zero padding (:func:`conv2d_b2_reference` is that formula)::

    lin = conv2d(x, w / ||w||)                  # unit-norm filters
    out = lin · |lin| / sqrt(Σ_patch x² + 1e-6)  # |cos(x, w)| · ŵᵀx

What it does differently is memory and passes. Forward sums ``x²`` over the channels first
(one map per group) and then over each window (:mod:`bcos.ops.window_sums`), instead of a second
full convolution. For backward it keeps only the input, the unit filters, its own output (which
the next layer keeps anyway) and the inverse patch norms: ``|lin|/norm`` is recovered as
``sqrt(|out|/norm)``. Backward adds the patch-norm gradient into the convolution's input gradient
in place and projects the filter gradient onto the unit sphere by hand. On the CPU the
element-wise chains run as fused C++ kernels (:mod:`bcos.ops.cpu_kernels`).

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

from bcos.ops import cpu_kernels
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
) -> Tensor:
    """The B-cos (B = 2) convolution of ``x`` [N, C, H, W] with the (unnormalised) filters ``weight``.

    ``padding`` is symmetric zero padding per axis. Under autocast the convolution runs in the
    autocast dtype, as ``F.conv2d`` would; the filters are normalised in their own dtype first.
    """
    cast = _autocast_dtype(x.device.type)
    if cast is not None:
        x = x.to(cast)
    out, _, _ = torch.ops.bcos.conv2d_b2(x, weight, list(stride), list(padding), list(dilation), groups, detach)
    return out


def conv2d_b2_reference(
    x: Tensor,
    weight: Tensor,
    stride: Sequence[int],
    padding: Sequence[int],
    dilation: Sequence[int],
    groups: int,
    detach: bool,
) -> tuple[Tensor, Tensor, Tensor]:
    """The operator's outputs (output, inverse patch norms, unit filters) in plain differentiable
    operations: what export decomposes it to, and what the tests compare it with."""
    unit = (weight / _filter_norms(weight)).to(x.dtype)
    lin = F.conv2d(x, unit, None, stride, padding, dilation, groups)
    ones = x.new_ones((groups, 1, *weight.shape[-2:]))
    squares = (x * x).unflatten(1, (groups, -1)).sum(2)
    patch_squares = F.conv2d(squares, ones, None, stride, padding, dilation, groups)
    inv_norm = (patch_squares + 1e-6).rsqrt()
    scale = _by_group(lin.abs(), groups) * _group_map(inv_norm, groups)
    if detach:
        scale = scale.detach()
    return _by_group(lin, groups).mul(scale).flatten(1, 2 if groups > 1 else 1), inv_norm.detach(), unit.detach()


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
) -> tuple[Tensor, Tensor, Tensor]:
    """Returns the output, the inverse patch norms [N, groups, H', W'] and the unit filters."""
    window = _window(weight, stride, padding, dilation)
    with _autocast_off(x.device.type):
        unit = (weight / _filter_norms(weight)).to(x.dtype)
        lin = F.conv2d(x, unit, None, stride, padding, dilation, groups)
        inv_norm = window_sum(_group_squares(x, groups), window).add_(1e-6).rsqrt_()
        return _scale_output_(lin, inv_norm, groups), inv_norm, unit


@_conv2d_b2.register_fake
def _(x, weight, stride, padding, dilation, groups, detach):
    n, _, height, width = x.shape
    kh, kw = weight.shape[-2:]
    h_out = output_size(height, kh, stride[0], padding[0], dilation[0])
    w_out = output_size(width, kw, stride[1], padding[1], dilation[1])
    out = x.new_empty((n, weight.shape[0], h_out, w_out))
    return out, x.new_empty((n, groups, h_out, w_out)), weight.new_empty(weight.shape, dtype=x.dtype)


def _setup_context(ctx: Any, inputs: tuple[Any, ...], output: tuple[Tensor, Tensor, Tensor]) -> None:
    x, weight, stride, padding, dilation, groups, detach = inputs
    out, inv_norm, unit = output
    ctx.mark_non_differentiable(inv_norm, unit)
    ctx.save_for_backward(x, weight, unit, out, inv_norm)
    ctx.arguments = (stride, padding, dilation, groups, detach)


def _backward(ctx: Any, grad: Tensor, _grad_inv_norm: Tensor, _grad_unit: Tensor) -> tuple[Tensor | None, ...]:
    x, weight, unit, out, inv_norm = ctx.saved_tensors
    need_x, need_w = ctx.needs_input_grad[:2]
    grad_x, grad_w = torch.ops.bcos.conv2d_b2_backward(
        grad, x, weight, unit, out, inv_norm, *ctx.arguments, need_x, need_w
    )
    return (grad_x if need_x else None), (grad_w if need_w else None), None, None, None, None, None


_conv2d_b2.register_autograd(_backward, setup_context=_setup_context)


@torch.library.custom_op("bcos::conv2d_b2_backward", mutates_args=())
def _conv2d_b2_backward(
    grad: Tensor,
    x: Tensor,
    weight: Tensor,
    unit: Tensor,
    out: Tensor,
    inv_norm: Tensor,
    stride: list[int],
    padding: list[int],
    dilation: list[int],
    groups: int,
    detach: bool,
    need_x: bool,
    need_w: bool,
) -> tuple[Tensor, Tensor]:
    """Input and filter gradients (empty tensors for those not asked for)."""
    window = _window(weight, stride, padding, dilation)
    with _autocast_off(x.device.type):
        grad_lin, minus_two_grad_s = _scale_backward(out, inv_norm, grad.to(out.dtype), groups, detach, need_x)
        # oneDNN's CPU filter gradient corrupts the heap for some channels-last inputs (seen with
        # small 1x1 stride-2 convolutions, torch 2.14): the CPU backward runs contiguous
        layout = torch.contiguous_format if x.device.type == "cpu" else _memory_format(x)
        grad_x, grad_unit = _convolution_backward(
            grad_lin.contiguous(memory_format=layout),
            x.contiguous(memory_format=layout),
            unit.contiguous(memory_format=layout),
            stride, padding, dilation, groups, need_x, need_w,
        )  # fmt: skip
        if need_x and minus_two_grad_s is not None:
            # out = lin·|lin|·(s + eps)^(-1/2), s = window_sum(Σ_c x²): dL/dx gains
            # 2x·window_sumᵀ(dL/ds) with dL/ds = -Σ_o(g·out)·inv²/2
            coef = window_sum_transposed(minus_two_grad_s, x.shape[-2:], window)
            _by_group(grad_x, groups).addcmul_(_by_group(x, groups), _group_map(coef.to(x.dtype), groups), value=-1)
        if need_w:
            grad_unit = _project_on_unit_sphere(grad_unit.to(weight.dtype), weight)
    return (grad_x if need_x else x.new_empty(0)), (grad_unit if need_w else weight.new_empty(0))


@_conv2d_b2_backward.register_fake
def _(grad, x, weight, unit, out, inv_norm, stride, padding, dilation, groups, detach, need_x, need_w):
    grad_x = x.new_empty(x.shape) if need_x else x.new_empty(0)
    return grad_x, (weight.new_empty(weight.shape) if need_w else weight.new_empty(0))


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


def _scale_output_(lin: Tensor, inv_norm: Tensor, groups: int) -> Tensor:
    """``lin·|lin|·inv_norm`` per group, written over ``lin``."""
    if groups == 1 and cpu_kernels.usable(lin, inv_norm):
        return torch.ops.bcos_cpu.scale_output_(lin, inv_norm, None)
    grouped = _by_group(lin, groups)
    grouped.mul_(grouped.abs().mul_(_group_map(inv_norm.to(lin.dtype), groups)))
    return lin


def _scale_backward(
    out: Tensor, inv_norm: Tensor, grad: Tensor, groups: int, detach: bool, need_x: bool
) -> tuple[Tensor, Tensor | None]:
    """The gradient with respect to ``lin`` and, when the patch norms need a gradient,
    ``-2·dL/ds = Σ_o(g·out)·inv²`` per group (float32 or wider).

    ``d out / d lin = 2|lin|·inv = sqrt(4·|out|·inv)``; with a detached scale ``sqrt(|out|·inv)``.
    """
    need_sums = need_x and not detach
    factor = 1.0 if detach else 4.0
    if groups == 1 and cpu_kernels.usable(out, inv_norm):
        grad_lin, sums = torch.ops.bcos_cpu.scale_backward(out, inv_norm, grad.contiguous(), None, factor, need_sums)
    else:
        grouped_out, grouped_grad = _by_group(out, groups), _by_group(grad, groups)
        sums = None
        if need_sums:
            accumulate = torch.promote_types(inv_norm.dtype, torch.float32)
            sums = (grouped_grad * grouped_out).sum(2 if groups > 1 else 1, keepdim=groups == 1, dtype=accumulate)
        inv = _group_map(inv_norm, groups).to(out.dtype)
        grad_lin = (grouped_out * inv).mul_(factor).abs_().sqrt_().mul_(grouped_grad).flatten(1, 2 if groups > 1 else 1)
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


def _project_on_unit_sphere(grad_unit: Tensor, weight: Tensor) -> Tensor:
    """The filter gradient from the gradient ``G`` with respect to the unit filters ``ŵ = w/n``:
    ``dL/dw = (G - ŵ·<G, ŵ>)/n``, in place."""
    norm = _filter_norms(weight)
    if cpu_kernels.usable(grad_unit, weight, norm):
        return torch.ops.bcos_cpu.project_filter_grad_(grad_unit, weight, norm, False)
    along = torch.linalg.vecdot(grad_unit.flatten(1), weight.flatten(1)).view(-1, 1, 1, 1)
    return grad_unit.addcmul_(weight, along.div_(norm.square()).neg_()).div_(norm)


def _memory_format(t: Tensor) -> torch.memory_format:
    """``torch.channels_last`` for a (strictly) channels-last 4-d tensor, else the contiguous format."""
    if t.dim() == 4 and not t.is_contiguous() and t.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    return torch.contiguous_format


def _autocast_dtype(device_type: str) -> torch.dtype | None:
    if torch.amp.is_autocast_available(device_type) and torch.is_autocast_enabled(device_type):
        return torch.get_autocast_dtype(device_type)
    return None


def _autocast_off(device_type: str) -> torch.autocast:
    """Inside the operator the inputs are cast already: reductions must not be re-run in float32."""
    return torch.autocast(device_type=device_type, enabled=False)
