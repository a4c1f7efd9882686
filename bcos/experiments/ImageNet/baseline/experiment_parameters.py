"""Standard torchvision models on ImageNet with the torchvision recipe, for reproducing numbers.

Names: ``resnet_{18,34,50,101,152}``, ``densenet_{121,161,201,169}``, ``vgg_11_bn`` and each with
``-seed=420`` / ``-seed=1337`` (30). Batch size 64 per GPU (4 GPUs: 256 in all).
"""

from torch import nn

from bcos.data.presets import ImageNetClassificationPresetEval, ImageNetClassificationPresetTrain
from bcos.experiments.utils import configs_cli, create_configs_with_different_seeds, update_config
from bcos.optim import LRSchedulerFactory, OptimizerFactory

__all__ = ["CONFIGS"]

NUM_CLASSES = 1_000

# the torchvision recipes: https://github.com/pytorch/vision/blob/93723b481d1f6e/references/classification/README.md
DEFAULT_BATCH_SIZE = 64  # per GPU! * 4 = 256 effective
DEFAULT_NUM_EPOCHS = 90
DEFAULT_LR = 0.1
DEFAULT_CROP_SIZE = 224

DEFAULT_OPTIMIZER = OptimizerFactory(name="SGD", lr=DEFAULT_LR, momentum=0.9, weight_decay=1e-4)
DEFAULT_LR_SCHEDULE = LRSchedulerFactory(name="steplr", step_size=30, gamma=0.1)

# no norm layer given: the torchvision models use BatchNorm by default
DEFAULTS = dict(
    data=dict(
        train_transform=ImageNetClassificationPresetTrain(crop_size=DEFAULT_CROP_SIZE),
        test_transform=ImageNetClassificationPresetEval(crop_size=DEFAULT_CROP_SIZE),
        batch_size=DEFAULT_BATCH_SIZE,
        num_workers=8,
        num_classes=NUM_CLASSES,
    ),
    model=dict(is_bcos=False, args=dict(num_classes=NUM_CLASSES)),
    criterion=nn.CrossEntropyLoss(),
    test_criterion=nn.CrossEntropyLoss(),
    optimizer=DEFAULT_OPTIMIZER,
    lr_scheduler=DEFAULT_LR_SCHEDULE,
    trainer=dict(max_epochs=DEFAULT_NUM_EPOCHS),
)


def _with_model(name: str) -> dict:
    return update_config(DEFAULTS, dict(model=dict(name=name)))


resnets = {f"resnet_{depth}": _with_model(f"resnet{depth}") for depth in [18, 34, 50, 101, 152]}
densenets = {f"densenet_{depth}": _with_model(f"densenet{depth}") for depth in [121, 161, 201, 169]}
vggs = {"vgg_11_bn": _with_model("vgg11_bn")}

CONFIGS = {**resnets, **densenets, **vggs}
CONFIGS.update(create_configs_with_different_seeds(CONFIGS, seeds=[420, 1337]))

if __name__ == "__main__":
    configs_cli(CONFIGS, dataset="ImageNet", base_network="baseline")
