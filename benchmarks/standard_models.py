"""Standard (non-B-cos) baselines that torchvision does not ship: the CIFAR-10 ResNet-20.

Same layout as the B-cos CIFAR ResNet-20 of ``bcos.models.resnet`` (3x3 stem, three stages of three
BasicBlocks with widths 16/32/64, 1x1 projection shortcuts where the shape changes), but with
BatchNorm + ReLU, 3 input channels, global average pooling and a linear classifier.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["StandardBasicBlock", "StandardCifarResNet", "cifar10_resnet20"]


class StandardBasicBlock(nn.Module):
    """conv-BN-ReLU-conv-BN plus the (projected) input, then ReLU."""

    def __init__(self, inplanes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample: nn.Module | None = None
        if stride != 1 or inplanes != planes:
            self.downsample = nn.Sequential(
                nn.Conv2d(inplanes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes)
            )

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(out + identity)


class StandardCifarResNet(nn.Module):
    """CIFAR ResNet with ``blocks_per_stage`` BasicBlocks per stage (ResNet-20: 3)."""

    def __init__(self, blocks_per_stage: int = 3, num_classes: int = 10, width: int = 16) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        stages: list[nn.Module] = []
        inplanes = width
        for index in range(3):
            planes = width * 2**index
            blocks = []
            for block in range(blocks_per_stage):
                stride = 2 if index > 0 and block == 0 else 1
                blocks.append(StandardBasicBlock(inplanes, planes, stride))
                inplanes = planes
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = stages
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(inplanes, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: Tensor) -> Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def cifar10_resnet20(num_classes: int = 10) -> StandardCifarResNet:
    """The standard BN+ReLU CIFAR-10 ResNet-20 (about 0.27M parameters)."""
    return StandardCifarResNet(3, num_classes)
