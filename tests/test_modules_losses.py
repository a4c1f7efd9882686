"""Losses against hand-written binary cross-entropy; LogitLayer (including a bias of exactly 0)."""

from __future__ import annotations

import math

import pytest
import torch

from bcos.errors import ConfigError, InputError, UnknownNameError
from bcos.modules import BinaryCrossEntropyLoss, LogitLayer, UniformOffLabelsBCEWithLogitsLoss


def hand_bce(logits: torch.Tensor, targets: torch.Tensor, weight=None, pos_weight=None) -> torch.Tensor:
    """Elementwise -[p·t·log σ(x) + (1 - t)·log(1 - σ(x))]·w, in float64."""
    x, t = logits.double(), targets.double()
    p = 1.0 if pos_weight is None else pos_weight.double()
    w = 1.0 if weight is None else weight.double()
    sig = torch.sigmoid(x)
    return -(p * t * torch.log(sig) + (1 - t) * torch.log(1 - sig)) * w


@pytest.fixture
def batch():
    torch.manual_seed(0)
    return torch.randn(4, 5), torch.tensor([0, 3, 4, 3])


def test_bce_with_class_indices(batch):
    logits, labels = batch
    one_hot = torch.nn.functional.one_hot(labels, 5).double()
    loss = BinaryCrossEntropyLoss()(logits, labels)
    torch.testing.assert_close(loss.double(), hand_bce(logits, one_hot).mean())
    summed = BinaryCrossEntropyLoss(reduction="sum")(logits, labels)
    torch.testing.assert_close(summed.double(), hand_bce(logits, one_hot).sum())
    none = BinaryCrossEntropyLoss(reduction="none")(logits, labels.int())
    assert none.shape == (4, 5)


def test_bce_smoothing_applies_to_dense_targets_too(batch):
    logits, labels = batch
    dense = torch.softmax(torch.randn(4, 5), dim=1)  # e.g. mixed-up targets
    s = 0.1
    loss = BinaryCrossEntropyLoss(smoothing=s)(logits, dense)
    torch.testing.assert_close(loss.double(), hand_bce(logits, dense * (1 - s) + s / 5).mean())
    one_hot = torch.nn.functional.one_hot(labels, 5).double()
    loss = BinaryCrossEntropyLoss(smoothing=s)(logits, labels)
    torch.testing.assert_close(loss.double(), hand_bce(logits, one_hot * 0.9 + 0.02).mean())


def test_bce_threshold_weight_and_pos_weight(batch):
    logits, _ = batch
    dense = torch.tensor([[0.1, 0.5, 0.2, 0.9, 0.0]]).repeat(4, 1)
    weight, pos_weight = torch.rand(5), torch.rand(5) + 0.5
    loss = BinaryCrossEntropyLoss(target_threshold=0.3, weight=weight, pos_weight=pos_weight)(logits, dense)
    thresholded = (dense > 0.3).double()
    torch.testing.assert_close(loss.double(), hand_bce(logits, thresholded, weight, pos_weight).mean())
    module = BinaryCrossEntropyLoss(weight=weight)
    assert "weight" in dict(module.named_buffers())


def test_uniform_off_labels(batch):
    logits, labels = batch
    loss = UniformOffLabelsBCEWithLogitsLoss()(logits, labels)
    targets = torch.full((4, 5), 0.2, dtype=torch.float64)
    targets[torch.arange(4), labels] = 1.0
    torch.testing.assert_close(loss.double(), hand_bce(logits, targets).mean())
    # dense targets below the off value are raised to it; off_label overrides 1/C
    dense = torch.tensor([[0.0, 0.05, 0.5, 0.45, 0.0]]).repeat(4, 1)
    loss = UniformOffLabelsBCEWithLogitsLoss(off_label=0.1, reduction="sum")(logits, dense)
    torch.testing.assert_close(loss.double(), hand_bce(logits, dense.clamp(min=0.1)).sum())
    # an off label of exactly 0 means plain BCE (the reference fell back to 1/C)
    loss = UniformOffLabelsBCEWithLogitsLoss(off_label=0.0)(logits, labels)
    torch.testing.assert_close(loss.double(), hand_bce(logits, torch.nn.functional.one_hot(labels, 5)).mean())


def test_losses_print_themselves_and_validate():
    assert repr(BinaryCrossEntropyLoss()) == "BinaryCrossEntropyLoss(reduction='mean')"
    assert (
        repr(BinaryCrossEntropyLoss(smoothing=0.1, target_threshold=0.2, pos_weight=torch.ones(3)))
        == "BinaryCrossEntropyLoss(reduction='mean', smoothing=0.1, target_threshold=0.2, pos_weight=tensor(shape=[3]))"
    )
    assert repr(UniformOffLabelsBCEWithLogitsLoss()) == "UniformOffLabelsBCEWithLogitsLoss(reduction='mean')"
    assert (
        repr(UniformOffLabelsBCEWithLogitsLoss(off_label=0.001))
        == "UniformOffLabelsBCEWithLogitsLoss(reduction='mean', off_label=0.001)"
    )
    with pytest.raises(UnknownNameError, match="did you mean 'mean'"):
        BinaryCrossEntropyLoss(reduction="meen")
    with pytest.raises(ConfigError, match="smoothing"):
        BinaryCrossEntropyLoss(smoothing=1.0)
    with pytest.raises(ConfigError, match="off_label"):
        UniformOffLabelsBCEWithLogitsLoss(off_label=1.5)
    with pytest.raises(InputError, match="batch size"):
        BinaryCrossEntropyLoss()(torch.randn(4, 5), torch.tensor([1, 2]))
    with pytest.raises(InputError, match="class indices"):
        UniformOffLabelsBCEWithLogitsLoss()(torch.randn(4, 5), torch.rand(4))


def test_logit_layer():
    x = torch.tensor([[1.0, -2.0]])
    zero = LogitLayer(logit_bias=0.0)
    assert zero.logit_bias == 0.0 and zero.logit_bias is not None
    assert zero.extra_repr() == "logit_bias=0.0"
    torch.testing.assert_close(zero(x), x)
    bias = -math.log(10 - 1)
    layer = LogitLayer(logit_temperature=2.0, logit_bias=bias)
    torch.testing.assert_close(layer(x), x / 2 + bias)
    assert repr(layer) == f"LogitLayer(logit_temperature=2.0, logit_bias={bias})"
    assert LogitLayer().extra_repr() == "" and LogitLayer()(x) is x
    assert list(layer.state_dict()) == []
    with pytest.raises(ConfigError, match="logit_temperature"):
        LogitLayer(logit_temperature=0)
