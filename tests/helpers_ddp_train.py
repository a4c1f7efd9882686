"""``train.py`` for the multi-process tests: the real command line with one small Digits config added.

Run as a script (``python tests/helpers_ddp_train.py <train.py options>``, also under ``torchrun``
and with ``--devices N``, whose extra processes Lightning starts with the same command). It adds the
collection ``Digits/ddp_test`` with one config, ``tiny``: a small B-cos CNN with uncentred batch
norm on the bundled digits (random crops, so every process's augmentation stream matters), 2
epochs of 8 steps. With ``BCOS_TEST_SIGTERM_AT_STEP=<n>`` rank 0 sends itself SIGTERM in its n-th
training step, as a scheduler or ``kill`` would (``BCOS_TEST_SIGNAL=SIGINT`` sends SIGINT instead, as Ctrl-C).
"""

from __future__ import annotations

import math
import os
import signal
import sys
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the bcos of this checkout

import bcos.experiments.utils.collections as collections_module  # noqa: E402
import bcos.experiments.utils.experiment as experiment_module  # noqa: E402
from bcos.cli.train import main  # noqa: E402
from bcos.data.presets import CIFAR10ClassificationPresetTest, CIFAR10ClassificationPresetTrain  # noqa: E402
from bcos.models.base import BcosUtilMixin  # noqa: E402
from bcos.modules import BcosConv2d, BinaryCrossEntropyLoss, LogitLayer  # noqa: E402
from bcos.modules.norms import BatchNormUncentered2d  # noqa: E402
from bcos.optim import LRSchedulerFactory, OptimizerFactory  # noqa: E402

COLLECTION = "ddp_test"
EXPERIMENT = "tiny"
EPOCHS = 2
STEPS_PER_EPOCH = 8
SIGTERM_ENV = "BCOS_TEST_SIGTERM_AT_STEP"
SIGNAL_ENV = "BCOS_TEST_SIGNAL"


class TinyNet(BcosUtilMixin, nn.Module):
    """Two strided B-cos convolutions with uncentred batch norm and a 1x1 classifier."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(
            BcosConv2d(6, 8, kernel_size=3, padding=1, stride=2),
            BatchNormUncentered2d(8),
            BcosConv2d(8, 8, kernel_size=3, padding=1, stride=2),
        )
        self.classifier = BcosConv2d(8, num_classes, kernel_size=1)
        self.logit_layer = LogitLayer(logit_bias=-math.log(num_classes - 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logit_layer(self.classifier(self.features(x)).mean(dim=(2, 3)))


class SigtermAtStep(nn.Module):
    """The training loss; on rank 0 it sends SIGTERM to its own process at step ``$BCOS_TEST_SIGTERM_AT_STEP``."""

    def __init__(self) -> None:
        super().__init__()
        self.loss = BinaryCrossEntropyLoss()
        self.steps = 0

    def forward(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        self.steps += 1
        at = os.environ.get(SIGTERM_ENV)
        rank = os.environ.get("RANK") or os.environ.get("LOCAL_RANK") or "0"
        if at and self.steps == int(at) and rank == "0":
            os.kill(os.getpid(), getattr(signal, os.environ.get(SIGNAL_ENV, "SIGTERM")))
        return self.loss(outputs, targets)


CONFIG = dict(
    data=dict(
        train_transform=CIFAR10ClassificationPresetTrain(is_bcos=True, hflip_prob=0.0, padding=2),
        test_transform=CIFAR10ClassificationPresetTest(is_bcos=True),
        batch_size=16,
        num_workers=0,
        num_classes=10,
    ),
    model=dict(is_bcos=True, name="tiny_ddp_net", args=dict(num_classes=10)),
    criterion=SigtermAtStep(),
    test_criterion=BinaryCrossEntropyLoss(),
    optimizer=OptimizerFactory(name="Adam", lr=1e-2),
    lr_scheduler=LRSchedulerFactory(name="cosineannealinglr", epochs=EPOCHS),
    trainer=dict(
        max_epochs=EPOCHS,
        limit_train_batches=STEPS_PER_EPOCH,
        limit_val_batches=2,
        num_sanity_val_steps=0,
        enable_model_summary=False,
        log_every_n_steps=1,
    ),
)


def _lookup(original):
    def lookup(dataset: str, base_network: str):
        if (dataset, base_network) == ("Digits", COLLECTION):
            return {EXPERIMENT: CONFIG}, lambda model_config: TinyNet(**model_config.get("args", {}))
        return original(dataset, base_network)

    return lookup


if __name__ == "__main__":
    lookup = _lookup(collections_module.get_configs_and_model_factory)
    collections_module.get_configs_and_model_factory = lookup
    experiment_module.get_configs_and_model_factory = lookup
    raise SystemExit(main())
