"""``get_model`` of the Fashion-MNIST ablation: the CIFAR-10 ablation's B-cos ResNets."""

from bcos.experiments.CIFAR10.norm_ablations_final.model import get_model

__all__ = ["get_model"]
