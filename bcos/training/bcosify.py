"""B-cosify a torchvision or timm model and fine-tune it on your own images.

::

    bcos train --bcosify resnet18 --data-dir my_data --epochs 5 [--weights resnet18.pth] [--b 2]

or, from Python::

    from bcos.training.bcosify import make_bcosify_spec, bcosify_and_finetune
    spec = make_bcosify_spec("resnet18", "my_data", epochs=5)
    bcosify_and_finetune(spec)                         # train.py's options, e.g. csv_logger=True

The data folder is as for fine-tuning (``train/<class>/`` and ``val/<class>/``, or class folders that
are split 80/20 into the run folder). The run goes to ``experiments/ImageFolder/bcosify/<name>/``
(name: ``<model>-<data folder>``) with the usual checkpoints and metrics and ``bcosify.json``
(the :class:`BcosifySpec`); ``load_finetuned(run_folder)`` of :mod:`bcos.training.finetune` loads
the result. The published weights of torchvision/timm are downloaded when the machine is online;
``weights=FILE`` (``--weights``) starts from a local state dict and needs no network.
"""

from __future__ import annotations

import os
from typing import Any

from bcos.experiments.ImageFolder.bcosify.experiment_parameters import (
    COLLECTION,
    DATASET,
    SPEC_FILENAME,
    BcosifySpec,
    make_config,
)
from bcos.experiments.utils.run_folder import BASE_EXPERIMENTS_DIRECTORY
from bcos.training.finetune import _data_folder, _weights_file, default_run_name, train_spec, with_data_classes

__all__ = ["DATASET", "COLLECTION", "SPEC_FILENAME", "BcosifySpec", "make_bcosify_spec", "bcosify_and_finetune", "DEFAULT_LR"]

DEFAULT_LR = 1e-4


def make_bcosify_spec(
    model: str,
    data_dir: str | os.PathLike,
    *,
    name: str | None = None,
    epochs: int = 10,
    batch_size: int = 32,
    lr: float = DEFAULT_LR,
    weight_decay: float = 0.0,
    image_size: int = 224,
    num_workers: int | None = None,
    seed: int = 42,
    pretrained: bool = True,
    weights: str | os.PathLike | None = None,
    val_fraction: float = 0.2,
    b: float = 2.0,
    b_start: float | None = None,
    b_warmup_epochs: int = 0,
    bias: str = "remove",
    max_pool: str = "keep",
    base_directory: str | os.PathLike = BASE_EXPERIMENTS_DIRECTORY,
    replace: bool = False,
) -> BcosifySpec:
    """Check the model name, the weights and the data folder and describe the run (see :class:`BcosifySpec`)."""
    from bcos.bcosification.sources import resolve_source

    resolve_source(model)  # unknown names suggest the closest one; timm names need timm
    weights_path = _weights_file(weights, model)
    data_path = _data_folder(data_dir)
    spec = BcosifySpec(
        name=name or default_run_name(model.replace("/", "-"), data_path), model=model, data_dir=str(data_path),
        num_classes=1, categories=["unknown yet"], epochs=epochs, batch_size=batch_size, lr=lr,
        weight_decay=weight_decay, image_size=image_size,
        num_workers=num_workers if num_workers is not None else min(4, os.cpu_count() or 1), seed=seed,
        pretrained=pretrained, weights=weights_path,
        b=b, b_start=b_start, b_warmup_epochs=b_warmup_epochs, bias=bias, max_pool=max_pool,
    )  # fmt: skip
    return with_data_classes(spec, base_directory, val_fraction, replace)


def bcosify_and_finetune(spec: BcosifySpec, base_directory: str | os.PathLike = BASE_EXPERIMENTS_DIRECTORY, **train_options: Any):
    """Train as ``spec`` says; returns the Lightning trainer. ``train_options`` are those of ``train.py``.

    As :func:`bcos.training.finetune.finetune`: a run folder holding another B-cosification run is
    only reused with ``resume=False``.
    """
    return train_spec(spec, make_config, base_directory, "bcosify_and_finetune()", train_options)
