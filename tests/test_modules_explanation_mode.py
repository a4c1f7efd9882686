"""explanation_mode: discovery on every entry, nesting, exceptions, decorator use, dynamic linearity."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from bcos.errors import ConfigError
from bcos.modules import (
    BcosConv2d,
    BcosLinear,
    DetachableModule,
    LogitLayer,
    explanation_mode,
)
from bcos.modules.norms import (
    AllNormUncentered2d,
    BatchNorm2d,
    BatchNormUncentered2d,
    GNLayerNormUncentered2d,
    GroupNormUncentered2d,
    NoBias,
    PositionNormUncentered2d,
    Unaffine,
)


class DuckTyped(nn.Module):
    """Takes part through set_explanation_mode only (no readable state)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[bool] = []

    def set_explanation_mode(self, activate: bool = True) -> None:
        self.calls.append(activate)


def _states(model: nn.Module) -> list[bool]:
    return [m.is_in_explanation_mode for m in model.modules() if isinstance(m, DetachableModule)]


def test_context_switches_on_and_restores():
    model = nn.Sequential(BcosConv2d(3, 4), nn.Sequential(BcosLinear(4, 2)))
    assert _states(model) == [False, False]
    context = explanation_mode(model)
    with context as entered:
        assert entered is model
        assert _states(model) == [True, True]
    assert _states(model) == [False, False]


def test_modules_added_after_creation_are_discovered_on_entry():
    model = nn.Sequential(BcosConv2d(3, 4))
    context = explanation_mode(model)
    with context:
        pass
    model.append(BcosConv2d(4, 4))  # the reference cached the module list on first entry
    duck = DuckTyped()
    model.append(duck)
    with context:
        assert _states(model) == [True, True]
        assert duck.calls == [True]
    assert _states(model) == [False, False]
    assert duck.calls == [True, False]


def test_nesting_restores_the_outer_state():
    inner_model = BcosConv2d(3, 4)
    duck = DuckTyped()
    model = nn.Sequential(inner_model, duck)
    with explanation_mode(model):
        with explanation_mode(inner_model):
            assert inner_model.is_in_explanation_mode
        assert inner_model.is_in_explanation_mode  # still inside the outer context
        with explanation_mode(duck):
            pass
        assert duck.calls == [True, True, True]  # the duck's inner exit restored True
    assert not inner_model.is_in_explanation_mode
    assert duck.calls[-1] is False


def test_exceptions_restore_and_propagate():
    model = nn.Sequential(BcosConv2d(3, 4), BcosLinear(4, 2))
    with pytest.raises(RuntimeError, match="boom"), explanation_mode(model):
        raise RuntimeError("boom")
    assert _states(model) == [False, False]


def test_failed_entry_undoes_the_modules_already_switched():
    model = nn.Sequential(BcosConv2d(3, 4), BatchNorm2d(4)).train()
    with pytest.raises(ConfigError, match="eval"), explanation_mode(model):
        pass  # pragma: no cover
    assert _states(model) == [False, False]
    model.eval()
    with explanation_mode(model):
        assert _states(model) == [True, True]


def test_decorator_use_and_reentrancy():
    layer = BcosConv2d(3, 4)
    context = explanation_mode(layer)
    seen = []

    @context
    def run(depth: int) -> None:
        seen.append(layer.is_in_explanation_mode)
        if depth:
            run(depth - 1)
            seen.append(layer.is_in_explanation_mode)

    run(2)
    assert seen == [True, True, True, True, True]
    assert not layer.is_in_explanation_mode


def test_rejects_non_modules():
    with pytest.raises(Exception, match="nn.Module"):
        explanation_mode("resnet")  # type: ignore[arg-type]


class _Stack(nn.Module):
    """Bias-free B-cos stack with uncentered NoBias/Unaffine norms: dynamic linear in eval mode."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            BcosConv2d(6, 8, 3, padding=1),
            NoBias(BatchNormUncentered2d)(8),
            BcosConv2d(8, 8, 3, stride=2, padding=2, dilation=2, max_out=2),
            NoBias(PositionNormUncentered2d)(8),
            BcosConv2d(8, 8, 3, padding=1, groups=2, padding_mode="reflect"),
            NoBias(GroupNormUncentered2d)(2, 8),
            BcosConv2d(8, 8, 1, b=2.5),
            Unaffine(GNLayerNormUncentered2d)(8),
            BcosConv2d(8, 8, 1),
            NoBias(AllNormUncentered2d)(8),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.head = BcosLinear(8, 5, max_out=2)
        self.logits = LogitLayer(logit_temperature=2.0)

    def forward(self, x):
        return self.logits(self.head(self.features(x)))


def test_contributions_sum_to_the_output_in_explanation_mode():
    torch.manual_seed(0)
    model = _Stack()
    model.train()
    model(torch.randn(4, 6, 8, 8))  # give the batch norms non-trivial running statistics
    model.eval()
    x = torch.randn(3, 6, 8, 8, requires_grad=True)
    normal = model(x)
    with explanation_mode(model):
        out = model(x)
        for sample, k in [(0, 1), (1, 4), (2, 0)]:
            (grad,) = torch.autograd.grad(out[sample, k], x, retain_graph=True)
            contributions = (x * grad)[sample].sum()
            torch.testing.assert_close(contributions, out[sample, k], rtol=1e-4, atol=1e-5)
            assert grad[[i for i in range(3) if i != sample]].abs().max() == 0  # samples stay apart
    torch.testing.assert_close(out, normal)
    # outside explanation mode the gradient is not W(x): the identity fails
    (grad,) = torch.autograd.grad(normal[0, 1], x)
    assert not torch.allclose((x * grad)[0].sum(), normal[0, 1], rtol=1e-2)
