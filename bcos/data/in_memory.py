"""The common part of the data sets held in memory as uint8 arrays (CIFAR-10, Digits, Fashion-MNIST)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from PIL import Image
from torch.utils.data import Dataset

__all__ = ["InMemoryImageDataset"]


class InMemoryImageDataset(Dataset):
    """Items are ``(transform(PIL image of data[i]), target_transform(targets[i]))``.

    Subclasses set ``data`` (uint8 ``[N, H, W, 3]``), ``targets``, ``transform`` and
    ``target_transform`` in their ``__init__``.
    """

    data: np.ndarray
    targets: list[int]
    transform: Callable | None
    target_transform: Callable | None

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int) -> tuple[Any, Any]:
        image: Any = Image.fromarray(self.data[index])
        target: Any = self.targets[index]
        if self.transform is not None:
            image = self.transform(image)
        if self.target_transform is not None:
            target = self.target_transform(target)
        return image, target
