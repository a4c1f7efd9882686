"""B-cos ConvNeXt (atto, tiny, small, base, large).

Follows torchvision's ``convnext.py`` with the B-cos changes: every convolution is a bias-free
``conv_layer`` (default :class:`~bcos.modules.BcosConv2d`), the GELU is removed (the B-cos
transform is the non-linearity), the default norm is ``NoBias(DetachablePositionNorm2d)`` with
eps 1e-6 (a LayerNorm over channels at every position), and the classifier (norm -> 1x1 conv)
comes before global average pooling, followed by a :class:`~bcos.modules.LogitLayer`.
State-dict keys and shapes equal those of B-cos-v2 (``features.<i>.<j>.{layer_scale,block.<k>}``,
``classifier.{0,1}``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import torch
from torch import nn

from bcos.errors import ConfigError
from bcos.models.base import BcosUtilMixin
from bcos.models._utils import (
    StochasticDepth,
    check_builder_kwargs,
    linear_drop_probs,
    make_logit_layer,
    refuse_pretrained,
)
from bcos.models.registry import Published, register_architecture
from bcos.modules import BcosConv2d, norms

__all__ = [
    "BcosConvNeXt",
    "CNBlock",
    "CNBlockConfig",
    "convnext_atto",
    "convnext_tiny",
    "convnext_small",
    "convnext_base",
    "convnext_large",
]

DEFAULT_CONV_LAYER = BcosConv2d
#: used wherever ``norm_layer`` is None
DEFAULT_NORM_LAYER = partial(norms.NoBias(norms.DetachablePositionNorm2d), eps=1e-6)


class CNBlock(nn.Module):
    """ConvNeXt block: depthwise 7x7 conv -> norm -> 1x1 conv (4x wider) -> 1x1 conv, scaled per
    channel by the learnable ``layer_scale``, randomly dropped per sample (stochastic depth), plus
    the input."""

    def __init__(
        self,
        dim: int,
        layer_scale: float,
        stochastic_depth_prob: float,
        conv_layer: Callable[..., nn.Module] = DEFAULT_CONV_LAYER,
        norm_layer: Callable[..., nn.Module] | None = None,
    ) -> None:
        super().__init__()
        if norm_layer is None:
            norm_layer = DEFAULT_NORM_LAYER
        self.block = nn.Sequential(
            conv_layer(dim, dim, kernel_size=7, padding=3, groups=dim, bias=False),
            norm_layer(dim),
            conv_layer(dim, 4 * dim, kernel_size=1, bias=False),
            conv_layer(4 * dim, dim, kernel_size=1, bias=False),
        )
        self.layer_scale = nn.Parameter(torch.ones(dim, 1, 1) * layer_scale)
        self.stochastic_depth = StochasticDepth(stochastic_depth_prob)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        result = self.stochastic_depth(self.layer_scale * self.block(input))
        return result + input


class CNBlockConfig:
    """One ConvNeXt stage: ``num_layers`` blocks of width ``input_channels``, then a downsampling
    layer to ``out_channels`` (None for the last stage)."""

    def __init__(self, input_channels: int, out_channels: int | None, num_layers: int) -> None:
        self.input_channels = input_channels
        self.out_channels = out_channels
        self.num_layers = num_layers

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(input_channels={self.input_channels}, "
            f"out_channels={self.out_channels}, num_layers={self.num_layers})"
        )


class BcosConvNeXt(BcosUtilMixin, nn.Module):
    """B-cos ConvNeXt.

    Args:
        block_setting: one :class:`CNBlockConfig` per stage.
        stochastic_depth_prob: drop probability of the last block (linear in the block index).
        layer_scale: initial value of every block's per-channel scale.
        num_classes: number of output logits.
        in_chans: input channels (6 for the ``[x, 1 - x]`` encoding of RGB images).
        block: block class (default :class:`CNBlock`).
        conv_layer: convolution factory (bias-free), e.g. ``partial(BcosConv2d, b=2, max_out=1)``.
        norm_layer: norm factory called with the channel count; None means
            ``NoBias(DetachablePositionNorm2d)`` with eps 1e-6.
        logit_bias: added to the logits; None means ``-log(num_classes - 1)``.
        logit_temperature: logits are divided by it (None: 1).
    """

    input_layer_name = "features.0"

    def __init__(
        self,
        block_setting: Sequence[CNBlockConfig],
        stochastic_depth_prob: float = 0.0,
        layer_scale: float = 1e-6,
        num_classes: int = 1000,
        in_chans: int = 6,
        block: Callable[..., nn.Module] | None = None,
        conv_layer: Callable[..., nn.Module] = DEFAULT_CONV_LAYER,
        norm_layer: Callable[..., nn.Module] | None = None,
        logit_bias: float | None = None,
        logit_temperature: float | None = None,
    ) -> None:
        super().__init__()
        if not block_setting or not all(isinstance(s, CNBlockConfig) for s in block_setting):
            raise ConfigError("block_setting must be a non-empty list of CNBlockConfig")
        if block is None:
            block = CNBlock
        if norm_layer is None:
            norm_layer = DEFAULT_NORM_LAYER

        stem_width = block_setting[0].input_channels
        layers: list[nn.Module] = [
            conv_layer(in_chans, stem_width, kernel_size=4, stride=4, padding=0, bias=False),
            norm_layer(stem_width),
        ]
        drop_probs = iter(
            linear_drop_probs(stochastic_depth_prob, sum(cnf.num_layers for cnf in block_setting))
        )
        for cnf in block_setting:
            stage = [
                block(
                    cnf.input_channels,
                    layer_scale,
                    next(drop_probs),
                    conv_layer=conv_layer,
                    norm_layer=norm_layer,
                )
                for _ in range(cnf.num_layers)
            ]
            layers.append(nn.Sequential(*stage))
            if cnf.out_channels is not None:
                layers.append(
                    nn.Sequential(
                        norm_layer(cnf.input_channels),
                        conv_layer(
                            cnf.input_channels, cnf.out_channels, kernel_size=2, stride=2, bias=False
                        ),
                    )
                )
        self.features = nn.Sequential(*layers)

        last = block_setting[-1]
        last_width = last.out_channels if last.out_channels is not None else last.input_channels
        self.num_features = last_width
        self.num_classes = num_classes
        self.classifier = nn.Sequential(
            norm_layer(last_width),
            conv_layer(last_width, num_classes, kernel_size=1, bias=False),
        )
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.logit_layer = make_logit_layer(num_classes, logit_bias, logit_temperature)

        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.classifier(self.features(x))
        x = self.avgpool(x).flatten(1)
        return self.logit_layer(x)

    def get_classifier(self) -> nn.Module:
        """The classifier (norm -> 1x1 conv), applied before global pooling."""
        return self.classifier

    def get_feature_extractor(self) -> nn.Module:
        """Everything before the classifier, without global pooling."""
        return self.features


# --------------------------------------------------------------------------------------------
# Builders
# --------------------------------------------------------------------------------------------
def _convnext(
    arch: str,
    block_setting: list[CNBlockConfig],
    default_drop_prob: float,
    pretrained: bool,
    kwargs: dict[str, Any],
) -> BcosConvNeXt:
    refuse_pretrained(arch, pretrained)
    check_builder_kwargs(arch, kwargs, BcosConvNeXt, fixed=("block_setting",))
    kwargs.setdefault("stochastic_depth_prob", default_drop_prob)
    return BcosConvNeXt(block_setting, **kwargs)


@register_architecture()
def convnext_atto(*, pretrained: bool = False, progress: bool = True, **kwargs: Any) -> BcosConvNeXt:
    """B-cos ConvNeXt-Atto (widths 40-320, depths 2-2-6-2, stochastic depth 0.1)."""
    setting = [CNBlockConfig(40, 80, 2), CNBlockConfig(80, 160, 2),
               CNBlockConfig(160, 320, 6), CNBlockConfig(320, None, 2)]  # fmt: skip
    return _convnext("convnext_atto", setting, 0.1, pretrained, kwargs)


@register_architecture(
    # "_pn": the model's default position norm; "_bnu": uncentered batch norm (the collection's default)
    Published(
        "convnext_tiny", "bcos_final_long/convnext_tiny_pn", "convnext_tiny_pn-539b1bfb37.pth", 77.488, 93.192, 28_543_392,
        "B-cos ConvNeXt-T with position norm (epoch 596, EMA weights)", args={"norm_layer": None},
    ),
    Published(
        "convnext_tiny_bnu", "bcos_final_long/convnext_tiny_bnu", "convnext_tiny_bnu-dbd7f5ef9d.pth", 76.826, 93.090, 28_543_392,
        "B-cos ConvNeXt-T with uncentered batch norm (epoch 456, EMA weights)",
    ),
)
def convnext_tiny(*, pretrained: bool = False, progress: bool = True, **kwargs: Any) -> BcosConvNeXt:
    """B-cos ConvNeXt-T (widths 96-768, depths 3-3-9-3, stochastic depth 0.1)."""
    setting = [CNBlockConfig(96, 192, 3), CNBlockConfig(192, 384, 3),
               CNBlockConfig(384, 768, 9), CNBlockConfig(768, None, 3)]  # fmt: skip
    return _convnext("convnext_tiny", setting, 0.1, pretrained, kwargs)


@register_architecture()
def convnext_small(*, pretrained: bool = False, progress: bool = True, **kwargs: Any) -> BcosConvNeXt:
    """B-cos ConvNeXt-S (widths 96-768, depths 3-3-27-3, stochastic depth 0.4)."""
    setting = [CNBlockConfig(96, 192, 3), CNBlockConfig(192, 384, 3),
               CNBlockConfig(384, 768, 27), CNBlockConfig(768, None, 3)]  # fmt: skip
    return _convnext("convnext_small", setting, 0.4, pretrained, kwargs)


@register_architecture(
    Published(
        "convnext_base", "bcos_final_long/convnext_base_pn", "convnext_base_pn-b0495852c6.pth", 79.650, 94.614, 88_466_304,
        "B-cos ConvNeXt-B with position norm (epoch 581, non-EMA weights)", args={"norm_layer": None},
    ),
    Published(
        "convnext_base_bnu", "bcos_final_long/convnext_base_bnu", "convnext_base_bnu-7c32a704b3.pth", 80.142, 94.834, 88_466_304,
        "B-cos ConvNeXt-B with uncentered batch norm (epoch 541, EMA weights)",
    ),
)
def convnext_base(*, pretrained: bool = False, progress: bool = True, **kwargs: Any) -> BcosConvNeXt:
    """B-cos ConvNeXt-B (widths 128-1024, depths 3-3-27-3, stochastic depth 0.5)."""
    setting = [CNBlockConfig(128, 256, 3), CNBlockConfig(256, 512, 3),
               CNBlockConfig(512, 1024, 27), CNBlockConfig(1024, None, 3)]  # fmt: skip
    return _convnext("convnext_base", setting, 0.5, pretrained, kwargs)


@register_architecture()
def convnext_large(*, pretrained: bool = False, progress: bool = True, **kwargs: Any) -> BcosConvNeXt:
    """B-cos ConvNeXt-L (widths 192-1536, depths 3-3-27-3, stochastic depth 0.5)."""
    setting = [CNBlockConfig(192, 384, 3), CNBlockConfig(384, 768, 3),
               CNBlockConfig(768, 1536, 27), CNBlockConfig(1536, None, 3)]  # fmt: skip
    return _convnext("convnext_large", setting, 0.5, pretrained, kwargs)
