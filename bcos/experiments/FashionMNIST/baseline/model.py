"""``get_model`` of the Fashion-MNIST baseline: a standard CIFAR-style ResNet (He et al., 2016, section 4.2).

``name`` is ``resnet<depth>`` with ``depth = 6 n + 2``: a 3x3 stem, three stages of ``n`` basic
blocks (widths ``inplanes``, 2x, 4x; stride 2 at the start of stages 2 and 3), batch norm and ReLU,
global average pooling and a linear classifier. It is the standard twin of the B-cos ResNets of
``bcos_fast`` (same depth and widths), for comparing accuracy.
"""

from __future__ import annotations

import re
from typing import Any

from torch import Tensor, nn

from bcos.errors import ConfigError

__all__ = ["get_model", "CifarResNet", "BasicBlock"]


class BasicBlock(nn.Module):
    """conv-BN-ReLU-conv-BN plus the (projected) input, then ReLU."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample: nn.Module = nn.Identity()
        if stride != 1 or in_planes != planes:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False), nn.BatchNorm2d(planes)
            )

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.downsample(x))


class CifarResNet(nn.Module):
    """A standard ResNet for 32x32 inputs with ``blocks_per_stage`` basic blocks in each of 3 stages."""

    def __init__(self, blocks_per_stage: int, num_classes: int = 10, inplanes: int = 16, in_chans: int = 3) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_chans, inplanes, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(inplanes)
        self.relu = nn.ReLU(inplace=True)
        stages, width = [], inplanes
        for index in range(3):
            planes = inplanes * 2**index
            blocks = [BasicBlock(width, planes, stride=1 if index == 0 else 2)]
            blocks += [BasicBlock(planes, planes) for _ in range(blocks_per_stage - 1)]
            stages.append(nn.Sequential(*blocks))
            width = planes
        self.layer1, self.layer2, self.layer3 = stages
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(width, num_classes)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: Tensor) -> Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(self.avgpool(x).flatten(1))


def get_model(model_config: dict[str, Any]) -> nn.Module:
    """Build the model of a config's ``model`` section (``args``: ``num_classes``, ``inplanes``)."""
    if model_config.get("is_bcos", False):
        raise ConfigError("the FashionMNIST/baseline collection builds standard models: set model.is_bcos=False")
    name = model_config["name"]
    match = re.fullmatch(r"resnet(\d+)", name)
    if match is None or int(match.group(1)) < 8 or (int(match.group(1)) - 2) % 6:
        raise ConfigError(f"baseline model name must be resnet<6n+2> (e.g. resnet8, resnet20), got {name!r}")
    return CifarResNet((int(match.group(1)) - 2) // 6, **model_config.get("args", {}))
