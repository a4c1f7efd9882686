"""The explainer registry: names (as the reference and the papers use them) -> explainer classes.

Classes are imported when first asked for, so listing explainers or using "Ours" needs neither
Captum nor scikit-image.
"""

from __future__ import annotations

import importlib
import inspect
from typing import Any

from torch import nn

from bcos.errors import ConfigError, unknown_name
from bcos.explain.methods.base import Explainer
from bcos.explain.methods.configs import get_explainer_config

__all__ = ["EXPLAINERS", "list_explainers", "get_explainer_class", "explainer_options", "get_explainer"]

#: explainer name -> "module:Class" inside bcos.explain.methods
EXPLAINERS: dict[str, str] = {
    "Ours": "ours:Ours",
    "OursRelative": "ours:OursRelative",
    "IxG": "gradient:IxG",
    "Grad": "gradient:Grad",
    "GB": "gradient:GB",
    "IntGrad": "gradient:IntGrad",
    "DeepLIFT": "gradient:DeepLIFT",
    "GCam": "gradcam:GradCAM",
    "Occlusion": "occlusion:Occlusion",
    "RISE": "rise:RISE",
    "LIME": "lime:LIME",
}


def list_explainers() -> list[str]:
    """The registered explainer names, in registry order."""
    return list(EXPLAINERS)


def get_explainer_class(name: str) -> type[Explainer]:
    """The class registered as ``name``; unknown names raise with the closest match."""
    if name not in EXPLAINERS:
        raise unknown_name("explainer", name, EXPLAINERS)
    module_name, class_name = EXPLAINERS[name].split(":")
    try:
        module = importlib.import_module(f"bcos.explain.methods.{module_name}")
    except ModuleNotFoundError as error:
        raise ConfigError(
            f"explainer {name!r} needs the package {error.name!r}; install the interpretability extra: "
            "pip install 'bcos[interpretability]'"
        ) from None
    return getattr(module, class_name)


def explainer_options(name: str) -> list[str]:
    """The keyword arguments the explainer ``name`` accepts (besides the model)."""
    signature = inspect.signature(get_explainer_class(name).__init__)
    return [p for p in signature.parameters if p not in ("self", "model")]


def get_explainer(model: nn.Module, name: str, config: str = "default", **overrides: Any) -> Explainer:
    """Build explainer ``name`` for ``model`` with its named ``config``, updated by ``overrides``.

    Unknown explainer, configuration or option names raise with the closest match (the reference
    dropped options a constructor rejected).
    """
    cls = get_explainer_class(name)
    options = explainer_options(name)
    kwargs = get_explainer_config(name, config)
    for key in overrides:
        if key not in options:
            raise unknown_name(f"option of {name}", key, options or ["(none)"])
    kwargs.update(overrides)
    return cls(model, **kwargs)
