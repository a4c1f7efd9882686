"""Grad-CAM ("GCam"): class activation maps weighted by the mean gradient of the target logit.

The target layer is, by default, the model's own split into ``get_feature_extractor()`` and
``get_classifier()``: the last feature map of a B-cos CNN (before the 1x1 classifier and the global
pooling), or the token map [N, D, h, w] of a ViT (its tokens laid out on the patch grid). Any
other module whose output is a [N, C, h, w] map can be named with ``target_layer``.

For each sample: ``weights_c = mean_{h,w} ∂y_t/∂A_c``, ``map = ReLU(Σ_c weights_c · A_c)``, upsampled
to the input size. The reference summed the gradient (a constant factor h·w) and explained only the
first image of a batch; here every sample gets its own target.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bcos.errors import ConfigError, InputError, unknown_name
from bcos.explain.methods.base import Explainer
from bcos.explanation.checks import check_target_range

__all__ = ["GradCAM"]

_INTERPOLATION_MODES = ("nearest", "bilinear", "bicubic", "area")


def _pool_to_logits(output: Tensor) -> Tensor:
    """[N, K] logits from a classifier output: CNN classifiers act before global average pooling."""
    if output.dim() == 4:
        return output.mean(dim=(2, 3))
    if output.dim() == 2:
        return output
    raise InputError(f"the classifier must return [N, K] or [N, K, h, w], got {list(output.shape)}")


class GradCAM(Explainer):
    """Grad-CAM on the model's last feature map (or on ``target_layer``), one map [N, 1, H, W].

    Args:
        model: a model with ``get_feature_extractor()`` and ``get_classifier()`` (every B-cos CNN and
            ViT of :mod:`bcos.models`), or any model when ``target_layer`` is given.
        target_layer: a submodule (or its dotted name) whose [N, C, h, w] output is the feature map.
        relu_attributions: keep only the positive part of the map (as in the Grad-CAM paper).
        interpolate_mode: how the map is upsampled to the input size (reference: nearest).
    """

    produces_map = True

    def __init__(
        self,
        model: nn.Module,
        target_layer: nn.Module | str | None = None,
        relu_attributions: bool = True,
        interpolate_mode: str = "nearest",
    ) -> None:
        super().__init__(model)
        if interpolate_mode not in _INTERPOLATION_MODES:
            raise unknown_name("interpolation mode", interpolate_mode, _INTERPOLATION_MODES)
        self.relu_attributions = relu_attributions
        self.interpolate_mode = interpolate_mode
        self.target_layer = self._resolve_layer(target_layer)
        self.features: nn.Module | None = None
        self.classifier: nn.Module | None = None
        if self.target_layer is None:
            if not (hasattr(model, "get_feature_extractor") and hasattr(model, "get_classifier")):
                raise ConfigError(
                    f"GCam needs a model with get_feature_extractor() and get_classifier() "
                    f"({type(model).__name__} has none); pass target_layer=<module or its name>"
                )
            self.features = model.get_feature_extractor()
            self.classifier = model.get_classifier()

    def _resolve_layer(self, layer: nn.Module | str | None) -> nn.Module | None:
        if layer is None or isinstance(layer, nn.Module):
            return layer
        names = dict(self.model.named_modules())
        if layer not in names:
            raise unknown_name("target layer", layer, [n for n in names if n], hint="see model.named_modules()")
        return names[layer]

    def _features_and_logits(self, inputs: Tensor) -> tuple[Tensor, Tensor]:
        if self.target_layer is None:
            assert self.features is not None and self.classifier is not None
            with torch.no_grad():
                features = self.features(inputs)
            features = features.detach().requires_grad_(True)
            return features, _pool_to_logits(self.classifier(features))
        captured: dict[str, Any] = {}

        def hook(module: nn.Module, args: Any, output: Any) -> None:
            captured["features"] = output

        handle = self.target_layer.register_forward_hook(hook)
        try:
            # an input that requires grad keeps the graph even when the parameters are frozen
            logits = self.model(inputs.detach().clone().requires_grad_(True))
        finally:
            handle.remove()
        if "features" not in captured:
            raise ConfigError("the target layer was not called in the model's forward; pick a layer the model uses")
        return captured["features"], _pool_to_logits(logits)

    def _attribute(self, inputs: Tensor, targets: Tensor) -> Tensor:
        with torch.enable_grad():
            features, logits = self._features_and_logits(inputs)
            if not isinstance(features, Tensor) or features.dim() != 4:
                shape = list(features.shape) if isinstance(features, Tensor) else type(features).__name__
                raise ConfigError(f"GCam needs a [N, C, h, w] feature map, the target layer gives {shape}")
            check_target_range(targets, logits.shape[1])
            selected = logits.gather(1, targets[:, None]).sum()
            (gradient,) = torch.autograd.grad(selected, features)
        weights = gradient.mean(dim=(2, 3), keepdim=True)
        cam = (weights * features.detach()).sum(dim=1, keepdim=True)
        if self.relu_attributions:
            cam = cam.clamp(min=0)
        align = {} if self.interpolate_mode in ("nearest", "area") else {"align_corners": False}
        return F.interpolate(cam, size=inputs.shape[-2:], mode=self.interpolate_mode, **align)
