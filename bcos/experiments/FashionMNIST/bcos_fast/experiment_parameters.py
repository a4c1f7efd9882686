"""Small B-cos ResNets for Fashion-MNIST sized for a 2-core CPU (``python -m bcos.demo --dataset FashionMNIST``).

The recipe follows the measurements in docs/localisation.md ("Fashion-MNIST"): ResNet-8 (one basic
block per stage, widths 16/32/64), uncentred batch norm without bias, B = 2, no MaxOut, logit bias
-log(9), Adam with lr 3e-3 and a cosine schedule, batch size 64, 2-pixel shifts and flips.

Names: ``resnet_<depth>_bnu-linear`` for depth 8, 14 and 20, and variants of each with the
suffixes ``-maxout`` (MaxOut, 2 units), ``-b=<B>`` (B in 1.25, 1.5, 2.5, 3), ``-w32`` (widths
32/64/128), ``-nologitbias`` and ``-epochs=<E>`` (E in 1, 2, 3, 5, 8, 10, 15, 20), e.g.
``resnet_8_bnu-linear-b=2.5-epochs=8``. The default length is 8 epochs.
"""

import math

from bcos.experiments.FashionMNIST.data_presets import NUM_CLASSES, data_config
from bcos.experiments.utils import configs_cli, update_config
from bcos.modules import norms
from bcos.modules.losses import BinaryCrossEntropyLoss
from bcos.optim import LRSchedulerFactory, OptimizerFactory

__all__ = ["CONFIGS", "DEFAULT_NUM_EPOCHS"]

DEFAULT_NUM_EPOCHS = 8
DEFAULT_LR = 3e-3
DEFAULT_BATCH_SIZE = 64


def _epochs(epochs: int) -> dict:
    return dict(lr_scheduler=LRSchedulerFactory(name="cosineannealinglr", epochs=epochs), trainer=dict(max_epochs=epochs))


DEFAULTS = dict(
    data=data_config(is_bcos=True, batch_size=DEFAULT_BATCH_SIZE, num_workers=0),
    model=dict(
        is_bcos=True,
        name="resnet8",
        args=dict(
            num_classes=NUM_CLASSES,
            inplanes=16,
            norm_layer=norms.NoBias(norms.BatchNormUncentered2d),
            logit_bias=-math.log(NUM_CLASSES - 1),
        ),
        bcos_args=dict(b=2, max_out=1),
    ),
    criterion=BinaryCrossEntropyLoss(),
    test_criterion=BinaryCrossEntropyLoss(),
    optimizer=OptimizerFactory(name="Adam", lr=DEFAULT_LR),
    **_epochs(DEFAULT_NUM_EPOCHS),
)

_BASES = {f"resnet_{depth}_bnu-linear": update_config(DEFAULTS, dict(model=dict(name=f"resnet{depth}"))) for depth in (8, 14, 20)}
_VARIANTS = {
    "": {},
    "-maxout": dict(model=dict(bcos_args=dict(max_out=2))),
    **{f"-b={b}": dict(model=dict(bcos_args=dict(b=b))) for b in (1.25, 1.5, 2.5, 3)},
    "-w32": dict(model=dict(args=dict(inplanes=32))),
    "-nologitbias": dict(model=dict(args=dict(logit_bias=0.0))),  # None would mean the default -log(C - 1)
}

CONFIGS = {}
for _base, _config in _BASES.items():
    for _suffix, _change in _VARIANTS.items():
        _variant = update_config(_config, _change)
        CONFIGS[_base + _suffix] = _variant
        for _e in (1, 2, 3, 5, 8, 10, 15, 20):
            CONFIGS[f"{_base}{_suffix}-epochs={_e}"] = update_config(_variant, _epochs(_e))

if __name__ == "__main__":
    configs_cli(CONFIGS, dataset="FashionMNIST", base_network="bcos_fast")
