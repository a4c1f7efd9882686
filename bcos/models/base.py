"""Behaviour shared by every B-cos model: explanation mode and batched explanations.

The mixin must come before ``nn.Module`` in the bases so its methods take precedence:
``class BcosResNet(BcosUtilMixin, nn.Module)``. Everything here delegates to
:mod:`bcos.explanation.contributions` (the one definition of W(x) and contributions) and
:mod:`bcos.explanation.visualize`, which sit below the models.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor, nn

from bcos.explanation import contributions, visualize
from bcos.explanation.checks import check_inputs
from bcos.modules.explanation_mode import explanation_mode

if TYPE_CHECKING:
    from bcos.explanation.checks import Target
    from bcos.explanation.contributions import Explanation

__all__ = ["BcosUtilMixin", "BcosSequential"]


class BcosUtilMixin:
    """Adds ``explain``, ``explanation_mode``, ``attribute`` and plotting helpers to a B-cos model."""

    #: maps logits to probabilities (B-cos models are trained with binary cross-entropy)
    to_probabilities = staticmethod(torch.sigmoid)

    #: the dotted name of the layer that reads the model's input (its stem); None: not declared
    input_layer_name: str | None = None

    def set_inputs_inverse_encoded(self, encoded: bool = True) -> bool:
        """Declare that every input of this model is ``[x, 1 - x]`` (a data pipeline that ends in
        ``AddInverse``, as training's does), or withdraw that (``encoded=False``).

        The input layer then convolves ``x`` alone plus a constant map: the same values for such
        inputs, half the stem's arithmetic (see ``BcosConv2d.inverse_encoded_input``). Do not
        declare it for inputs that are perturbed or interpolated channel by channel (Integrated
        Gradients' path, Quantus). Returns whether the input layer takes the encoding into account:
        False for architectures whose input layer is not a B-cos convolution, and for a layer built
        with the plain implementation (which computes the same values either way).
        """
        if self.input_layer_name is None:
            return False
        layer = self.get_submodule(self.input_layer_name)  # type: ignore[attr-defined]
        if not hasattr(layer, "inverse_encoded_input"):
            return False
        layer.inverse_encoded_input = encoded
        return bool(layer.fused)

    def explanation_mode(self) -> explanation_mode:
        """Context manager (and decorator) that puts the model into explanation mode."""
        return explanation_mode(self)  # type: ignore[arg-type]

    def explain(
        self,
        inputs: Tensor,
        target: Target = None,
        *,
        idx: Target = None,
        explanation_image: bool = True,
        smooth: int = 15,
        alpha_percentile: float = 99.5,
    ) -> Explanation:
        """Explain ``inputs`` (a batch [N, C, H, W] or one image [C, H, W]) in one forward/backward.

        ``target``: None (explain the predicted class), an int (same class for every sample) or a
        sequence / tensor of N class indices; ``idx`` is the reference's name for it. Returns a
        :class:`bcos.explanation.contributions.Explanation`; see :func:`bcos.explanation.contributions.explain`.
        """
        if target is not None and idx is not None:
            raise TypeError("pass the class to explain as target or as idx, not both")
        return contributions.explain(
            self,  # type: ignore[arg-type]
            inputs,
            target if idx is None else idx,
            explanation_image=explanation_image,
            smooth=smooth,
            alpha_percentile=alpha_percentile,
        )

    def attribute(self, image: Tensor, target: Target, **kwargs: Any) -> Tensor:
        """Contributions ``x ⊙ W(x)`` of ``image`` [N, C, H, W] for ``target`` (one class or N classes).

        This is Input×Gradient taken in explanation mode, shape [N, C, H, W] (the "Ours" explainer).
        Extra keyword arguments are accepted for interface compatibility and ignored.
        """
        del kwargs
        inputs = check_inputs(image)
        explanation = contributions.explain(self, inputs, target, explanation_image=False)  # type: ignore[arg-type]
        return inputs.detach() * explanation.dynamic_linear_weights

    def attribute_selection(self, image: Tensor, targets: Sequence[int] | Tensor, **kwargs: Any) -> Tensor:
        """:meth:`attribute` for each of T targets, concatenated: [T*N, C, H, W] (target-major).

        Computed in one forward and backward over the image repeated T times.
        """
        del kwargs
        inputs = check_inputs(image)
        targets = torch.as_tensor(targets, dtype=torch.long).reshape(-1)
        n = inputs.shape[0]
        repeated = inputs.repeat(len(targets), 1, 1, 1)
        return self.attribute(repeated, targets.repeat_interleave(n))

    @staticmethod
    def gradient_to_image(
        image: Tensor, linear_mapping: Tensor, smooth: int = 15, alpha_percentile: float = 99.5
    ) -> np.ndarray:
        """See :func:`bcos.explanation.visualize.gradient_to_image`."""
        return visualize.gradient_to_image(image, linear_mapping, smooth, alpha_percentile)

    @staticmethod
    def plot_contribution_map(contribution_map: Tensor | np.ndarray, *args: Any, **kwargs: Any) -> Any:
        """See :func:`bcos.explanation.visualize.plot_contribution_map`."""
        return visualize.plot_contribution_map(contribution_map, *args, **kwargs)


class BcosSequential(BcosUtilMixin, nn.Sequential):
    """An ``nn.Sequential`` with the B-cos helpers (B-cos ViTs: ``[SimpleViT, LogitLayer]``).

    ``get_feature_extractor`` / ``get_classifier`` delegate to the first element: the features
    are its features, and the classifier is its classifier followed by the remaining elements
    (e.g. the LogitLayer), so ``classifier(features(x)) == model(x)``.
    """

    def get_feature_extractor(self) -> nn.Module:
        """The first element's feature extractor (for a SimpleViT: tokens as [N, D, h, w])."""
        first = self[0]
        if not hasattr(first, "get_feature_extractor"):
            raise TypeError(f"{type(first).__name__} has no get_feature_extractor(); this wrapper cannot provide one")
        return first.get_feature_extractor()

    def get_classifier(self) -> nn.Module:
        """The first element's classifier followed by the remaining elements."""
        first = self[0]
        if not hasattr(first, "get_classifier"):
            raise TypeError(f"{type(first).__name__} has no get_classifier(); this wrapper cannot provide one")
        return nn.Sequential(first.get_classifier(), *list(self)[1:])
