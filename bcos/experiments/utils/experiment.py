"""The ``Experiment`` class: one experiment config, its model, data and trained weights.

Example::

    from bcos.experiments.utils import Experiment

    exp = Experiment("CIFAR10", "norm_ablations_final", "resnet_20_bnu-linear-nomaxout")
    exp.save_dir                          # experiments/CIFAR10/norm_ablations_final/resnet_20_...
    model = exp.load_trained_model(reload="best")
    datamodule = exp.get_datamodule(batch_size=128)   # requires the training extra (lightning)
"""

from __future__ import annotations

import copy
import os
import warnings
from pathlib import Path
from typing import Any

import torch

from bcos.errors import CheckpointError, ConfigError
from bcos.experiments.utils.collections import get_config, get_configs_and_model_factory
from bcos.experiments.utils.config_utils import update_config
from bcos.experiments.utils.loading import (
    ReloadTypes,
    extract_model_state_dict,
    load_checkpoint_file,
    load_checkpoint_from_run,
    load_state_dict_into,
)
from bcos.experiments.utils.metrics import Metrics
from bcos.experiments.utils.run_folder import BASE_EXPERIMENTS_DIRECTORY, RunFolder

__all__ = ["Experiment"]


def _looks_like_path(value: str | os.PathLike) -> bool:
    return isinstance(value, os.PathLike) or "/" in value or os.sep in value


