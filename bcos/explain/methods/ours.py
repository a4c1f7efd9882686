"""The B-cos explanation as an explainer: contributions ``x ⊙ W(x)`` ("Ours", "OursRelative").

Both call :func:`bcos.explanation.contributions.explain`, the one definition of W(x): one forward and
one backward in explanation mode for the whole batch. Given an
:class:`~bcos.explain.image_space.ImageSpaceModel` they explain images [N, 3, H, W]: the
contributions of ``x`` and ``1 - x`` are summed per colour channel, so they still add up to the logit.
"""

from __future__ import annotations

from torch import Tensor, nn

from bcos.errors import InputError
from bcos.explanation.contributions import explain
from bcos.explain.image_space import ImageSpaceModel
from bcos.explain.methods.base import Explainer

__all__ = ["Ours", "OursRelative", "MeanCorrectedLogits"]


def _require_explanation_mode(model: nn.Module, name: str) -> None:
    if not any(callable(getattr(m, "set_explanation_mode", None)) for m in model.modules()):
        raise InputError(
            f"{name} needs a B-cos model (a module with explanation mode); for other models use IxG, IntGrad or GCam"
        )


class Ours(Explainer):
    """Contributions ``x ⊙ W(x)`` of the explained logit, shape [N, C, H, W].

    For B-cos CNNs they sum (over pixels and channels) to the logit minus the logit bias.
    """

    multiplies_by_inputs = True

    def __init__(self, model: nn.Module) -> None:
        super().__init__(model)
        _require_explanation_mode(model, "Ours")

    def _attribute(self, inputs: Tensor, targets: Tensor) -> Tensor:
        if isinstance(self.model, ImageSpaceModel):
            return self.model.contributions(inputs, targets)
        explanation = explain(self.model, inputs, targets, explanation_image=False)
        return inputs * explanation.dynamic_linear_weights


class MeanCorrectedLogits(nn.Module):
    """``model(x) - mean over classes of model(x)``: each logit relative to the average class."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> Tensor:
        logits = self.model(x)
        return logits - logits.mean(dim=1, keepdim=True)


class OursRelative(Ours):
    """Contributions to the mean-corrected logit ``y_t - mean_k y_k`` (explanation mode).

    Evidence shared by all classes cancels, so what remains is what sets class t apart.
    """

    def _attribute(self, inputs: Tensor, targets: Tensor) -> Tensor:
        image_space = isinstance(self.model, ImageSpaceModel)
        wrapper = MeanCorrectedLogits(self.model.model if image_space else self.model)
        wrapper.training = self.model.training  # the wrapper itself has no state; mirror the model's mode
        if image_space:
            return self.model.contributions(inputs, targets, model=wrapper)
        explanation = explain(wrapper, inputs, targets, explanation_image=False)
        return inputs * explanation.dynamic_linear_weights
