"""Simple vision transformers on ImageNet, B-cos and standard (paper: https://arxiv.org/abs/2205.01580).

Names (16): the standard ``simple_vit_{ti,s,b,l}_patch16_224`` and ``vitc_{ti,s,b,l}_patch1_14``
(conv stem), and the B-cos ``bcos_<same 8>``. 90 epochs, batch 128 per GPU (8 GPUs: 1024 in all);
"big" models (``simple_vit_b``, ``*_l_*``) use 64 per GPU and a 50k-step warmup instead of 10k.
"""

import math

from torch import nn

from bcos.data.presets import ImageNetClassificationPresetEval, ImageNetClassificationPresetTrain
from bcos.experiments.utils import configs_cli, update_config
from bcos.modules import norms
from bcos.modules.losses import BinaryCrossEntropyLoss, UniformOffLabelsBCEWithLogitsLoss
from bcos.optim import LRSchedulerFactory, OptimizerFactory

__all__ = ["CONFIGS"]

NUM_CLASSES = 1_000

DEFAULT_BATCH_SIZE = 128  # per GPU! * 8 = 1024 effective
DEFAULT_NUM_EPOCHS = 90
DEFAULT_LR = 1e-3
DEFAULT_CROP_SIZE = 224


def _warmup_schedule(warmup_steps: int) -> LRSchedulerFactory:
    return LRSchedulerFactory(
        name="cosineannealinglr",
        epochs=DEFAULT_NUM_EPOCHS,
        warmup_method="linear",
        warmup_steps=warmup_steps,
        interval="step",
        warmup_decay=0.01,
    )


DEFAULT_LR_SCHEDULE = _warmup_schedule(10_000)
LONG_WARM_SCHEDULE = _warmup_schedule(50_000)

DEFAULTS = dict(
    data=dict(
        batch_size=DEFAULT_BATCH_SIZE,
        num_workers=16,
        num_classes=NUM_CLASSES,
        mixup_alpha=0.2,
    ),
    model=dict(args=dict(num_classes=NUM_CLASSES)),
    lr_scheduler=DEFAULT_LR_SCHEDULE,
    trainer=dict(max_epochs=DEFAULT_NUM_EPOCHS),
    use_agc=True,
)

ARCHITECTURES = [
    "simple_vit_ti_patch16_224",
    "simple_vit_s_patch16_224",
    "simple_vit_b_patch16_224",
    "simple_vit_l_patch16_224",
    "vitc_s_patch1_14",
    "vitc_ti_patch1_14",
    "vitc_b_patch1_14",
    "vitc_l_patch1_14",
]


def is_big_model(name: str) -> bool:
    """Models trained with half the batch per GPU and the long warmup."""
    return "_l_" in name or "simple_vit_b" in name


def _data(name: str, is_bcos: bool) -> dict:
    return dict(
        batch_size=DEFAULT_BATCH_SIZE // 2 if is_big_model(name) else DEFAULT_BATCH_SIZE,
        train_transform=ImageNetClassificationPresetTrain(
            crop_size=DEFAULT_CROP_SIZE, auto_augment_policy="ra", ra_magnitude=10, is_bcos=is_bcos
        ),
        test_transform=ImageNetClassificationPresetEval(crop_size=DEFAULT_CROP_SIZE, is_bcos=is_bcos),
    )


def _schedule(name: str) -> LRSchedulerFactory:
    return LONG_WARM_SCHEDULE if is_big_model(name) else DEFAULT_LR_SCHEDULE


standard = {
    name: update_config(
        DEFAULTS,
        dict(
            data=_data(name, is_bcos=False),
            model=dict(
                is_bcos=False,
                name=name,
                # linear_layer and conv2d_layer are set by model.py
                args=dict(
                    norm_layer=nn.LayerNorm,
                    norm2d_layer=norms.DetachableGNLayerNorm2d,
                    act_layer=nn.GELU,
                    channels=3,
                ),
            ),
            criterion=nn.CrossEntropyLoss(),
            test_criterion=nn.CrossEntropyLoss(),
            optimizer=OptimizerFactory("AdamW", lr=DEFAULT_LR, weight_decay=0.0001),
            use_agc=False,
            lr_scheduler=_schedule(name),
            trainer=dict(gradient_clip_val=1.0),
        ),
    )
    for name in ARCHITECTURES
}

bcos = {
    f"bcos_{name}": update_config(
        DEFAULTS,
        dict(
            data=dict(**_data(name, is_bcos=True), num_workers=10),
            model=dict(
                is_bcos=True,
                name=name,
                # linear_layer and conv2d_layer are set by model.py
                args=dict(
                    norm_layer=norms.NoBias(norms.DetachableLayerNorm),
                    act_layer=nn.Identity,
                    channels=6,
                    norm2d_layer=norms.NoBias(norms.DetachableGNLayerNorm2d),
                ),
                bcos_args=dict(b=2, max_out=1),
                logit_bias=math.log(1 / (NUM_CLASSES - 1)),
            ),
            criterion=UniformOffLabelsBCEWithLogitsLoss(),
            test_criterion=BinaryCrossEntropyLoss(),
            optimizer=OptimizerFactory("Adam", lr=DEFAULT_LR),
            lr_scheduler=_schedule(name),
        ),
    )
    for name in ARCHITECTURES
}

CONFIGS = {**standard, **bcos}

if __name__ == "__main__":
    configs_cli(CONFIGS, dataset="ImageNet", base_network="vit_final")
