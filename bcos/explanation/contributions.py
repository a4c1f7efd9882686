"""Batched B-cos explanations: dynamic linear weights W(x), contribution maps, completeness.

A B-cos network in explanation mode is a dynamic linear map: every non-linearity (the B-cos
scaling, the norms' statistics, the attention matrix) is treated as a constant weight, so each
logit is ``y = W(x) · x`` (plus the logit bias). ``W(x)`` is the gradient of the logit with respect
to the input, taken in explanation mode, and ``x ⊙ W(x)`` are the per-pixel contributions.

This module is the single definition of that computation: ``model.explain``, the "Ours" explainer,
the explanation logger and the localisation analysis all call :func:`explain`. It sits below the
models (it needs only :mod:`bcos.modules`), so ``model.explain`` never imports upwards.

Samples of a batch are independent in eval mode, so the gradient of the *sum* of the selected
logits gives every sample its own W(x): one forward and one backward explain the whole batch.
"""

from __future__ import annotations

import dataclasses
import numbers
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from bcos.explanation.checks import (
    Target,
    channel_mismatch_error,
    check_inputs,
    check_logits,
    check_target_range,
    resolve_targets,
)
from bcos.explanation.visualize import gradients_to_images
from bcos.modules.explanation_mode import explanation_mode
from bcos.modules.logit_layer import LogitLayer

__all__ = [
    "Explanation",
    "CompletenessResult",
    "Target",
    "explain",
    "dynamic_linear_weights",
    "check_completeness",
    "find_logit_layer",
]

_TENSOR_FIELDS = (
    "prediction",
    "explained_class_idx",
    "explained_logit",
    "logits",
    "dynamic_linear_weights",
    "contribution_map",
)


@dataclass
class Explanation:
    """Explanations of a batch of N samples (all tensors are detached).

    Attributes:
        prediction: [N] argmax class of each sample.
        explained_class_idx: [N] class explained for each sample.
        explained_logit: [N] logit of the explained class.
        logits: [N, K] all logits.
        dynamic_linear_weights: [N, C, H, W] W(x) of the explained class.
        contribution_map: [N, H, W] ``Σ_c x ⊙ W(x)``.
        explanation: float32 RGBA images [N, H, W, 4] (numpy), or None when not requested or the
            inputs do not have the 6-channel ``[x, 1-x]`` encoding.

    ``expl[i]`` (an int) is the one-sample explanation of sample i. ``expl["key"]`` mirrors the
    dict of the reference's ``model.explain``: for a one-sample explanation ``"prediction"`` and
    ``"explained_class_idx"`` are Python ints and ``"explanation"`` is the [H, W, 4] image;
    otherwise (and for every other key) it returns the attribute.
    """

    prediction: Tensor
    explained_class_idx: Tensor
    explained_logit: Tensor
    logits: Tensor
    dynamic_linear_weights: Tensor
    contribution_map: Tensor
    explanation: np.ndarray | None = None

    def __len__(self) -> int:
        return self.prediction.shape[0]

    def keys(self) -> list[str]:
        """Field names (so ``dict(expl)``-style code and ``expl.keys()`` work)."""
        return [f.name for f in dataclasses.fields(self)]

    def __getitem__(self, key: str | int) -> Any:
        if isinstance(key, str):
            if key not in self.keys():
                raise KeyError(f"{key!r} is not a field of Explanation (fields: {', '.join(self.keys())})")
            value = getattr(self, key)
            if len(self) == 1 and key in ("prediction", "explained_class_idx"):
                return int(value[0])
            if len(self) == 1 and key == "explanation" and value is not None:
                return value[0]
            return value
        if isinstance(key, numbers.Integral) and not isinstance(key, bool):
            key = int(key)
            n = len(self)
            if not -n <= key < n:
                raise IndexError(f"sample index {key} out of range for an explanation of {n} samples")
            index = slice(key % n, key % n + 1)
            fields = {name: getattr(self, name)[index] for name in _TENSOR_FIELDS}
            image = None if self.explanation is None else self.explanation[index]
            return Explanation(**fields, explanation=image)
        raise TypeError(f"index an Explanation with a field name or a sample index, not {type(key).__name__}")

    def to(self, device: torch.device | str) -> Explanation:
        """A copy with every tensor moved to ``device`` (the numpy images are shared)."""
        fields = {name: getattr(self, name).to(device) for name in _TENSOR_FIELDS}
        return Explanation(**fields, explanation=self.explanation)


@dataclass
class CompletenessResult:
    """Outcome of :func:`check_completeness`, per sample where shaped [N].

    ``ok`` is True when ``contribution_sum + logit_bias`` matches ``logit`` within
    ``atol + rtol * |logit|`` for every sample. ``bool(result)`` is ``ok``.
    """

    ok: bool
    logit: Tensor
    contribution_sum: Tensor
    logit_bias: float
    logit_temperature: float | None
    abs_error: Tensor
    max_abs_error: float
    rtol: float
    atol: float

    def __bool__(self) -> bool:
        return self.ok


