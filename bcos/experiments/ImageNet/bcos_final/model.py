"""``get_model`` of the B-cos CNN collections (bcos_final, bcos_final_long): ResNet, ResNeXt,
DenseNet, VGG and ConvNeXt from ``bcos.models``."""

from __future__ import annotations

import importlib
from functools import partial
from typing import Any

from torch import nn

from bcos.errors import ConfigError, unknown_name
from bcos.modules import BcosConv2d

__all__ = ["get_model"]

# architecture name prefix -> module of bcos.models that defines it
_FAMILIES = {"resne": "resnet", "wide_resnet": "resnet", "densenet": "densenet", "vgg": "vgg", "convnext": "convnext"}


def _architecture_builder(name: str):
    families = [module for prefix, module in _FAMILIES.items() if name.startswith(prefix)]
    modules = [importlib.import_module(f"bcos.models.{m}") for m in sorted(set(families or _FAMILIES.values()))]
    for module in modules:
        if name in module.__all__:
            return getattr(module, name)
    choices = [n for module in modules for n in module.__all__ if n.startswith(tuple(_FAMILIES))]
    raise unknown_name("B-cos CNN architecture", name, choices)


def get_model(model_config: dict[str, Any]) -> nn.Module:
    """Build the model of a config's ``model`` section (the config is not changed).

    ``args`` go to the builder and must include ``norm_layer`` (ConvNeXt: None selects its
    default position norm); ``conv_layer`` defaults to ``BcosConv2d`` with
    ``bcos_args``.
    """
    if not model_config.get("is_bcos", False):
        raise ConfigError("this collection builds B-cos models only: set model.is_bcos=True")
    builder = _architecture_builder(model_config["name"])
    args = dict(model_config.get("args", {}))
    if "norm_layer" not in args:
        raise ConfigError("model.args needs norm_layer (a norm factory, e.g. NoBias(BatchNormUncentered2d))")
    if "conv_layer" not in args:  # a caller may inject its own, like hubconf overrides do
        args["conv_layer"] = partial(BcosConv2d, **model_config.get("bcos_args", {}))
    return builder(**args)
