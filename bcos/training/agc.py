"""Adaptive gradient clipping (AGC) from the NFNet paper (Brock et al., 2021, arXiv:2102.06171).

Each gradient unit is rescaled so that its norm stays below ``clip_factor * max(||W_unit||, eps)``.
A unit is the whole tensor for biases and scalars, one row for linear weights (and 3-D tensors,
along dimension 1 as in the reference), and one output filter for convolution weights.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

__all__ = ["adaptive_clip_grad_", "unitwise_norm"]


def unitwise_norm(x: torch.Tensor, norm_type: float = 2.0) -> torch.Tensor:
    """Norm of each unit of ``x``, shaped to broadcast against ``x`` (a 0-d tensor for vectors)."""
    if x.squeeze().ndim <= 1:
        return torch.linalg.vector_norm(x, norm_type)
    if x.ndim in (2, 3):
        return torch.linalg.vector_norm(x, norm_type, dim=1, keepdim=True)
    # convolution weights (O, I, *kernel): one unit per output filter
    return torch.linalg.vector_norm(x, norm_type, dim=tuple(range(1, x.ndim)), keepdim=True)


@torch.no_grad()
def adaptive_clip_grad_(
    parameters: torch.Tensor | Iterable[torch.Tensor],
    clip_factor: float = 0.01,
    eps: float = 1e-3,
    norm_type: float = 2.0,
) -> None:
    """Clip the gradients of ``parameters`` in place, unit by unit, relative to the weights' norms."""
    if isinstance(parameters, torch.Tensor):
        parameters = [parameters]
    for p in parameters:
        if p.grad is None:
            continue
        grad = p.grad.detach()
        max_norm = unitwise_norm(p.detach(), norm_type).clamp(min=eps) * clip_factor
        grad_norm = unitwise_norm(grad, norm_type)
        scale = max_norm / grad_norm.clamp(min=1e-6)
        grad.copy_(torch.where(grad_norm < max_norm, grad, grad * scale))
