"""Fine-tuning a published B-cos model on your own images (transfer learning).

Put your images in class folders, either already split::

    my_data/train/<class>/*.jpg        my_data/val/<class>/*.jpg

or not (``my_data/<class>/*.jpg``: a fixed, seeded split of ``val_fraction`` per class is made
in the run folder, as symbolic links where the file system allows, else copies). Then::

    bcos train --finetune resnet18 --data-dir my_data --epochs 5 [--freeze-backbone]

or, from Python::

    from bcos.training.finetune import make_spec, finetune
    spec = make_spec("resnet18", "my_data", epochs=5, freeze_backbone=True)
    finetune(spec)                                   # same options as train.py, e.g. csv_logger=True

The run goes to ``experiments/ImageFolder/finetune/<name>/`` (name: ``<model>-<data folder>``,
with ``-frozen`` for a frozen backbone) with the usual checkpoints and metrics, plus
``finetune.json`` (the :class:`FinetuneSpec`). The model is the registry model with a new classifier
for your classes; everything else starts from the published weights (or ``weights=PATH``).
``freeze_backbone=True`` trains only the classifier and keeps the backbone's normalisation
statistics fixed. Use the result with ``bcos explain IMAGES --run <run folder>``,
``bcos evaluate --dataset ImageFolder --base_network finetune --experiment_name <name> --reload best``
or :func:`load_finetuned`.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from torch import nn
from torchvision.datasets.folder import IMG_EXTENSIONS

from bcos.errors import ConfigError, DataNotFoundError
from bcos.experiments.ImageFolder.finetune.experiment_parameters import (
    COLLECTION,
    DATASET,
    SPEC_FILENAME,
    FinetuneSpec,
    make_config,
)
from bcos.experiments.ImageFolder.finetune.model import freeze_backbone
from bcos.experiments.utils.run_folder import BASE_EXPERIMENTS_DIRECTORY, RunFolder

__all__ = [
    "DATASET",
    "COLLECTION",
    "SPEC_FILENAME",
    "SPLIT_DIRNAME",
    "FinetuneSpec",
    "make_spec",
    "make_config",
    "finetune",
    "load_finetuned",
    "freeze_backbone",
    "split_image_folder",
    "default_run_name",
    "with_data_classes",
    "train_spec",
]

#: where an unsplit data folder is split (inside the run folder)
SPLIT_DIRNAME = "data_split"
DEFAULT_LR = 1e-4
DEFAULT_FROZEN_LR = 1e-3

# a fine-tuning spec or a subclass of it (BcosifySpec): the helpers below serve both kinds of runs
SpecT = TypeVar("SpecT", bound=FinetuneSpec)


def default_run_name(model: str, data_dir: str | os.PathLike, freeze_backbone: bool = False) -> str:
    """``<model>-<data folder name>`` (``-frozen`` appended for a frozen backbone), folder-safe."""
    folder = re.sub(r"[^A-Za-z0-9_.=-]+", "_", Path(data_dir).resolve().name).strip("._") or "data"
    return f"{model}-{folder}" + ("-frozen" if freeze_backbone else "")


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMG_EXTENSIONS)


def _class_folders(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def split_image_folder(
    source: str | os.PathLike,
    destination: str | os.PathLike,
    val_fraction: float = 0.2,
    seed: int = 0,
) -> Path:
    """Split ``source/<class>/<images>`` into ``destination/{train,val}/<class>/``.

    Each class gives ``round(val_fraction * n)`` of its images (at least one) to ``val``; the
    choice is seeded. Files are symbolic links to the originals (copies where links are not
    possible). ``destination`` is replaced if it exists. Returns ``destination``.
    """
    source, destination = Path(source).resolve(), Path(destination)
    if not 0 < val_fraction < 1:
        raise ConfigError(f"val_fraction must be between 0 and 1, got {val_fraction}")
    classes = [c for c in _class_folders(source) if _images_in(c)]
    if not classes:
        raise DataNotFoundError(
            f"{str(source)!r} holds no class folders with images; expected {source}/<class name>/<images> "
            f"(image types: {', '.join(IMG_EXTENSIONS)})"
        )
    if destination.exists():
        shutil.rmtree(destination)
    rng = np.random.default_rng(seed)
    for class_folder in classes:
        images = _images_in(class_folder)
        if len(images) < 2:
            raise DataNotFoundError(
                f"class folder {str(class_folder)!r} has {len(images)} image; every class needs at least 2 "
                "(one for training, one for validation)"
            )
        n_val = min(len(images) - 1, max(1, round(val_fraction * len(images))))
        val_indices = set(rng.permutation(len(images))[:n_val].tolist())
        for index, image in enumerate(images):
            split = "val" if index in val_indices else "train"
            target = destination / split / class_folder.name / "__".join(image.relative_to(class_folder).parts)
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                target.symlink_to(image)
            except OSError:  # e.g. file systems without links
                shutil.copy2(image, target)
    return destination


def _split_classes(data_dir: Path) -> list[str]:
    """The class names of an already split folder (train and val must agree)."""
    train, val = data_dir / "train", data_dir / "val"
    train_classes = [c.name for c in _class_folders(train) if _images_in(c)]
    val_classes = [c.name for c in _class_folders(val) if _images_in(c)]
    if not train_classes:
        raise DataNotFoundError(f"{str(train)!r} holds no class folders with images; expected train/<class name>/<images>")
    if train_classes != val_classes:
        missing = sorted(set(train_classes) ^ set(val_classes))
        raise DataNotFoundError(
            f"the class folders of {train} and {val} differ ({', '.join(missing[:5])}); "
            "give both the same class folders, each with at least one image"
        )
    return train_classes


def make_spec(
    model: str,
    data_dir: str | os.PathLike,
    *,
    name: str | None = None,
    freeze_backbone: bool = False,
    epochs: int = 10,
    batch_size: int = 32,
    lr: float | None = None,
    weight_decay: float = 0.0,
    image_size: int | None = None,
    num_workers: int | None = None,
    seed: int = 42,
    pretrained: bool = True,
    weights: str | os.PathLike | None = None,
    val_fraction: float = 0.2,
    base_directory: str | os.PathLike = BASE_EXPERIMENTS_DIRECTORY,
    replace: bool = False,
) -> FinetuneSpec:
    """Check the model name and the data folder and describe the fine-tuning run.

    An unsplit ``data_dir`` (class folders directly inside) is split into
    ``<run folder>/data_split`` (see :func:`split_image_folder`). A split that the run folder's
    earlier fine-tuning made from the same folder with the same seed and fraction is kept (so a
    resumed run sees the same images); a different one is only replaced with ``replace=True``
    (``--force-no-resume``). ``lr`` defaults to 1e-3 with a
    frozen backbone and 1e-4 otherwise; ``image_size`` to the model's evaluation crop size;
    ``num_workers`` to min(4, CPUs). See :class:`FinetuneSpec` for the other fields.
    """
    from bcos.models.registry import get_pretrained_config

    source = get_pretrained_config(model)  # unknown names suggest the closest one
    weights_path = _weights_file(weights, model)
    data_path = _data_folder(data_dir)
    name = name or default_run_name(model, data_path, freeze_backbone)

    # the recipe's numbers are checked (by FinetuneSpec) before anything is split or written
    spec = FinetuneSpec(
        name=name,
        model=model,
        data_dir=str(data_path),
        num_classes=1,
        categories=["unknown yet"],
        freeze_backbone=freeze_backbone,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr if lr is not None else (DEFAULT_FROZEN_LR if freeze_backbone else DEFAULT_LR),
        weight_decay=weight_decay,
        image_size=image_size or _crop_size(source.transform.crop_size),
        num_workers=num_workers if num_workers is not None else min(4, os.cpu_count() or 1),
        seed=seed,
        pretrained=pretrained,
        weights=weights_path,
    )
    return with_data_classes(spec, base_directory, val_fraction, replace)


def _weights_file(weights: str | os.PathLike | None, model: str) -> str | None:
    """The absolute path of a local weights file (None stays None); a folder or a missing file is refused."""
    if weights is None:
        return None
    if Path(weights).is_dir():
        raise DataNotFoundError(
            f"weights {str(weights)!r} is a folder, not a weights file; pass the path of a saved state dict of {model} inside it"
        )
    if not Path(weights).is_file():
        raise DataNotFoundError(f"weights file {str(weights)!r} does not exist; pass the path of a saved state dict of {model}")
    return str(Path(weights).resolve())


def _data_folder(data_dir: str | os.PathLike) -> Path:
    data_path = Path(data_dir).expanduser()
    if not data_path.is_dir():
        raise DataNotFoundError(f"data folder {str(data_path)!r} does not exist; pass --data-dir FOLDER with class folders")
    return data_path.resolve()


def with_data_classes(spec: SpecT, base_directory: str | os.PathLike, val_fraction: float, replace: bool) -> SpecT:
    """``spec`` with the classes of its data folder (``spec.data_dir``, the categories are placeholders).

    A folder with ``train/`` and ``val/`` is used as it is; a folder of class folders is split into
    the run folder (:func:`split_image_folder`), where the split an earlier run of the same kind
    made the same way (same folder, seed and fraction) is kept so a resumed run sees the same
    images; a different one is only replaced with ``replace=True``.
    """
    data_path = Path(spec.data_dir)
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
        run_folder = RunFolder.of(DATASET, spec.COLLECTION, spec.name, base_directory).path
        data_path = _split_for_run(type(spec), data_path, run_folder, val_fraction, spec.seed, replace)
        categories = _split_classes(data_path)
    return dataclasses.replace(
        spec,
        data_dir=str(data_path),
        num_classes=len(categories),
        categories=categories,
        source_dir=source_dir,
        val_fraction=val_fraction if source_dir is not None else None,
    )


def _split_for_run(
    kind: type[FinetuneSpec], source: Path, run_folder: Path, val_fraction: float, seed: int, replace: bool
) -> Path:
    """The run's split of ``source``: the existing one when it was made the same way, else a new one."""
    split = run_folder / SPLIT_DIRNAME
    if (run_folder / kind.FILE_NAME).is_file() and not replace:
        previous = kind.read(run_folder)
        if (previous.source_dir, previous.seed, previous.val_fraction) != (str(source), seed, val_fraction):
            raise ConfigError(
                f"{run_folder} holds a {kind.LABEL} run of another split (data folder, --seed or --val-fraction); "
                "pick another --name, or pass --force-no-resume to start it over"
            )
        if split.is_dir():
            return split.resolve()
    return split_image_folder(source, split, val_fraction, seed).resolve()


