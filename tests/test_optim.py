"""Optimizer and LR-scheduler factories: what they build, their fixes of the reference bugs, and
the measured learning-rate sequences of the reference configs."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from torch import nn

from bcos.errors import ConfigError, UnknownNameError
from bcos.modules import norms
from bcos.optim import LRSchedulerFactory, OptimizerFactory


def tiny_model() -> nn.Module:
    """Parameters of every kind (never run forward)."""
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, bias=False),
        nn.BatchNorm2d(4),
        norms.BatchNormUncentered2d(4),
        nn.Flatten(),
        nn.Linear(4, 2),
    )


def lr_sequence(factory: LRSchedulerFactory, steps: int, total_steps: int | None = None) -> list[float]:
    """The learning rate in effect at each of ``steps`` scheduler periods."""
    param = nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.Adam([param], lr=1e-3)
    scheduler = factory.create(optimizer, total_steps)["scheduler"]
    lrs = []
    for _ in range(steps):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return lrs


# ---------------------------------------------------------------- optimizers
@pytest.mark.parametrize(
    "name, cls",
    [("Adam", torch.optim.Adam), ("adamw", torch.optim.AdamW), ("SGD", torch.optim.SGD), ("RMSprop", torch.optim.RMSprop)],
)
def test_optimizer_names_case_insensitive(name, cls):
    optimizer = OptimizerFactory(name, lr=0.5).create(tiny_model())
    assert type(optimizer) is cls
    assert optimizer.param_groups[0]["lr"] == 0.5


def test_unknown_optimizer_suggests_closest():
    with pytest.raises(UnknownNameError, match="did you mean 'AdamW'"):
        OptimizerFactory("AdamWW", lr=1e-3)


def test_adamw_without_weight_decay_uses_torch_default():
    # the reference raised KeyError here
    optimizer = OptimizerFactory("AdamW", lr=1e-3).create(tiny_model())
    assert optimizer.param_groups[0]["weight_decay"] == torch.optim.AdamW([nn.Parameter(torch.zeros(1))]).defaults["weight_decay"]


def test_rmsprop_defaults_of_torchvision_recipe():
    group = OptimizerFactory("rmsprop", lr=1e-3).create(tiny_model()).param_groups[0]
    assert (group["eps"], group["alpha"]) == (0.0316, 0.9)
    group = OptimizerFactory("rmsprop", lr=1e-3, eps=1e-8).create(tiny_model()).param_groups[0]
    assert group["eps"] == 1e-8


def test_weight_decay_applies_to_every_parameter_by_default():
    model = tiny_model()
    optimizer = OptimizerFactory("SGD", lr=0.1, momentum=0.9, weight_decay=1e-4).create(model)
    assert len(optimizer.param_groups) == 1
    assert optimizer.param_groups[0]["weight_decay"] == 1e-4
    assert sum(p.numel() for p in optimizer.param_groups[0]["params"]) == sum(p.numel() for p in model.parameters())


def test_norm_and_bias_weight_decay_only_when_asked():
    model = tiny_model()
    factory = OptimizerFactory("AdamW", lr=1e-3, weight_decay=0.05, norm_weight_decay=0.0, bias_weight_decay=0.0)
    groups = factory.create(model).param_groups
    decayed = {id(p) for g in groups if g["weight_decay"] == 0.05 for p in g["params"]}
    assert decayed == {id(model[0].weight), id(model[4].weight)}
    zero = {id(p) for g in groups if g["weight_decay"] == 0.0 for p in g["params"]}
    # torch's BatchNorm and the uncentred B-cos norm (the reference missed the latter), plus the linear bias
    expected = {id(model[1].weight), id(model[1].bias), id(model[2].weight), id(model[2].bias), id(model[4].bias)}
    assert zero == expected
    # every parameter exactly once
    all_ids = [id(p) for g in groups for p in g["params"]]
    assert sorted(all_ids) == sorted(id(p) for p in model.parameters())


def test_adam_with_weight_decay_warns():
    with pytest.warns(UserWarning, match="AdamW"):
        OptimizerFactory("Adam", lr=1e-3, weight_decay=1e-4).create(tiny_model())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        OptimizerFactory("Adam", lr=1e-3).create(tiny_model())


def test_with_methods_keep_other_arguments():
    base = OptimizerFactory("SGD", lr=0.1, momentum=0.9, weight_decay=1e-4)
    changed = base.with_args(nesterov=True)
    assert changed.args == dict(lr=0.1, momentum=0.9, weight_decay=1e-4, nesterov=True)  # reference dropped them
    assert base.with_args(momentum=0.5).args["momentum"] == 0.5
    assert base.with_lr(0.2).args == dict(lr=0.2, momentum=0.9, weight_decay=1e-4)
    assert base.with_name("AdamW").name == "AdamW" and base.with_name("AdamW").args == base.args
    assert base.args == dict(lr=0.1, momentum=0.9, weight_decay=1e-4)  # unchanged
    with pytest.raises(ConfigError, match="with_lr"):
        base.with_args(lr=1.0)


def test_optimizer_repr_and_config():
    factory = OptimizerFactory("AdamW", lr=1e-3, weight_decay=1e-4)
    assert repr(factory) == "OptimizerFactory(optimizer='AdamW', lr=0.001, weight_decay=0.0001)"
    assert factory.__to_config__() == dict(name="adamw", lr=1e-3, weight_decay=1e-4)
    assert factory == OptimizerFactory("adamw", lr=1e-3, weight_decay=1e-4)


def test_negative_lr_rejected():
    with pytest.raises(ConfigError, match="lr"):
        OptimizerFactory("Adam", lr=-1)


# ---------------------------------------------------------------- schedulers
def test_bcos_final_epoch_schedule_matches_reference_measurement():
    # inventory 3.3 [measured]: 1.0e-5, 2.08e-4, 4.06e-4, 6.04e-4, 8.02e-4, then 1e-3 at epoch 5,
    # cosine decay to ~3e-7 at epoch 89
    factory = LRSchedulerFactory("cosineannealinglr", epochs=90, warmup_method="linear", warmup_epochs=5, warmup_decay=0.01)
    lrs = lr_sequence(factory, 90)
    assert lrs[:6] == pytest.approx([1.0e-5, 2.08e-4, 4.06e-4, 6.04e-4, 8.02e-4, 1e-3], rel=1e-9)
    expected_tail = [1e-3 * (1 + math.cos(math.pi * (e - 5) / 85)) / 2 for e in range(5, 90)]
    assert lrs[5:] == pytest.approx(expected_tail, rel=1e-6, abs=1e-12)
    assert lrs[89] == pytest.approx(3.4e-7, rel=0.01)
    assert factory.create(torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1))["interval"] == "epoch"


def test_step_interval_with_warmup_steps():
    # the ViT schedule in small: 10 epochs of 20 steps, warmup of 30 steps
    factory = LRSchedulerFactory(
        "cosineannealinglr", epochs=10, warmup_method="linear", warmup_steps=30, interval="step", warmup_decay=0.01
    )
    lrs = lr_sequence(factory, 200, total_steps=200)
    assert lrs[0] == pytest.approx(1e-5)
    assert lrs[15] == pytest.approx(1e-3 * (0.01 + 0.99 * 15 / 30))
    assert lrs[30] == pytest.approx(1e-3)
    assert lrs[30 + 85] == pytest.approx(1e-3 * (1 + math.cos(math.pi * 85 / 170)) / 2)
    param = nn.Parameter(torch.zeros(1))
    result = factory.create(torch.optim.Adam([param], lr=1e-3), total_steps=200)
    assert result["interval"] == "step"


def test_warmup_epochs_with_step_interval_and_constant_warmup():
    factory = LRSchedulerFactory("steplr", step_size=2, gamma=0.5, epochs=6, interval="step", warmup_epochs=1)
    lrs = lr_sequence(factory, 60, total_steps=60)  # 10 steps per epoch
    assert lrs[:10] == pytest.approx([1e-5] * 10)  # constant warmup at 0.01 * lr
    assert lrs[10] == pytest.approx(1e-3)
    assert lrs[30] == pytest.approx(5e-4)  # step_size 2 epochs = 20 steps after the warmup


def test_steplr_and_exponential_epoch_schedules():
    assert lr_sequence(LRSchedulerFactory("steplr", step_size=30, gamma=0.1), 91)[::30] == pytest.approx(
        [1e-3, 1e-4, 1e-5, 1e-6]
    )
    assert lr_sequence(LRSchedulerFactory("ExponentialLR", gamma=0.5), 4) == pytest.approx([1e-3, 5e-4, 2.5e-4, 1.25e-4])


def test_with_epochs_keeps_warmup_steps():
    factory = LRSchedulerFactory("cosineannealinglr", epochs=90, warmup_steps=10_000, interval="step", warmup_method="linear")
    longer = factory.with_epochs(100)
    assert longer.epochs == 100 and longer.warmup_steps == 10_000  # the reference dropped warmup_steps
    assert longer.warmup_method == "linear" and longer.interval == "step"
    assert factory.epochs == 90


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(name="cosineannealinglr"), "epochs"),
        (dict(name="steplr", interval="step"), "epochs"),
        (dict(name="steplr", epochs=5, warmup_epochs=1, warmup_steps=10, interval="step"), "not both"),
        (dict(name="steplr", warmup_steps=10), 'interval="step"'),
        (dict(name="steplr", warmup_epochs=0), "positive"),
        (dict(name="steplr", warmup_decay=0.0), "warmup_decay"),
        (dict(name="cosineannealinglr", epochs=5, warmup_epochs=5), "fewer"),
    ],
)
def test_invalid_schedules_raise_config_error(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        LRSchedulerFactory(**kwargs)


def test_unknown_scheduler_and_step_without_total_steps():
    with pytest.raises(UnknownNameError, match="cosineannealinglr"):
        LRSchedulerFactory("cosine_annealing_lr", epochs=3)
    factory = LRSchedulerFactory("cosineannealinglr", epochs=3, interval="step")
    with pytest.raises(ConfigError, match="total_steps"):
        factory.create(torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1))


def test_scheduler_repr_and_config():
    factory = LRSchedulerFactory("CosineAnnealingLR", epochs=90, warmup_method="linear", warmup_epochs=5)
    assert repr(factory) == (
        "LRSchedulerFactory(scheduler='cosineannealinglr', epochs=90, lr_min=0.0, warmup_method='linear', "
        "warmup_epochs=5, warmup_steps=None, warmup_decay=0.01, interval='epoch')"
    )
    assert factory.__to_config__() == dict(
        name="cosineannealinglr", epochs=90, lr_min=0.0, warmup_method="linear", warmup_epochs=5,
        warmup_steps=None, warmup_decay=0.01, interval="epoch",
    )
    assert LRSchedulerFactory("steplr").__to_config__() == dict(name="steplr", step_size=30, gamma=0.1, interval="epoch")
