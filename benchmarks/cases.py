"""The models and steps the benchmarks compare (shared by the CPU and GPU suites)."""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial

import torch
from torch import Tensor, nn

from bcos.models import resnet as bcos_resnet
from bcos.modules import BcosConv2d, BinaryCrossEntropyLoss, norms

__all__ = [
    "bcos_cifar_resnet20",
    "bcos_imagenet_resnet",
    "standard_imagenet_resnet",
    "bcos_inputs",
    "train_step",
    "inference_step",
]

_BNU_LINEAR = norms.NoBias(norms.BatchNormUncentered2d)
_CONV = partial(BcosConv2d, b=2, max_out=1)


def bcos_cifar_resnet20() -> nn.Module:
    """CIFAR-10 ``resnet_20_bnu-linear-nomaxout`` (the norm-ablation model of the issue), with
    ``[x, 1 - x]`` inputs declared as training declares them."""
    model = bcos_resnet.cifar10_resnet20(norm_layer=_BNU_LINEAR, conv_layer=_CONV, logit_bias=-math.log(9))
    model.set_inputs_inverse_encoded()
    return model


def bcos_imagenet_resnet(depth: int) -> nn.Module:
    """ImageNet B-cos ResNet of the ``bcos_final`` collection (bnu-linear, B=2, no MaxOut), with
    ``[x, 1 - x]`` inputs declared as training declares them."""
    builder = getattr(bcos_resnet, f"resnet{depth}")
    model = builder(num_classes=1000, norm_layer=_BNU_LINEAR, conv_layer=_CONV, logit_bias=-math.log(999))
    model.set_inputs_inverse_encoded()
    return model


def standard_imagenet_resnet(depth: int) -> nn.Module:
    """torchvision's ResNet of the same depth."""
    import torchvision

    return getattr(torchvision.models, f"resnet{depth}")(num_classes=1000)


def bcos_inputs(images: Tensor) -> Tensor:
    """The ``[x, 1 - x]`` encoding B-cos models take."""
    return torch.cat([images, 1 - images], dim=1)


def train_step(
    model: nn.Module,
    inputs: Tensor,
    targets: Tensor,
    is_bcos: bool,
    *,
    amp_dtype: torch.dtype | None = None,
) -> Callable[[], None]:
    """One optimisation step (Adam, lr 1e-3) as a closure; B-cos models use the BCE loss."""
    model.train()
    criterion: nn.Module = BinaryCrossEntropyLoss() if is_bcos else nn.CrossEntropyLoss()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    device_type = inputs.device.type

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device_type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
            loss = criterion(model(inputs), targets)
        loss.backward()
        optimizer.step()

    return step


def inference_step(model: nn.Module, inputs: Tensor) -> Callable[[], None]:
    """One forward pass in eval mode without autograd, as a closure."""
    model.eval()

    def step() -> None:
        with torch.inference_mode():
            model(inputs)

    return step
