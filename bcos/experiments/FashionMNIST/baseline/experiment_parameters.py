"""Standard (non-B-cos) ResNets on Fashion-MNIST: the accuracy twins of the B-cos collections.

Names: ``resnet_8`` and ``resnet_14`` (the twins of ``bcos_fast``: same depth, widths 16/32/64 and
training schedule: 8 epochs, Adam with lr 3e-3, cosine schedule, batch size 64), each also with
``-epochs=<E>`` for E in 1, 2, 3, 5, 10, and ``resnet_{20,32,44,56}`` (the twins of
``norm_ablations_final``). Input: normalised RGB (no ``[x, 1-x]`` encoding); loss: cross-entropy.
"""

from torch import nn

from bcos.experiments.FashionMNIST.data_presets import NUM_CLASSES, data_config
from bcos.experiments.utils import configs_cli, update_config
from bcos.optim import LRSchedulerFactory, OptimizerFactory

__all__ = ["CONFIGS"]

FAST_EPOCHS = 8
FAST_LR = 3e-3
ABLATION_EPOCHS = 100
ABLATION_LR = 1e-3


def _config(depth: int, epochs: int, lr: float, batch_size: int, num_workers: int) -> dict:
    return dict(
        data=data_config(is_bcos=False, batch_size=batch_size, num_workers=num_workers),
        model=dict(is_bcos=False, name=f"resnet{depth}", args=dict(num_classes=NUM_CLASSES, inplanes=16)),
        criterion=nn.CrossEntropyLoss(),
        test_criterion=nn.CrossEntropyLoss(),
        optimizer=OptimizerFactory(name="Adam", lr=lr),
        lr_scheduler=LRSchedulerFactory(name="cosineannealinglr", epochs=epochs),
        trainer=dict(max_epochs=epochs),
    )


CONFIGS = {f"resnet_{depth}": _config(depth, FAST_EPOCHS, FAST_LR, 64, 0) for depth in (8, 14)}
CONFIGS.update({f"resnet_{depth}": _config(depth, ABLATION_EPOCHS, ABLATION_LR, 64, 4) for depth in (20, 32, 44, 56)})
CONFIGS.update({f"{name}-epochs={e}": update_config(c, dict(
    lr_scheduler=LRSchedulerFactory(name="cosineannealinglr", epochs=e), trainer=dict(max_epochs=e)))
    for name, c in list(CONFIGS.items())[:2] for e in (1, 2, 3, 5, 10)})  # fmt: skip

if __name__ == "__main__":
    configs_cli(CONFIGS, dataset="FashionMNIST", base_network="baseline")
