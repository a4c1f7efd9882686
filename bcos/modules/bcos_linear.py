"""B-cos linear layer: ``|cos(x, w)|^(B-1) · ŵᵀx`` on the last dimension of any input."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bcos.modules.bcos_transform import bcos_scale, check_layer_arguments, max_out_reduce
from bcos.modules.explanation_mode import DetachableModule

__all__ = ["NormedLinear", "BcosLinear"]

_LINEAR_ARGUMENTS = ("in_features", "out_features", "bias", "device", "dtype", "b", "max_out")


class NormedLinear(nn.Linear):
    """``nn.Linear`` whose weight rows are rescaled to unit L2 norm at every forward."""

    def forward(self, input: Tensor) -> Tensor:
        weight = self.weight / torch.linalg.vector_norm(self.weight, dim=1, keepdim=True)
        return F.linear(input, weight, self.bias)


class BcosLinear(DetachableModule):
    """B-cos linear layer (no bias) on inputs of shape ``(*, in_features)``.

    ``b`` is the exponent B (``b=1``: plain normed linear layer); ``max_out`` MaxOut units per
    output (unit m of output o is row ``o * max_out + m`` of ``linear.weight``). The input norm is
    ``||x||₂ + 1e-12``. In explanation mode the dynamic scale is treated as a constant.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = False,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        b: float = 2,
        max_out: int = 1,
        **unexpected: object,
    ) -> None:
        check_layer_arguments(
            type(self).__name__, unexpected, _LINEAR_ARGUMENTS, b=b, max_out=max_out, bias=bias
        )
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.bias = False
        self.b = b
        self.max_out = int(max_out)
        self.linear = NormedLinear(
            in_features, out_features * self.max_out, bias=False, device=device, dtype=dtype
        )

    def forward(self, input: Tensor) -> Tensor:
        """Apply the layer to ``input`` of shape ``(*, in_features)``."""
        out = self.linear(input)
        if self.max_out > 1:
            out = max_out_reduce(out, -1, self.out_features, self.max_out)
        if self.b == 1:
            return out
        norm = torch.linalg.vector_norm(input, dim=-1, keepdim=True) + 1e-12
        return bcos_scale(out, norm, self.b, self.detach)

    def extra_repr(self) -> str:
        text = f"B={self.b}"
        if self.max_out > 1:
            text += f", max_out={self.max_out}"
        return text
