"""The data sections shared by the Fashion-MNIST collections (transforms, batch size, loaders)."""

from __future__ import annotations

from typing import Any

from bcos.data.presets import CIFAR10ClassificationPresetTest, CIFAR10ClassificationPresetTrain

__all__ = ["FASHION_MNIST_MEAN", "FASHION_MNIST_STD", "NUM_CLASSES", "data_config"]

NUM_CLASSES = 10
# of the 60,000 training images padded to 32x32 (grey, so the same for R, G and B)
FASHION_MNIST_MEAN = (0.2190, 0.2190, 0.2190)
FASHION_MNIST_STD = (0.3318, 0.3318, 0.3318)


def data_config(is_bcos: bool, batch_size: int, num_workers: int) -> dict[str, Any]:
    """Random 2-pixel shifts and horizontal flips (clothes are mirror-symmetric) for training."""
    stats = dict(mean=FASHION_MNIST_MEAN, std=FASHION_MNIST_STD)
    return dict(
        train_transform=CIFAR10ClassificationPresetTrain(is_bcos=is_bcos, padding=2, hflip_prob=0.5, **stats),
        test_transform=CIFAR10ClassificationPresetTest(is_bcos=is_bcos, **stats),
        batch_size=batch_size,
        num_workers=num_workers,
        num_classes=NUM_CLASSES,
    )
