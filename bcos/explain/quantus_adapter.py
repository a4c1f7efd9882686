"""Our explainers in other toolkits: Quantus's ``explain_func`` and Captum's ``Attribution``.

Both toolkits perturb the inputs they are given (baselines, noise, masks). A B-cos model reads the
six-channel ``[x, 1 - x]`` encoding, and perturbing those six channels independently gives inputs
no image has (Quantus's "black" baseline would be six zeros, not the black image ``[0, 1]``), so
give them the model in image space, :class:`~bcos.explain.image_space.ImageSpaceModel`, and images
[N, 3, H, W]: perturbations then apply to the image and the encoding is recomputed inside. The
attributions come back in image space too (three channels; "Ours" sums the contributions of ``x``
and ``1 - x``, so they still add up to the logit minus the logit bias)::

    import quantus
    from bcos.explain.image_space import ImageSpaceModel

    image_model = ImageSpaceModel(model).eval()
    metric = quantus.FaithfulnessCorrelation(perturb_baseline="black", ...)
    scores = metric(model=image_model, x_batch=images, y_batch=labels,
                    explain_func=quantus_explain_func, explain_func_kwargs={"method": "Ours"})

Six-channel inputs still work where nothing is perturbed (e.g. ``PointingGame``), with an
:class:`EncodedInputWarning`.

Captum's wrappers (``NoiseTunnel``, ``captum.metrics.infidelity`` / ``sensitivity_max``) take an
attribution object; :class:`CaptumAttribution` turns any explainer into one. Map methods (GCam,
Occlusion, RISE, LIME) give one map per image; Captum expects attributions of the inputs' shape,
so the map is repeated over the channels (as Captum's own ``Occlusion`` attributes a window's
effect to each of its channels)::

    from captum.attr import NoiseTunnel
    smooth = NoiseTunnel(CaptumAttribution(get_explainer(ImageSpaceModel(model), "Ours")))
    attributions = smooth.attribute(images, nt_type="smoothgrad", nt_samples=8, target=y)

Neither Quantus nor Captum is imported by this module until one of them is used.
"""

from __future__ import annotations

import functools
import warnings
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from bcos.errors import InputError
from bcos.explain.image_space import ENCODED_CHANNELS, IMAGE_CHANNELS, ImageSpaceModel, check_image_channels
from bcos.explain.methods.base import Explainer
from bcos.explain.methods.registry import get_explainer
from bcos.explanation.checks import channel_mismatch_error

__all__ = ["quantus_explain_func", "CaptumAttribution", "EncodedInputWarning"]


class EncodedInputWarning(UserWarning):
    """Inputs in the six-channel ``[x, 1 - x]`` encoding were given to a tool that may perturb them."""


def _check_encoding_contract(model: nn.Module, channels: int) -> None:
    """Image-space models take images; six-channel inputs to a raw B-cos model get a warning."""
    if isinstance(model, ImageSpaceModel):
        return
    if channels == IMAGE_CHANNELS and channel_mismatch_error(model, IMAGE_CHANNELS) is not None:
        raise InputError(
            "the model reads the six-channel [x, 1-x] encoding but got images [N, 3, H, W]; give Quantus the model "
            "in image space: bcos.explain.image_space.ImageSpaceModel(model)"
        )
    if channels == ENCODED_CHANNELS:
        warnings.warn(
            "Quantus perturbs the six [x, 1-x] channels independently (a 'black' baseline becomes six zeros, noise "
            "breaks the encoding); for perturbation metrics give it ImageSpaceModel(model) and images [N, 3, H, W]",
            EncodedInputWarning,
            stacklevel=3,
        )


def _model_device(model: nn.Module) -> torch.device:
    parameter = next(model.parameters(), None)
    return parameter.device if parameter is not None else torch.device("cpu")


