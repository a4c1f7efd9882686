"""The interface every explainer follows, and the perturbation helpers they share.

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

# the same checks and messages as model.explain (one wording for one mistake)
from bcos.explanation.checks import (
    channel_mismatch_error,
    check_inputs,
    check_logits,
    check_target_range,
    resolve_targets,
)

__all__ = ["Explainer", "Target", "replace_where", "probability_function"]

#: an int (the same class for every sample), N class indices (sequence, array or tensor)
Target = Union[int, Sequence[int], np.ndarray, Tensor]


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
            raise InputError(f"target class {int(table.min())} is out of range: class indices start at 0")
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
            logits = check_logits(self.model(x))
            check_target_range(targets, logits.shape[1])
            return logits

        return forward
