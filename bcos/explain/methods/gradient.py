"""Gradient-based explainers through Captum: IxG, Grad, GB, IntGrad, DeepLIFT.

Each runs Captum's method on the whole batch with one target per sample, on the inputs' device
(the reference moved every target to CUDA). The model is used as it is, not in explanation mode:
these are the post-hoc baselines B-cos explanations are compared with.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
from torch import Tensor, nn

from bcos.errors import ConfigError
from bcos.explain.methods.base import Explainer
from bcos.explanation.checks import check_logits, check_target_range

__all__ = ["CaptumExplainer", "IxG", "Grad", "GB", "IntGrad", "DeepLIFT"]


class _CheckedLogits(nn.Module):
    """The model as an ``nn.Module`` Captum can hook, checking that it returns [N, K] logits."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.targets: Tensor | None = None

    def forward(self, x: Tensor) -> Tensor:
        logits = check_logits(self.model(x))
        if self.targets is not None:
            check_target_range(self.targets, logits.shape[1])
        return logits


class CaptumExplainer(Explainer):
    """Runs a Captum attribution class on batches with per-sample targets.

    Subclasses set ``captum_class`` (the name of a class in ``captum.attr``) and may add keyword
    arguments of its ``attribute`` through :meth:`_captum_kwargs`.
    """

    captum_class: str = ""

    def __init__(self, model: nn.Module) -> None:
        super().__init__(model)
        import captum.attr  # the interpretability extra; imported here so the registry works without it

        self._forward = _CheckedLogits(model)
        self._forward.training = model.training
        self._method = getattr(captum.attr, self.captum_class)(self._forward)

    def _captum_kwargs(self, inputs: Tensor) -> dict[str, Any]:
        return {}

    def _attribute(self, inputs: Tensor, targets: Tensor) -> Tensor:
        # a private copy: Captum sets requires_grad on the tensor it is given
        x = inputs.detach().clone().requires_grad_(True)
        self._forward.targets = targets
        try:
            with torch.enable_grad(), warnings.catch_warnings():
                # Captum announces the temporary hooks of GB and DeepLIFT on every call
                warnings.filterwarnings("ignore", message=r"Setting (forward, )?backward hooks", category=UserWarning)
                return self._method.attribute(x, target=targets, **self._captum_kwargs(x))
        finally:
            self._forward.targets = None
            # autograd leaves .grad on parameters for hook-based methods; the model is not trained here
            for parameter in self.model.parameters():
                parameter.grad = None


class IxG(CaptumExplainer):
    """Input × Gradient of the target logit (plain gradient, not explanation mode)."""

    multiplies_by_inputs = True

    captum_class = "InputXGradient"


class Grad(CaptumExplainer):
    """The raw (signed) gradient of the target logit."""

    captum_class = "Saliency"

    def _captum_kwargs(self, inputs: Tensor) -> dict[str, Any]:
        return {"abs": False}


class GB(CaptumExplainer):
    """Guided Backprop (hooks ReLU modules; B-cos networks have none, so there it is the gradient)."""

    captum_class = "GuidedBackprop"


class DeepLIFT(CaptumExplainer):
    """DeepLIFT with the all-zero baseline."""

    multiplies_by_inputs = True

    captum_class = "DeepLift"


class IntGrad(CaptumExplainer):
    """Integrated Gradients from the all-zero baseline.

    Args:
        n_steps: points of the path integral (Gauss-Legendre rule).
        internal_batch_size: how many path points (times samples) go through the model at once;
            None runs all ``N * n_steps`` in one batch.
    """

    multiplies_by_inputs = True

    captum_class = "IntegratedGradients"

    def __init__(self, model: nn.Module, n_steps: int = 20, internal_batch_size: int | None = None) -> None:
        super().__init__(model)
        if not isinstance(n_steps, int) or n_steps < 1:
            raise ConfigError(f"IntGrad n_steps must be a positive integer, got {n_steps!r}")
        if internal_batch_size is not None and (not isinstance(internal_batch_size, int) or internal_batch_size < 1):
            raise ConfigError(f"IntGrad internal_batch_size must be a positive integer or None, got {internal_batch_size!r}")
        self.n_steps = n_steps
        self.internal_batch_size = internal_batch_size

    def _captum_kwargs(self, inputs: Tensor) -> dict[str, Any]:
        # Captum needs at least one sample's whole path per chunk
        batch = None if self.internal_batch_size is None else max(self.internal_batch_size, inputs.shape[0])
        return {"n_steps": self.n_steps, "internal_batch_size": batch}
