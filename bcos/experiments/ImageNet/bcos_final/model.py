"""``get_model`` of the B-cos CNN collections (bcos_final, bcos_final_long): ResNet, ResNeXt,
DenseNet, VGG and ConvNeXt, built by the model registry exactly as the published models are."""

from __future__ import annotations

from typing import Any

from torch import nn

from bcos.errors import ConfigError
from bcos.models.registry import BCOS_CNN, build_architecture

__all__ = ["get_model"]


def get_model(model_config: dict[str, Any]) -> nn.Module:
    """Build the model of a config's ``model`` section (the config is not changed).

    ``name`` is a registered CNN architecture (``bcos.models.registry.list_architectures``);
    ``args`` go to its builder and must include ``norm_layer`` (ConvNeXt: None selects its
    default position norm); ``conv_layer`` defaults to ``BcosConv2d`` with ``bcos_args``.
    """
    if not model_config.get("is_bcos", False):
        raise ConfigError("this collection builds B-cos models only: set model.is_bcos=True")
    args = dict(model_config.get("args", {}))
    if "norm_layer" not in args:
        raise ConfigError("model.args needs norm_layer (a norm factory, e.g. NoBias(BatchNormUncentered2d))")
    return build_architecture(
        model_config["name"], is_bcos=True, bcos_args=model_config.get("bcos_args", {}), family=BCOS_CNN, **args
    )
