"""B-cos ImageNet models with the long torchvision recipe: 600 epochs on 8 GPUs (2 nodes x 4).

Names (7): ``resnet_50``, ``resnet_152``, ``densenet_121``, ``convnext_tiny_bnu``,
``convnext_base_bnu``, ``convnext_tiny_pn``, ``convnext_base_pn``. Batch size 128 per GPU
(8 GPUs: 1024 in all); ``resnet_152`` and the base ConvNeXts use 64 per GPU and accumulate
gradients over 2 batches. TrivialAugment, random erasing, mixup / cutmix, repeated augmentation
(not for the DenseNet), EMA of the weights, AGC.
"""

import math

from bcos.data.presets import ImageNetClassificationPresetEval, ImageNetClassificationPresetTrain
from bcos.experiments.utils import configs_cli, update_config
from bcos.modules import norms
from bcos.modules.losses import BinaryCrossEntropyLoss, UniformOffLabelsBCEWithLogitsLoss
from bcos.optim import LRSchedulerFactory, OptimizerFactory

__all__ = ["CONFIGS"]

NUM_CLASSES = 1_000

# mainly the torchvision recipes: https://github.com/pytorch/vision/blob/93723b481d1f6e/references/classification/README.md
DEFAULT_BATCH_SIZE = 128  # per GPU! * 8 = 1024 effective
DEFAULT_NUM_EPOCHS = 600
DEFAULT_LR = 1e-3
DEFAULT_CROP_SIZE = 176

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
        train_transform=ImageNetClassificationPresetTrain(
            crop_size=DEFAULT_CROP_SIZE,
            auto_augment_policy="ta_wide",
            random_erase_prob=0.1,
            is_bcos=True,
        ),
        test_transform=ImageNetClassificationPresetEval(crop_size=224, resize_size=232, is_bcos=True),
        batch_size=DEFAULT_BATCH_SIZE,
        num_workers=16,
        num_classes=NUM_CLASSES,
        mixup_alpha=0.2,
        cutmix_alpha=1.0,
        ra_repetitions=4,
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
    ema=dict(steps=32, decay=0.99998),
    use_agc=True,
)

# half the batch per GPU, two batches per optimizer step: the same effective batch of 1024
HALF_BATCH = dict(data=dict(batch_size=DEFAULT_BATCH_SIZE // 2), trainer=dict(accumulate_grad_batches=2))


def _with_model(name: str, args: dict | None = None, *changes: dict) -> dict:
    config = update_config(DEFAULTS, dict(model=dict(name=name, args=args or {})))
    for change in changes:
        config = update_config(config, change)
    return config


CONFIGS = {
    "resnet_50": _with_model("resnet50", dict(stochastic_depth_prob=0.1)),
    "resnet_152": _with_model("resnet152", dict(stochastic_depth_prob=0.1), HALF_BATCH),
    # the DenseNet is already small (few parameters): more regularisation would only hurt
    "densenet_121": _with_model("densenet121", None, dict(data=dict(ra_repetitions=None))),
    # ConvNeXts: stochastic depth on by default; "_pn" keeps the model's default position norm
    "convnext_tiny_bnu": _with_model("convnext_tiny"),
    "convnext_base_bnu": _with_model("convnext_base", None, HALF_BATCH),
    "convnext_tiny_pn": _with_model("convnext_tiny", dict(norm_layer=None)),
    "convnext_base_pn": _with_model("convnext_base", dict(norm_layer=None), HALF_BATCH),
}

if __name__ == "__main__":
    configs_cli(CONFIGS, dataset="ImageNet", base_network="bcos_final_long")
