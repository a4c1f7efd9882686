"""CIFAR-10 normalisation ablation: B-cos ResNet-20/32/44/56 with each of 12 norms (1 GPU).

Names (888 in all):

* ``resnet_<depth>`` for depth in 20, 32, 44, 56: no normalisation, MaxOut with 2 units (as in
  B-cos v1);
* ``resnet_<depth>_<norm><affine>``: ``<norm>`` one of :data:`NORMS_MAP` and ``<affine>`` one of
  ``""`` (affine norm), ``"-linear"`` (no bias, :class:`~bcos.modules.norms.NoBias`) or
  ``"-unaffine"`` (neither weight nor bias, :class:`~bcos.modules.norms.Unaffine`);
* ``<any of the above>-nomaxout``: the same without MaxOut;
* ``<any of the above>-seed=420`` and ``-seed=1337``: the same with another seed (default 42).

Example: ``resnet_20_bnu-linear-nomaxout-seed=420``. Run ``python -m
bcos.experiments.CIFAR10.norm_ablations_final.experiment_parameters --help`` to inspect them.
"""

import math
from functools import partial

from torch import nn

from bcos.data.presets import CIFAR10ClassificationPresetTest, CIFAR10ClassificationPresetTrain
from bcos.experiments.utils import configs_cli, create_configs_with_different_seeds, update_config
from bcos.modules import norms
from bcos.modules.losses import BinaryCrossEntropyLoss
from bcos.optim import LRSchedulerFactory, OptimizerFactory

__all__ = ["CONFIGS", "NORMS_MAP"]

NUM_CLASSES = 10

# based on the CIFAR-10 config of B-cos v1
DEFAULT_NUM_EPOCHS = 100
DEFAULT_LR = 1e-3
DEFAULT_BATCH_SIZE = 64

DEFAULTS = dict(
    data=dict(
        train_transform=CIFAR10ClassificationPresetTrain(is_bcos=True),
        test_transform=CIFAR10ClassificationPresetTest(is_bcos=True),
        batch_size=DEFAULT_BATCH_SIZE,
        num_workers=4,
        num_classes=NUM_CLASSES,
    ),
    model=dict(
        is_bcos=True,
        args=dict(num_classes=NUM_CLASSES),
        bcos_args=dict(b=2),
    ),
    criterion=BinaryCrossEntropyLoss(),
    test_criterion=BinaryCrossEntropyLoss(),
    optimizer=OptimizerFactory(name="Adam", lr=DEFAULT_LR),
    lr_scheduler=LRSchedulerFactory(name="cosineannealinglr", epochs=DEFAULT_NUM_EPOCHS),
    trainer=dict(max_epochs=DEFAULT_NUM_EPOCHS),
)

RESNET_DEPTHS = [20, 32, 44, 56]

#: short name -> norm layer factory (called with the number of channels)
NORMS_MAP = {
    # centred
    "an": norms.AllNorm2d,
    "bn": norms.BatchNorm2d,
    "gn": partial(norms.DetachableGroupNorm2d, 2),  # 2 groups
    "in": norms.DetachableGNInstanceNorm2d,
    "ln": norms.DetachableGNLayerNorm2d,
    "pn": norms.DetachablePositionNorm2d,
    # uncentred
    "anu": norms.AllNormUncentered2d,
    "bnu": norms.BatchNormUncentered2d,
    "gnu": partial(norms.GroupNormUncentered2d, 2),
    "inu": norms.GNInstanceNormUncentered2d,
    "lnu": norms.GNLayerNormUncentered2d,
    "pnu": norms.PositionNormUncentered2d,
}

AFFINE_VARIANTS = {
    "": lambda norm_layer: norm_layer,
    "-linear": norms.NoBias,
    "-unaffine": norms.Unaffine,
}

resnets = {
    f"resnet_{depth}": update_config(
        DEFAULTS,
        dict(
            model=dict(
                name=f"resnet{depth}",
                args=dict(norm_layer=nn.Identity, logit_bias=-math.log(NUM_CLASSES - 1)),
                bcos_args=dict(max_out=2),
            )
        ),
    )
    for depth in RESNET_DEPTHS
}

resnets_norms = {
    f"{name}_{norm_name}{suffix}": update_config(
        config, dict(model=dict(args=dict(norm_layer=wrap(norm_layer))))
    )
    for name, config in resnets.items()
    for norm_name, norm_layer in NORMS_MAP.items()
    for suffix, wrap in AFFINE_VARIANTS.items()
}

resnets_nomaxout = {
    f"{name}-nomaxout": update_config(config, dict(model=dict(bcos_args=dict(max_out=1))))
    for group in (resnets, resnets_norms)
    for name, config in group.items()
}

CONFIGS = {**resnets, **resnets_norms, **resnets_nomaxout}
CONFIGS.update(create_configs_with_different_seeds(CONFIGS, seeds=[420, 1337]))

if __name__ == "__main__":
    configs_cli(CONFIGS, dataset="CIFAR10", base_network="norm_ablations_final")
