"""A B-cos model seen from image space: it takes images [N, 3, H, W] and encodes ``[x, 1 - x]`` itself.

B-cos models read six channels, ``[x, 1 - x]`` (:class:`~bcos.data.transforms.AddInverse`). Tools
that perturb their inputs (Quantus's baselines and noise, Captum's ``infidelity`` and
``NoiseTunnel``, Integrated Gradients' path) must perturb the *image*: perturbing the six channels
independently gives inputs no image has (a "black" baseline of six zeros is not the black image
``[0, 1]``; independent noise on ``x`` and ``1 - x`` breaks the encoding), so their numbers
measure nothing meaningful. :class:`ImageSpaceModel` is the model those tools should get:

    from bcos.explain.image_space import ImageSpaceModel
    image_model = ImageSpaceModel(model).eval()     # images [N, 3, H, W] in [0, 1] -> logits
    image_model(images) == model(AddInverse()(images))

Every explainer of :mod:`bcos.explain.methods` given an ``ImageSpaceModel`` explains in image
space: three channels in, three channels (or one map) out. For "Ours" the contributions of ``x``
and of ``1 - x`` are summed per colour channel (:meth:`ImageSpaceModel.contributions`), which keeps
completeness: for B-cos CNNs the attributions still sum to the logit minus the logit bias. (The
gradient of the image-space model, ``W_x - W_{1-x}``, times ``x`` would not: it misses ``Σ W_{1-x}``.)
GradCAM keeps its default layer: the feature extractor is ``AddInverse`` followed by the model's own.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from bcos.data.transforms import AddInverse
from bcos.errors import InputError
from bcos.explanation.checks import channel_mismatch_error

__all__ = ["ImageSpaceModel", "IMAGE_CHANNELS", "ENCODED_CHANNELS", "check_image_channels", "sum_encoding_pairs", "ImageEncoding"]

IMAGE_CHANNELS = 3
ENCODED_CHANNELS = 2 * IMAGE_CHANNELS


def check_image_channels(inputs: Tensor, where: str) -> None:
    """One-line :class:`InputError` unless ``inputs`` are images [N, 3, H, W] (not the six-channel encoding)."""
    if inputs.dim() != 4 or inputs.shape[1] != IMAGE_CHANNELS:
        shape = list(inputs.shape)
        hint = (
            "; pass the image, not its [x, 1-x] encoding (drop AddInverse): the encoding is recomputed inside"
            if inputs.dim() == 4 and inputs.shape[1] == ENCODED_CHANNELS
            else ""
        )
        raise InputError(f"{where} takes images [N, 3, H, W] in [0, 1], got {shape}{hint}")


class ImageEncoding(AddInverse):
    """:class:`AddInverse` on the channels of images [N, 3, H, W]; any other input is a one-line error."""

    def __init__(self) -> None:
        super().__init__(dim=1)

    def forward(self, in_tensor: Tensor) -> Tensor:
        check_image_channels(in_tensor, "ImageSpaceModel")
        return super().forward(in_tensor)


class ImageSpaceModel(nn.Module):
    """``model(AddInverse()(images))``: a B-cos model that takes images [N, 3, H, W] in [0, 1].

    Args:
        model: a model that reads the six-channel ``[x, 1 - x]`` encoding (every B-cos CNN and ViT
            of :mod:`bcos.models` trained with ``AddInverse``). A model that reads three channels
            needs no wrapper and is refused.

    It keeps the B-cos helpers the explainers use: ``get_feature_extractor()`` (``AddInverse``
    followed by the model's), ``get_classifier()`` and ``to_probabilities``; its
    explanation mode is the model's (it is a submodule).
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        if isinstance(model, ImageSpaceModel):
            raise InputError("the model is an ImageSpaceModel already; wrap the B-cos model only once")
        if not isinstance(model, nn.Module):
            raise InputError(f"ImageSpaceModel wraps a torch model, got {type(model).__name__}")
        if channel_mismatch_error(model, ENCODED_CHANNELS) is not None:
            raise InputError(
                "the model does not read the six-channel [x, 1-x] encoding; it needs no ImageSpaceModel, use it as it is"
            )
        self.model = model
        self.encode = ImageEncoding()
        self.training = model.training

    def encode_images(self, images: Tensor) -> Tensor:
        """``[x, 1 - x]`` of images [N, 3, H, W] (checked: a six-channel input is an error)."""
        return self.encode(images)

    def forward(self, images: Tensor) -> Tensor:
        return self.model(self.encode_images(images))

    def contributions(self, images: Tensor, targets: Any = None, model: nn.Module | None = None) -> Tensor:
        """B-cos contributions in image space [N, 3, H, W]: those of ``x`` and ``1 - x`` summed per channel.

        ``model`` replaces the wrapped model for the explanation (e.g. a mean-corrected wrapper of
        it); it must read the encoding too. Their sum is the explained logit minus the logit bias.
        """
        from bcos.explanation.contributions import explain

        encoded = self.encode_images(images)
        explanation = explain(model if model is not None else self.model, encoded, targets, explanation_image=False)
        return sum_encoding_pairs(encoded * explanation.dynamic_linear_weights)

    def get_feature_extractor(self) -> nn.Module:
        """``AddInverse`` followed by the model's feature extractor (GradCAM's default layer)."""
        return nn.Sequential(self.encode, self.model.get_feature_extractor())

    def get_classifier(self) -> nn.Module:
        """The model's classifier."""
        return self.model.get_classifier()

    def to_probabilities(self, logits: Tensor) -> Tensor:
        """The model's ``to_probabilities`` (sigmoid for B-cos models), else a softmax."""
        own = getattr(self.model, "to_probabilities", None)
        return own(logits) if callable(own) else logits.softmax(dim=1)

    def extra_repr(self) -> str:
        return "images [N, 3, H, W] -> [x, 1-x] -> model"


def sum_encoding_pairs(attributions: Tensor) -> Tensor:
    """[N, 6, H, W] attributions of ``[x, 1 - x]`` -> [N, 3, H, W]: channel c plus channel c + 3."""
    if attributions.dim() != 4 or attributions.shape[1] != ENCODED_CHANNELS:
        raise InputError(f"expected attributions of the [x, 1-x] encoding [N, 6, H, W], got {list(attributions.shape)}")
    return attributions[:, :IMAGE_CHANNELS] + attributions[:, IMAGE_CHANNELS:]
