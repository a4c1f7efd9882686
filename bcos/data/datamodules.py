"""Lightning datamodules for classification and their registry (usable as ``--dataset <Name>``).

Registry rule (TRAINING.md, "Adding a new dataset"): every subclass of
:class:`ClassificationDataModule` named ``<Name>DataModule`` with a ``NUM_CLASSES`` class attribute
is registered as ``<Name>`` when its class statement runs. Configs for it then live in
``bcos/experiments/<Name>/<collection>/`` and every command accepts ``--dataset <Name>``.
A subclass implements ``make_train_dataset(transform)`` and ``make_eval_dataset(transform)``
(or overrides Lightning's ``setup``). Pass ``register=False`` in the class statement for an
intermediate base class that is not a data set itself.

Built-in data sets:

* ``CIFAR10``: downloaded into ``DATA_ROOT`` when missing (checksum-verified archive).
* ``ImageNet``: ImageFolder trees ``<IMAGENET_PATH>/train`` and ``<IMAGENET_PATH>/val``.
* ``Digits``: scikit-learn's bundled handwritten digits as 32x32 RGB images (no download), a
  fixed stratified 1,437 / 360 split; the offline data set for trying things out.
* ``FashionMNIST``: 28x28 clothing photos padded to 32x32 RGB, 60,000 / 10,000, from ``DATA_ROOT``,
  Debian's ``dataset-fashion-mnist`` package, or downloaded into ``DATA_ROOT`` (checksums).
* ``ImageFolder``: custom data in ``<root>/train/<class>/*`` and ``<root>/val/<class>/*`` with
  ``root`` given as ``data.root`` in the config; the number of classes is read from the folder.

Custom data under its own name: call
``make_image_folder_datamodule("Flowers", root="/data/flowers")`` in a module that is imported
before the datamodule is looked up, e.g. at the top of
``bcos/experiments/Flowers/<collection>/experiment_parameters.py``; it defines and registers
``FlowersDataModule`` with ``NUM_CLASSES`` counted from ``/data/flowers/train``. Or write the
class yourself::

    class FlowersDataModule(ImageFolderDataModule):
        NUM_CLASSES = 102
        ROOT = "/data/flowers"

The data config (``config["data"]``) holds ``train_transform``, ``test_transform``,
``batch_size`` (per device), ``num_workers``, and optionally ``num_classes`` (checked against
the data set), ``mixup_alpha``, ``cutmix_alpha`` (one of the two is applied per batch when both
are set), ``p_gridified``, ``ra_repetitions`` (repeated-augmentation sampler), ``cache_dataset``
(None or ``"shm"`` for ImageFolder-based data sets), ``root`` and ``pin_memory``.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, ClassVar

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_info
from torch.utils.data import DataLoader, Dataset, Sampler
from torchvision.datasets import ImageFolder
from torchvision.datasets.folder import find_classes

from bcos import settings
from bcos.data.categories import CIFAR10_CATEGORIES, DIGITS_CATEGORIES, FASHION_MNIST_CATEGORIES, IMAGENET_CATEGORIES
from bcos.data.cifar import CIFAR10Dataset, download_cifar10
from bcos.data.digits import DigitsDataset
from bcos.data.fashion_mnist import FashionMNISTDataset
from bcos.data.image_files import load_image
from bcos.data.sampler import RASampler
from bcos.data.shm_cache import cache_train_tree
from bcos.data.transforms import make_train_collate
from bcos.errors import ConfigError, DataNotFoundError, unknown_name

__all__ = [
    "DatasetSizeWarning",
    "ClassificationDataModule",
    "CIFAR10DataModule",
    "ImageNetDataModule",
    "DigitsDataModule",
    "FashionMNISTDataModule",
    "ImageFolderTreesDataModule",
    "ImageFolderDataModule",
    "make_image_folder_datamodule",
    "registry",
    "get_datamodule_class",
]

_REGISTRY: dict[str, type[ClassificationDataModule]] = {}
_SUFFIX = "DataModule"


class DatasetSizeWarning(UserWarning):
    """A data set whose size differs from the official one (a subset or a small test copy)."""


def registry() -> dict[str, type[ClassificationDataModule]]:
    """All registered datamodule classes by data-set name (a copy)."""
    return dict(_REGISTRY)


def get_datamodule_class(name: str) -> type[ClassificationDataModule]:
    """The datamodule class registered as ``name`` (e.g. ``"CIFAR10"``).

    Raises :class:`~bcos.errors.UnknownNameError` with the closest registered name otherwise.
    """
    try:
        return _REGISTRY[name]
    except KeyError:
        raise unknown_name("dataset", name, _REGISTRY) from None


class ClassificationDataModule(L.LightningDataModule):
    """Base class of classification datamodules; subclasses register themselves by name."""

    NUM_CLASSES: ClassVar[int | None] = None
    """Number of classes; required unless ``NUM_CLASSES_FROM_DATA`` is true."""
    NUM_CLASSES_FROM_DATA: ClassVar[bool] = False
    """True for generic datamodules whose class count is read from the data at run time."""
    NUM_TRAIN_EXAMPLES: ClassVar[int | None] = None
    """Official training-set size; a different size gives a :class:`DatasetSizeWarning`."""
    NUM_EVAL_EXAMPLES: ClassVar[int | None] = None
    """Official evaluation-set size; a different size gives a :class:`DatasetSizeWarning`."""
    CATEGORIES: ClassVar[list[str] | None] = None
    """Class names in label order, when known."""
    CACHE_MODES: ClassVar[tuple[str, ...]] = ()
    """Values of ``data.cache_dataset`` (besides None) this datamodule supports."""
    CONFIG_KEYS: ClassVar[frozenset[str]] = frozenset(
        {
            "train_transform",
            "test_transform",
            "batch_size",
            "num_workers",
            "num_classes",
            "mixup_alpha",
            "cutmix_alpha",
            "p_gridified",
            "ra_repetitions",
            "cache_dataset",
            "root",
            "pin_memory",
        }
    )
    """Keys the data config may hold; subclasses extend it for their own options."""

    # ------------------------------------------------------------------ registry
    def __init_subclass__(cls, register: bool = True, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if not register:
            return
        name = cls.__name__
        if not name.endswith(_SUFFIX) or name == _SUFFIX:
            raise ConfigError(
                f"datamodule class {name!r} must be named '<Dataset>DataModule' "
                "(or pass register=False for a base class)"
            )
        num_classes = cls.NUM_CLASSES
        if num_classes is None and not cls.NUM_CLASSES_FROM_DATA:
            raise ConfigError(f"datamodule class {name!r} needs a NUM_CLASSES class attribute (number of classes)")
        if num_classes is not None and (
            not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 1
        ):
            raise ConfigError(f"{name}.NUM_CLASSES must be a positive integer, got {num_classes!r}")
        dataset = name[: -len(_SUFFIX)]
        existing = _REGISTRY.get(dataset)
        same_definition = existing is not None and (existing.__module__, existing.__qualname__) == (
            cls.__module__,
            cls.__qualname__,
        )
        if existing is not None and not same_definition:
            raise ConfigError(
                f"dataset name {dataset!r} is already registered by "
                f"{existing.__module__}.{existing.__qualname__}; give {name} another name"
            )
        _REGISTRY[dataset] = cls

    @classmethod
    def registry(cls) -> dict[str, type[ClassificationDataModule]]:
        """All registered datamodule classes by data-set name (a copy)."""
        return registry()

    @classmethod
    def dataset_name(cls) -> str:
        """The registered name: the class name without the ``DataModule`` suffix."""
        return cls.__name__.removesuffix(_SUFFIX)

    # ------------------------------------------------------------------ construction
    def __init__(self, config: Mapping[str, Any]) -> None:
        super().__init__()
        if not isinstance(config, Mapping):
            raise ConfigError(f"a datamodule takes the data config (a dict), got {type(config).__name__}")
        if isinstance(config.get("data"), Mapping):
            raise ConfigError(
                "pass the data part of the config (config['data']) to the datamodule, not the whole config"
            )
        for key in config:
            if key not in self.CONFIG_KEYS:
                raise unknown_name("data config key", str(key), self.CONFIG_KEYS)
        self.config: dict[str, Any] = dict(config)  # never mutate the caller's (shared) config
        self.batch_size = self._count("batch_size", required=True, minimum=1)
        self.num_workers = self._count("num_workers", required=False, minimum=0)
        self.ra_repetitions = self.config.get("ra_repetitions")
        if self.ra_repetitions is not None:
            self._count("ra_repetitions", required=True, minimum=1)
        self.cache_dataset = self._cache_mode()
        self.train_dataset: Dataset | None = None
        self.eval_dataset: Dataset | None = None
        self.categories: list[str] | None = list(self.CATEGORIES) if self.CATEGORIES else None
        self.num_classes = self._resolve_num_classes()
        self.train_collate_fn = make_train_collate(
            self.num_classes,
            mixup_alpha=self.config.get("mixup_alpha") or 0.0,
            cutmix_alpha=self.config.get("cutmix_alpha") or 0.0,
            p_gridified=self.config.get("p_gridified") or 0.0,
        )
        if self.train_collate_fn is not None:
            rank_zero_info(f"{type(self).__name__}: training batches use {self.train_collate_fn!r}")

    def _count(self, key: str, required: bool, minimum: int) -> int:
        value = self.config.get(key)
        if value is None and not required:
            return 0
        if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
            raise ConfigError(f"data.{key} must be an integer >= {minimum}, got {value!r}")
        return value

    def _cache_mode(self) -> str | None:
        mode = self.config.get("cache_dataset")
        if mode is None:
            return None
        if mode == "onthefly":
            raise ConfigError(
                "cache_dataset='onthefly' (the reference's Redis image cache) is not supported; "
                "use cache_dataset=None, or 'shm' for ImageFolder-based data sets"
            )
        if mode not in self.CACHE_MODES:
            if self.CACHE_MODES:
                raise unknown_name("cache_dataset mode", str(mode), self.CACHE_MODES)
            raise ConfigError(
                f"{self.dataset_name()} does not support cache_dataset={mode!r}; remove the option "
                "(only ImageFolder-based data sets such as ImageNet support 'shm')"
            )
        return mode

    def _resolve_num_classes(self) -> int:
        configured = self.config.get("num_classes")
        if configured is not None and (
            not isinstance(configured, int) or isinstance(configured, bool) or configured < 1
        ):
            raise ConfigError(f"data.num_classes must be a positive integer, got {configured!r}")
        if self.NUM_CLASSES is not None:
            if configured is not None and configured != self.NUM_CLASSES:
                raise ConfigError(
                    f"data.num_classes={configured} does not match {self.dataset_name()}'s "
                    f"{self.NUM_CLASSES} classes; fix the config"
                )
            return self.NUM_CLASSES
        if configured is not None:
            return configured
        return self.count_classes()

    def count_classes(self) -> int:
        """The number of classes, read from the data (only for ``NUM_CLASSES_FROM_DATA`` classes)."""
        raise ConfigError(f"{type(self).__name__} needs data.num_classes in the config")

    # ------------------------------------------------------------------ data sets
    def make_train_dataset(self, transform: Callable) -> Dataset:
        """The training data set with ``transform`` applied to every image."""
        raise NotImplementedError(f"{type(self).__name__} must implement make_train_dataset or setup")

    def make_eval_dataset(self, transform: Callable) -> Dataset:
        """The evaluation data set (used for validation and test) with ``transform`` applied."""
        raise NotImplementedError(f"{type(self).__name__} must implement make_eval_dataset or setup")

    def transform(self, key: str) -> Callable:
        """The transform ``data.<key>`` (``train_transform`` or ``test_transform``) of the config."""
        value = self.config.get(key)
        if value is None:
            raise ConfigError(
                f"data.{key} is missing; set it to a transform, e.g. a preset from bcos.data.presets"
            )
        if not callable(value):
            raise ConfigError(f"data.{key} must be callable (a transform), got {type(value).__name__}")
        return value

    def setup(self, stage: str | None = None) -> None:
        """Build the training set for stage "fit" (or None) and the evaluation set for every stage."""
        if stage in (None, "fit") and self.train_dataset is None:
            self.train_dataset = self.make_train_dataset(self.transform("train_transform"))
            self._check_size(self.train_dataset, self.NUM_TRAIN_EXAMPLES, "training")
        if self.eval_dataset is None:
            self.eval_dataset = self.make_eval_dataset(self.transform("test_transform"))
            self._check_size(self.eval_dataset, self.NUM_EVAL_EXAMPLES, "evaluation")

    def _check_size(self, dataset: Dataset, expected: int | None, split: str) -> None:
        size = len(dataset)  # type: ignore[arg-type]
        if size == 0:
            raise DataNotFoundError(f"the {self.dataset_name()} {split} set is empty; check the data folder")
        if expected is not None and size != expected:
            warnings.warn(
                f"the {self.dataset_name()} {split} set has {size} examples, the official one {expected}; "
                "expected only for subsets and test copies",
                DatasetSizeWarning,
                stacklevel=3,
            )

    # ------------------------------------------------------------------ loaders
    def _pin_memory(self) -> bool:
        return bool(self.config.get("pin_memory", torch.cuda.is_available()))

    def get_train_sampler(self) -> Sampler | None:
        """The repeated-augmentation sampler when ``data.ra_repetitions`` is set, else None.

        Its seed is ``PL_GLOBAL_SEED`` (set by ``lightning.seed_everything``), the same on every process.
        """
        if self.ra_repetitions is None:
            return None
        assert self.train_dataset is not None
        seed = int(os.environ.get("PL_GLOBAL_SEED", 0))
        return RASampler(self.train_dataset, shuffle=True, seed=seed, repetitions=self.ra_repetitions)

    def train_dataloader(self) -> DataLoader:
        if self.train_dataset is None:
            self.setup("fit")
        sampler = self.get_train_sampler()
        return DataLoader(
            self.train_dataset,  # type: ignore[arg-type]
            batch_size=self.batch_size,
            shuffle=sampler is None,
            sampler=sampler,
            num_workers=self.num_workers,
            collate_fn=self.train_collate_fn,
            pin_memory=self._pin_memory(),
            persistent_workers=self.num_workers > 0,
        )

    def _eval_dataloader(self) -> DataLoader:
        if self.eval_dataset is None:
            self.setup("test")
        return DataLoader(
            self.eval_dataset,  # type: ignore[arg-type]
            batch_size=self.batch_size,
            shuffle=False,
            num_workers=self.num_workers,
            pin_memory=self._pin_memory(),
        )

    def val_dataloader(self) -> DataLoader:
        """Loader over the evaluation set (the same set as :meth:`test_dataloader`)."""
        return self._eval_dataloader()

    def test_dataloader(self) -> DataLoader:
        """Loader over the evaluation set, in a fixed order."""
        return self._eval_dataloader()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(batch_size={self.batch_size}, num_classes={self.num_classes})"


# ---------------------------------------------------------------------------------------- CIFAR-10
class CIFAR10DataModule(ClassificationDataModule):
    """CIFAR-10 from ``DATA_ROOT`` (or ``data.root``), downloaded there when missing."""

    NUM_CLASSES = 10
    NUM_TRAIN_EXAMPLES = 50_000
    NUM_EVAL_EXAMPLES = 10_000
    CATEGORIES = CIFAR10_CATEGORIES

    def data_root(self) -> Path:
        """The folder holding ``cifar-10-batches-py``."""
        root = self.config.get("root") or settings.data_root()
        if not root:
            raise DataNotFoundError(
                "DATA_ROOT is not set; set the environment variable DATA_ROOT to a folder for CIFAR-10 "
                "(it is downloaded there automatically)"
            )
        return Path(root).expanduser()

    def prepare_data(self) -> None:
        download_cifar10(self.data_root())

    def make_train_dataset(self, transform: Callable) -> Dataset:
        download_cifar10(self.data_root())
        return CIFAR10Dataset(self.data_root(), train=True, transform=transform)

    def make_eval_dataset(self, transform: Callable) -> Dataset:
        download_cifar10(self.data_root())
        return CIFAR10Dataset(self.data_root(), train=False, transform=transform)


# ---------------------------------------------------------------------------------------- Digits
class DigitsDataModule(ClassificationDataModule):
    """scikit-learn's handwritten digits as 32x32 RGB images, fixed stratified 1,437 / 360 split."""

    NUM_CLASSES = 10
    NUM_TRAIN_EXAMPLES = 1_437
    NUM_EVAL_EXAMPLES = 360
    CATEGORIES = DIGITS_CATEGORIES

    def make_train_dataset(self, transform: Callable) -> Dataset:
        return DigitsDataset(train=True, transform=transform)

    def make_eval_dataset(self, transform: Callable) -> Dataset:
        return DigitsDataset(train=False, transform=transform)


