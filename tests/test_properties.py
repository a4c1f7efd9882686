"""Property tests (hypothesis) of the B-cos layers and of explanations.

For randomly drawn small layer settings and CNNs built from B-cos convolutions, bias-free norms
and pooling: output shapes and dtypes follow the convolution rules; contributions plus the logit
bias equal the logit (completeness); explaining a batch gives the same as explaining each sample
alone; explanation mode changes only the gradients, never the forward output, and is undone on
exit. Examples are few and small (and derandomized), so the file runs in seconds.
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from bcos.explain.contributions import check_completeness, explain
from bcos.modules import BcosConv2d, BcosLinear, LogitLayer, explanation_mode
from bcos.modules.norms import (
    AllNormUncentered2d,
    BatchNormUncentered2d,
    DetachableGNLayerNorm2d,
    GNInstanceNormUncentered2d,
    GNLayerNormUncentered2d,
    NoBias,
    PositionNormUncentered2d,
)

PROPERTY_SETTINGS = settings(
    max_examples=15,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# norms without an input-independent offset (so completeness holds): uncentered norms without
# bias, and a centred group norm (its mean is a linear function of the input)
BIAS_FREE_NORMS = {
    "BatchNormUncentered2d": NoBias(BatchNormUncentered2d),
    "AllNormUncentered2d": NoBias(AllNormUncentered2d),
    "GNLayerNormUncentered2d": NoBias(GNLayerNormUncentered2d),
    "GNInstanceNormUncentered2d": NoBias(GNInstanceNormUncentered2d),
    "PositionNormUncentered2d": NoBias(PositionNormUncentered2d),
    "DetachableGNLayerNorm2d": NoBias(DetachableGNLayerNorm2d),
}


def _conv_output_size(size: int, kernel: int, stride: int, padding: int) -> int:
    return (size + 2 * padding - kernel) // stride + 1


# ------------------------------------------------------------------------------------- the layers
@PROPERTY_SETTINGS
@given(
    in_channels=st.integers(1, 6),
    out_channels=st.integers(1, 5),
    kernel=st.integers(1, 3),
    stride=st.integers(1, 2),
    padding=st.integers(0, 2),
    max_out=st.integers(1, 2),
    b=st.sampled_from([1.0, 1.5, 2.0, 3.0]),
    size=st.integers(3, 9),
    batch=st.integers(1, 3),
    dtype=st.sampled_from([torch.float32, torch.float64]),
)
def test_bcos_conv_shape_dtype_and_explanation_mode(in_channels, out_channels, kernel, stride, padding, max_out, b, size, batch, dtype):
    torch.manual_seed(0)
    layer = BcosConv2d(in_channels, out_channels, kernel, stride=stride, padding=padding, b=b, max_out=max_out, dtype=dtype)
    x = torch.rand(batch, in_channels, size, size, dtype=dtype)
    out = layer(x)
    side = _conv_output_size(size, kernel, stride, padding)
    assert out.shape == (batch, out_channels, side, side) and out.dtype == dtype
    assert torch.isfinite(out).all()
    with explanation_mode(layer):
        torch.testing.assert_close(layer(x), out)  # (up to rounding: the same math, other op order)


@PROPERTY_SETTINGS
@given(
    in_features=st.integers(1, 8),
    out_features=st.integers(1, 6),
    leading=st.lists(st.integers(1, 3), min_size=1, max_size=3),
    max_out=st.integers(1, 3),
    b=st.sampled_from([1.0, 2.0, 2.5]),
    dtype=st.sampled_from([torch.float32, torch.float64]),
)
def test_bcos_linear_shape_and_dtype(in_features, out_features, leading, max_out, b, dtype):
    torch.manual_seed(0)
    layer = BcosLinear(in_features, out_features, b=b, max_out=max_out, dtype=dtype)
    x = torch.randn(*leading, in_features, dtype=dtype)
    out = layer(x)
    assert out.shape == (*leading, out_features) and out.dtype == dtype
    assert torch.isfinite(out).all()
    with explanation_mode(layer):
        torch.testing.assert_close(layer(x), out)


# ----------------------------------------------------------------------------- random small CNNs
class _GlobalAveragePool(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3))


@st.composite
def small_cnns(draw) -> tuple[nn.Module, int]:
    """A random B-cos CNN on 6-channel inputs ending in a LogitLayer, and its input size."""
    size = draw(st.integers(6, 12))
    depth = draw(st.integers(1, 3))
    layers: list[nn.Module] = []
    channels, side = 6, size
    for _ in range(depth):
        out_channels = draw(st.integers(2, 6))
        kernel = draw(st.integers(1, 3))
        stride = draw(st.integers(1, 2))
        padding = draw(st.integers(0, kernel // 2))
        if _conv_output_size(side, kernel, stride, padding) < 2:
            stride, padding = 1, kernel // 2
        layers.append(
            BcosConv2d(
                channels,
                out_channels,
                kernel,
                stride=stride,
                padding=padding,
                b=draw(st.sampled_from([1.0, 2.0, 2.5])),
                max_out=draw(st.integers(1, 2)),
            )
        )
        side = _conv_output_size(side, kernel, stride, padding)
        channels = out_channels
        norm = draw(st.sampled_from([None, *BIAS_FREE_NORMS]))
        if norm is not None:
            layers.append(BIAS_FREE_NORMS[norm](channels))
        if side >= 4 and draw(st.booleans()):
            layers.append(nn.AvgPool2d(2))
            side //= 2
    classes = draw(st.integers(2, 5))
    layers += [
        BcosConv2d(channels, classes, 1),
        _GlobalAveragePool(),
        LogitLayer(logit_bias=draw(st.sampled_from([None, -math.log(classes - 1) if classes > 2 else -1.0, 0.7]))),
    ]
    torch.manual_seed(draw(st.integers(0, 2**16)))
    model = nn.Sequential(*layers).double()
    # a short pass in training mode gives the batch norms running statistics other than 0 / 1
    with torch.no_grad():
        model.train()(_bcos_inputs(8, size, seed=99))
    return model.eval(), size


def _bcos_inputs(n: int, size: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, size, size, generator=generator, dtype=torch.float64)
    return torch.cat([x, 1 - x], dim=1)


@PROPERTY_SETTINGS
@given(cnn=small_cnns(), n=st.integers(1, 3), data=st.data())
def test_completeness_for_random_cnns(cnn, n, data):
    model, size = cnn
    x = _bcos_inputs(n, size)
    classes = model[-3].out_channels
    target = data.draw(st.one_of(st.none(), st.lists(st.integers(0, classes - 1), min_size=n, max_size=n)))
    result = check_completeness(model, x, target=target, rtol=1e-8, atol=1e-9)
    assert result.ok, f"max error {result.max_abs_error:.3g} for {model}"
    logits = model(x)
    chosen = logits.argmax(1) if target is None else torch.tensor(target)
    torch.testing.assert_close(result.logit, logits.gather(1, chosen[:, None])[:, 0])


@PROPERTY_SETTINGS
@given(cnn=small_cnns(), n=st.integers(2, 4), data=st.data())
def test_batched_explanations_equal_per_sample_explanations(cnn, n, data):
    model, size = cnn
    x = _bcos_inputs(n, size, seed=1)
    classes = model[-3].out_channels
    target = data.draw(st.lists(st.integers(0, classes - 1), min_size=n, max_size=n))
    batched = explain(model, x, target=target)
    assert batched.contribution_map.shape == (n, size, size)
    assert batched.dynamic_linear_weights.shape == (n, 6, size, size)
    assert batched.explanation.shape == (n, size, size, 4)
    for i in range(n):
        alone = explain(model, x[i : i + 1], target=target[i])
        torch.testing.assert_close(batched.dynamic_linear_weights[i : i + 1], alone.dynamic_linear_weights)
        torch.testing.assert_close(batched.contribution_map[i : i + 1], alone.contribution_map)
        assert int(batched.explained_class_idx[i]) == target[i]


@PROPERTY_SETTINGS
@given(cnn=small_cnns(), n=st.integers(1, 3))
def test_explanation_mode_leaves_the_forward_output_unchanged_and_is_undone(cnn, n):
    model, size = cnn
    x = _bcos_inputs(n, size, seed=2).requires_grad_(True)

    def output_and_gradient() -> tuple[torch.Tensor, torch.Tensor]:
        out = model(x)
        (gradient,) = torch.autograd.grad(out.sum(), x)
        return out.detach(), gradient

    before, gradient_before = output_and_gradient()
    with explanation_mode(model):
        during, gradient_during = output_and_gradient()
    after, gradient_after = output_and_gradient()
    # the same function, computed with other operation orders: equal up to float64 rounding
    torch.testing.assert_close(during, before, rtol=1e-12, atol=1e-12)
    assert torch.equal(after, before)
    assert torch.equal(gradient_after, gradient_before)  # the mode was switched off again
    detaching = any(hasattr(module, "set_explanation_mode") and module is not model[-1] for module in model)
    if detaching:  # with detached norms/weights the gradient is W(x), not the ordinary gradient
        assert gradient_during.shape == gradient_before.shape


def test_the_property_settings_are_small():
    assert PROPERTY_SETTINGS.max_examples <= 20 and PROPERTY_SETTINGS.deadline is None


@pytest.mark.parametrize("norm", sorted(BIAS_FREE_NORMS))
def test_every_bias_free_norm_keeps_completeness(norm):
    """One fixed network per norm, so a norm that breaks completeness is named by the test id."""
    torch.manual_seed(0)
    model = nn.Sequential(
        BcosConv2d(6, 4, 3, padding=1), BIAS_FREE_NORMS[norm](4), BcosConv2d(4, 3, 1), _GlobalAveragePool(), LogitLayer(logit_bias=-0.5)
    ).double()
    with torch.no_grad():
        model.train()(_bcos_inputs(4, 8, seed=5))
    assert check_completeness(model.eval(), _bcos_inputs(3, 8), rtol=1e-8, atol=1e-9).ok
