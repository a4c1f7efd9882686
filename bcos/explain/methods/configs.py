"""Named configurations of every explainer (the reference's ``explanation_configs``).

``EXPLAINER_CONFIGS[explainer][config_name]`` holds the keyword arguments the explainer is built
with; ``default`` exists for every explainer. Occlusion's named variants are the window sizes of
the B-cos papers: ``Occ5`` (5x5, stride 2), ``Occ9``, and the "TI" versions with stride 4.
RISE's keep probability is ``p1`` (the reference's ``p`` key was silently ignored).
"""

from __future__ import annotations

import copy
from typing import Any

from bcos.errors import unknown_name

__all__ = ["EXPLAINER_CONFIGS", "get_explainer_config", "list_explainer_configs"]

EXPLAINER_CONFIGS: dict[str, dict[str, dict[str, Any]]] = {
    "Ours": {"default": {}},
    "OursRelative": {"default": {}},
    "IxG": {"default": {}},
    "Grad": {"default": {}},
    "GB": {"default": {}},
    "IntGrad": {"default": {"n_steps": 50, "internal_batch_size": 8}},
    "DeepLIFT": {"default": {}},
    "GCam": {"default": {}},
    "Occlusion": {
        "default": {},
        "Occ5": {"ks": 5, "stride": 2},
        "Occ9": {"ks": 9, "stride": 2},
        "Occ9-TI": {"ks": 9, "stride": 4, "batch_size": 1},
        "Occ13-TI": {"ks": 13, "stride": 4, "batch_size": 1},
    },
    "RISE": {"default": {"n": 500, "s": 8, "p1": 0.1, "batch_size": 8}},
    "LIME": {"default": {"kernel_size": 4, "num_samples": 500, "num_features": 5, "batch_size": 8}},
}


def list_explainer_configs(explainer: str) -> list[str]:
    """The configuration names of ``explainer``."""
    if explainer not in EXPLAINER_CONFIGS:
        raise unknown_name("explainer", explainer, EXPLAINER_CONFIGS)
    return list(EXPLAINER_CONFIGS[explainer])


def get_explainer_config(explainer: str, config_name: str = "default") -> dict[str, Any]:
    """A copy of the keyword arguments of ``explainer``'s configuration ``config_name``."""
    configs = EXPLAINER_CONFIGS.get(explainer)
    if configs is None:
        raise unknown_name("explainer", explainer, EXPLAINER_CONFIGS)
    if config_name not in configs:
        raise unknown_name(f"{explainer} configuration", config_name, configs)
    return copy.deepcopy(configs[config_name])