# ---------------------------------------------------------------------------------------- Fashion-MNIST
class FashionMNISTDataModule(ClassificationDataModule):
    """Fashion-MNIST padded to 32x32 RGB, official 60,000 / 10,000 split (see :mod:`bcos.data.fashion_mnist`).

    Found in ``data.root`` / ``DATA_ROOT``, in Debian's ``/usr/share/datasets/fashion-mnist``, or
    downloaded into ``DATA_ROOT`` when online.
    """

    NUM_CLASSES = 10
    NUM_TRAIN_EXAMPLES = 60_000
    NUM_EVAL_EXAMPLES = 10_000
    CATEGORIES = FASHION_MNIST_CATEGORIES

    def _root(self) -> str | None:
        return self.config.get("root") or settings.data_root()

    def prepare_data(self) -> None:
        FashionMNISTDataset(self._root(), train=False)

    def make_train_dataset(self, transform: Callable) -> Dataset:
        return FashionMNISTDataset(self._root(), train=True, transform=transform)

    def make_eval_dataset(self, transform: Callable) -> Dataset:
        return FashionMNISTDataset(self._root(), train=False, transform=transform)


# ---------------------------------------------------------------------------------------- ImageFolder trees
class ImageFolderTreesDataModule(ClassificationDataModule, register=False):
    """Base of data sets stored as ImageFolder trees ``<folder>/train/<class>/*``, ``<folder>/val/<class>/*``.

    Supports ``cache_dataset="shm"``: the training tree is copied to ``<SHMTMPDIR>/<shm_subdir>``
    once per node before training (see :mod:`bcos.data.shm_cache`).
    """

    TRAIN_FOLDER: ClassVar[str] = "train"
    EVAL_FOLDER: ClassVar[str] = "val"
    CACHE_MODES = ("shm",)
    DATA_FOLDER_SETTING: ClassVar[str] = "data.root in the config"
    """What the user sets to choose :meth:`data_folder` (named in errors)."""

    def __init__(self, config: Mapping[str, Any]) -> None:
        super().__init__(config)
        self.prepare_data_per_node = True  # the shm cache is local to each node

    def data_folder(self) -> Path:
        """The folder that holds the ``train`` and ``val`` trees."""
        raise NotImplementedError

    def shm_folder(self) -> Path:
        """Where ``cache_dataset="shm"`` puts the training tree."""
        return Path(settings.shm_tmp_dir()) / self.dataset_name() / self.TRAIN_FOLDER

    def tar_files_dir(self) -> str | None:
        """A folder of per-class tar files to extract instead of copying the train tree (None: copy)."""
        return None

    def prepare_data(self) -> None:
        if self.cache_dataset == "shm":
            self._cache_to_shm()

    def _cache_to_shm(self) -> Path:
        tar_dir = self.tar_files_dir()
        source = None if tar_dir else self._split_folder(self.TRAIN_FOLDER)
        return cache_train_tree(self.shm_folder(), source=source, tar_dir=tar_dir)

    def _split_folder(self, split: str) -> Path:
        root = self.data_folder()
        if not root.is_dir():
            raise DataNotFoundError(
                f"the {self.dataset_name()} data folder {str(root)!r} does not exist, so there is no "
                f"'{split}' folder; point {self.DATA_FOLDER_SETTING} to the folder holding "
                f"the '{self.TRAIN_FOLDER}' and '{self.EVAL_FOLDER}' ImageFolder trees"
            )
        folder = root / split
        if not folder.is_dir():
            raise DataNotFoundError(
                f"no {self.dataset_name()} '{split}' folder at {str(folder)!r}; "
                f"expected {split}/<class name>/<images> under {str(self.data_folder())!r}"
            )
        return folder

    def _image_folder(self, folder: Path, transform: Callable) -> ImageFolder:
        try:
            # load_image: a broken file ends in one line naming it, not a worker's traceback
            dataset = ImageFolder(str(folder), transform=transform, loader=load_image)
        except FileNotFoundError as error:  # no class folders, or class folders without images
            raise DataNotFoundError(f"{str(folder)!r} is not a usable ImageFolder tree: {error}") from error
        if len(dataset.classes) != self.num_classes:
            raise DataNotFoundError(
                f"{str(folder)!r} has {len(dataset.classes)} class folders, but {self.dataset_name()} "
                f"has {self.num_classes} classes; fix the folder or data.num_classes"
            )
        return dataset

    def count_classes(self) -> int:
        classes, _ = find_classes(str(self._split_folder(self.TRAIN_FOLDER)))
        if not classes:
            raise DataNotFoundError(f"{str(self._split_folder(self.TRAIN_FOLDER))!r} holds no class folders")
        self.categories = list(classes)
        return len(classes)

    def make_train_dataset(self, transform: Callable) -> Dataset:
        folder = self._cache_to_shm() if self.cache_dataset == "shm" else self._split_folder(self.TRAIN_FOLDER)
        return self._image_folder(folder, transform)

    def make_eval_dataset(self, transform: Callable) -> Dataset:
        return self._image_folder(self._split_folder(self.EVAL_FOLDER), transform)

    def setup(self, stage: str | None = None) -> None:
        super().setup(stage)
        train, evaluation = self.train_dataset, self.eval_dataset
        both = isinstance(train, ImageFolder) and isinstance(evaluation, ImageFolder)
        if both and train.classes != evaluation.classes:  # type: ignore[union-attr]
            raise DataNotFoundError(
                f"the class folders of {self.TRAIN_FOLDER}/ and {self.EVAL_FOLDER}/ under "
                f"{str(self.data_folder())!r} differ; labels would not match"
            )
        if isinstance(train, ImageFolder) and self.CATEGORIES is None:
            self.categories = list(train.classes)


