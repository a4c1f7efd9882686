"""B-cos 2D convolution: ``|cos(x, w)|^(B-1) · ŵᵀx`` for every input patch x.

``BcosConv2d`` holds a :class:`NormedConv2d` as ``self.linear`` (state-dict key
``<name>.linear.weight``, shape ``[out_channels * max_out, in_channels // groups, kh, kw]``) so the
reference's weights load unchanged.

The patch norms ``||x||`` are computed without a second full convolution: the squared input is
summed over the channels of each group first, then a window sum (sum-pool) over the kernel's
footprint gives ``sum(x²)`` per patch. Padding modes other than zeros pad that channel-summed map
with the same mode as the convolution, and dilation uses a ones-kernel convolution on the
``groups``-channel map (still only ``groups`` channels, not ``in_channels``).
"""

from __future__ import annotations

import math
import numbers
import warnings
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

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

    def calc_patch_norms(self, input: Tensor) -> Tensor:
        """``sqrt(sum(x²) + 1e-6)`` over every patch the convolution sees, per group.

        Shape [N, groups, H_out, W_out]; the padding (mode and amount), stride and dilation are
        those of the convolution.
        """
        squares = input * input
        if self.groups == 1:
            squares = squares.sum(1, keepdim=True)
        else:
            squares = squares.unflatten(1, (self.groups, self.in_channels // self.groups)).sum(2)
        if self._explicit_pad is not None:
            squares = F.pad(squares, self._explicit_pad, mode=self._pad_mode)

        conv = self.linear
        if self._dilated:
            ones = torch.ones(
                (self.groups, 1, *conv.kernel_size), dtype=squares.dtype, device=squares.device
            )
            sums = F.conv2d(
                squares, ones, None, conv.stride, self._inner_padding, conv.dilation, self.groups
            )
        else:
            # avg_pool2d × patch_size is the window sum (divisor_override breaks torch.compile)
            sums = F.avg_pool2d(squares, conv.kernel_size, conv.stride, self._inner_padding)
            sums = sums.mul_(self.patch_size)
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
