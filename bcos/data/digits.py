"""scikit-learn's bundled handwritten digits as a small offline image data set.

The 1,797 greyscale 8x8 digits (values 0..16) are scaled to 0..255, resized to 32x32 with
bilinear interpolation and converted to RGB, so CIFAR-style models and presets apply unchanged.
The train/test split is fixed and stratified: 20% of every class (360 images) for testing, the
rest (1,437) for training, chosen with seed 0. Nothing is downloaded.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import numpy as np
from PIL import Image

from bcos.data.in_memory import InMemoryImageDataset

__all__ = ["DIGITS_IMAGE_SIZE", "DIGITS_TEST_FRACTION", "DIGITS_SPLIT_SEED", "digits_split", "DigitsDataset"]

DIGITS_IMAGE_SIZE = 32
DIGITS_TEST_FRACTION = 0.2
DIGITS_SPLIT_SEED = 0


@functools.lru_cache(maxsize=1)
def _all_digits() -> tuple[np.ndarray, np.ndarray]:
    """All digits as uint8 RGB images [N, 32, 32, 3] and int64 labels [N] (computed once)."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    grey = np.clip(np.rint(bunch.images * (255.0 / 16.0)), 0, 255).astype(np.uint8)
    size = (DIGITS_IMAGE_SIZE, DIGITS_IMAGE_SIZE)
    images = np.stack(
        [np.asarray(Image.fromarray(img).resize(size, Image.Resampling.BILINEAR).convert("RGB")) for img in grey]
    )
    images.setflags(write=False)
    labels = bunch.target.astype(np.int64)
    labels.setflags(write=False)
    return images, labels


@functools.lru_cache(maxsize=1)
def digits_split() -> tuple[np.ndarray, np.ndarray]:
    """The fixed stratified split: (train indices, test indices) into the sklearn digits, sorted."""
    from sklearn.model_selection import train_test_split

    _, labels = _all_digits()
    train, test = train_test_split(
        np.arange(len(labels)), test_size=DIGITS_TEST_FRACTION, stratify=labels, random_state=DIGITS_SPLIT_SEED
    )
    train, test = np.sort(train), np.sort(test)
    train.setflags(write=False)
    test.setflags(write=False)
    return train, test


class DigitsDataset(InMemoryImageDataset):
    """The train or test split of the digits: PIL RGB 32x32 images and integer labels 0..9."""

    def __init__(
        self,
        train: bool = True,
        transform: Callable | None = None,
        target_transform: Callable | None = None,
    ) -> None:
        images, labels = _all_digits()
        indices = digits_split()[0 if train else 1]
        self.train = train
        self.data: np.ndarray = images[indices]
        self.targets: list[int] = labels[indices].tolist()
        self.classes: list[str] = [str(d) for d in range(10)]
        self.transform = transform
        self.target_transform = target_transform

    def __repr__(self) -> str:
        return f"{type(self).__name__}(split={'train' if self.train else 'test'!r}, size={len(self)})"
