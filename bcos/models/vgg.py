"""B-cos VGG 11/13/16/19, with or without (uncentered batch-) normalisation.

Follows torchvision's ``vgg.py`` with the B-cos changes: no ReLUs or dropout, every convolution
is a ``conv_layer`` (default :class:`~bcos.modules.BcosConv2d`), average instead of max pooling,
and a fully convolutional classifier (512 -> 4096 with a 7x7 kernel and padding 3, then two 1x1
convolutions) applied before global average pooling, so any input size works. State-dict keys and
shapes equal those of B-cos-v2: every convolution in ``features`` is followed by a norm slot (an
``nn.Identity`` for the plain variants), so the indices are the same with or without norms.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from bcos.models.base import BcosUtilMixin
from bcos.models._utils import check_builder_kwargs, make_logit_layer, refuse_pretrained
from bcos.models.registry import Published, register_architecture
from bcos.modules import BcosConv2d, norms

__all__ = [
    "BcosVGG",
    "make_layers",
    "cfgs",
    "vgg11",
    "vgg11_bnu",
    "vgg13",
    "vgg13_bnu",
    "vgg16",
    "vgg16_bnu",
    "vgg19",
    "vgg19_bnu",
]

DEFAULT_CONV_LAYER = BcosConv2d
DEFAULT_NORM_LAYER = norms.NoBias(norms.BatchNormUncentered2d)

#: channel widths per convolution, "M" = 2x2 average pooling (VGG configurations A, B, D, E)
cfgs: dict[str, list[int | str]] = {
    "A": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "B": [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "D": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
    "E": [
        64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M",
        512, 512, 512, 512, "M", 512, 512, 512, 512, "M",
    ],
}  # fmt: skip


def make_layers(
    cfg: Sequence[int | str],
    norm_layer: Callable[..., nn.Module] | None = DEFAULT_NORM_LAYER,
    conv_layer: Callable[..., nn.Module] = DEFAULT_CONV_LAYER,
    in_channels: int = 6,
    no_pool: bool = False,
) -> nn.Sequential:
    """The feature extractor for ``cfg``: each 3x3 conv is followed by ``norm_layer`` (None: Identity).

    ``no_pool`` drops the pooling layers and gives the convolution before each of them stride 2.
    """
    if norm_layer is None:
        norm_layer = nn.Identity
    layers: list[nn.Module] = []
    for i, entry in enumerate(cfg):
        if entry == "M":
            if not no_pool:
                layers.append(nn.AvgPool2d(kernel_size=2, stride=2))
            continue
        stride = 2 if no_pool and i + 1 < len(cfg) and cfg[i + 1] == "M" else 1
        width = int(entry)
        layers += [
            conv_layer(in_channels, width, kernel_size=3, padding=1, stride=stride),
            norm_layer(width),
        ]
        in_channels = width
    return nn.Sequential(*layers)


class BcosVGG(BcosUtilMixin, nn.Module):
    """B-cos VGG: ``features`` -> conv classifier -> global average pooling -> logit layer.

    Args:
        features: the feature extractor (see :func:`make_layers`); must end with 512 channels.
        num_classes: number of output logits.
        init_weights: Kaiming-normal initialisation of the convolutions.
        conv_layer: convolution factory for the classifier.
        logit_bias: added to the logits; None means ``-log(num_classes - 1)``.
        logit_temperature: logits are divided by it (None: 1).
    """

    input_layer_name = "features.0"

    def __init__(
        self,
        features: nn.Module,
        num_classes: int = 1000,
        init_weights: bool = True,
        conv_layer: Callable[..., nn.Module] = DEFAULT_CONV_LAYER,
        logit_bias: float | None = None,
        logit_temperature: float | None = None,
    ) -> None:
        super().__init__()
        self.features = features
        # the 7x7 convolution with padding 3 replaces torchvision's 7x7 pooling + first linear
        self.classifier = nn.Sequential(
            conv_layer(512, 4096, kernel_size=7, padding=3),
            conv_layer(4096, 4096, kernel_size=1),
            conv_layer(4096, num_classes, kernel_size=1),
        )
        self.num_classes = num_classes
        self.logit_layer = make_logit_layer(num_classes, logit_bias, logit_temperature)
        if init_weights:
            self._initialize_weights()

    def _initialize_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.constant_(m.bias, 0)
            elif isinstance(m, nn.BatchNorm2d):
                if m.weight is not None:
                    nn.init.constant_(m.weight, 1)
                if m.bias is not None:
                    nn.init.constant_(m.bias, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.classifier(self.features(x))
        x = F.adaptive_avg_pool2d(x, (1, 1)).flatten(1)
        return self.logit_layer(x)

    def get_classifier(self) -> nn.Module:
        """The convolutional classifier (applied before global pooling)."""
        return self.classifier

    def get_feature_extractor(self) -> nn.Module:
        """Everything before the classifier, without global pooling."""
        return self.features


# --------------------------------------------------------------------------------------------
# Builders
# --------------------------------------------------------------------------------------------
_BUILDER_PARAMS = ("norm_layer", "conv_layer", "in_chans", "no_pool")


def _vgg(
    arch: str,
    cfg: str,
    pretrained: bool,
    default_norm: Callable[..., nn.Module] | None,
    kwargs: dict[str, Any],
) -> BcosVGG:
    """Build ``arch`` from ``cfgs[cfg]``; the plain and ``_bnu`` variants differ only in the
    default ``norm_layer`` (None: no normalisation)."""
    refuse_pretrained(arch, pretrained)
    check_builder_kwargs(arch, kwargs, BcosVGG, fixed=("features",), also_valid=_BUILDER_PARAMS)
    conv_layer = kwargs.pop("conv_layer", DEFAULT_CONV_LAYER)
    features = make_layers(
        cfgs[cfg],
        norm_layer=kwargs.pop("norm_layer", default_norm),
        conv_layer=conv_layer,
        in_channels=kwargs.pop("in_chans", 6),
        no_pool=kwargs.pop("no_pool", False),
    )
    return BcosVGG(features, conv_layer=conv_layer, **kwargs)


# Keyword arguments of every builder: norm_layer, conv_layer, in_chans, no_pool and those of
# BcosVGG (num_classes, init_weights, logit_bias, logit_temperature).
def vgg11(pretrained: bool = False, progress: bool = True, **kwargs: Any) -> BcosVGG:
    """B-cos VGG-11 (configuration A), no normalisation by default."""
    return _vgg("vgg11", "A", pretrained, None, kwargs)


@register_architecture(
    Published("vgg11_bnu", "bcos_final/vgg_11_bnu", "vgg_11_bnu-34036029f0.pth", 69.310, 88.388, 132_855_872, "B-cos VGG-11 with uncentered batch norm"),
)
def vgg11_bnu(pretrained: bool = False, progress: bool = True, **kwargs: Any) -> BcosVGG:
    """B-cos VGG-11 (configuration A) with NoBias(BatchNormUncentered2d) by default."""
    return _vgg("vgg11_bnu", "A", pretrained, DEFAULT_NORM_LAYER, kwargs)


@register_architecture()
def vgg13(pretrained: bool = False, progress: bool = True, **kwargs: Any) -> BcosVGG:
    """B-cos VGG-13 (configuration B), no normalisation by default."""
    return _vgg("vgg13", "B", pretrained, None, kwargs)


@register_architecture()
def vgg13_bnu(pretrained: bool = False, progress: bool = True, **kwargs: Any) -> BcosVGG:
    """B-cos VGG-13 (configuration B) with NoBias(BatchNormUncentered2d) by default."""
    return _vgg("vgg13_bnu", "B", pretrained, DEFAULT_NORM_LAYER, kwargs)


@register_architecture()
def vgg16(pretrained: bool = False, progress: bool = True, **kwargs: Any) -> BcosVGG:
    """B-cos VGG-16 (configuration D), no normalisation by default."""
    return _vgg("vgg16", "D", pretrained, None, kwargs)


@register_architecture()
def vgg16_bnu(pretrained: bool = False, progress: bool = True, **kwargs: Any) -> BcosVGG:
    """B-cos VGG-16 (configuration D) with NoBias(BatchNormUncentered2d) by default."""
    return _vgg("vgg16_bnu", "D", pretrained, DEFAULT_NORM_LAYER, kwargs)


@register_architecture()
def vgg19(pretrained: bool = False, progress: bool = True, **kwargs: Any) -> BcosVGG:
    """B-cos VGG-19 (configuration E), no normalisation by default."""
    return _vgg("vgg19", "E", pretrained, None, kwargs)


@register_architecture()
def vgg19_bnu(pretrained: bool = False, progress: bool = True, **kwargs: Any) -> BcosVGG:
    """B-cos VGG-19 (configuration E) with NoBias(BatchNormUncentered2d) by default."""
    return _vgg("vgg19_bnu", "E", pretrained, DEFAULT_NORM_LAYER, kwargs)
