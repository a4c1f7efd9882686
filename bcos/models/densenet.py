"""B-cos DenseNet-BC (ImageNet and CIFAR-10 variants).

Follows torchvision's ``densenet.py`` with the B-cos changes: no ReLUs, every convolution is a
``conv_layer`` (default :class:`~bcos.modules.BcosConv2d`), average instead of max pooling, and a
1x1 convolution classifier applied before global average pooling, followed by a
:class:`~bcos.modules.LogitLayer`. State-dict keys and shapes equal those of B-cos-v2
(``features.denseblock<i>.denselayer<j>.{norm1,conv1,norm2,conv2}``, ``features.norm5``,
``classifier``).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
import torch.utils.checkpoint as checkpoint
from torch import nn

from bcos.errors import ConfigError
from bcos.models.base import BcosUtilMixin
from bcos.models._utils import check_builder_kwargs, make_logit_layer, refuse_pretrained
from bcos.models.registry import Published, register_architecture
from bcos.modules import BcosConv2d, norms

__all__ = [
    "BcosDenseNet",
    "densenet121",
    "densenet161",
    "densenet169",
    "densenet201",
    "cifar10_densenet52",
    "cifar10_densenet100",
    "cifar10_densenet190",
    "cifar10_densenet250",
]

DEFAULT_NORM_LAYER = norms.NoBias(norms.DetachablePositionNorm2d)
DEFAULT_CONV_LAYER = BcosConv2d


class _DenseLayer(nn.Module):
    """norm -> 1x1 conv (bottleneck, ``bn_size * growth_rate``) -> norm -> 3x3 conv (``growth_rate``)."""

    def __init__(
        self,
        num_input_features: int,
        growth_rate: int,
        bn_size: int,
        drop_rate: float,
        memory_efficient: bool = False,
        norm_layer: Callable[..., nn.Module] = DEFAULT_NORM_LAYER,
        conv_layer: Callable[..., nn.Module] = DEFAULT_CONV_LAYER,
    ) -> None:
        super().__init__()
        self.norm1 = norm_layer(num_input_features)
        self.conv1 = conv_layer(num_input_features, bn_size * growth_rate, kernel_size=1)
        self.norm2 = norm_layer(bn_size * growth_rate)
        self.conv2 = conv_layer(bn_size * growth_rate, growth_rate, kernel_size=3, padding=1)
        self.drop_rate = float(drop_rate)
        self.memory_efficient = memory_efficient

    def _bottleneck(self, *inputs: torch.Tensor) -> torch.Tensor:
        return self.conv1(self.norm1(torch.cat(inputs, 1)))

    def forward(self, prev_features: list[torch.Tensor]) -> torch.Tensor:
        if self.memory_efficient and any(t.requires_grad for t in prev_features):
            # recompute the concatenation and bottleneck in the backward pass instead of storing them
            bottleneck = checkpoint.checkpoint(self._bottleneck, *prev_features, use_reentrant=False)
        else:
            bottleneck = self._bottleneck(*prev_features)
        new_features = self.conv2(self.norm2(bottleneck))
        if self.drop_rate > 0:
            new_features = F.dropout(new_features, p=self.drop_rate, training=self.training)
        return new_features


class _DenseBlock(nn.ModuleDict):
    """``num_layers`` dense layers; each sees the concatenation of the input and all earlier outputs."""

    def __init__(
        self,
        num_layers: int,
        num_input_features: int,
        bn_size: int,
        growth_rate: int,
        drop_rate: float,
        memory_efficient: bool = False,
        norm_layer: Callable[..., nn.Module] = DEFAULT_NORM_LAYER,
        conv_layer: Callable[..., nn.Module] = DEFAULT_CONV_LAYER,
    ) -> None:
        super().__init__()
        for i in range(num_layers):
            self[f"denselayer{i + 1}"] = _DenseLayer(
                num_input_features + i * growth_rate,
                growth_rate=growth_rate,
                bn_size=bn_size,
                drop_rate=drop_rate,
                memory_efficient=memory_efficient,
                norm_layer=norm_layer,
                conv_layer=conv_layer,
            )

    def forward(self, init_features: torch.Tensor) -> torch.Tensor:
        features = [init_features]
        for layer in self.values():
            features.append(layer(features))
        return torch.cat(features, 1)


class _Transition(nn.Sequential):
    """norm -> 1x1 conv -> 2x2 average pooling."""

    def __init__(
        self,
        num_input_features: int,
        num_output_features: int,
        norm_layer: Callable[..., nn.Module] = DEFAULT_NORM_LAYER,
        conv_layer: Callable[..., nn.Module] = DEFAULT_CONV_LAYER,
    ) -> None:
        super().__init__()
        self.norm = norm_layer(num_input_features)
        self.conv = conv_layer(num_input_features, num_output_features, kernel_size=1)
        self.pool = nn.AvgPool2d(kernel_size=2, stride=2)


class BcosDenseNet(BcosUtilMixin, nn.Module):
    """B-cos DenseNet-BC (`"Densely Connected Convolutional Networks" <https://arxiv.org/abs/1608.06993>`_).

    Args:
        growth_rate: channels each dense layer adds (``k`` in the paper).
        block_config: number of layers of each dense block.
        num_init_features: channels of the stem convolution.
        bn_size: the bottleneck has ``bn_size * growth_rate`` channels.
        drop_rate: dropout after each dense layer.
        num_classes: number of output logits.
        in_chans: input channels (6 for the ``[x, 1 - x]`` encoding of RGB images).
        memory_efficient: gradient checkpointing of the bottlenecks (less memory, slower).
        norm_layer: norm factory called with the channel count.
        conv_layer: convolution factory, e.g. ``partial(BcosConv2d, b=2, max_out=1)``.
        small_inputs: a 3x3 stride-1 stem without norm and pooling (32x32 images).
        logit_bias: added to the logits; None means ``-log(num_classes - 1)``.
        logit_temperature: logits are divided by it (None: 1).
    """

    input_layer_name = "features.conv0"

    def __init__(
        self,
        growth_rate: int = 32,
        block_config: Sequence[int] = (6, 12, 24, 16),
        num_init_features: int = 64,
        bn_size: int = 4,
        drop_rate: float = 0.0,
        num_classes: int = 1000,
        in_chans: int = 6,
        memory_efficient: bool = False,
        norm_layer: Callable[..., nn.Module] = DEFAULT_NORM_LAYER,
        conv_layer: Callable[..., nn.Module] = DEFAULT_CONV_LAYER,
        small_inputs: bool = False,
        logit_bias: float | None = None,
        logit_temperature: float | None = None,
    ) -> None:
        super().__init__()
        if small_inputs:
            stem: list[tuple[str, nn.Module]] = [
                ("conv0", conv_layer(in_chans, num_init_features, kernel_size=3, padding=1)),
            ]
        else:
            stem = [
                ("conv0", conv_layer(in_chans, num_init_features, kernel_size=7, stride=2, padding=3)),
                ("norm0", norm_layer(num_init_features)),
                ("pool0", nn.AvgPool2d(kernel_size=3, stride=2, padding=1)),
            ]
        self.features = nn.Sequential(OrderedDict(stem))

        num_features = num_init_features
        for i, num_layers in enumerate(block_config):
            block = _DenseBlock(
                num_layers=num_layers,
                num_input_features=num_features,
                bn_size=bn_size,
                growth_rate=growth_rate,
                drop_rate=drop_rate,
                memory_efficient=memory_efficient,
                norm_layer=norm_layer,
                conv_layer=conv_layer,
            )
            self.features.add_module(f"denseblock{i + 1}", block)
            num_features += num_layers * growth_rate
            if i != len(block_config) - 1:
                transition = _Transition(num_features, num_features // 2, norm_layer, conv_layer)
                self.features.add_module(f"transition{i + 1}", transition)
                num_features //= 2
        self.features.add_module("norm5", norm_layer(num_features))

        self.num_features = num_features
        self.num_classes = num_classes
        self.classifier = conv_layer(num_features, num_classes, kernel_size=1)
        self.logit_layer = make_logit_layer(num_classes, logit_bias, logit_temperature)

        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight)
            elif isinstance(m, nn.BatchNorm2d):
                if m.weight is not None:
                    nn.init.constant_(m.weight, 1)
                if m.bias is not None:
                    nn.init.constant_(m.bias, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.classifier(self.features(x))
        out = F.adaptive_avg_pool2d(out, (1, 1)).flatten(1)
        return self.logit_layer(out)

    def get_classifier(self) -> nn.Module:
        """The 1x1 convolution classifier (applied before global pooling)."""
        return self.classifier

    def get_feature_extractor(self) -> nn.Module:
        """Everything before the classifier, without global pooling."""
        return self.features


# --------------------------------------------------------------------------------------------
# Builders
# --------------------------------------------------------------------------------------------
def _densenet(
    arch: str,
    growth_rate: int,
    block_config: tuple[int, ...],
    num_init_features: int,
    pretrained: bool,
    kwargs: dict[str, Any],
    defaults: dict[str, Any] | None = None,
) -> BcosDenseNet:
    refuse_pretrained(arch, pretrained)
    fixed = ("growth_rate", "block_config", "num_init_features")
    # densenet121 alone lets callers choose its growth rate and stem width
    overridable = ("growth_rate", "num_init_features") if arch == "densenet121" else ()
    check_builder_kwargs(arch, kwargs, BcosDenseNet, fixed=fixed, also_valid=overridable)
    return BcosDenseNet(
        growth_rate, block_config, num_init_features, **{**(defaults or {}), **kwargs}
    )


@register_architecture(
    Published("densenet121", "bcos_final/densenet_121", "densenet_121-b8daf96afb.pth", 73.612, 91.106, 7_945_440, "B-cos DenseNet-121"),
    Published(
        "densenet121_long", "bcos_final_long/densenet_121", "densenet_121_long-5175461597.pth", 77.302, 93.234, 7_945_440,
        "B-cos DenseNet-121 trained 600 epochs (epoch 596, non-EMA weights)",
    ),
)
def densenet121(
    pretrained: bool = False,
    progress: bool = True,
    num_init_features: int = 64,
    growth_rate: int = 32,
    **kwargs: Any,
) -> BcosDenseNet:
    """B-cos DenseNet-121 (k=32, blocks (6, 12, 24, 16)); stem width and growth rate overridable."""
    return _densenet(
        "densenet121", growth_rate, (6, 12, 24, 16), num_init_features, pretrained, kwargs
    )


@register_architecture(
    Published("densenet161", "bcos_final/densenet_161", "densenet_161-9e9ea51353.pth", 76.622, 92.554, 28_584_144, "B-cos DenseNet-161"),
)
def densenet161(pretrained: bool = False, progress: bool = True, **kwargs: Any) -> BcosDenseNet:
    """B-cos DenseNet-161 (k=48, blocks (6, 12, 36, 24), 96 stem channels)."""
    return _densenet("densenet161", 48, (6, 12, 36, 24), 96, pretrained, kwargs)


@register_architecture(
    Published("densenet169", "bcos_final/densenet_169", "densenet_169-7037ee0604.pth", 75.186, 91.786, 14_078_688, "B-cos DenseNet-169"),
)
def densenet169(pretrained: bool = False, progress: bool = True, **kwargs: Any) -> BcosDenseNet:
    """B-cos DenseNet-169 (k=32, blocks (6, 12, 32, 32))."""
    return _densenet("densenet169", 32, (6, 12, 32, 32), 64, pretrained, kwargs)


@register_architecture(
    Published("densenet201", "bcos_final/densenet_201", "densenet_201-00ac87066f.pth", 75.480, 91.992, 19_907_808, "B-cos DenseNet-201"),
)
def densenet201(pretrained: bool = False, progress: bool = True, **kwargs: Any) -> BcosDenseNet:
    """B-cos DenseNet-201 (k=32, blocks (6, 12, 48, 32))."""
    return _densenet("densenet201", 32, (6, 12, 48, 32), 64, pretrained, kwargs)


def _cifar_densenet(
    depth: int, growth_rate: int, pretrained: bool, kwargs: dict[str, Any]
) -> BcosDenseNet:
    """DenseNet-BC of ``depth`` for 32x32 images: 3 blocks of (depth - 4) / 6 dense layers
    (each has two convolutions; the other 4 layers are stem, 2 transitions and classifier)."""
    if (depth - 4) % 6:
        raise ConfigError(f"CIFAR DenseNet-BC depth must be 6n + 4, got {depth}")
    block_config = ((depth - 4) // 6,) * 3
    return _densenet(
        f"cifar10_densenet{depth}",
        growth_rate,
        block_config,
        2 * growth_rate,
        pretrained,
        kwargs,
        defaults={"num_classes": 10, "small_inputs": True},
    )


@register_architecture()
def cifar10_densenet52(pretrained: bool = False, progress: bool = True, **kwargs: Any) -> BcosDenseNet:
    """CIFAR-10 B-cos DenseNet-BC-52 (k=12)."""
    return _cifar_densenet(52, 12, pretrained, kwargs)


@register_architecture()
def cifar10_densenet100(pretrained: bool = False, progress: bool = True, **kwargs: Any) -> BcosDenseNet:
    """CIFAR-10 B-cos DenseNet-BC-100 (k=12)."""
    return _cifar_densenet(100, 12, pretrained, kwargs)


@register_architecture()
def cifar10_densenet190(pretrained: bool = False, progress: bool = True, **kwargs: Any) -> BcosDenseNet:
    """CIFAR-10 B-cos DenseNet-BC-190 (k=40)."""
    return _cifar_densenet(190, 40, pretrained, kwargs)


@register_architecture()
def cifar10_densenet250(pretrained: bool = False, progress: bool = True, **kwargs: Any) -> BcosDenseNet:
    """CIFAR-10 B-cos DenseNet-BC-250 (k=24)."""
    return _cifar_densenet(250, 24, pretrained, kwargs)