def _crop_size(size: int | Iterable[int]) -> int:
    return size if isinstance(size, int) else int(min(size))


# what may differ between a run and its resumption (the rest changes the model or the data)
# (the starting weights only matter for a fresh start: a resumed run loads last.ckpt)
_RESUMABLE_CHANGES = {"epochs", "batch_size", "num_workers", "lr", "weight_decay", "weights", "pretrained"}


def finetune(spec: FinetuneSpec, base_directory: str | os.PathLike = BASE_EXPERIMENTS_DIRECTORY, **train_options: Any):
    """Fine-tune as ``spec`` says; returns the Lightning trainer after training.

    ``train_options`` are those of ``train.py`` (:class:`bcos.training.run.TrainOptions`:
    ``resume``, ``amp``, ``csv_logger``, ``fast_dev_run``, ...). A run folder that already holds
    another fine-tuning (other model, data or classes) is only reused with ``resume=False``.
    """
    return train_spec(spec, make_config, base_directory, "finetune()", train_options)


def train_spec(
    spec: SpecT,
    config_of: Callable[[SpecT], dict[str, Any]],
    base_directory: str | os.PathLike,
    caller: str,
    train_options: dict[str, Any],
):
    """Write ``spec`` into its run folder and train the run; returns the Lightning trainer.

    A run folder holding a spec of the same kind that differs in more than :data:`_RESUMABLE_CHANGES`
    is only reused with ``resume=False``. ``config_of`` (the collection's ``make_config``) checks
    the recipe before anything is written; ``caller`` names the function in the error about the
    options it sets itself.
    """
    from bcos.training.run import TrainOptions, run_training

    run_folder = RunFolder.of(DATASET, spec.COLLECTION, spec.name, base_directory)
    if (run_folder.path / spec.FILE_NAME).is_file() and train_options.get("resume", True):
        previous = type(spec).read(run_folder.path).to_dict()
        changed = sorted(k for k, v in spec.to_dict().items() if previous.get(k) != v and k not in _RESUMABLE_CHANGES)
        if changed:
            raise ConfigError(
                f"{run_folder.path} holds a {spec.LABEL} run with other {', '.join(changed)}; "
                "pick another --name, or pass --force-no-resume to start it over"
            )
    for key in ("dataset", "base_network", "experiment_name"):
        if key in train_options:
            raise ConfigError(f"{caller} sets {key} itself; drop it from the training options")
    config_of(spec)  # the recipe is checked before the spec is written
    # the run's config is read back from this spec by Experiment (training, evaluation, explanation)
    spec.write(run_folder.path)
    options = TrainOptions(
        dataset=DATASET,
        base_network=spec.COLLECTION,
        experiment_name=spec.name,
        base_directory=str(base_directory),
        **train_options,
    )
    return run_training(options)


def load_finetuned(run_folder: str | os.PathLike, reload: str = "best", ema: bool = False) -> nn.Module:
    """The fine-tuned model of ``run_folder`` in eval mode, with ``transform`` and ``categories``.

    ``reload`` is as in :meth:`bcos.experiments.utils.Experiment.load_trained_model`.
    """
    from bcos.experiments.utils import Experiment

    experiment = Experiment(Path(run_folder))
    model = experiment.load_trained_model(reload=reload, ema=ema)  # model.categories from the run's spec
    model.transform = experiment.config["data"]["test_transform"]
    return model.eval()
