"""Class names of the built-in data sets, in label order."""

from __future__ import annotations

from torchvision.models import ResNet18_Weights

__all__ = ["CIFAR10_CATEGORIES", "IMAGENET_CATEGORIES", "DIGITS_CATEGORIES", "FASHION_MNIST_CATEGORIES"]

# https://www.cs.toronto.edu/~kriz/cifar.html
CIFAR10_CATEGORIES: list[str] = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
]

# torchvision ships the 1000 ImageNet class names with its weight metadata (no download involved).
IMAGENET_CATEGORIES: list[str] = list(ResNet18_Weights.IMAGENET1K_V1.meta["categories"])

# scikit-learn's handwritten digits: the label is the digit.
DIGITS_CATEGORIES: list[str] = [str(d) for d in range(10)]

# https://github.com/zalandoresearch/fashion-mnist (label order of the IDX files)
FASHION_MNIST_CATEGORIES: list[str] = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]  # fmt: skip
