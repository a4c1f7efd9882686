"""``get_model`` of the CIFAR-10 collection: a CIFAR B-cos ResNet (``bcos.models.resnet.cifar10_<name>``)."""

from __future__ import annotations

from functools import partial
from typing import Any

from torch import nn

import bcos.models.resnet as resnet
from bcos.errors import ConfigError, unknown_name
from bcos.modules import BcosConv2d

__all__ = ["get_model"]

_PREFIX = "cifar10_"


def get_model(model_config: dict[str, Any]) -> nn.Module:
    """Build the model of a config's ``model`` section (the config is not changed).

    ``args`` go to the builder; ``conv_layer`` defaults to ``BcosConv2d`` (or the deprecated
    ``BcosConv2dWithScale`` when ``use_bcos_scale`` is set) with ``bcos_args``.
    """
    if not model_config.get("is_bcos", False):
        raise ConfigError("the CIFAR10 collections build B-cos models only: set model.is_bcos=True")
    name = model_config["name"]
    builder = getattr(resnet, f"{_PREFIX}{name}", None)
    if builder is None:
        choices = [n.removeprefix(_PREFIX) for n in resnet.__all__ if n.startswith(_PREFIX)]
        raise unknown_name("CIFAR-10 architecture", name, choices)

    args = dict(model_config.get("args", {}))
    if "conv_layer" not in args:  # a caller may inject its own, like hubconf overrides do
        if model_config.get("use_bcos_scale", False):
            from bcos.modules import BcosConv2dWithScale as conv_layer
        else:
            conv_layer = BcosConv2d
        args["conv_layer"] = partial(conv_layer, **model_config.get("bcos_args", {}))
    return builder(**args)
