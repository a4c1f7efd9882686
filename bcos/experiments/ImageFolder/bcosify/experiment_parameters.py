"""B-cosifying a torchvision or timm model and fine-tuning it on your own ImageFolder data.

Like the fine-tuning collection (``ImageFolder/finetune``) this collection has no fixed configs:
``bcos train --bcosify NAME --data-dir FOLDER`` (or :func:`bcos.training.bcosify.bcosify_and_finetune`)
writes a :class:`BcosifySpec` as ``bcosify.json`` into the run folder
``<base>/ImageFolder/bcosify/<name>/``, and :func:`config_of_run_folder` turns it back into the
run's config, so evaluation, ``bcos explain --run`` and the localisation analysis find the run
from its folder.

The recipe (after the B-cosification paper): the standard model with its published weights (or
``weights``), a new classifier for the data's classes, converted by ``bcos.bcosify`` (target B,
biases removed by default so the explanations are complete, logit bias ``-log(K - 1)``),
optionally with B raised linearly from ``b_start`` over ``b_warmup_epochs`` epochs; binary
cross-entropy, Adam with a cosine schedule and one linear warm-up epoch, random-resized-crop and
flip augmentation of ``[x, 1 - x]`` images in [0, 1] (the input normalisation of the original is
folded into its first layer).
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from pathlib import Path
from typing import Any, ClassVar

from bcos.bcosification import BIAS_CHOICES, MAX_POOL_CHOICES
from bcos.data.presets import ImageNetClassificationPresetEval, ImageNetClassificationPresetTrain
from bcos.errors import ConfigError, unknown_name
from bcos.experiments.ImageFolder.finetune.experiment_parameters import FinetuneSpec
from bcos.modules.losses import BinaryCrossEntropyLoss
from bcos.optim import LRSchedulerFactory, OptimizerFactory

__all__ = ["CONFIGS", "DATASET", "COLLECTION", "SPEC_FILENAME", "BcosifySpec", "make_config", "config_of_run_folder"]

DATASET = "ImageFolder"
COLLECTION = "bcosify"
#: the spec file in every B-cosification run folder
SPEC_FILENAME = "bcosify.json"

#: fixed configs: none, every run's config comes from its run folder
CONFIGS: dict[str, dict[str, Any]] = {}


@dataclasses.dataclass
class BcosifySpec(FinetuneSpec):
    """A :class:`FinetuneSpec` whose ``model`` is a torchvision or timm name, plus the B-cosification options.

    Attributes (besides the fine-tuning ones):
        b: the target exponent B.
        b_start: B of the first epoch when B is raised gradually (None: the target from the start).
        b_warmup_epochs: epochs over which B grows linearly from ``b_start`` to ``b``.
        bias: ``"remove"`` (complete explanations, the default) or ``"keep"`` (see ``bcos.bcosify``).
        max_pool: ``"keep"`` or ``"avg"``.
    """

    COLLECTION: ClassVar[str] = COLLECTION
    FILE_NAME: ClassVar[str] = SPEC_FILENAME
    LABEL: ClassVar[str] = "B-cosification"

    b: float = 2.0
    b_start: float | None = None
    b_warmup_epochs: int = 0
    bias: str = "remove"
    max_pool: str = "keep"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.freeze_backbone:
            raise ConfigError("a B-cosified model must learn its new B-cos layers; drop --freeze-backbone")
        for option, value in (("--b", self.b), ("--b-start", self.b_start if self.b_start is not None else 1)):
            # NaN fails the comparison; infinity would also be written as "Infinity", which is not JSON
            if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 1 <= value < math.inf:
                raise ConfigError(f"{option} must be a finite number >= 1 (B = 1 is the original model), got {value!r}")
        if self.b_start is not None and not 1 <= self.b_warmup_epochs < self.epochs:
            raise ConfigError(
                f"--b-warmup-epochs must be between 1 and epochs - 1 ({self.epochs - 1}) so the last epoch trains "
                f"at the target B, got {self.b_warmup_epochs}"
            )
        if self.bias not in BIAS_CHOICES:
            raise unknown_name("bias option", self.bias, BIAS_CHOICES)
        if self.max_pool not in MAX_POOL_CHOICES:
            raise unknown_name("max_pool option", self.max_pool, MAX_POOL_CHOICES)


def logit_bias_for(num_classes: int) -> float:
    """``-log(K - 1)``: every class has the sigmoid probability 1/K for an all-zero input (0 for K = 1)."""
    return -math.log(num_classes - 1) if num_classes > 1 else 0.0


def make_config(spec: BcosifySpec) -> dict[str, Any]:
    """The training config of ``spec`` (``model.init`` names the starting weights, as in fine-tuning)."""
    resize = round(spec.image_size * 256 / 224)
    warmup = dict(warmup_method="linear", warmup_epochs=1, warmup_decay=0.01) if spec.epochs > 1 else {}
    criterion = BinaryCrossEntropyLoss()
    config: dict[str, Any] = dict(
        data=dict(
            train_transform=ImageNetClassificationPresetTrain(crop_size=spec.image_size, is_bcos=True),
            test_transform=ImageNetClassificationPresetEval(crop_size=spec.image_size, resize_size=resize, is_bcos=True),
            batch_size=spec.batch_size,
            num_workers=spec.num_workers,
            num_classes=spec.num_classes,
            root=spec.data_dir,
        ),
        model=dict(
            is_bcos=True,
            name=spec.model,
            args=dict(num_classes=spec.num_classes),
            bcosify=dict(b=spec.b, bias=spec.bias, max_pool=spec.max_pool, logit_bias=logit_bias_for(spec.num_classes)),
            categories=list(spec.categories),
            init={"pretrained": spec.pretrained, "weights": spec.weights},
        ),
        criterion=criterion,
        test_criterion=criterion,
        optimizer=OptimizerFactory(name="Adam", lr=spec.lr)
        if spec.weight_decay == 0
        else OptimizerFactory(name="AdamW", lr=spec.lr, weight_decay=spec.weight_decay),
        lr_scheduler=LRSchedulerFactory(name="cosineannealinglr", epochs=spec.epochs, **warmup),
        trainer=dict(max_epochs=spec.epochs),
        seed=spec.seed,
    )
    if spec.b_start is not None:
        config["b_schedule"] = dict(start=spec.b_start, end=spec.b, epochs=spec.b_warmup_epochs)
    return config


def config_of_run_folder(run_folder: Path) -> dict[str, Any]:
    """The config of the B-cosification run in ``run_folder``, from the spec the run saved there."""
    if not (run_folder / SPEC_FILENAME).is_file():
        beside = sorted(p.parent.name for p in run_folder.parent.glob(f"*/{SPEC_FILENAME}")) if run_folder.parent.is_dir() else []
        raise unknown_name(
            "B-cosification run", run_folder.name, beside,
            hint=f"a B-cosification run folder holds {SPEC_FILENAME}; none is in {run_folder} "
            "(start one with bcos train --bcosify NAME --data-dir FOLDER)",
        )  # fmt: skip
    spec = BcosifySpec.read(run_folder)
    if spec.name != run_folder.name:
        raise ConfigError(f"{run_folder / SPEC_FILENAME} names the run {spec.name!r}, not {run_folder.name!r}; rename the folder back")
    return make_config(spec)


if __name__ == "__main__":
    from bcos.experiments.utils import configs_cli

    configs_cli(CONFIGS, dataset=DATASET, base_network=COLLECTION)
