"""The CIFAR-10 normalisation ablation on Fashion-MNIST: the same 888 B-cos ResNet configs.

Every config of ``CIFAR10/norm_ablations_final`` (ResNet-20/32/44/56, 12 norms, three affine
variants, with and without MaxOut, three seeds; see that module) with the Fashion-MNIST data:
2-pixel shifts and horizontal flips, ``[x, 1-x]`` input. GPU-sized (100 epochs); the CPU-sized
configs are in ``bcos_fast``. Example: ``resnet_20_bnu-linear-nomaxout``.
"""

from bcos.experiments.CIFAR10.norm_ablations_final.experiment_parameters import CONFIGS as CIFAR10_CONFIGS
from bcos.experiments.FashionMNIST.data_presets import data_config
from bcos.experiments.utils import configs_cli, update_config

__all__ = ["CONFIGS"]

CONFIGS = {
    name: update_config(config, dict(data=data_config(is_bcos=True, batch_size=64, num_workers=4)))
    for name, config in CIFAR10_CONFIGS.items()
}

if __name__ == "__main__":
    configs_cli(CONFIGS, dataset="FashionMNIST", base_network="norm_ablations_final")
