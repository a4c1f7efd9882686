"""``get_model`` of the Digits collection: a narrow CIFAR-style B-cos ResNet (3 stages, 3x3 stem).

``name`` is ``resnet<depth>`` with ``depth = 6 n + 2`` (n basic blocks per stage), e.g. ``resnet8``.
"""

from __future__ import annotations

import re
from functools import partial
from typing import Any

from torch import nn

from bcos.errors import ConfigError
from bcos.models.resnet import BasicBlock, BcosResNet
from bcos.modules import BcosConv2d

__all__ = ["get_model"]


def get_model(model_config: dict[str, Any]) -> nn.Module:
    """Build the model of a config's ``model`` section (the config is not changed).

    ``args`` go to :class:`~bcos.models.resnet.BcosResNet` (e.g. ``inplanes``, ``norm_layer``);
    ``conv_layer`` defaults to ``BcosConv2d`` with ``bcos_args``.
    """
    if not model_config.get("is_bcos", False):
        raise ConfigError("the Digits collection builds B-cos models only: set model.is_bcos=True")
    name = model_config["name"]
    match = re.fullmatch(r"resnet(\d+)", name)
    if match is None or int(match.group(1)) < 8 or (int(match.group(1)) - 2) % 6:
        raise ConfigError(f"Digits model name must be resnet<6n+2> (e.g. resnet8, resnet14), got {name!r}")
    blocks_per_stage = (int(match.group(1)) - 2) // 6
    args = dict(model_config.get("args", {}))
    if "conv_layer" not in args:
        args["conv_layer"] = partial(BcosConv2d, **model_config.get("bcos_args", {}))
    args.setdefault("small_inputs", True)
    return BcosResNet(BasicBlock, [blocks_per_stage] * 3, **args)
