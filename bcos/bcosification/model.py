"""The model :func:`bcos.bcosification.bcosify` returns: the converted network followed by a logit layer.

:class:`BcosifiedModel` is a first-class B-cos model: ``explain``, ``explanation_mode``,
``attribute`` (the "Ours" explainer), ``get_feature_extractor`` / ``get_classifier`` (GradCAM,
frozen-backbone fine-tuning) for the architectures whose split it knows, and export with
:mod:`bcos.deploy`. Its input is the 6-channel ``[x, 1 - x]`` image.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bcos.bcosification.layers import BcosifiedConv2d, BcosifiedLinear, check_b
from bcos.errors import ConfigError
from bcos.models.base import BcosUtilMixin
from bcos.modules.logit_layer import LogitLayer

if TYPE_CHECKING:
    from bcos.bcosification.report import BcosifyReport

__all__ = ["BcosifiedModel", "set_b", "get_b"]

Split = tuple[Callable[[nn.Module, Tensor], Tensor], Callable[[nn.Module, Tensor], Tensor]]


def _features_resnet(net: nn.Module, x: Tensor) -> Tensor:
    x = net.maxpool(net.relu(net.bn1(net.conv1(x))))
    return net.layer4(net.layer3(net.layer2(net.layer1(x))))


def _head_pool_flatten(net: nn.Module, features: Tensor) -> Tensor:
    return net.classifier(torch.flatten(net.avgpool(features), 1))


def _features_densenet(net: nn.Module, x: Tensor) -> Tensor:
    return F.relu(net.features(x))


def _head_densenet(net: nn.Module, features: Tensor) -> Tensor:
    return net.classifier(torch.flatten(F.adaptive_avg_pool2d(features, (1, 1)), 1))


#: torchvision class -> (features, head): ``head(features(x)) == model(x)`` for each
_SPLITS: dict[str, Split] = {
    "torchvision.models.resnet.ResNet": (_features_resnet, lambda net, f: net.fc(torch.flatten(net.avgpool(f), 1))),
    "torchvision.models.densenet.DenseNet": (_features_densenet, _head_densenet),
    "torchvision.models.vgg.VGG": (lambda net, x: net.features(x), _head_pool_flatten),
    "torchvision.models.convnext.ConvNeXt": (lambda net, x: net.features(x), lambda net, f: net.classifier(net.avgpool(f))),
    "torchvision.models.efficientnet.EfficientNet": (lambda net, x: net.features(x), _head_pool_flatten),
    "torchvision.models.mobilenetv3.MobileNetV3": (lambda net, x: net.features(x), _head_pool_flatten),
    "torchvision.models.mobilenetv2.MobileNetV2": (
        lambda net, x: net.features(x),
        lambda net, f: net.classifier(torch.flatten(F.adaptive_avg_pool2d(f, (1, 1)), 1)),
    ),
}


def _split_of(net: nn.Module) -> Split | None:
    kind = f"{type(net).__module__}.{type(net).__qualname__}"
    if kind in _SPLITS:
        return _SPLITS[kind]
    if kind.startswith("timm.models.") and "vision_transformer" not in kind:  # timm CNNs: feature map, then head
        if callable(getattr(net, "forward_features", None)) and callable(getattr(net, "forward_head", None)):
            return (lambda n, x: n.forward_features(x), lambda n, f: n.forward_head(f))
    return None


class _Part(nn.Module):
    """One side of the feature/classifier split (shares the model's modules)."""

    def __init__(self, net: nn.Module, function: Callable[[nn.Module, Tensor], Tensor], after: nn.Module | None = None) -> None:
        super().__init__()
        self.net = net
        self.function = function
        self.after = after

    def forward(self, x: Tensor) -> Tensor:
        out = self.function(self.net, x)
        return out if self.after is None else self.after(out)


class BcosifiedModel(BcosUtilMixin, nn.Module):
    """A B-cosified network ``model`` followed by its ``logit_layer`` (a :class:`LogitLayer`).

    State-dict keys: ``model.<original path>`` (B-cosified layers add ``.conv`` / ``.linear``);
    the logit layer has none. ``bcosify_report`` lists what the conversion did.
    """

    def __init__(
        self,
        model: nn.Module,
        logit_bias: float | None = None,
        report: BcosifyReport | None = None,
        input_layer: str | None = None,
    ) -> None:
        super().__init__()
        self.model = model
        self.logit_layer = LogitLayer(logit_bias=logit_bias)
        self.bcosify_report = report
        self.input_layer_name = None if input_layer is None else f"model.{input_layer}"

    def forward(self, input: Tensor) -> Tensor:
        """Logits of ``input`` [N, 6, H, W] (``[x, 1 - x]`` images)."""
        return self.logit_layer(self.model(input))

    @property
    def b(self) -> float:
        """The exponent B of the B-cos layers (see :func:`get_b`)."""
        return get_b(self)

    def get_feature_extractor(self) -> nn.Module:
        """The network up to its last feature map [N, C, h, w] (shares this model's modules)."""
        return _Part(self.model, self._split()[0])

    def get_classifier(self) -> nn.Module:
        """Feature map -> logits (pooling, classifier, logit layer): ``get_classifier()(get_feature_extractor()(x)) == self(x)``."""
        return _Part(self.model, self._split()[1], after=self.logit_layer)

    def _split(self) -> Split:
        split = _split_of(self.model)
        if split is None:
            raise ConfigError(
                f"bcosify does not know where the features of {type(self.model).__name__} end; "
                "name the feature layer yourself (e.g. GradCAM's target_layer)"
            )
        return split


def set_b(model: nn.Module, b: float) -> int:
    """Set the exponent B of every B-cosified layer of ``model``; returns how many layers changed."""
    b = check_b(b)
    count = 0
    for module in model.modules():
        if isinstance(module, BcosifiedConv2d | BcosifiedLinear):
            module.b = b
            count += 1
    return count


def get_b(model: nn.Module) -> float:
    """The exponent B of the B-cosified layers of ``model`` (a ConfigError if they differ or there are none)."""
    values = {m.b for m in model.modules() if isinstance(m, BcosifiedConv2d | BcosifiedLinear)}
    if len(values) != 1:
        raise ConfigError(f"the model's B-cosified layers have {'no' if not values else 'different'} B ({sorted(values)})")
    return values.pop()
