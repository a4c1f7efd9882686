"""The interface every explainer follows, and the helpers they share.

An explainer wraps a model and answers ``attribute(inputs, target)`` for a batch ``[N, C, H, W]``
and one class per sample (Captum style). The result is ``[N, C', H, W]``: ``C' = C`` for
pixel-wise methods (Input×Gradient, Integrated Gradients, ...), ``C' = 1`` for map methods
(GradCAM, Occlusion, RISE, LIME). Summing over dimension 1 always gives one map per sample.

``attribute_selection(inputs, targets)`` explains every sample for several classes at once,
``[N, T, C', H, W]``; the localisation analysis uses it (T = the classes of a grid). Perturbation
methods override it to run their forward passes once per image for all T classes.

Explainers never move the model: they run on the device of the inputs (CPU or GPU), and they
never leave gradients on the caller's tensors or on the model's parameters.
"""

from __future__ import annotations

import contextlib
import functools
import numbers
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Union

import numpy as np
import torch
from torch import Tensor, nn

from bcos.errors import InputError

# the same message as model.explain gives (one wording for one mistake)
from bcos.explain.contributions import channel_mismatch_error

__all__ = [
    "Explainer",
    "Target",
    "check_inputs",
    "resolve_targets",
    "check_target_range",
    "has_inverse_channels",
    "replace_where",
    "probability_function",
]

#: an int (the same class for every sample), N class indices (sequence, array or tensor)
Target = Union[int, Sequence[int], np.ndarray, Tensor]


def check_inputs(inputs: Any) -> Tensor:
    """``inputs`` as a [N, C, H, W] float tensor (a [C, H, W] image becomes a batch of one)."""
    if not isinstance(inputs, Tensor):
        raise InputError(f"inputs must be a torch.Tensor [N, C, H, W], got {type(inputs).__name__}")
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


def resolve_targets(target: Any, n: int, device: torch.device) -> Tensor:
    """One class index per sample as a long tensor [n] on ``device``.

    ``target`` is an int (used for every sample) or n integer class indices.
    """
    if target is None:
        raise InputError("pass the class to explain: target=<int> or one class index per sample")
    if isinstance(target, bool):
        raise InputError("target must be a class index, not a bool")
    if isinstance(target, numbers.Integral):
        return torch.full((n,), int(target), dtype=torch.long, device=device)
    if isinstance(target, Tensor):
        if target.is_floating_point() or target.is_complex() or target.dtype == torch.bool:
            raise InputError(f"target tensor must hold integer class indices, got {target.dtype}")
        indices = target.detach().to(device=device, dtype=torch.long).reshape(-1)
    else:
        values = list(np.asarray(target).reshape(-1)) if isinstance(target, np.ndarray) else list(target)
        if not all(isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in values):
            raise InputError("target must be an int or a sequence of int class indices")
        indices = torch.tensor([int(v) for v in values], dtype=torch.long, device=device)
    if indices.numel() == 1 and n > 1:
        indices = indices.expand(n)
    if indices.numel() != n:
        raise InputError(f"got {indices.numel()} targets for {n} samples; pass one class index per sample (or one int)")
    if (indices < 0).any():
        raise InputError(f"target class {int(indices.min())} is negative; class indices start at 0")
    return indices


def check_target_range(targets: Tensor, num_classes: int) -> None:
    """Raise :class:`InputError` when a target is not a class of a model with ``num_classes`` outputs."""
    if targets.numel() and int(targets.max()) >= num_classes:
        raise InputError(
            f"target class {int(targets.max())} is out of range for a model with {num_classes} classes "
            f"(valid: 0..{num_classes - 1})"
        )


def has_inverse_channels(inputs: Tensor, atol: float = 1e-4) -> bool:
    """Whether ``inputs`` use the B-cos ``[x, 1 - x]`` encoding (6 channels, second half = 1 - first)."""
    if inputs.shape[1] != 6:
        return False
    return bool(torch.allclose(inputs[:, 3:], 1 - inputs[:, :3], atol=atol))


def replace_where(inputs: Tensor, keep: Tensor, fill: Tensor | float, inverse_channels: bool) -> Tensor:
    """``keep * inputs + (1 - keep) * fill`` on the colour channels.

    ``keep`` broadcasts to [N, 1, H, W] (1 keeps a pixel, 0 replaces it; fractions blend). For inputs
    in the ``[x, 1 - x]`` encoding only the first three channels are blended and the inverse channels
    are recomputed, so a perturbed image is still a valid B-cos input (the reference zeroed all six
    channels, an image that cannot occur).
    """
    if inverse_channels:
        colour = inputs[:, :3]
        fill_colour = fill[:, :3] if isinstance(fill, Tensor) and fill.dim() == 4 else fill
        blended = keep * colour + (1 - keep) * fill_colour
        return torch.cat([blended, 1 - blended], dim=1)
    return keep * inputs + (1 - keep) * fill


