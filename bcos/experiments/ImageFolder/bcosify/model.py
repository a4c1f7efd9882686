"""``get_model`` of the B-cosification collection: a torchvision/timm model, new classifier, ``bcos.bcosify``.

With ``init`` (training) the published weights (or a local file) are loaded before the classifier
is replaced and the model converted; without it (loading a finished run) only the architecture is
built, since the run's checkpoint replaces every weight.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import nn

from bcos.bcosification import bcosify
from bcos.bcosification.sources import load_source_model
from bcos.errors import ConfigError

__all__ = ["get_model"]


def get_model(model_config: Mapping[str, Any]) -> nn.Module:
    """Build the B-cosified model of a config's ``model`` section (the config is not changed).

    Keys: ``name`` (torchvision or ``timm/`` name), ``args.num_classes``, ``bcosify`` (keyword
    arguments of :func:`bcos.bcosify`), optional ``categories`` and ``init``
    (``{"pretrained": bool, "weights": path or None}``).
    """
    name = model_config.get("name")
    if not name:
        raise ConfigError("a B-cosification model config needs model.name (a torchvision or timm model name)")
    num_classes = int(model_config.get("args", {}).get("num_classes", 0))
    if num_classes < 1:
        raise ConfigError("a B-cosification model config needs model.args.num_classes >= 1")
    init = model_config.get("init") or {}
    weights = init.get("weights")
    source = load_source_model(
        name, pretrained=bool(init.get("pretrained", False)) and weights is None, weights=weights, num_classes=num_classes
    )
    model = bcosify(source.train(), **dict(model_config.get("bcosify", {})))  # built for training, like every get_model
    categories = model_config.get("categories")
    if categories is not None:
        if len(categories) != num_classes:
            raise ConfigError(f"model.categories names {len(categories)} classes but model.args.num_classes is {num_classes}")
        model.categories = list(categories)
    return model