class ImageNetDataModule(ImageFolderTreesDataModule):
    """ImageNet from ``<IMAGENET_PATH>/train`` and ``<IMAGENET_PATH>/val`` (val serves as test set).

    ``cache_dataset="shm"`` extracts the per-class tar files of ``IMAGENET_TRAIN_TAR_FILES_DIR``
    (or copies the train tree when it is unset) to ``<SHMTMPDIR>/train`` once per node.
    """

    NUM_CLASSES = 1000
    DATA_FOLDER_SETTING = "the environment variable IMAGENET_PATH"
    NUM_TRAIN_EXAMPLES = 1_281_167
    NUM_EVAL_EXAMPLES = 50_000
    CATEGORIES = IMAGENET_CATEGORIES

    def data_folder(self) -> Path:
        root = self.config.get("root") or settings.imagenet_path()
        if not root:
            raise DataNotFoundError(
                "IMAGENET_PATH is not set; set the environment variable IMAGENET_PATH to the folder "
                "holding the ImageNet 'train' and 'val' ImageFolder trees"
            )
        return Path(root).expanduser()

    def shm_folder(self) -> Path:
        return Path(settings.shm_tmp_dir()) / self.TRAIN_FOLDER

    def tar_files_dir(self) -> str | None:
        return settings.imagenet_train_tar_files_dir()


