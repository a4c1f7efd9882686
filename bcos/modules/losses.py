"""Binary cross-entropy losses used to train B-cos networks (targets may be class indices or dense)."""

from __future__ import annotations

import numbers

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bcos.errors import ConfigError, InputError, unknown_name

__all__ = ["BinaryCrossEntropyLoss", "UniformOffLabelsBCEWithLogitsLoss"]

_REDUCTIONS = ("mean", "sum", "none")


def _check_reduction(reduction: str) -> str:
    if reduction not in _REDUCTIONS:
        raise unknown_name("reduction", str(reduction), _REDUCTIONS)
    return reduction


def _dense_targets(logits: Tensor, target: Tensor) -> Tensor:
    """Class indices [N] become one-hot rows in the logits' dtype; dense targets are cast."""
    if logits.shape[0] != target.shape[0]:
        raise InputError(
            f"logits and targets disagree on the batch size: {tuple(logits.shape)} vs "
            f"{tuple(target.shape)}; pass one target (index or row) per sample"
        )
    if target.shape == logits.shape:
        return target.to(dtype=logits.dtype)
    if target.dtype.is_floating_point or target.dim() != logits.dim() - 1:
        raise InputError(
            f"targets of shape {tuple(target.shape)} ({target.dtype}) fit neither logits "
            f"{tuple(logits.shape)} nor class indices; pass integer class indices or dense targets "
            "of the logits' shape"
        )
    return F.one_hot(target.long(), num_classes=logits.shape[-1]).to(dtype=logits.dtype)


def _tensor_repr(t: Tensor) -> str:
    return f"tensor(shape={list(t.shape)})"


class BinaryCrossEntropyLoss(nn.Module):
    """BCE-with-logits over all classes, with optional label smoothing and target thresholding.

    Targets: class indices (one-hot encoded here) or dense targets of the logits' shape (e.g.
    from MixUp/CutMix). Smoothing follows ``nn.CrossEntropyLoss``: ``t · (1 - s) + s / C``, applied
    to dense targets too. With ``target_threshold`` the (smoothed) targets become ``t > threshold``
    (0 or 1). ``weight`` and ``pos_weight`` are passed to
    ``F.binary_cross_entropy_with_logits`` (kept as buffers, so they follow ``.to(device)``).
    """

    def __init__(
        self,
        smoothing: float = 0.0,
        target_threshold: float | None = None,
        weight: Tensor | None = None,
        reduction: str = "mean",
        pos_weight: Tensor | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(smoothing, numbers.Real) or not 0.0 <= smoothing < 1.0:
            raise ConfigError(f"smoothing must be in [0, 1), got {smoothing!r}")
        self.smoothing = float(smoothing)
        self.target_threshold = target_threshold
        self.reduction = _check_reduction(reduction)
        self.register_buffer("weight", None if weight is None else torch.as_tensor(weight))
        self.register_buffer("pos_weight", None if pos_weight is None else torch.as_tensor(pos_weight))

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        """Loss of ``input`` logits [N, C] against ``target`` ([N] indices or [N, C] dense)."""
        target = _dense_targets(input, target)
        if self.smoothing > 0.0:
            target = target * (1.0 - self.smoothing) + self.smoothing / input.shape[-1]
        if self.target_threshold is not None:
            target = target.gt(self.target_threshold).to(dtype=target.dtype)
        return F.binary_cross_entropy_with_logits(
            input, target, self.weight, pos_weight=self.pos_weight, reduction=self.reduction
        )

    def extra_repr(self) -> str:
        parts = [f"reduction={self.reduction!r}"]
        if self.smoothing > 0:
            parts.append(f"smoothing={self.smoothing!r}")
        if self.target_threshold is not None:
            parts.append(f"target_threshold={self.target_threshold!r}")
        if self.weight is not None:
            parts.append(f"weight={_tensor_repr(self.weight)}")
        if self.pos_weight is not None:
            parts.append(f"pos_weight={_tensor_repr(self.pos_weight)}")
        return ", ".join(parts)


class UniformOffLabelsBCEWithLogitsLoss(nn.Module):
    """BCE-with-logits whose "off" targets are raised to at least ``off_label`` (default ``1 / C``).

    Example with C=5 and target 3: ``[0.2, 0.2, 0.2, 1.0, 0.2]``. Dense (mixed) targets are clamped
    from below the same way. ``off_label=0.0`` is honoured (plain BCE), unlike the reference where
    it fell back to ``1 / C``.
    """

    def __init__(self, reduction: str = "mean", off_label: float | None = None) -> None:
        super().__init__()
        self.reduction = _check_reduction(reduction)
        if off_label is not None and (not isinstance(off_label, numbers.Real) or not 0.0 <= off_label < 1.0):
            raise ConfigError(f"off_label must be in [0, 1) or None, got {off_label!r}")
        self.off_label = off_label

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        """Loss of ``input`` logits [N, C] against ``target`` ([N] indices or [N, C] dense)."""
        off_value = 1.0 / input.shape[-1] if self.off_label is None else self.off_label
        target = _dense_targets(input, target).clamp(min=off_value)
        return F.binary_cross_entropy_with_logits(input, target, reduction=self.reduction)

    def extra_repr(self) -> str:
        parts = [f"reduction={self.reduction!r}"]
        if self.off_label is not None:
            parts.append(f"off_label={self.off_label!r}")
        return ", ".join(parts)
