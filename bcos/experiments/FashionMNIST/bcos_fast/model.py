"""``get_model`` of ``FashionMNIST/bcos_fast``: the narrow CIFAR-style B-cos ResNets of the Digits demo."""

from bcos.experiments.Digits.bcos_demo.model import get_model

__all__ = ["get_model"]
