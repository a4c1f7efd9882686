"""Fine-tuning a published B-cos model on your own ImageFolder data.

This collection has no fixed configs: each fine-tuning run is described by a
:class:`FinetuneSpec` (which model, which data folder, frozen backbone or not, epochs, ...) that
``bcos train --finetune MODEL --data-dir FOLDER`` (or :func:`bcos.training.finetune.finetune`)
writes as ``finetune.json`` into its run folder ``<base>/ImageFolder/finetune/<name>/``.
:func:`config_of_run_folder` reads it back and :func:`make_config` turns it into an ordinary
config, so ``Experiment``, ``evaluate.py``, ``bcos explain --run`` and the localisation analysis
find a fine-tuned run from its run folder like any other run (see
:mod:`bcos.experiments.utils.collections`). Nothing is read at import time.

The recipe: the registry model with a fresh classifier for the data's classes (the logit bias
``-log(K - 1)`` of the B-cos recipes), the pretrained weights everywhere else, Adam with a cosine
schedule and one linear warm-up epoch, binary cross-entropy for B-cos models (as in their
pretraining) and cross-entropy for the standard ViTs, random-resized-crop and flip augmentation,
and the source model's evaluation transform scaled to ``image_size``.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, Self

from torch import nn

from bcos.atomic_io import atomic_write_text
from bcos.data.presets import ImageNetClassificationPresetEval, ImageNetClassificationPresetTrain
from bcos.errors import ConfigError, unknown_name
from bcos.modules.losses import BinaryCrossEntropyLoss
from bcos.optim import LRSchedulerFactory, OptimizerFactory

__all__ = [
    "CONFIGS",
    "DATASET",
    "COLLECTION",
    "SPEC_FILENAME",
    "FinetuneSpec",
    "make_config",
    "config_of_run_folder",
]

DATASET = "ImageFolder"
COLLECTION = "finetune"
#: the spec file in every fine-tuning run folder
SPEC_FILENAME = "finetune.json"

#: fixed configs: none, every fine-tuning run's config comes from its run folder
CONFIGS: dict[str, dict[str, Any]] = {}


@dataclasses.dataclass
class FinetuneSpec:
    """Everything that defines one fine-tuning run (stored as JSON in its run folder).

    Attributes:
        name: the experiment name (the run folder's name).
        model: the registry model to start from (``bcos.list_models()``).
        data_dir: folder holding ``train/<class>/*`` and ``val/<class>/*``.
        num_classes, categories: the classes of the data, in label order (folder names, sorted).
        freeze_backbone: train only the classifier.
        epochs, batch_size, lr, weight_decay, num_workers, seed: the training recipe.
        image_size: the training and evaluation crop size.
        pretrained: start from the published weights (else from ``weights``, or from scratch).
        weights: a local state dict to start from instead of the published weights.
        source_dir: the folder the images came from, when ``data_dir`` is a split made from it.
        val_fraction: the share of each class that split holds out (None without a split).

    Subclasses describing other kinds of runs (:class:`bcos.training.bcosify.BcosifySpec`)
    set the class attributes ``COLLECTION``, ``FILE_NAME`` and ``LABEL``; writing, reading and the
    messages follow them.
    """

    #: the config collection of such runs (their run folders are ``<base>/ImageFolder/<COLLECTION>/<name>``)
    COLLECTION: ClassVar[str] = COLLECTION
    #: the spec file in the run folder
    FILE_NAME: ClassVar[str] = SPEC_FILENAME
    #: what such a run is called in messages
    LABEL: ClassVar[str] = "fine-tuning"

    name: str
    model: str
    data_dir: str
    num_classes: int
    categories: list[str]
    freeze_backbone: bool = False
    epochs: int = 10
    batch_size: int = 32
    lr: float = 1e-4
    weight_decay: float = 0.0
    image_size: int = 224
    num_workers: int = 4
    seed: int = 42
    pretrained: bool = True
    weights: str | None = None
    source_dir: str | None = None
    val_fraction: float | None = None

    def __post_init__(self) -> None:
        if not self.name or "/" in self.name or self.name.startswith("."):
            raise ConfigError(f"fine-tuning run name {self.name!r} must be a plain folder name")
        if self.num_classes < 1 or len(self.categories) != self.num_classes:
            raise ConfigError(
                f"fine-tuning needs num_classes >= 1 and one category per class, got {self.num_classes} "
                f"classes and {len(self.categories)} categories"
            )
        for key in ("epochs", "batch_size", "image_size"):
            if int(getattr(self, key)) < 1:
                raise ConfigError(f"fine-tuning {key} must be at least 1, got {getattr(self, key)}")
        if self.num_workers < 0:
            raise ConfigError(f"num_workers must be >= 0, got {self.num_workers}")
        if self.lr <= 0 or self.weight_decay < 0:  # NaN and infinity: the optimizer's checks (make_config)
            raise ConfigError(f"fine-tuning needs lr > 0 and weight_decay >= 0, got {self.lr} and {self.weight_decay}")

    def to_dict(self) -> dict[str, Any]:
        """The spec as plain JSON-able data."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Self:
        """A spec from :meth:`to_dict`'s output (unknown keys raise)."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ConfigError(f"unknown {cls.LABEL} spec keys {unknown}; expected some of {sorted(names)}")
        return cls(**dict(data))

    def write(self, run_folder: str | os.PathLike) -> Path:
        """Write the spec (``FILE_NAME``) into ``run_folder`` (created if needed); returns its path."""
        path = Path(run_folder) / self.FILE_NAME
        # allow_nan=False: NaN and infinity are not JSON (the checks above keep them out)
        atomic_write_text(path, json.dumps(self.to_dict(), indent=2, allow_nan=False) + "\n")
        return path

    @classmethod
    def read(cls, run_folder: str | os.PathLike) -> Self:
        """The spec stored in ``run_folder``."""
        path = Path(run_folder) / cls.FILE_NAME
        if not path.is_file():
            raise ConfigError(f"{str(run_folder)!r} is not a {cls.LABEL} run folder (no {cls.FILE_NAME})")
        try:
            return cls.from_dict(json.loads(path.read_text()))
        except (json.JSONDecodeError, TypeError) as error:
            raise ConfigError(f"{path} is not a valid {cls.LABEL} spec ({error}); delete the run folder and start again") from error


def make_config(spec: FinetuneSpec) -> dict[str, Any]:
    """The training config of ``spec``.

    ``model.init`` names the weights training starts from (the published ones or ``spec.weights``);
    loading a finished run skips them, since its checkpoint replaces every weight
    (:class:`bcos.experiments.utils.Experiment`). ``model.categories`` are the class names.
    """
    from bcos.models.registry import get_pretrained_config

    source = get_pretrained_config(spec.model)
    transform = source.transform
    resize = round(spec.image_size * transform.resize_size / transform.crop_size)
    is_bcos = source.is_bcos
    warmup = dict(warmup_method="linear", warmup_epochs=1, warmup_decay=0.01) if spec.epochs > 1 else {}
    init = {"pretrained": spec.pretrained, "weights": spec.weights}
    criterion = BinaryCrossEntropyLoss() if is_bcos else nn.CrossEntropyLoss()
    return dict(
        data=dict(
            train_transform=ImageNetClassificationPresetTrain(crop_size=spec.image_size, is_bcos=is_bcos),
            test_transform=ImageNetClassificationPresetEval(
                crop_size=spec.image_size, resize_size=resize, is_bcos=is_bcos
            ),
            batch_size=spec.batch_size,
            num_workers=spec.num_workers,
            num_classes=spec.num_classes,
            root=spec.data_dir,
        ),
        model=dict(
            is_bcos=is_bcos,
            name=spec.model,
            args=dict(num_classes=spec.num_classes),
            freeze_backbone=spec.freeze_backbone,
            categories=list(spec.categories),
            init=init,
        ),
        criterion=criterion,
        test_criterion=criterion,
        # Adam as in the B-cos recipes; AdamW (decoupled decay) when a weight decay is asked for
        optimizer=OptimizerFactory(name="Adam", lr=spec.lr)
        if spec.weight_decay == 0
        else OptimizerFactory(name="AdamW", lr=spec.lr, weight_decay=spec.weight_decay),
        lr_scheduler=LRSchedulerFactory(name="cosineannealinglr", epochs=spec.epochs, **warmup),
        trainer=dict(max_epochs=spec.epochs),
        seed=spec.seed,
    )


def _fine_tuning_runs_beside(run_folder: Path) -> list[str]:
    if not run_folder.parent.is_dir():
        return []
    return sorted(p.parent.name for p in run_folder.parent.glob(f"*/{SPEC_FILENAME}"))


def config_of_run_folder(run_folder: Path) -> dict[str, Any]:
    """The config of the fine-tuning run in ``run_folder``, from the spec the run saved there.

    A folder without a spec raises :class:`UnknownNameError` naming the closest fine-tuning run
    next to it.
    """
    if not (run_folder / SPEC_FILENAME).is_file():
        raise unknown_name(
            "fine-tuning run", run_folder.name, _fine_tuning_runs_beside(run_folder),
            hint=f"a fine-tuning run folder holds {SPEC_FILENAME}; none is in {run_folder} "
            "(fine-tune with bcos train --finetune MODEL --data-dir FOLDER)",
        )  # fmt: skip
    spec = FinetuneSpec.read(run_folder)
    if spec.name != run_folder.name:
        raise ConfigError(
            f"{run_folder / SPEC_FILENAME} names the run {spec.name!r}, not {run_folder.name!r}; "
            "rename the folder back or fine-tune again"
        )
    return make_config(spec)


if __name__ == "__main__":
    from bcos.experiments.utils import configs_cli

    configs_cli(CONFIGS, dataset=DATASET, base_network=COLLECTION)
