"""Gated non-linearities made dynamic linear: ``x · g(x)`` with the gate ``g`` detached in explanation mode.

GELU, SiLU and Hardswish are ``x · g(x)`` for a gate g (Φ, the sigmoid, the hard sigmoid); a
squeeze-and-excitation block is ``x · s(x)`` with a learned gate s; attention is ``A(q, k) · v``.
Outside explanation mode these modules compute exactly what the originals compute (the same
function on the same tensors). In explanation mode the gate is a constant, so the output is
linear in ``x`` and the gradient with respect to the input is the dynamic linear weight W(x), as
for the B-cos layers (the B-cos ViT detaches its attention the same way).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bcos.errors import ConfigError
from bcos.modules.explanation_mode import DetachableModule

__all__ = ["DetachableGELU", "DetachableSiLU", "DetachableHardswish", "DetachInExplanation", "DetachedGateSqueezeExcitation"]


class DetachableGELU(DetachableModule):
    """``nn.GELU`` (``approximate`` as the original); in explanation mode ``x · Φ(x)`` with Φ detached."""

    def __init__(self, approximate: str = "none") -> None:
        super().__init__()
        if approximate not in ("none", "tanh"):
            raise ConfigError(f"GELU approximate must be 'none' or 'tanh', got {approximate!r}")
        self.approximate = approximate

    def forward(self, input: Tensor) -> Tensor:
        if not self.detach:
            return F.gelu(input, approximate=self.approximate)
        x = input.detach()
        if self.approximate == "tanh":
            gate = 0.5 * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x.pow(3))))
        else:
            gate = 0.5 * (1 + torch.erf(x / math.sqrt(2)))
        return input * gate

    def extra_repr(self) -> str:
        return f"approximate={self.approximate!r}"


class DetachableSiLU(DetachableModule):
    """``nn.SiLU``; in explanation mode ``x · σ(x)`` with σ(x) detached."""

    def forward(self, input: Tensor) -> Tensor:
        if not self.detach:
            return F.silu(input)
        return input * torch.sigmoid(input.detach())


class DetachableHardswish(DetachableModule):
    """``nn.Hardswish``; in explanation mode ``x · hardsigmoid(x)`` with the hard sigmoid detached."""

    def forward(self, input: Tensor) -> Tensor:
        if not self.detach:
            return F.hardswish(input)
        return input * F.hardsigmoid(input.detach())


class DetachInExplanation(DetachableModule):
    """Runs ``inner`` and detaches its output in explanation mode.

    Put around the query and key normalisation of an attention layer (timm's ``q_norm`` and
    ``k_norm``, ``nn.Identity`` by default), it makes the attention matrix a constant there.
    """

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, input: Tensor) -> Tensor:
        out = self.inner(input)
        return out.detach() if self.detach else out


class DetachedGateSqueezeExcitation(DetachableModule):
    """A squeeze-and-excitation block ``x · s(x)`` whose gate ``s(x)`` is detached in explanation mode.

    Holds the original block as ``self.block`` (torchvision's ``SqueezeExcitation``: its
    ``_scale(x)`` computes the gate), so its state-dict keys gain the prefix ``block.``.
    """

    def __init__(self, block: nn.Module) -> None:
        super().__init__()
        if not callable(getattr(block, "_scale", None)):
            raise ConfigError(f"{type(block).__name__} has no _scale(x) gate; it is not a torchvision SqueezeExcitation")
        self.block = block

    def forward(self, input: Tensor) -> Tensor:
        scale = self.block._scale(input)
        return input * (scale.detach() if self.detach else scale)