def quantus_explain_func(
    model: nn.Module,
    inputs: np.ndarray | Tensor,
    targets: np.ndarray | Tensor | int,
    method: str = "Ours",
    config: str = "default",
    reduce_channels: bool = True,
    device: torch.device | str | None = None,
    **options: Any,
) -> np.ndarray:
    """Attributions of ``inputs`` [N, C, H, W] for ``targets`` with explainer ``method``, as numpy.

    Args:
        model: the torch model Quantus was given (evaluated as it is; call ``model.eval()``): an
            :class:`~bcos.explain.image_space.ImageSpaceModel` with images [N, 3, H, W] (image
            space, three-channel attributions), or any model with the inputs it reads (six-channel
            inputs of a B-cos model give an :class:`EncodedInputWarning`; three-channel images for a
            model that reads six channels are an :class:`~bcos.errors.InputError`).
        inputs: the batch (numpy or tensor, channels first).
        targets: one class per sample (or one int for all).
        method, config: explainer name and its named configuration (see ``list_explainers()``).
        reduce_channels: sum over channels to [N, 1, H, W] (what Quantus's localisation and
            randomisation metrics expect); False keeps [N, C', H, W].
        device: where to compute (default: the model's device).
        **options: explainer options that override the configuration (e.g. ``n=2000`` for RISE).

    Returns:
        float32 array [N, 1, H, W] (or [N, C', H, W]).
    """
    if not isinstance(model, nn.Module):
        raise InputError(f"quantus_explain_func needs a torch model, got {type(model).__name__}")
    device = torch.device(device) if device is not None else _model_device(model)
    x = torch.as_tensor(np.asarray(inputs) if not isinstance(inputs, Tensor) else inputs, dtype=torch.float32).to(device)
    if isinstance(targets, (int, np.integer)):
        y: Any = int(targets)
    else:
        y = torch.as_tensor(np.asarray(targets.cpu() if isinstance(targets, Tensor) else targets)).reshape(-1).long()
    if x.dim() == 4:
        _check_encoding_contract(model, x.shape[1])
    explainer = get_explainer(model, method, config, **options)
    attributions = explainer.attribute(x, y)
    if reduce_channels:
        attributions = attributions.sum(1, keepdim=True)
    return attributions.detach().cpu().float().numpy()


def _import_attribution_base() -> type:
    from captum.attr import Attribution

    return Attribution


class CaptumAttribution:
    """A Captum ``Attribution`` that runs one of our explainers.

    Build it with ``CaptumAttribution(explainer)``; the returned object is an instance of
    ``captum.attr.Attribution`` (the class is created on first use so that Captum stays optional).
    ``attribute(inputs, target=...)`` accepts and ignores Captum's other keyword arguments.

    Attributions have the inputs' shape, as Captum's metrics and wrappers expect: a map method's
    [N, 1, H, W] map is repeated over the channels (``expand_maps=False`` keeps the map). An
    explainer of an :class:`~bcos.explain.image_space.ImageSpaceModel` takes images [N, 3, H, W]
    only; the six-channel encoding is a one-line :class:`~bcos.errors.InputError`.
    """

    def __new__(cls, explainer: Explainer, expand_maps: bool = True) -> Any:
        if not isinstance(explainer, Explainer):
            raise InputError(f"CaptumAttribution wraps a bcos explainer, got {type(explainer).__name__}")
        return _captum_class()(explainer, expand_maps)


@functools.cache
def _captum_class() -> type:
    base = _import_attribution_base()

    class _ExplainerAttribution(base):  # type: ignore[misc, valid-type]
        def __init__(self, explainer: Explainer, expand_maps: bool = True) -> None:
            super().__init__(explainer.model)
            self.explainer = explainer
            self.expand_maps = expand_maps

        def _one(self, inputs: Tensor, target: Any) -> Tensor:
            if isinstance(self.explainer.model, ImageSpaceModel) and isinstance(inputs, Tensor):
                check_image_channels(inputs, f"{type(self.explainer).__name__} of an ImageSpaceModel")
            attributions = self.explainer.attribute(inputs, target)
            if self.expand_maps and attributions.dim() == 4 and attributions.shape[1] == 1 and inputs.shape[1] != 1:
                attributions = attributions.expand(-1, inputs.shape[1], -1, -1).contiguous()
            return attributions

        def _attribute(self, inputs: Tensor, target: Any = None, **kwargs: Any) -> Tensor:
            if isinstance(inputs, tuple):
                if len(inputs) != 1:
                    raise InputError("bcos explainers take one input tensor, not a tuple of several")
                return (self._one(inputs[0], target),)  # type: ignore[return-value]
            return self._one(inputs, target)

        # Captum's wrappers (NoiseTunnel) call ``attribute.__wrapped__``, so it must exist
        @functools.wraps(_attribute)
        def attribute(self, inputs: Tensor, target: Any = None, **kwargs: Any) -> Tensor:
            return self._attribute(inputs, target, **kwargs)

        def has_convergence_delta(self) -> bool:
            return False

        @property
        def multiplies_by_inputs(self) -> bool:
            return bool(self.explainer.multiplies_by_inputs)

        def __repr__(self) -> str:
            return f"CaptumAttribution({self.explainer!r})"

    _ExplainerAttribution.__name__ = _ExplainerAttribution.__qualname__ = "CaptumAttribution"
    return _ExplainerAttribution
