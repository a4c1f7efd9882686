"""B-cos ResNet, ResNeXt and Wide-ResNet (ImageNet and CIFAR-10 variants).

Follows torchvision's ``resnet.py`` with the B-cos changes: every convolution is a bias-free
``conv_layer`` (default :class:`~bcos.modules.BcosConv2d`), there are no activations (the B-cos
transform is the non-linearity), max-pooling is replaced by average pooling, and the classifier is
a 1x1 convolution applied *before* global average pooling, followed by a
:class:`~bcos.modules.LogitLayer`. State-dict keys and shapes equal those of B-cos-v2, so its
released weights load unchanged.

The small helpers at the top (default logit bias, keyword checking, the ``pretrained`` refusal,
stochastic depth) are shared by every CNN file of this package.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from bcos.errors import ConfigError
from bcos.models._utils import (
    StochasticDepth,
    check_builder_kwargs,
    linear_drop_probs,
    make_logit_layer,
    refuse_pretrained,
)
from bcos.models.base import BcosUtilMixin
from bcos.models.registry import Published, register_architecture
from bcos.modules import BcosConv2d, norms

__all__ = [
    "BasicBlock",
    "Bottleneck",
    "BcosResNet",
    "resnet18",
    "resnet34",
    "resnet50",
    "resnet101",
    "resnet152",
    "resnext50_32x4d",
    "resnext101_32x8d",
    "wide_resnet50_2",
    "wide_resnet101_2",
    "cifar10_resnet20",
    "cifar10_resnet32",
    "cifar10_resnet44",
    "cifar10_resnet56",
    "cifar10_resnet110",
    "cifar10_resnext29_8x64d",
    "cifar10_resnext29_16x64d",
    "cifar10_resnext29_32x4d",
    "cifar10_resnext47_32x4d",
    "cifar10_resnext65_32x4d",
    "cifar10_resnext101_32x4d",
    "cifar10_resnext29_16x8d",
    "cifar10_resnext47_16x8d",
    "cifar10_resnext65_16x8d",
    "cifar10_resnext101_16x8d",
]

DEFAULT_NORM_LAYER = norms.NoBias(norms.DetachablePositionNorm2d)
DEFAULT_CONV_LAYER = BcosConv2d


# --------------------------------------------------------------------------------------------
# Blocks
# --------------------------------------------------------------------------------------------
def conv3x3(
    in_planes: int,
    out_planes: int,
    stride: int = 1,
    groups: int = 1,
    dilation: int = 1,
    conv_layer: Callable[..., nn.Module] = DEFAULT_CONV_LAYER,
) -> nn.Module:
    """3x3 convolution with padding (bias-free)."""
    return conv_layer(
        in_planes,
        out_planes,
        kernel_size=3,
        stride=stride,
        padding=dilation,
        groups=groups,
        bias=False,
        dilation=dilation,
    )


def conv1x1(
    in_planes: int,
    out_planes: int,
    stride: int = 1,
    conv_layer: Callable[..., nn.Module] = DEFAULT_CONV_LAYER,
) -> nn.Module:
    """1x1 convolution (bias-free)."""
    return conv_layer(in_planes, out_planes, kernel_size=1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    """Two 3x3 convolutions, each followed by a norm, plus the (optionally projected) input."""

    expansion: int = 1

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        groups: int = 1,
        base_width: int = 64,
        dilation: int = 1,
        norm_layer: Callable[..., nn.Module] | None = DEFAULT_NORM_LAYER,
        conv_layer: Callable[..., nn.Module] = DEFAULT_CONV_LAYER,
        stochastic_depth_prob: float = 0.0,
    ) -> None:
        super().__init__()
        if norm_layer is None:
            norm_layer = nn.Identity
        if groups != 1 or base_width != 64:
            raise ConfigError(
                "BasicBlock only supports groups=1 and width_per_group=64; use a Bottleneck "
                "architecture (e.g. resnext50_32x4d) for grouped or wider blocks"
            )
        if dilation > 1:
            raise ConfigError(
                "BasicBlock does not support dilation; set replace_stride_with_dilation=None"
            )
        # conv1 and downsample both reduce the resolution when stride != 1
        self.conv1 = conv3x3(inplanes, planes, stride, conv_layer=conv_layer)
        self.bn1 = norm_layer(planes)
        self.conv2 = conv3x3(planes, planes, conv_layer=conv_layer)
        self.bn2 = norm_layer(planes)
        self.downsample = downsample
        self.stride = stride
        self.stochastic_depth = (
            StochasticDepth(stochastic_depth_prob) if stochastic_depth_prob else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn1(self.conv1(x))
        out = self.bn2(self.conv2(out))
        if self.stochastic_depth is not None:
            out = self.stochastic_depth(out)
        identity = x if self.downsample is None else self.downsample(x)
        return out + identity


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (strided, grouped), 1x1 expand, each followed by a norm, plus the input.

    The stride sits on the 3x3 convolution (ResNet v1.5, as in torchvision).
    """

    expansion: int = 4

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        groups: int = 1,
        base_width: int = 64,
        dilation: int = 1,
        norm_layer: Callable[..., nn.Module] | None = DEFAULT_NORM_LAYER,
        conv_layer: Callable[..., nn.Module] = DEFAULT_CONV_LAYER,
        stochastic_depth_prob: float = 0.0,
    ) -> None:
        super().__init__()
        if norm_layer is None:
            norm_layer = nn.Identity
        width = int(planes * (base_width / 64.0)) * groups
        self.conv1 = conv1x1(inplanes, width, conv_layer=conv_layer)
        self.bn1 = norm_layer(width)
        self.conv2 = conv3x3(width, width, stride, groups, dilation, conv_layer=conv_layer)
        self.bn2 = norm_layer(width)
        self.conv3 = conv1x1(width, planes * self.expansion, conv_layer=conv_layer)
        self.bn3 = norm_layer(planes * self.expansion)
        self.downsample = downsample
        self.stride = stride
        self.stochastic_depth = (
            StochasticDepth(stochastic_depth_prob) if stochastic_depth_prob else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn1(self.conv1(x))
        out = self.bn2(self.conv2(out))
        out = self.bn3(self.conv3(out))
        if self.stochastic_depth is not None:
            out = self.stochastic_depth(out)
        identity = x if self.downsample is None else self.downsample(x)
        return out + identity


# --------------------------------------------------------------------------------------------
# The network
# --------------------------------------------------------------------------------------------
class BcosResNet(BcosUtilMixin, nn.Module):
    """B-cos ResNet with 3 (CIFAR) or 4 (ImageNet) stages.

    Args:
        block: :class:`BasicBlock` or :class:`Bottleneck`.
        layers: number of blocks per stage (3 or 4 entries); stage ``i`` has width
            ``inplanes * 2**i``.
        num_classes: number of output logits.
        in_chans: input channels (6 for the ``[x, 1 - x]`` encoding of RGB images).
        zero_init_residual: initialise the last norm weight of every block to zero.
        groups, width_per_group: ResNeXt / Wide-ResNet settings (Bottleneck only).
        replace_stride_with_dilation: per stage after the first, use dilation instead of stride.
        norm_layer: norm factory called with the channel count; None means no normalisation.
        conv_layer: convolution factory (bias-free), e.g. ``partial(BcosConv2d, b=2, max_out=1)``.
        inplanes: width of the stem and the first stage.
        small_inputs: 3x3 stride-1 stem without pooling (32x32 images) instead of 7x7/2 + pool.
        stochastic_depth_prob: drop probability of the last block (linear in the block index).
        logit_bias: added to the logits; None means ``-log(num_classes - 1)``.
        logit_temperature: logits are divided by it (None: 1).
    """

    input_layer_name = "conv1"

    def __init__(
        self,
        block: type[BasicBlock] | type[Bottleneck],
        layers: Sequence[int],
        num_classes: int = 1000,
        in_chans: int = 6,
        zero_init_residual: bool = False,
        groups: int = 1,
        width_per_group: int = 64,
        replace_stride_with_dilation: Sequence[bool] | None = None,
        norm_layer: Callable[..., nn.Module] | None = DEFAULT_NORM_LAYER,
        conv_layer: Callable[..., nn.Module] = DEFAULT_CONV_LAYER,
        inplanes: int = 64,
        small_inputs: bool = False,
        stochastic_depth_prob: float = 0.0,
        logit_bias: float | None = None,
        logit_temperature: float | None = None,
    ) -> None:
        super().__init__()
        if len(layers) not in (3, 4):
            raise ConfigError(f"layers must have 3 or 4 entries (blocks per stage), got {layers}")
        num_stages = len(layers)
        if replace_stride_with_dilation is None:
            replace_stride_with_dilation = [False] * (num_stages - 1)
        if len(replace_stride_with_dilation) != num_stages - 1:
            raise ConfigError(
                f"replace_stride_with_dilation must be None or have {num_stages - 1} entries, "
                f"got {replace_stride_with_dilation}"
            )
        if norm_layer is None:
            norm_layer = nn.Identity
        self._norm_layer = norm_layer
        self._conv_layer = conv_layer
        self.inplanes = inplanes
        self.dilation = 1
        self.groups = groups
        self.base_width = width_per_group

        if small_inputs:
            self.conv1 = conv3x3(in_chans, inplanes, conv_layer=conv_layer)
            self.pool = None
        else:
            self.conv1 = conv_layer(in_chans, inplanes, kernel_size=7, stride=2, padding=3)
            self.pool = nn.AvgPool2d(kernel_size=3, stride=2, padding=1)
        self.bn1 = norm_layer(inplanes)

        drop_probs = iter(linear_drop_probs(stochastic_depth_prob, sum(layers)))
        self.layer1 = self._make_layer(block, inplanes, layers[0], drop_probs)
        self.layer2 = self._make_layer(
            block, inplanes * 2, layers[1], drop_probs, 2, replace_stride_with_dilation[0]
        )
        self.layer3 = self._make_layer(
            block, inplanes * 4, layers[2], drop_probs, 2, replace_stride_with_dilation[1]
        )
        if num_stages == 4:
            self.layer4 = self._make_layer(
                block, inplanes * 8, layers[3], drop_probs, 2, replace_stride_with_dilation[2]
            )
        else:
            self.layer4 = None
        last_width = inplanes * 2 ** (num_stages - 1)

        self.num_features = last_width * block.expansion
        self.num_classes = num_classes
        self.fc = conv_layer(self.num_features, num_classes, kernel_size=1)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.logit_layer = make_logit_layer(num_classes, logit_bias, logit_temperature)

        self._init_weights(zero_init_residual)

    def _make_layer(
        self,
        block: type[BasicBlock] | type[Bottleneck],
        planes: int,
        blocks: int,
        drop_probs: Iterator[float],
        stride: int = 1,
        dilate: bool = False,
    ) -> nn.Sequential:
        norm_layer, conv_layer = self._norm_layer, self._conv_layer
        previous_dilation = self.dilation
        if dilate:
            self.dilation *= stride
            stride = 1
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                conv1x1(self.inplanes, planes * block.expansion, stride, conv_layer=conv_layer),
                norm_layer(planes * block.expansion),
            )
        layers = [
            block(
                self.inplanes,
                planes,
                stride,
                downsample,
                self.groups,
                self.base_width,
                previous_dilation,
                norm_layer=norm_layer,
                conv_layer=conv_layer,
                stochastic_depth_prob=next(drop_probs),
            )
        ]
        self.inplanes = planes * block.expansion
        for _ in range(1, blocks):
            layers.append(
                block(
                    self.inplanes,
                    planes,
                    groups=self.groups,
                    base_width=self.base_width,
                    dilation=self.dilation,
                    norm_layer=norm_layer,
                    conv_layer=conv_layer,
                    stochastic_depth_prob=next(drop_probs),
                )
            )
        return nn.Sequential(*layers)

    def _init_weights(self, zero_init_residual: bool) -> None:
        # Every nn.Conv2d instance, including the NormedConv2d inside each B-cos conv, as the reference.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                if m.weight is not None:
                    nn.init.constant_(m.weight, 1)
                if m.bias is not None:
                    nn.init.constant_(m.bias, 0)
        if zero_init_residual:
            # each residual branch starts at zero, so every block starts as the identity
            for m in self.modules():
                if isinstance(m, (BasicBlock, Bottleneck)):
                    last_norm = m.bn3 if isinstance(m, Bottleneck) else m.bn2
                    if getattr(last_norm, "weight", None) is not None:
                        nn.init.constant_(last_norm.weight, 0)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Stem and all stages: the feature map the classifier sees (no pooling)."""
        x = self.bn1(self.conv1(x))
        if self.pool is not None:
            x = self.pool(x)
        x = self.layer3(self.layer2(self.layer1(x)))
        if self.layer4 is not None:
            x = self.layer4(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.fc(self.forward_features(x))
        x = self.avgpool(x).flatten(1)
        return self.logit_layer(x)

    def get_classifier(self) -> nn.Module:
        """The 1x1 convolution classifier (applied before global pooling)."""
        return self.fc

    def get_feature_extractor(self) -> nn.Module:
        """Everything before the classifier, without global pooling (shares the modules)."""
        modules: list[nn.Module] = [self.conv1, self.bn1]
        if self.pool is not None:
            modules.append(self.pool)
        modules += [self.layer1, self.layer2, self.layer3]
        if self.layer4 is not None:
            modules.append(self.layer4)
        return nn.Sequential(*modules)


# --------------------------------------------------------------------------------------------
# Builders
# --------------------------------------------------------------------------------------------
_ARCH_PARAMS = ("block", "layers")


def _resnet(
    arch: str,
    block: type[BasicBlock] | type[Bottleneck],
    layers: list[int],
    pretrained: bool,
    kwargs: dict[str, Any],
    defaults: Mapping[str, Any] | None = None,
    **fixed: Any,
) -> BcosResNet:
    """Build ``arch``: ``fixed`` settings cannot be overridden, ``defaults`` can."""
    refuse_pretrained(arch, pretrained)
    check_builder_kwargs(arch, kwargs, BcosResNet, fixed=(*_ARCH_PARAMS, *fixed))
    return BcosResNet(block, layers, **{**(defaults or {}), **kwargs}, **fixed)


@register_architecture(
    Published("resnet18", "bcos_final/resnet_18", "resnet_18-68b4160fff.pth", 68.736, 87.430, 11_693_120, "B-cos ResNet-18"),
)
def resnet18(pretrained: bool = False, progress: bool = True, **kwargs: Any) -> BcosResNet:
    """B-cos ResNet-18 (BasicBlock, [2, 2, 2, 2]). ``progress`` is accepted for compatibility."""
    return _resnet("resnet18", BasicBlock, [2, 2, 2, 2], pretrained, kwargs)


@register_architecture(
    Published("resnet34", "bcos_final/resnet_34", "resnet_34-a63425a03e.pth", 72.284, 90.052, 21_797_568, "B-cos ResNet-34"),
)
def resnet34(pretrained: bool = False, progress: bool = True, **kwargs: Any) -> BcosResNet:
    """B-cos ResNet-34 (BasicBlock, [3, 4, 6, 3])."""
    return _resnet("resnet34", BasicBlock, [3, 4, 6, 3], pretrained, kwargs)


@register_architecture(
    # the reference docstring says top-5 92.064%; the README table (used here) says 92.528%
    Published("resnet50", "bcos_final/resnet_50", "resnet_50-ead259efe4.pth", 75.882, 92.528, 25_538_880, "B-cos ResNet-50"),
    Published(
        "resnet50_long", "bcos_final_long/resnet_50", "resnet_50_long-ef38a88533.pth", 79.468, 94.452, 25_538_880,
        "B-cos ResNet-50 trained 600 epochs (epoch 580, non-EMA weights)", args={"stochastic_depth_prob": 0.1},
    ),
)
def resnet50(pretrained: bool = False, progress: bool = True, **kwargs: Any) -> BcosResNet:
    """B-cos ResNet-50 (Bottleneck, [3, 4, 6, 3])."""
    return _resnet("resnet50", Bottleneck, [3, 4, 6, 3], pretrained, kwargs)


@register_architecture(
    Published("resnet101", "bcos_final/resnet_101", "resnet_101-84c3658278.pth", 76.532, 92.538, 44_504_896, "B-cos ResNet-101"),
)
def resnet101(pretrained: bool = False, progress: bool = True, **kwargs: Any) -> BcosResNet:
    """B-cos ResNet-101 (Bottleneck, [3, 4, 23, 3])."""
    return _resnet("resnet101", Bottleneck, [3, 4, 23, 3], pretrained, kwargs)


@register_architecture(
    Published("resnet152", "bcos_final/resnet_152", "resnet_152-42051a77c1.pth", 76.484, 92.398, 60_125_504, "B-cos ResNet-152"),
    Published(
        "resnet152_long", "bcos_final_long/resnet_152", "resnet_152_long-0b4b434939.pth", 80.144, 94.116, 60_125_504,
        "B-cos ResNet-152 trained 600 epochs (epoch 433, non-EMA weights)", args={"stochastic_depth_prob": 0.1},
    ),
)
def resnet152(pretrained: bool = False, progress: bool = True, **kwargs: Any) -> BcosResNet:
    """B-cos ResNet-152 (Bottleneck, [3, 8, 36, 3])."""
    return _resnet("resnet152", Bottleneck, [3, 8, 36, 3], pretrained, kwargs)


@register_architecture(
    Published("resnext50_32x4d", "bcos_final/resnext_50_32x4d", "resnext_50_32x4d-57af241ab9.pth", 75.820, 91.810, 25_003_200, "B-cos ResNeXt-50 32x4d"),
)
def resnext50_32x4d(pretrained: bool = False, progress: bool = True, **kwargs: Any) -> BcosResNet:
    """B-cos ResNeXt-50 32x4d."""
    return _resnet(
        "resnext50_32x4d", Bottleneck, [3, 4, 6, 3], pretrained, kwargs,
        groups=32, width_per_group=4,
    )  # fmt: skip


@register_architecture()
def resnext101_32x8d(pretrained: bool = False, progress: bool = True, **kwargs: Any) -> BcosResNet:
    """B-cos ResNeXt-101 32x8d."""
    return _resnet(
        "resnext101_32x8d", Bottleneck, [3, 4, 23, 3], pretrained, kwargs,
        groups=32, width_per_group=8,
    )  # fmt: skip


@register_architecture()
def wide_resnet50_2(pretrained: bool = False, progress: bool = True, **kwargs: Any) -> BcosResNet:
    """B-cos Wide ResNet-50-2 (bottleneck width doubled)."""
    return _resnet(
        "wide_resnet50_2", Bottleneck, [3, 4, 6, 3], pretrained, kwargs, width_per_group=128
    )


@register_architecture()
def wide_resnet101_2(pretrained: bool = False, progress: bool = True, **kwargs: Any) -> BcosResNet:
    """B-cos Wide ResNet-101-2 (bottleneck width doubled)."""
    return _resnet(
        "wide_resnet101_2", Bottleneck, [3, 4, 23, 3], pretrained, kwargs, width_per_group=128
    )


# CIFAR-10: 3 stages, 3x3 stem without pooling; num_classes and small_inputs stay overridable.
_CIFAR_DEFAULTS = {"num_classes": 10, "small_inputs": True}


def _cifar_resnet(arch: str, depth: int, pretrained: bool, kwargs: dict[str, Any]) -> BcosResNet:
    blocks_per_stage = (depth - 2) // 6  # 6n + 2 layers: stem, 3 stages of n two-conv blocks, fc
    return _resnet(
        arch, BasicBlock, [blocks_per_stage] * 3, pretrained, kwargs, _CIFAR_DEFAULTS, inplanes=16
    )


@register_architecture()
def cifar10_resnet20(pretrained: bool = False, progress: bool = True, **kwargs: Any) -> BcosResNet:
    """CIFAR-10 B-cos ResNet-20 (3 blocks per stage, widths 16/32/64)."""
    return _cifar_resnet("cifar10_resnet20", 20, pretrained, kwargs)


@register_architecture()
def cifar10_resnet32(pretrained: bool = False, progress: bool = True, **kwargs: Any) -> BcosResNet:
    """CIFAR-10 B-cos ResNet-32 (5 blocks per stage)."""
    return _cifar_resnet("cifar10_resnet32", 32, pretrained, kwargs)


@register_architecture()
def cifar10_resnet44(pretrained: bool = False, progress: bool = True, **kwargs: Any) -> BcosResNet:
    """CIFAR-10 B-cos ResNet-44 (7 blocks per stage)."""
    return _cifar_resnet("cifar10_resnet44", 44, pretrained, kwargs)


@register_architecture()
def cifar10_resnet56(pretrained: bool = False, progress: bool = True, **kwargs: Any) -> BcosResNet:
    """CIFAR-10 B-cos ResNet-56 (9 blocks per stage)."""
    return _cifar_resnet("cifar10_resnet56", 56, pretrained, kwargs)


@register_architecture()
def cifar10_resnet110(pretrained: bool = False, progress: bool = True, **kwargs: Any) -> BcosResNet:
    """CIFAR-10 B-cos ResNet-110 (18 blocks per stage)."""
    return _cifar_resnet("cifar10_resnet110", 110, pretrained, kwargs)


def _cifar_resnext(
    arch: str,
    depth: int,
    groups: int,
    width_per_group: int,
    inplanes: int,
    pretrained: bool,
    kwargs: dict[str, Any],
) -> BcosResNet:
    blocks_per_stage = (depth - 2) // 9  # 9n + 2 layers: three-conv bottlenecks
    return _resnet(
        arch, Bottleneck, [blocks_per_stage] * 3, pretrained, kwargs, _CIFAR_DEFAULTS,
        groups=groups, width_per_group=width_per_group, inplanes=inplanes,
    )  # fmt: skip


# The ResNeXt paper's CIFAR settings (widths 64/128/256) ...
def cifar10_resnext29_8x64d(
    pretrained: bool = False, progress: bool = True, **kwargs: Any
) -> BcosResNet:
    """CIFAR-10 B-cos ResNeXt-29 8x64d (inplanes 64)."""
    return _cifar_resnext("cifar10_resnext29_8x64d", 29, 8, 64, 64, pretrained, kwargs)


@register_architecture()
def cifar10_resnext29_16x64d(
    pretrained: bool = False, progress: bool = True, **kwargs: Any
) -> BcosResNet:
    """CIFAR-10 B-cos ResNeXt-29 16x64d (inplanes 64)."""
    return _cifar_resnext("cifar10_resnext29_16x64d", 29, 16, 64, 64, pretrained, kwargs)


# ... and smaller ones with widths 16/32/64.
def cifar10_resnext29_32x4d(
    pretrained: bool = False, progress: bool = True, **kwargs: Any
) -> BcosResNet:
    """CIFAR-10 B-cos ResNeXt-29 32x4d (inplanes 16)."""
    return _cifar_resnext("cifar10_resnext29_32x4d", 29, 32, 4, 16, pretrained, kwargs)


@register_architecture()
def cifar10_resnext47_32x4d(
    pretrained: bool = False, progress: bool = True, **kwargs: Any
) -> BcosResNet:
    """CIFAR-10 B-cos ResNeXt-47 32x4d (inplanes 16)."""
    return _cifar_resnext("cifar10_resnext47_32x4d", 47, 32, 4, 16, pretrained, kwargs)


@register_architecture()
def cifar10_resnext65_32x4d(
    pretrained: bool = False, progress: bool = True, **kwargs: Any
) -> BcosResNet:
    """CIFAR-10 B-cos ResNeXt-65 32x4d (inplanes 16)."""
    return _cifar_resnext("cifar10_resnext65_32x4d", 65, 32, 4, 16, pretrained, kwargs)


@register_architecture()
def cifar10_resnext101_32x4d(
    pretrained: bool = False, progress: bool = True, **kwargs: Any
) -> BcosResNet:
    """CIFAR-10 B-cos ResNeXt-101 32x4d (inplanes 16)."""
    return _cifar_resnext("cifar10_resnext101_32x4d", 101, 32, 4, 16, pretrained, kwargs)


@register_architecture()
def cifar10_resnext29_16x8d(
    pretrained: bool = False, progress: bool = True, **kwargs: Any
) -> BcosResNet:
    """CIFAR-10 B-cos ResNeXt-29 16x8d (inplanes 16)."""
    return _cifar_resnext("cifar10_resnext29_16x8d", 29, 16, 8, 16, pretrained, kwargs)


@register_architecture()
def cifar10_resnext47_16x8d(
    pretrained: bool = False, progress: bool = True, **kwargs: Any
) -> BcosResNet:
    """CIFAR-10 B-cos ResNeXt-47 16x8d (inplanes 16)."""
    return _cifar_resnext("cifar10_resnext47_16x8d", 47, 16, 8, 16, pretrained, kwargs)


@register_architecture()
def cifar10_resnext65_16x8d(
    pretrained: bool = False, progress: bool = True, **kwargs: Any
) -> BcosResNet:
    """CIFAR-10 B-cos ResNeXt-65 16x8d (inplanes 16)."""
    return _cifar_resnext("cifar10_resnext65_16x8d", 65, 16, 8, 16, pretrained, kwargs)


@register_architecture()
def cifar10_resnext101_16x8d(
    pretrained: bool = False, progress: bool = True, **kwargs: Any
) -> BcosResNet:
    """CIFAR-10 B-cos ResNeXt-101 16x8d (inplanes 16)."""
    return _cifar_resnext("cifar10_resnext101_16x8d", 101, 16, 8, 16, pretrained, kwargs)
