"""B-cos 2D convolution: ``|cos(x, w)|^(B-1) · ŵᵀx`` for every input patch x.

The whole idea, in :meth:`BcosConv2d.forward`: convolve with unit-norm filters (``ŵᵀx``), take the
norm ``||x||`` of every patch the filters see, and scale each response by ``|ŵᵀx / ||x|| |^(B-1)``,
the absolute cosine between patch and filter. In explanation mode that scale is a constant, so the
layer is the linear map ``x -> scale · ŵᵀx``.

``BcosConv2d`` holds a :class:`NormedConv2d` as ``self.linear`` (state-dict key
``<name>.linear.weight``, shape ``[out_channels * max_out, in_channels // groups, kh, kw]``) so the
reference's weights load unchanged.

Speed: for ``b=2``, ``max_out=1`` and symmetric zero padding (every layer of the published
models) a layer built while :func:`bcos.ops.use_fused_ops` is true runs the same computation as
one fused operator (:mod:`bcos.ops.bcos_conv2d`: less activation memory, fewer passes, C++
kernels on the CPU). The choice is made once, in ``__init__``; ``.linear`` is then not called as a
module (hooks on it do not run; hook the B-cos layer itself). A first layer whose inputs are
declared to be ``[x, 1 - x]`` (:attr:`BcosConv2d.inverse_encoded_input`, set by training) lets the
operator convolve ``x`` alone.
"""

from __future__ import annotations

import math
import numbers
import warnings
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bcos import ops
from bcos.errors import ConfigError, InputError, unknown_name
from bcos.modules.bcos_transform import bcos_scale, check_layer_arguments, max_out_reduce
from bcos.modules.explanation_mode import DetachableModule

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

        self.linear: NormedConv2d = NormedConv2d(
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
        self.patch_size = math.prod(self.linear.kernel_size)
        # decided once: the fused operator covers B = 2 without MaxOut and symmetric zero padding
        padding = _symmetric_zero_padding(self.linear)
        self.fused = ops.use_fused_ops() and b == 2 and self.max_out == 1 and padding is not None
        self._fused_padding = padding
        self._inverse_encoded_input = False

    @property
    def inverse_encoded_input(self) -> bool:
        """Whether every input is declared to be ``[x, 1 - x]`` (default False).

        Set it only where a data pipeline ending in ``AddInverse`` guarantees it (training does,
        via ``model.set_inputs_inverse_encoded()``): the fused operator then convolves ``x`` alone
        plus a constant map, the same values with half the arithmetic. Perturbed or interpolated
        inputs (Integrated Gradients' path, Quantus) are not encoded and need the default.
        """
        return self._inverse_encoded_input

    @inverse_encoded_input.setter
    def inverse_encoded_input(self, value: bool) -> None:
        if value and (self.groups != 1 or self.in_channels % 2):
            raise ConfigError(
                f"{type(self).__name__}: only a one-group layer with an even number of input channels "
                f"can take the [x, 1 - x] encoding (got groups={self.groups}, in_channels={self.in_channels})"
            )
        self._inverse_encoded_input = bool(value)

    def forward(self, input: Tensor) -> Tensor:
        """Apply the layer to ``input`` of shape [N, C, H, W]."""
        if input.dim() != 4:
            raise InputError(
                f"{type(self).__name__} expects a 4D input [N, C, H, W], got shape {tuple(input.shape)}; "
                "add a batch dimension with x.unsqueeze(0)"
            )
        if self.fused:  # the same computation as below, as one operator (bcos.ops.bcos_conv2d)
            conv = self.linear
            return ops.conv2d_b2(
                input, conv.weight, conv.stride, self._fused_padding, conv.dilation, self.groups, self.detach,
                self._inverse_encoded_input,
            )  # fmt: skip

        out = self.linear(input)  # ŵᵀx for every patch (unit-norm filters)
        if self.max_out > 1:
            out = max_out_reduce(out, 1, self.out_channels, self.max_out)
        if self.b == 1:
            return out
        norm = self.calc_patch_norms(input)  # ||x|| of every patch, one map per group
        if self.groups > 1:  # each group's output channels are scaled by that group's norms
            out = out.unflatten(1, (self.groups, -1))
            return bcos_scale(out, norm.unsqueeze(2), self.b, self.detach).flatten(1, 2)
        return bcos_scale(out, norm, self.b, self.detach)

    def calc_patch_norms(self, input: Tensor) -> Tensor:
        """``sqrt(sum(x²) + 1e-6)`` over every patch the convolution sees, per group.

        Shape [N, groups, H_out, W_out]: the squares are summed over each group's channels, then
        over each window by a convolution with a kernel of ones (same padding, stride, dilation).
        """
        conv = self.linear
        squares = (input * input).unflatten(1, (self.groups, -1)).sum(2)
        ones = squares.new_ones((self.groups, 1, *conv.kernel_size))
        padding = conv.padding
        if conv.padding_mode != "zeros":
            squares = F.pad(squares, conv._reversed_padding_repeated_twice, mode=conv.padding_mode)
            padding = 0
        sums = F.conv2d(squares, ones, None, conv.stride, padding, conv.dilation, self.groups)
        return (sums + 1e-6).sqrt()

    def extra_repr(self) -> str:
        text = f"B={self.b}"
        if self.max_out > 1:
            text += f", max_out={self.max_out}"
        return text


def _symmetric_zero_padding(conv: nn.Conv2d) -> tuple[int, int] | None:
    """The zero padding per axis if it is the same on both sides, else None."""
    if conv.padding_mode != "zeros":
        return None
    if conv.padding == "valid":
        return (0, 0)
    if conv.padding != "same":
        return tuple(conv.padding)  # type: ignore[return-value]
    totals = [d * (k - 1) for k, d in zip(conv.kernel_size, conv.dilation)]
    return None if any(t % 2 for t in totals) else (totals[0] // 2, totals[1] // 2)


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
