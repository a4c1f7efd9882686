"""The memory format (layout) of a 4-d activation, which the operators' outputs keep."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["memory_format_of"]


def memory_format_of(t: Tensor) -> torch.memory_format:
    """``torch.channels_last`` for a (strictly) channels-last 4-d tensor, else the contiguous format
    (torch's ``suggest_memory_format``, which Python does not expose)."""
    if t.dim() == 4 and not t.is_contiguous() and t.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    return torch.contiguous_format
