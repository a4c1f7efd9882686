"""``get_model`` of the fine-tuning collection: a registry model with a new classifier.

The model config names a registered model (``bcos.list_models()``) and its new class count. With
``init`` set (training), the published or local weights are loaded into everything but the
classifier; with ``freeze_backbone`` only the classifier trains and the backbone's normalisation
statistics stay fixed. Without ``init`` (loading a finished run) only the architecture is built,
since the run's checkpoint replaces every weight anyway.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import nn

from bcos.errors import ConfigError
from bcos.models.registry import create_model

__all__ = ["get_model", "freeze_backbone"]


def _keep_eval(module: nn.Module, args: Any) -> None:
    # forward pre-hook: normalise with the pretrained running statistics, never update them,
    # even after trainer-driven model.train() calls
    module.training = False


def _has_running_stats(module: nn.Module) -> bool:
    return any(name.startswith("running_") for name, _ in module.named_buffers(recurse=False))


def freeze_backbone(model: nn.Module) -> list[str]:
    """Train only ``model.get_classifier()``: freeze every other parameter and norm statistic.

    Returns the names of the frozen parameters. Normalisation layers with running statistics
    outside the classifier always run in eval mode (a forward pre-hook), so a frozen backbone
    computes exactly the features it computed before fine-tuning.
    """
    get_classifier = getattr(model, "get_classifier", None)
    if get_classifier is None:
        raise ConfigError(
            f"{type(model).__name__} has no get_classifier(), so its backbone cannot be frozen; "
            "fine-tune without freezing the backbone"
        )
    classifier = get_classifier()
    trainable = {id(p) for p in classifier.parameters()}
    if not trainable:
        raise ConfigError(f"the classifier of {type(model).__name__} has no parameters to train")
    frozen = []
    for name, parameter in model.named_parameters():
        if id(parameter) not in trainable:
            parameter.requires_grad_(False)
            frozen.append(name)
    inside = {id(m) for m in classifier.modules()}
    for module in model.modules():
        if id(module) not in inside and _has_running_stats(module):
            module.register_forward_pre_hook(_keep_eval)
    return frozen


def get_model(model_config: Mapping[str, Any]) -> nn.Module:
    """Build the model of a fine-tuning config's ``model`` section (the config is not changed).

    Keys: ``name`` (registry name), ``args.num_classes``, optional ``freeze_backbone``,
    ``categories`` (the class names, kept as ``model.categories``) and ``init``
    (``{"pretrained": bool, "weights": path or None}``: which weights to start from; without it
    only the architecture is built).
    """
    name = model_config.get("name")
    if not name:
        raise ConfigError("a fine-tuning model config needs model.name (a name from bcos.list_models())")
    num_classes = int(model_config.get("args", {}).get("num_classes", 0))
    if num_classes < 1:
        raise ConfigError("a fine-tuning model config needs model.args.num_classes >= 1")
    init = model_config.get("init") or {}
    weights = init.get("weights")
    model = create_model(
        name,
        pretrained=bool(init.get("pretrained", False)) and weights is None,
        num_classes=num_classes,
        weights=weights,
    )
    del model.transform  # the source model's preprocessing; the fine-tuning config has its own
    categories = model_config.get("categories")
    if categories is not None:
        if len(categories) != num_classes:
            raise ConfigError(f"model.categories names {len(categories)} classes but model.args.num_classes is {num_classes}")
        model.categories = list(categories)
    if model_config.get("freeze_backbone", False):
        freeze_backbone(model)
    return model
