"""``get_model`` of the ViT collection: ``bcos.models.vit`` builders, B-cos ones wrapped with a
``LogitLayer`` as ``BcosSequential(vit, LogitLayer(logit_bias))`` (state-dict prefix ``0.``)."""

from __future__ import annotations

from functools import partial
from typing import Any

from torch import nn

from bcos.errors import ConfigError, unknown_name
from bcos.models import vit
from bcos.models.base import BcosSequential
from bcos.modules import BcosConv2d, BcosLinear, LogitLayer

__all__ = ["get_model"]


def get_model(model_config: dict[str, Any]) -> nn.Module:
    """Build the model of a config's ``model`` section (the config is not changed).

    ``args`` go to the builder and must include ``norm_layer``; ``linear_layer`` and
    ``conv2d_layer`` default to the B-cos layers with ``bcos_args`` (B-cos models) or to
    ``nn.Linear`` / ``nn.Conv2d`` (standard ones). B-cos models need ``logit_bias``.
    """
    name = model_config["name"]
    if name not in vit.VIT_ARCHITECTURES:
        raise unknown_name("ViT architecture", name, vit.VIT_ARCHITECTURES)
    is_bcos = model_config["is_bcos"]
    args = dict(model_config.get("args", {}))
    if "norm_layer" not in args:
        raise ConfigError("model.args needs norm_layer (e.g. nn.LayerNorm or NoBias(DetachableLayerNorm))")
    # a caller may inject its own layers, like hubconf overrides do
    if "linear_layer" not in args or "conv2d_layer" not in args:
        if is_bcos:
            bcos_args = model_config.get("bcos_args", {})
            args["linear_layer"] = partial(BcosLinear, **bcos_args)
            args["conv2d_layer"] = partial(BcosConv2d, **bcos_args)
        else:
            args["linear_layer"] = nn.Linear
            args["conv2d_layer"] = nn.Conv2d
    model = vit.VIT_ARCHITECTURES[name](**args)
    if not is_bcos:
        return model
    if "logit_bias" not in model_config:
        raise ConfigError("B-cos ViT configs need model.logit_bias (e.g. -log(num_classes - 1))")
    return BcosSequential(model, LogitLayer(logit_bias=model_config["logit_bias"]))