def probability_function(model: nn.Module) -> Callable[[Tensor], Tensor]:
    """The model's ``to_probabilities`` (sigmoid for B-cos models), else a softmax over classes."""
    function = getattr(model, "to_probabilities", None)
    if callable(function):
        return function
    return functools.partial(torch.softmax, dim=1)


class Explainer:
    """Base class: an attribution method bound to one model.

    Subclasses implement :meth:`_attribute` (inputs already checked, targets a long tensor [N] on
    the inputs' device) and may override :meth:`_attribute_selection`.
    """

    #: True when the result has one channel (a map), False when it has the input's channels
    produces_map: bool = False
    #: True when attributions are input times a weight (Captum's ``multiplies_by_inputs``)
    multiplies_by_inputs: bool = False

    def __init__(self, model: nn.Module) -> None:
        if not isinstance(model, nn.Module):
            raise InputError(f"an explainer needs a torch.nn.Module model, got {type(model).__name__}")
        self.model = model

    def __repr__(self) -> str:
        return f"{type(self).__name__}({type(self.model).__name__})"

    def attribute(self, inputs: Tensor, target: Target) -> Tensor:
        """Attributions of ``inputs`` [N, C, H, W] for ``target`` (one class, or one per sample).

        Returns a tensor [N, C', H, W] on the inputs' device (``C' = 1`` for map methods).
        """
        inputs = check_inputs(inputs)
        self._warn_if_training()
        # outside inference mode and on normal (non-inference) tensors, so autograd can be used
        with torch.inference_mode(False), self._explaining_failed_forward(inputs):
            targets = resolve_targets(target, inputs.shape[0], inputs.device).clone()
            return self._attribute(inputs.detach().clone(), targets).detach()

    def attribute_selection(self, inputs: Tensor, targets: Any) -> Tensor:
        """Attributions of every sample for T classes: [N, T, C', H, W].

        ``targets`` is T class indices used for every sample, or an [N, T] array of classes per sample.
        """
        inputs = check_inputs(inputs)
        n = inputs.shape[0]
        if isinstance(targets, numbers.Integral) and not isinstance(targets, bool):
            targets = [int(targets)]
        table = torch.as_tensor(np.asarray(targets.cpu() if isinstance(targets, Tensor) else targets))
        if table.is_floating_point() or table.dtype == torch.bool:
            raise InputError(f"targets must be integer class indices, got {table.dtype}")
        if table.dim() == 1:
            table = table[None].expand(n, -1)
        if table.dim() != 2 or table.shape[0] != n or table.shape[1] == 0:
            raise InputError(f"targets must be T class indices or an [N={n}, T] table, got shape {list(table.shape)}")
        if (table < 0).any():
            raise InputError(f"target class {int(table.min())} is negative; class indices start at 0")
        self._warn_if_training()
        with torch.inference_mode(False), self._explaining_failed_forward(inputs):
            table = table.to(device=inputs.device, dtype=torch.long).clone()
            return self._attribute_selection(inputs.detach().clone(), table).detach()

    @contextlib.contextmanager
    def _explaining_failed_forward(self, inputs: Tensor) -> Iterator[None]:
        """Turn the model's error for inputs with the wrong channel count into a clear InputError."""
        try:
            yield
        except RuntimeError as error:
            channel_error = channel_mismatch_error(self.model, inputs.shape[1])
            if channel_error is not None:
                raise channel_error from error
            raise

    # ------------------------------------------------------------------ for subclasses
    def _attribute(self, inputs: Tensor, targets: Tensor) -> Tensor:
        raise NotImplementedError

    def _attribute_selection(self, inputs: Tensor, targets: Tensor) -> Tensor:
        """Default: one batch of N*T samples (each image repeated for each of its classes)."""
        n, t = targets.shape
        repeated = inputs.repeat_interleave(t, dim=0)
        result = self._attribute(repeated, targets.reshape(-1))
        return result.reshape(n, t, *result.shape[1:])

    def _warn_if_training(self) -> None:
        if self.model.training:
            warnings.warn(
                f"{type(self).__name__}: the model is in training mode (attributions then depend on the batch); "
                "call model.eval() first",
                stacklevel=3,
            )

    def _checked_forward(self, targets: Tensor) -> Callable[[Tensor], Tensor]:
        """The model's forward, checking once that it returns [N, K] logits that contain ``targets``."""

        def forward(x: Tensor) -> Tensor:
            logits = self.model(x)
            if not isinstance(logits, Tensor) or logits.dim() != 2:
                shape = list(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__
                raise InputError(f"the model must return logits of shape [N, num_classes], got {shape}")
            check_target_range(targets, logits.shape[1])
            return logits

        return forward
