"""The checks every explanation entry point applies to its inputs, targets and the model's logits.

One wording for one mistake: ``model.explain``, :func:`bcos.explanation.contributions.explain` and
every post-hoc explainer (:mod:`bcos.explain.methods`) raise the same :class:`InputError` for the
same bad input, built here.

* inputs: a float tensor [N, C, H, W] (a single [C, H, W] image becomes a batch of one), finite,
  not empty;
* the ``[x, 1-x]`` hint: a model that expects twice the channels it was given was most likely fed
  RGB images without the B-cos encoding;
* targets: None (only where a default exists), one int for every sample, or one class index per
  sample as a sequence, numpy array or tensor;
* logits: the model must return [N, K].
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import Any, Union

import numpy as np
import torch
from torch import Tensor, nn

from bcos.errors import InputError

__all__ = [
    "Target",
    "check_inputs",
    "channel_mismatch_error",
    "has_inverse_channels",
    "resolve_targets",
    "check_target_range",
    "check_logits",
]

#: None (a default such as the predicted class), one class for every sample, or one class per sample
Target = Union[None, int, Sequence[int], np.ndarray, Tensor]

ADD_INVERSE_HINT = "apply AddInverse (torch.cat([x, 1 - x], dim=1))"


def check_inputs(inputs: Any) -> Tensor:
    """``inputs`` as a [N, C, H, W] float tensor (a [C, H, W] image becomes a batch of one)."""
    if not isinstance(inputs, Tensor):
        raise InputError(f"inputs must be a torch.Tensor [N, C, H, W] or [C, H, W], got {type(inputs).__name__}")
    if inputs.dim() == 3:
        inputs = inputs[None]
    if inputs.dim() != 4:
        raise InputError(f"inputs must have shape [N, C, H, W] or [C, H, W], got {list(inputs.shape)}")
    if inputs.shape[0] == 0:
        raise InputError("inputs is an empty batch (N = 0); pass at least one image")
    if not inputs.is_floating_point():
        raise InputError(f"inputs must be a floating-point tensor, got {inputs.dtype}; convert images with ToTensor")
    if not torch.isfinite(inputs).all():
        raise InputError("inputs contain NaN or infinite values; check the data and its normalisation")
    return inputs


def _expected_in_channels(model: nn.Module) -> int | None:
    """Channels of the model's input layer, guessed as the first module (in registration order) that
    declares ``in_channels`` (convolutions, SimpleViT). Only used to explain a failed forward."""
    for module in model.modules():
        channels = getattr(module, "in_channels", None)
        if isinstance(channels, int):
            return channels
    return None


def channel_mismatch_error(model: nn.Module, channels: int) -> InputError | None:
    """The error for inputs with ``channels`` channels given to ``model``, or None if they fit.

    Callers use it to explain a failed forward: a shape error deep inside the first layer becomes
    one line that says how many channels the model takes (and the ``[x, 1-x]`` fix where it fits).
    """
    expected = _expected_in_channels(model)
    if expected is None or expected == channels:
        return None
    hint = ""
    if channels * 2 == expected:
        hint = f"; B-cos models take the [x, 1-x] encoding: {ADD_INVERSE_HINT}"
    return InputError(f"the model expects {expected} input channels but inputs have {channels}{hint}")


def has_inverse_channels(inputs: Tensor, atol: float = 1e-4) -> bool:
    """Whether ``inputs`` use the B-cos ``[x, 1 - x]`` encoding (6 channels, second half = 1 - first).

    Perturbation methods use it to keep a perturbed image a valid B-cos input; it is never used to
    choose how a model computes.
    """
    if inputs.shape[1] != 6:
        return False
    return bool(torch.allclose(inputs[:, 3:], 1 - inputs[:, :3], atol=atol))


def resolve_targets(target: Target, n: int, device: torch.device | str, default: Tensor | None = None) -> Tensor:
    """One class index per sample as a long tensor [n] on ``device``.

    Args:
        target: an int (used for every sample), n integer class indices (sequence, numpy array or
            tensor; a single one is used for every sample), or None for ``default``.
        n: the number of samples.
        device: where the indices go.
        default: the indices that ``target=None`` stands for (e.g. the predicted classes); without
            it None is an error.

    Negative indices are rejected here; indices beyond the model's classes by
    :func:`check_target_range` once the number of classes is known.
    """
    if target is None:
        if default is None:
            raise InputError("pass the class to explain: target=<int> or one class index per sample")
        return default.to(device=device, dtype=torch.long).reshape(-1)
    if isinstance(target, bool):
        raise InputError("target must be a class index, not a bool")
    if isinstance(target, numbers.Integral):
        indices = torch.full((n,), int(target), dtype=torch.long, device=device)
    elif isinstance(target, Tensor):
        if target.is_floating_point() or target.is_complex() or target.dtype == torch.bool:
            raise InputError(f"target tensor must hold integer class indices, got {target.dtype}")
        indices = target.detach().to(device=device, dtype=torch.long).reshape(-1)
    else:
        if isinstance(target, np.ndarray):
            values = list(target.reshape(-1))
        elif isinstance(target, Sequence) and not isinstance(target, str):
            values = list(target)
        else:
            values = [target]
        if not all(isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in values):
            raise InputError("target must be None, an int or a sequence of int class indices")
        indices = torch.tensor([int(v) for v in values], dtype=torch.long, device=device)
    if indices.numel() == 1 and n > 1:
        indices = indices.expand(n)
    if indices.numel() != n:
        raise InputError(f"got {indices.numel()} targets for {n} samples; pass one class index per sample (or a single int)")
    if indices.numel() and int(indices.min()) < 0:
        raise InputError(f"target class {int(indices.min())} is out of range: class indices start at 0")
    return indices


def check_target_range(targets: Tensor, num_classes: int) -> None:
    """Raise :class:`InputError` when a target is not a class of a model with ``num_classes`` outputs."""
    if not targets.numel():
        return
    bad = (targets < 0) | (targets >= num_classes)
    if bad.any():
        raise InputError(
            f"target class {int(targets[bad].reshape(-1)[0])} is out of range for a model with {num_classes} classes "
            f"(valid: 0..{num_classes - 1})"
        )


def check_logits(logits: Any, batch_size: int | None = None) -> Tensor:
    """``logits`` if the model returned a [N, K] tensor (N = ``batch_size`` when given), else an InputError."""
    if (
        not isinstance(logits, Tensor)
        or logits.dim() != 2
        or (batch_size is not None and logits.shape[0] != batch_size)
    ):
        shape = list(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__
        raise InputError(f"the model must return logits of shape [N, num_classes], got {shape}")
    return logits
