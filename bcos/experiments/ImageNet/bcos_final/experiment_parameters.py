"""The B-cos ImageNet models of the paper, trained for 90 epochs on 4 GPUs.

Names: ``resnet_{18,34,50,101,152}``, ``resnext_50_32x4d`` (100 epochs),
``densenet_{121,161,201,169}``, ``vgg_11_bnu`` and each with ``-seed=420`` / ``-seed=1337`` (33).
Batch size 64 per GPU (4 GPUs: 256 in all). No MaxOut (``max_out=1``).
"""

import math

from bcos.data.presets import ImageNetClassificationPresetEval, ImageNetClassificationPresetTrain
from bcos.experiments.utils import configs_cli, create_configs_with_different_seeds, update_config
from bcos.modules import norms
from bcos.modules.losses import BinaryCrossEntropyLoss, UniformOffLabelsBCEWithLogitsLoss
from bcos.optim import LRSchedulerFactory, OptimizerFactory

__all__ = ["CONFIGS"]

NUM_CLASSES = 1_000

# mainly the torchvision recipes: https://github.com/pytorch/vision/blob/93723b481d1f6e/references/classification/README.md
DEFAULT_BATCH_SIZE = 64  # per GPU! * 4 = 256 effective
DEFAULT_NUM_EPOCHS = 90
DEFAULT_LR = 1e-3
DEFAULT_CROP_SIZE = 224

DEFAULT_NORM_LAYER = norms.NoBias(norms.BatchNormUncentered2d)  # bnu-linear

DEFAULT_OPTIMIZER = OptimizerFactory(name="Adam", lr=DEFAULT_LR)
DEFAULT_LR_SCHEDULE = LRSchedulerFactory(
    name="cosineannealinglr",
    epochs=DEFAULT_NUM_EPOCHS,
    warmup_method="linear",
    warmup_epochs=5,
    warmup_decay=0.01,
)

DEFAULTS = dict(
    data=dict(
        train_transform=ImageNetClassificationPresetTrain(crop_size=DEFAULT_CROP_SIZE, is_bcos=True),
        test_transform=ImageNetClassificationPresetEval(crop_size=DEFAULT_CROP_SIZE, is_bcos=True),
        batch_size=DEFAULT_BATCH_SIZE,
        num_workers=16,
        num_classes=NUM_CLASSES,
    ),
    model=dict(
        is_bcos=True,
        args=dict(
            num_classes=NUM_CLASSES,
            norm_layer=DEFAULT_NORM_LAYER,
            logit_bias=-math.log(NUM_CLASSES - 1),
        ),
        bcos_args=dict(b=2, max_out=1),
    ),
    criterion=UniformOffLabelsBCEWithLogitsLoss(),
    test_criterion=BinaryCrossEntropyLoss(),
    optimizer=DEFAULT_OPTIMIZER,
    lr_scheduler=DEFAULT_LR_SCHEDULE,
    trainer=dict(max_epochs=DEFAULT_NUM_EPOCHS),
    use_agc=True,
)


def _with_model(name: str, **changes) -> dict:
    return update_config(DEFAULTS, dict(model=dict(name=name), **changes))


resnets = {f"resnet_{depth}": _with_model(f"resnet{depth}") for depth in [18, 34, 50, 101, 152]}
resnexts = {
    "resnext_50_32x4d": _with_model(
        "resnext50_32x4d",
        lr_scheduler=DEFAULT_LR_SCHEDULE.with_epochs(100),
        trainer=dict(max_epochs=100),
    )
}
densenets = {f"densenet_{depth}": _with_model(f"densenet{depth}") for depth in [121, 161, 201, 169]}
vggs_bnu = {"vgg_11_bnu": _with_model("vgg11_bnu")}

CONFIGS = {**resnets, **resnexts, **densenets, **vggs_bnu}
CONFIGS.update(create_configs_with_different_seeds(CONFIGS, seeds=[420, 1337]))

if __name__ == "__main__":
    configs_cli(CONFIGS, dataset="ImageNet", base_network="bcos_final")
