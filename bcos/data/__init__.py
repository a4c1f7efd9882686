"""Data: presets, transforms, the repeated-augmentation sampler, data sets and datamodules.

``import bcos.data`` is light: the Lightning datamodules (:mod:`bcos.data.datamodules`) are
imported only when one of their names is first used, e.g. ``bcos.data.get_datamodule_class``.
"""

from __future__ import annotations

import importlib
from typing import Any

from bcos.data.categories import CIFAR10_CATEGORIES, DIGITS_CATEGORIES, FASHION_MNIST_CATEGORIES, IMAGENET_CATEGORIES
from bcos.data.presets import (
    CIFAR10_MEAN,
    CIFAR10_STD,
    IMAGENET_MEAN,
    IMAGENET_STD,
    CIFAR10ClassificationPresetTest,
    CIFAR10ClassificationPresetTrain,
    ImageNetClassificationPresetEval,
    ImageNetClassificationPresetTrain,
)
from bcos.data.sampler import RASampler
from bcos.data.transforms import AddInverse, RandomCutmix, RandomMixup, SplitAndGrid

_DATAMODULE_NAMES = (
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
)

__all__ = [
    "CIFAR10_CATEGORIES",
    "DIGITS_CATEGORIES",
    "FASHION_MNIST_CATEGORIES",
    "IMAGENET_CATEGORIES",
    "CIFAR10_MEAN",
    "CIFAR10_STD",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "CIFAR10ClassificationPresetTest",
    "CIFAR10ClassificationPresetTrain",
    "ImageNetClassificationPresetEval",
    "ImageNetClassificationPresetTrain",
    "RASampler",
    "AddInverse",
    "RandomCutmix",
    "RandomMixup",
    "SplitAndGrid",
    *_DATAMODULE_NAMES,
]


def __getattr__(name: str) -> Any:
    if name in _DATAMODULE_NAMES:
        return getattr(importlib.import_module("bcos.data.datamodules"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
