"""Finding config collections: ``bcos/experiments/<dataset>/<base_network>/``.

A collection is a package folder with an ``experiment_parameters.py`` (``CONFIGS``) and a
``model.py`` (``get_model``). Collections are discovered from the folders, so adding a folder is
all it takes to add one; only the collection asked for is imported. The folders searched are those
of the package ``bcos.experiments`` (its ``__path__``): bcos's own, and any a plugin package
appends (``bcos.experiments.__path__.append("/path/to/my_configs")``, holding
``<dataset>/<collection>/``); a dataset's folder is taken from the first of them that has it.

A collection whose experiments are made at run time (fine-tuning) also defines
``config_of_run_folder(run_folder) -> config``: the config of such an experiment is read from what
its run saved in its run folder, so :func:`get_config` needs that folder (``run_folder=``).
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable
from importlib import import_module
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bcos.errors import ConfigError, unknown_name

from .structure_constants import (
    BASE_EXPERIMENTS_DIRECTORY,
    CONFIGS_MODULE,
    CONFIGS_VAR_NAME,
    MODEL_FACTORY_MODULE,
    MODEL_FACTORY_VAR_NAME,
    ROOT,
)

if TYPE_CHECKING:
    from torch import nn

__all__ = ["RUN_FOLDER_CONFIG_FUNCTION", "list_collections", "get_configs_and_model_factory", "get_config"]

#: the optional function of a collection's configs module that reads a config from a run folder
RUN_FOLDER_CONFIG_FUNCTION = "config_of_run_folder"

_EXPERIMENTS_DIR = Path(__file__).resolve().parent.parent


def _experiments_folders() -> list[Path]:
    """The folders of the package ``bcos.experiments`` (bcos's own first)."""
    import bcos.experiments

    folders = [_EXPERIMENTS_DIR]
    for entry in getattr(bcos.experiments, "__path__", []):
        folder = Path(entry).resolve()
        if folder not in folders and folder.is_dir():
            folders.append(folder)
    return folders


def _is_collection(folder: Path) -> bool:
    return (folder / f"{CONFIGS_MODULE}.py").is_file() and (
        folder / f"{MODEL_FACTORY_MODULE}.py"
    ).is_file()


def list_collections(dataset: str | None = None) -> dict[str, list[str]]:
    """Every dataset and its config collections (``base_network`` names), sorted.

    Args:
        dataset: only this dataset (an unknown one raises
            :class:`~bcos.errors.UnknownNameError` with the closest match).
    """
    found: dict[str, list[str]] = {}
    seen: set[str] = set()
    for experiments_dir in _experiments_folders():
        for dataset_dir in sorted(experiments_dir.iterdir()):
            # Python imports bcos.experiments.<dataset> from the first folder that holds it
            if not dataset_dir.is_dir() or dataset_dir.name.startswith(("_", ".")) or dataset_dir.name in seen:
                continue
            seen.add(dataset_dir.name)
            names = sorted(d.name for d in dataset_dir.iterdir() if d.is_dir() and _is_collection(d))
            if names:
                found[dataset_dir.name] = names
    found = dict(sorted(found.items()))
    if dataset is None:
        return found
    if dataset not in found:
        raise unknown_name("dataset", dataset, found)
    return {dataset: found[dataset]}


def get_configs_and_model_factory(
    dataset: str, base_network: str
) -> tuple[dict[str, dict[str, Any]], Callable[[dict[str, Any]], nn.Module]]:
    """The collection's ``CONFIGS`` (name -> config) and its ``get_model(model_config)``.

    Unknown datasets and collections raise :class:`~bcos.errors.UnknownNameError` naming the
    closest match. The returned ``CONFIGS`` is the collection's own dict: copy a config before
    changing it (or use :func:`get_config`).
    """
    every = list_collections()
    if dataset not in every:
        error = unknown_name("dataset", dataset, every)
        raise type(error)(f"{error}; a data set's configs go to bcos/experiments/{dataset}/<collection>/ (docs/configs.md)")
    collections = every[dataset]
    if base_network not in collections:
        raise unknown_name(f"config collection (base_network) of {dataset}", base_network, collections)
    package = ".".join([ROOT, BASE_EXPERIMENTS_DIRECTORY, dataset, base_network])
    configs = getattr(import_module(_configs_module_name(dataset, base_network)), CONFIGS_VAR_NAME)
    model_factory = getattr(import_module(f"{package}.{MODEL_FACTORY_MODULE}"), MODEL_FACTORY_VAR_NAME)
    return configs, model_factory


def _configs_module_name(dataset: str, base_network: str) -> str:
    return ".".join([ROOT, BASE_EXPERIMENTS_DIRECTORY, dataset, base_network, CONFIGS_MODULE])


def get_run_folder_config_function(dataset: str, base_network: str) -> Callable[[Path], dict[str, Any]] | None:
    """The collection's ``config_of_run_folder`` (configs read from run folders), or None."""
    return getattr(import_module(_configs_module_name(dataset, base_network)), RUN_FOLDER_CONFIG_FUNCTION, None)


def get_config(
    dataset: str, base_network: str, experiment_name: str, run_folder: str | os.PathLike | None = None
) -> dict[str, Any]:
    """A private deep copy of one experiment's config (safe to change).

    For a collection with ``config_of_run_folder`` (see the module docstring) an experiment that is
    not one of its fixed ``CONFIGS`` is read from ``run_folder``, the run folder of that experiment.
    Unknown names raise :class:`~bcos.errors.UnknownNameError` naming the closest match.
    """
    configs, _ = get_configs_and_model_factory(dataset, base_network)
    if experiment_name in configs:
        return copy.deepcopy(configs[experiment_name])
    from_run_folder = get_run_folder_config_function(dataset, base_network)
    if from_run_folder is not None:
        if run_folder is None:
            raise ConfigError(
                f"the experiments of {dataset}/{base_network} are read from their run folders; "
                "pass the run folder (e.g. Experiment(<base>/<dataset>/<base_network>/<experiment_name>))"
            )
        return from_run_folder(Path(run_folder))
    raise unknown_name(
        f"experiment of {dataset}/{base_network}",
        experiment_name,
        configs,
        hint=f"list them with: python -m {ROOT}.{BASE_EXPERIMENTS_DIRECTORY}.{dataset}."
        f"{base_network}.{CONFIGS_MODULE} --print-all",
    )
