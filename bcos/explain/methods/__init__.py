"""Post-hoc explainers behind one interface: ``get_explainer(model, name).attribute(inputs, target)``.

Names: Ours, OursRelative (the B-cos contributions), IxG, Grad, GB, IntGrad, DeepLIFT (Captum),
GCam (Grad-CAM), Occlusion, RISE, LIME. See :mod:`.base` for the interface and :mod:`.configs`
for the named configurations.
"""

from bcos.explain.methods.base import Explainer
from bcos.explain.methods.configs import EXPLAINER_CONFIGS, get_explainer_config, list_explainer_configs
from bcos.explain.methods.registry import (
    EXPLAINERS,
    explainer_options,
    get_explainer,
    get_explainer_class,
    list_explainers,
)

__all__ = [
    "Explainer",
    "EXPLAINERS",
    "EXPLAINER_CONFIGS",
    "explainer_options",
    "get_explainer",
    "get_explainer_class",
    "get_explainer_config",
    "list_explainer_configs",
    "list_explainers",
]