class ImageFolderDataModule(ImageFolderTreesDataModule):
    """Custom data: ImageFolder trees under ``data.root`` (or the class attribute ``ROOT``).

    ``NUM_CLASSES`` is None here: the number of classes is ``data.num_classes`` when given
    (checked against the folders) or the number of class folders in ``<root>/train``. Subclasses
    (see :func:`make_image_folder_datamodule`) fix ``NUM_CLASSES`` and ``ROOT``.
    """

    NUM_CLASSES = None
    NUM_CLASSES_FROM_DATA = True
    ROOT: ClassVar[str | None] = None
    """Default data folder (``data.root`` takes precedence)."""

    def data_folder(self) -> Path:
        root = self.config.get("root") or self.ROOT
        if not root:
            raise ConfigError(
                f"{self.dataset_name()} needs data.root: the folder holding train/<class>/* and val/<class>/*"
            )
        return Path(os.path.expandvars(str(root))).expanduser()


def make_image_folder_datamodule(
    name: str,
    root: str | Path,
    num_classes: int | None = None,
    categories: list[str] | None = None,
) -> type[ImageFolderDataModule]:
    """Define and register ``<name>DataModule`` for ImageFolder trees under ``root``.

    ``num_classes`` defaults to the number of class folders in ``<root>/train``; ``categories``
    to their names. Calling it again with the same arguments returns the same class.
    """
    name = name.removesuffix(_SUFFIX)
    if not name.isidentifier():
        raise ConfigError(f"dataset name {name!r} must be a Python identifier (letters, digits, underscores)")
    root = str(Path(root).expanduser())
    existing = _REGISTRY.get(name)
    if existing is not None:
        if (
            issubclass(existing, ImageFolderDataModule)
            and existing.ROOT == root
            and num_classes in (None, existing.NUM_CLASSES)
        ):
            return existing
        raise ConfigError(f"dataset name {name!r} is already registered; choose another name")
    if num_classes is None or categories is None:
        train = Path(root) / ImageFolderTreesDataModule.TRAIN_FOLDER
        if not train.is_dir():
            raise DataNotFoundError(f"no 'train' folder at {str(train)!r}; expected train/<class name>/<images>")
        found, _ = find_classes(str(train))
        num_classes = len(found) if num_classes is None else num_classes
        categories = list(found) if categories is None else categories
    attributes = {
        "NUM_CLASSES": num_classes,
        "NUM_CLASSES_FROM_DATA": False,
        "ROOT": root,
        "CATEGORIES": list(categories),
        "__module__": __name__,
        "__qualname__": f"{name}{_SUFFIX}",
        "__doc__": f"ImageFolder data set {name!r} under {root!r} ({num_classes} classes).",
    }
    return type(f"{name}{_SUFFIX}", (ImageFolderDataModule,), attributes)  # registers itself
