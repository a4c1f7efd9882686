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

import dataclasses
import os
from pathlib import Path
from typing import Any

from bcos.errors import ConfigError, DataNotFoundError
from bcos.experiments.ImageFolder.bcosify.experiment_parameters import (
    COLLECTION,
    DATASET,
    SPEC_FILENAME,
    BcosifySpec,
    make_config,
)
from bcos.experiments.utils.run_folder import BASE_EXPERIMENTS_DIRECTORY, RunFolder
from bcos.training.finetune import SPLIT_DIRNAME, _split_classes, default_run_name, split_image_folder

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
    if weights is not None and not Path(weights).is_file():
        kind = "a folder, not a weights file" if Path(weights).is_dir() else "not a file"
        raise DataNotFoundError(f"weights {str(weights)!r} is {kind}; pass the path of a saved state dict of {model}")
    data_path = Path(data_dir).expanduser()
    if not data_path.is_dir():
        raise DataNotFoundError(f"data folder {str(data_path)!r} does not exist; pass --data-dir FOLDER with class folders")
    data_path = data_path.resolve()
    name = name or default_run_name(model.replace("/", "-"), data_path)
    run_folder = RunFolder.of(DATASET, COLLECTION, name, base_directory).path
    spec = BcosifySpec(
        name=name, model=model, data_dir=str(data_path), num_classes=1, categories=["unknown yet"], epochs=epochs,
        batch_size=batch_size, lr=lr, weight_decay=weight_decay, image_size=image_size,
        num_workers=num_workers if num_workers is not None else min(4, os.cpu_count() or 1), seed=seed,
        pretrained=pretrained, weights=str(Path(weights).resolve()) if weights is not None else None,
        b=b, b_start=b_start, b_warmup_epochs=b_warmup_epochs, bias=bias, max_pool=max_pool,
    )  # fmt: skip
    has_train, has_val = (data_path / "train").is_dir(), (data_path / "val").is_dir()
    source_dir = None
    if has_train and has_val:
        categories = _split_classes(data_path)
    elif has_train or has_val:
        present, absent = ("train", "val") if has_train else ("val", "train")
        raise DataNotFoundError(
            f"{str(data_path)!r} has a {present}/ folder but no {absent}/ folder; add {absent}/<class>/<images> "
            "or pass a folder of class folders to have it split automatically"
        )
    else:
        source_dir = str(data_path)
        split = run_folder / SPLIT_DIRNAME
        previous = BcosifySpec.read(run_folder) if (run_folder / SPEC_FILENAME).is_file() else None
        same = previous is not None and (previous.source_dir, previous.seed, previous.val_fraction) == (source_dir, seed, val_fraction)
        if previous is not None and not same and not replace:
            raise ConfigError(
                f"{run_folder} holds a B-cosification run of another split (data folder, --seed or --val-fraction); "
                "pick another --name, or pass --force-no-resume to start it over"
            )
        data_path = split.resolve() if same and split.is_dir() else split_image_folder(data_path, split, val_fraction, seed).resolve()
        categories = _split_classes(data_path)
    return dataclasses.replace(
        spec, data_dir=str(data_path), num_classes=len(categories), categories=categories, source_dir=source_dir,
        val_fraction=val_fraction if source_dir is not None else None,
    )  # fmt: skip


# what may differ between a run and its resumption
_RESUMABLE_CHANGES = {"epochs", "batch_size", "num_workers", "lr", "weight_decay", "weights", "pretrained"}


def bcosify_and_finetune(spec: BcosifySpec, base_directory: str | os.PathLike = BASE_EXPERIMENTS_DIRECTORY, **train_options: Any):
    """Train as ``spec`` says; returns the Lightning trainer. ``train_options`` are those of ``train.py``."""
    from bcos.training.run import TrainOptions, run_training

    run_folder = RunFolder.of(DATASET, COLLECTION, spec.name, base_directory)
    spec_path = run_folder.path / SPEC_FILENAME
    if spec_path.is_file() and train_options.get("resume", True):
        previous = BcosifySpec.read(run_folder.path).to_dict()
        changed = sorted(k for k, v in spec.to_dict().items() if previous.get(k) != v and k not in _RESUMABLE_CHANGES)
        if changed:
            raise ConfigError(
                f"{run_folder.path} holds a B-cosification run with other {', '.join(changed)}; "
                "pick another --name, or pass --force-no-resume to start it over"
            )
    for key in ("dataset", "base_network", "experiment_name"):
        if key in train_options:
            raise ConfigError(f"bcosify_and_finetune() sets {key} itself; drop it from the training options")
    make_config(spec)
    spec.write(run_folder.path)
    options = TrainOptions(
        dataset=DATASET, base_network=COLLECTION, experiment_name=spec.name, base_directory=str(base_directory), **train_options
    )
    return run_training(options)
