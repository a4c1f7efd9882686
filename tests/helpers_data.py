"""Tiny on-disk data sets for tests (shared by the data, training and evaluation tests).

* :func:`make_tiny_cifar10` writes ``<root>/cifar-10-batches-py`` in the real CIFAR-10 pickle
  format (five training batches, a test batch and ``batches.meta``), so ``DATA_ROOT=<root>``
  makes ``CIFAR10DataModule`` use it without downloading.
* :func:`make_tiny_image_folder` writes ``<root>/<split>/<class>/<i>.png`` ImageFolder trees.
* :func:`tiny_fashion_mnist` writes Fashion-MNIST's four (gzipped) IDX files with random images.

Images are learnable: each class has its own base colour plus a little noise.
"""

from __future__ import annotations

import gzip
import pickle
import struct
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

CIFAR10_LABEL_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def _class_images(labels: np.ndarray, num_classes: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """uint8 images [N, size, size, 3]: a per-class colour plus noise."""
    palette = np.random.default_rng(1234).integers(30, 226, size=(num_classes, 3))
    noise = rng.integers(-25, 26, size=(len(labels), size, size, 3))
    return np.clip(palette[labels][:, None, None, :] + noise, 0, 255).astype(np.uint8)


def _write_pickle(path: Path, content: dict) -> None:
    with open(path, "wb") as file:
        pickle.dump(content, file, protocol=2)


def make_tiny_cifar10(root: str | Path, n_train: int = 64, n_test: int = 32, seed: int = 0) -> Path:
    """Write a small CIFAR-10 copy under ``root``; return ``root`` (use it as ``DATA_ROOT``).

    Labels cycle through the 10 classes, so every class appears once there are >= 10 images.
    """
    root = Path(root)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)

    def batch(name: str, labels: np.ndarray) -> None:
        images = _class_images(labels, 10, 32, rng)  # [N, H, W, C] -> rows of R, G, B planes
        data = images.transpose(0, 3, 1, 2).reshape(len(labels), 3 * 32 * 32)
        _write_pickle(
            folder / name,
            {
                b"batch_label": name.encode(),
                b"labels": [int(label) for label in labels],
                b"data": data,
                b"filenames": [f"{name}_{i}.png".encode() for i in range(len(labels))],
            },
        )

    train_labels = np.arange(n_train) % 10
    for index, chunk in enumerate(np.array_split(train_labels, 5), start=1):
        batch(f"data_batch_{index}", chunk)
    batch("test_batch", np.arange(n_test) % 10)
    _write_pickle(
        folder / "batches.meta",
        {
            b"label_names": [name.encode() for name in CIFAR10_LABEL_NAMES],
            b"num_cases_per_batch": max(1, n_train // 5),
            b"num_vis": 3 * 32 * 32,
        },
    )
    return root


def make_tiny_image_folder(
    root: str | Path,
    classes: Sequence[str],
    n_per_class: int,
    splits: Sequence[str] = ("train", "val"),
    image_size: int = 32,
    seed: int = 0,
) -> Path:
    """Write ``<root>/<split>/<class>/<i>.png`` for every split and class; return ``root``."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(len(classes)), n_per_class)
    for split in splits:
        images = _class_images(labels, len(classes), image_size, rng)
        for i, (label, image) in enumerate(zip(labels, images)):
            folder = root / split / classes[label]
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image).save(folder / f"{i}.png")
    return root


def write_idx(path: Path, array: np.ndarray, compress: bool = True) -> None:
    """An unsigned-byte IDX file: magic 0x0000 08 <ndim>, big-endian sizes, then the bytes."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(struct.pack(">I", n) for n in array.shape)
    data = header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()
    path.write_bytes(gzip.compress(data) if compress else data)


def tiny_fashion_mnist(folder: Path, n_train: int = 20, n_test: int = 10, compress: bool = True) -> Path:
    """The four files with random 28x28 images and labels 0..9 in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    suffix = ".gz" if compress else ""
    for split, n in (("train", n_train), ("t10k", n_test)):
        write_idx(folder / f"{split}-images-idx3-ubyte{suffix}", rng.integers(0, 256, (n, 28, 28)), compress)
        write_idx(folder / f"{split}-labels-idx1-ubyte{suffix}", np.arange(n) % 10, compress)
    return folder