class Experiment:
    """An experiment: ``<dataset>/<base_network>/<experiment_name>`` config plus its run folder.

    Args:
        path_or_dataset: a run folder path (``<base>/<dataset>/<base_network>/<experiment_name>``;
            any string containing ``/`` counts as a path) or a dataset name.
        base_network: the config collection (only with a dataset name).
        experiment_name: the experiment's name in the collection's ``CONFIGS`` (only with a dataset name).
        base_directory: where run folders live (ignored when a path is given).
    """

    def __init__(
        self,
        path_or_dataset: str | os.PathLike,
        base_network: str | None = None,
        experiment_name: str | None = None,
        base_directory: str | os.PathLike = BASE_EXPERIMENTS_DIRECTORY,
    ):
        if _looks_like_path(path_or_dataset):
            if base_network is not None or experiment_name is not None:
                raise ConfigError(
                    f"'{path_or_dataset}' is a run folder path, so base_network and experiment_name must not be given; "
                    "pass either a path or dataset, base_network and experiment_name"
                )
            path = Path(path_or_dataset)
            if len(path.parts) < 3:
                raise ConfigError(
                    f"run folder path '{path}' needs the form <base_directory>/<dataset>/<base_network>/<experiment_name>"
                )
            dataset, base_network, experiment_name = path.parts[-3:]
            base_directory = path.parent.parent.parent
        else:
            dataset = str(path_or_dataset)
            if base_network is None or experiment_name is None:
                raise ConfigError(
                    f"Experiment({dataset!r}, ...) needs base_network and experiment_name too "
                    "(or a run folder path <base>/<dataset>/<base_network>/<experiment_name>)"
                )

        _, model_factory = get_configs_and_model_factory(dataset, base_network)
        self.run_folder = RunFolder.of(dataset, base_network, experiment_name, base_directory)
        # A private copy: changing this experiment's config must never change the shared CONFIGS.
        # Experiments made at run time (fine-tuning) are read from what their run folder holds.
        self.config: dict[str, Any] = get_config(dataset, base_network, experiment_name, run_folder=self.run_folder.path)
        self._get_model = model_factory
        self.base_directory = Path(base_directory)
        self.dataset = dataset
        self.base_network = base_network
        self.experiment_name = experiment_name

    def __repr__(self) -> str:
        return (
            f"Experiment({self.dataset!r}, {self.base_network!r}, {self.experiment_name!r}, "
            f"base_directory={str(self.base_directory)!r})"
        )

    @property
    def save_dir(self) -> Path:
        """The run folder ``<base_directory>/<dataset>/<base_network>/<experiment_name>``."""
        return self.run_folder.path

    @property
    def last_training_checkpoint_path(self) -> Path:
        """``<save_dir>/last.ckpt`` (whether it exists or not)."""
        return self.run_folder.last_checkpoint

    @property
    def last_training_checkpoint_state_dict(self) -> dict[str, Any]:
        """The whole last training checkpoint (loaded safely onto the CPU)."""
        return load_checkpoint_file(self.last_training_checkpoint_path)

    def get_datamodule(self, **data_config_overrides: Any):
        """A new datamodule for this experiment's dataset; keyword arguments override the data config.

        Needs the training extra (Lightning). The experiment's own config is left unchanged.
        """
        from bcos.experiments.utils.datasets import resolve_datamodule

        datamodule_class = resolve_datamodule(self.dataset, self.base_network)
        data_config = copy.deepcopy(self.config["data"])
        data_config.update(data_config_overrides)
        return datamodule_class(data_config)

    def get_model(self, **kwargs: Any) -> torch.nn.Module:
        """A new, untrained model; keyword arguments are merged into the model config first."""
        model_config = update_config(self.config["model"], kwargs)
        return self._get_model(model_config)

    def _model_to_load_into(self, **kwargs: Any) -> torch.nn.Module:
        """:meth:`get_model` for weights that are loaded next: the config's starting weights
        (``model.init``, e.g. a fine-tuning's pretrained weights) are not fetched for nothing."""
        architecture = {key: value for key, value in self.config["model"].items() if key != "init"}
        return self._get_model(update_config(architecture, kwargs))

    def load_metrics(self) -> Metrics:
        """The per-epoch metrics of the run (``<save_dir>/metrics/*.gz``)."""
        return Metrics.from_experiment_dir(self.save_dir)

    def available_checkpoints(self, suppress_warnings: bool = False) -> list[Path]:
        """The ``*.ckpt`` files of the run folder (empty, with a warning, when there are none)."""
        checkpoints = self.run_folder.checkpoints()
        if not checkpoints and not suppress_warnings:
            warnings.warn(f"no checkpoints in '{self.save_dir}'", stacklevel=2)
        return checkpoints

    def load_trained_model(
        self,
        reload: str = "last",
        ema: bool = False,
        verbose: bool = False,
        return_training_ckpt_if_possible: bool = False,
        **kwargs: Any,
    ) -> torch.nn.Module | dict[str, Any]:
        """Build the model and load trained weights from the run folder.

        Args:
            reload: ``"last"``, ``"best"`` (best validation top-1), ``"best_any"`` (best of the plain
                and EMA models; ignores ``ema``) or ``"epoch_<N>"``.
            ema: load the EMA model's weights.
            verbose: print the loaded checkpoint, epoch and its validation accuracy.
            return_training_ckpt_if_possible: return ``{"model": model, "ckpt": checkpoint}`` instead
                of the model (``ckpt`` is None for weights that do not come from a training run).
            **kwargs: overrides of the model config.
        """
        ReloadTypes.parse(reload)
        if not self.run_folder.checkpoints():
            model = self._load_published_weights(reload, ema, verbose, **kwargs)
            return {"model": model, "ckpt": None} if return_training_ckpt_if_possible else model

        loaded = load_checkpoint_from_run(self.run_folder, reload=reload, ema=ema, verbose=verbose)
        model = self._model_to_load_into(**kwargs)
        load_state_dict_into(model, loaded.state_dict, source=loaded.path)
        if return_training_ckpt_if_possible:
            return {"model": model, "ckpt": loaded.checkpoint}
        return model

    def load_model_from_weights(self, path: str | os.PathLike, ema: bool = False, **kwargs: Any) -> torch.nn.Module:
        """Build the model and load a weights file into it.

        ``path`` may be a plain state dict (such as the ``<name>-<sha256[:10]>.pth`` files that
        ``scripts/strip_checkpoints.py`` writes), a Lightning training checkpoint (``ema`` picks the
        EMA weights) or a ``{"model_state_dict": ...}`` checkpoint.
        """
        content = load_checkpoint_file(path)
        state_dict = extract_model_state_dict(content, ema=ema, source=path)
        model = self._model_to_load_into(**kwargs)
        load_state_dict_into(model, state_dict, source=path)
        return model

    def _load_published_weights(self, reload: str, ema: bool, verbose: bool, **kwargs: Any) -> torch.nn.Module:
        """Weights of the pretrained registry for this exact experiment, when no local run exists."""
        entry = _published_entry_for(self.dataset, self.base_network, self.experiment_name)
        if entry is None:
            raise CheckpointError(
                f"no checkpoints in '{self.save_dir}' and no published weights for this experiment; "
                "train it first (train.py) or pass a weights file (--weights PATH / load_model_from_weights)"
            )
        if reload != ReloadTypes.LAST or ema:
            warnings.warn(
                f"no local run in '{self.save_dir}': loading the published weights of {entry!r}; "
                f"reload={reload!r} and ema={ema} do not apply to them",
                stacklevel=3,
            )
        from bcos.models.registry import get_pretrained_config
        from bcos.models.weights import fetch_weights_file

        try:
            path = fetch_weights_file(get_pretrained_config(entry).weights)
        except CheckpointError as error:
            raise CheckpointError(
                f"no checkpoints in '{self.save_dir}' (train the experiment first or pass --weights PATH) and "
                f"the published weights of {entry!r} are not available: {error}"
            ) from None
        state_dict = extract_model_state_dict(load_checkpoint_file(path), source=path)
        model = self._model_to_load_into(**kwargs)
        load_state_dict_into(model, state_dict, source=path)
        if verbose:
            print(f"Loaded the published weights of {entry!r}")
        return model


def _published_entry_for(dataset: str, base_network: str, experiment_name: str) -> str | None:
    """The pretrained-registry name whose weights were trained with this experiment's config, if any."""
    from bcos.models.registry import get_pretrained_config, list_models

    for name in list_models(pretrained=True):
        source = get_pretrained_config(name).source
        if (source.dataset, source.collection, source.experiment) == (dataset, base_network, experiment_name):
            return name
    return None
