"""Config tools, collections, and (imported on first use) the ``Experiment`` class.

``from bcos.experiments.utils import Experiment`` works as in the reference; the experiment,
checkpoint-loading and metrics modules are only imported when one of their names is used, so
importing a config collection stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

from .collections import get_config, get_configs_and_model_factory, list_collections
from .config_utils import (
    ALLOWED_SANITIZED_DATA_TYPES,
    config_to_text,
    copy_config,
    create_configs_with_different_seeds,
    describe_value,
    sanitize_config,
    update_config,
)
from .configs_cli import configs_cli
from .structure_constants import (
    BASE_EXPERIMENTS_DIRECTORY,
    CHECKPOINT_LAST_FILENAME,
    CONFIGS_MODULE,
    CONFIGS_VAR_NAME,
    MODEL_FACTORY_MODULE,
    MODEL_FACTORY_VAR_NAME,
    ROOT,
)

# name -> submodule that defines it (imported lazily by __getattr__)
_LAZY = {
    "Experiment": "experiment",
    "Metrics": "metrics",
    "MetricsNotFoundError": "metrics",
    "ReloadTypes": "loading",
    "RunFolder": "run_folder",
}

__all__ = [
    "copy_config",
    "update_config",
    "create_configs_with_different_seeds",
    "sanitize_config",
    "describe_value",
    "config_to_text",
    "ALLOWED_SANITIZED_DATA_TYPES",
    "configs_cli",
    "list_collections",
    "get_configs_and_model_factory",
    "get_config",
    "ROOT",
    "BASE_EXPERIMENTS_DIRECTORY",
    "MODEL_FACTORY_MODULE",
    "MODEL_FACTORY_VAR_NAME",
    "CONFIGS_MODULE",
    "CONFIGS_VAR_NAME",
    "CHECKPOINT_LAST_FILENAME",
    *_LAZY,
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
