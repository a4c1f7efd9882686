"""Behaviour shared by every B-cos model: explanation mode and batched explanations.

The mixin must come before ``nn.Module`` in the bases so its methods take precedence:
``class BcosResNet(BcosUtilMixin, nn.Module)``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from bcos.modules.explanation_mode import explanation_mode


class BcosUtilMixin:
    """Adds ``explain``, ``explanation_mode`` and helpers to a B-cos model."""

    #: maps logits to probabilities (B-cos models are trained with binary cross-entropy)
    to_probabilities = staticmethod(torch.sigmoid)

    def explanation_mode(self) -> explanation_mode:
        """Context manager (and decorator) that puts the model into explanation mode."""
        return explanation_mode(self)  # type: ignore[arg-type]

    def explain(self, inputs: torch.Tensor, target: Any = None, **kwargs: Any):
        """Explain ``inputs`` (a batch [N, C, H, W] or one image [C, H, W]).

        ``target``: None (explain the predicted class), an int (same class for every sample) or a
        sequence / tensor of N class indices. Returns a :class:`bcos.explain.contributions.Explanation`.
        See :func:`bcos.explain.contributions.explain` for the keyword arguments.
        """
        from bcos.explain.contributions import explain

        return explain(self, inputs, target=target, **kwargs)  # type: ignore[arg-type]


class BcosSequential(BcosUtilMixin, nn.Sequential):
    """An ``nn.Sequential`` with the B-cos helpers (used to wrap ViTs with a LogitLayer)."""
