"""``get_model`` of the ViT collection: the simple ViTs, built by the model registry exactly as
the published ones are; B-cos ones wrapped as ``BcosSequential(vit, LogitLayer(logit_bias))``
(state-dict prefix ``0.``)."""

from __future__ import annotations

from typing import Any

from torch import nn

from bcos.errors import ConfigError
from bcos.models.registry import build_architecture
from bcos.models.vit import VIT

__all__ = ["get_model"]


def get_model(model_config: dict[str, Any]) -> nn.Module:
    """Build the model of a config's ``model`` section (the config is not changed).

    ``args`` go to the builder and must include ``norm_layer``; ``linear_layer`` and
    ``conv2d_layer`` default to the B-cos layers with ``bcos_args`` (B-cos models) or to
    ``nn.Linear`` / ``nn.Conv2d`` (standard ones). B-cos models need ``logit_bias``.
    """
    is_bcos = model_config["is_bcos"]
    args = dict(model_config.get("args", {}))
    if "norm_layer" not in args:
        raise ConfigError("model.args needs norm_layer (e.g. nn.LayerNorm or NoBias(DetachableLayerNorm))")
    if is_bcos:
        if "logit_bias" not in model_config:
            raise ConfigError("B-cos ViT configs need model.logit_bias (e.g. -log(num_classes - 1))")
        args["logit_bias"] = model_config["logit_bias"]
    return build_architecture(
        model_config["name"], is_bcos=is_bcos, bcos_args=model_config.get("bcos_args", {}), family=VIT, **args
    )
