"""``get_model`` of the ImageNet baseline collection: a standard torchvision model."""

from __future__ import annotations

from typing import Any

from torch import nn

from bcos.errors import ConfigError, unknown_name

__all__ = ["get_model"]


def get_model(model_config: dict[str, Any]) -> nn.Module:
    """Build ``torchvision.models.<name>(**args)`` (the config is not changed)."""
    from torchvision import models  # heavy: only when a model is built

    if model_config.get("is_bcos", False):
        raise ConfigError("the ImageNet/baseline collection builds standard models: set model.is_bcos=False")
    name = model_config["name"]
    available = models.list_models(module=models)
    if name not in available:
        raise unknown_name("torchvision model", name, available)
    return models.get_model(name, **model_config.get("args", {}))
