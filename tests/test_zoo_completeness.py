"""Completeness for every CNN of the model zoo: the contributions add up to the logit.

Each published CNN is built untrained (its released architecture and arguments), its batch-norm
statistics are set from one batch so that activations neither vanish nor explode through 100+
layers (random weights with the default running statistics leave contributions at ~1e-7), and
``Σ x ⊙ W(x) + logit_bias == logit`` is checked to 1e-4 relative in eval mode (in float64).
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import bcos
from bcos.explain import check_completeness
from bcos.models.registry import get_pretrained_config

CNNS = [name for name in bcos.list_models() if get_pretrained_config(name).kind == "bcos_cnn"]


def _calibrate_norm_statistics(model: nn.Module, inputs: torch.Tensor) -> nn.Module:
    """Running statistics = those of ``inputs`` (cumulative average over one batch), then eval."""
    for module in model.modules():
        if hasattr(module, "running_var"):
            module.momentum = None
            module.reset_running_stats()
    model.train()
    with torch.no_grad():
        model(inputs)
    return model.eval()


def test_every_cnn_of_the_zoo_is_covered():
    assert len(CNNS) == 18
    assert {"resnet18", "resnext50_32x4d", "densenet201", "vgg11_bnu", "convnext_base_bnu"} <= set(CNNS)


@pytest.mark.slow
@pytest.mark.parametrize("name", CNNS)
def test_contributions_plus_logit_bias_equal_the_logit(name):
    torch.manual_seed(0)
    images = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    inputs = torch.cat([images, 1 - images], dim=1)
    # float64: untrained, the deep nets explain only ~1e-9 of a logit of -6.9 (the bias), below
    # float32 round-off; in float64 the relative check is meaningful for every model
    inputs = inputs.double()
    model = _calibrate_norm_statistics(bcos.create_model(name).double(), inputs)
    result = check_completeness(model, inputs[:2], target=[0, 7])
    assert result.logit_bias == pytest.approx(-6.9068, abs=1e-4)  # -log(999): the bias is accounted for
    contributions = result.contribution_sum
    assert (contributions.abs() > 1e-12).all(), "the check must not be vacuous"
    # relative to the part of the logit the pixels explain (the bias is exact and would hide errors)
    assert (result.abs_error <= 1e-4 * contributions.abs()).all(), (result.abs_error, contributions)