def find_logit_layer(model: nn.Module) -> nn.Module | None:
    """The last ``LogitLayer`` of ``model`` (None if it has none)."""
    found = None
    for module in model.modules():
        if isinstance(module, LogitLayer):
            found = module
    return found


def _forward_backward(model: nn.Module, inputs: Tensor, target: Target) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """One forward and one backward in explanation mode on a private copy of ``inputs``.

    Returns (detached input copy, logits, target indices, W(x)).
    """
    if model.training:
        warnings.warn(
            "the model is in training mode: explanations depend on the batch there; call model.eval() first",
            stacklevel=3,
        )
    # inference_mode(False) + clone gives a normal tensor even when the caller runs under
    # torch.inference_mode(); the caller's tensor never gets requires_grad or a .grad
    with torch.inference_mode(False), torch.enable_grad(), explanation_mode(model):
        x = inputs.detach().clone().requires_grad_(True)
        try:
            logits = model(x)
        except RuntimeError as error:  # explain a channel mismatch instead of a shape error deep inside
            channel_error = channel_mismatch_error(model, x.shape[1])
            if channel_error is not None:
                raise channel_error from error
            raise
        check_logits(logits, batch_size=x.shape[0])
        indices = resolve_targets(target, x.shape[0], logits.device, default=logits.detach().argmax(1))
        check_target_range(indices, logits.shape[1])
        selected = logits.gather(1, indices[:, None]).sum()
        # autograd.grad (not backward) so no .grad is written to parameters either
        (weights,) = torch.autograd.grad(selected, x, allow_unused=True)
    if weights is None:  # the logits do not depend on the input at all
        weights = torch.zeros_like(x)
    return x.detach(), logits.detach(), indices, weights.detach()


def explain(
    model: nn.Module,
    inputs: Tensor,
    target: Target = None,
    *,
    explanation_image: bool = True,
    smooth: int = 15,
    alpha_percentile: float = 99.5,
) -> Explanation:
    """Explain a batch: W(x), contribution maps and RGBA images for the selected classes.

    Args:
        model: any module following the explanation-mode protocol that returns [N, K] logits
            (use ``model.eval()``; a model in training mode triggers a warning).
        inputs: [N, C, H, W] batch or one [C, H, W] image (treated as a batch of one). Not modified.
        target: None (each sample's predicted class), an int (the same class for all samples) or N
            class indices (list or tensor).
        explanation_image: also compute the RGBA images (only for 6-channel inputs).
        smooth, alpha_percentile: passed to :func:`bcos.explanation.visualize.gradient_to_image`.

    Returns:
        an :class:`Explanation` of N samples.

    Raises:
        InputError: empty batch, wrong shape or channel count, non-finite values, bad target.
    """
    inputs = check_inputs(inputs)
    x, logits, indices, weights = _forward_backward(model, inputs, target)
    image = None
    if explanation_image and x.shape[1] == 6:
        image = gradients_to_images(x, weights, smooth=smooth, alpha_percentile=alpha_percentile)
    return Explanation(
        prediction=logits.argmax(1),
        explained_class_idx=indices,
        explained_logit=logits.gather(1, indices[:, None])[:, 0],
        logits=logits,
        dynamic_linear_weights=weights,
        contribution_map=(x * weights).sum(1),
        explanation=image,
    )


def dynamic_linear_weights(model: nn.Module, inputs: Tensor, target: Target = None) -> Tensor:
    """W(x) of the selected classes, shape [N, C, H, W] (see :func:`explain` for the arguments)."""
    return explain(model, inputs, target, explanation_image=False).dynamic_linear_weights


def check_completeness(
    model: nn.Module,
    inputs: Tensor,
    target: Target = None,
    rtol: float = 1e-4,
    atol: float = 1e-5,
) -> CompletenessResult:
    """Check that the contributions sum to the logit: ``Σ x ⊙ W(x) + logit_bias == logit``.

    Holds for B-cos CNNs whose layers carry no input-independent offset (bias-free norms, no
    centred BatchNorm in eval mode). It does not hold for B-cos ViTs: their positional embedding is
    an additive, input-independent term. The logit temperature needs no correction (W(x) already
    includes it). The ``LogitLayer`` bias is found in the model (0 if it has no LogitLayer).
    """
    explanation = explain(model, inputs, target, explanation_image=False)
    layer = find_logit_layer(model)
    bias = getattr(layer, "logit_bias", None)
    temperature = getattr(layer, "logit_temperature", None)
    bias = 0.0 if bias is None else float(bias)
    contribution_sum = explanation.contribution_map.flatten(1).sum(1)
    logit = explanation.explained_logit
    error = (contribution_sum + bias - logit).abs()
    ok = bool((error <= atol + rtol * logit.abs()).all())
    return CompletenessResult(
        ok=ok,
        logit=logit,
        contribution_sum=contribution_sum,
        logit_bias=bias,
        logit_temperature=None if temperature is None else float(temperature),
        abs_error=error,
        max_abs_error=float(error.max()),
        rtol=rtol,
        atol=atol,
    )
