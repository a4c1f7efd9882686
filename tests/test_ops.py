"""The B-cos layers, built with the fused operators of ``bcos.ops`` and without, against
straightforward formulations.

The references here are written the obvious way with plain autograd (patch norms by a ones-kernel
convolution on x², the cosine scale as ``|lin| / norm``, the variance with ``Tensor.var``), in
float64, and compared forward and backward (input and parameter gradients), in training and in
explanation mode, where the dynamic scale and the variance are constants.
"""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
import torch.nn.functional as F

from bcos import ops
from bcos.errors import ConfigError, InputError
from bcos.modules import BcosConv2d, BcosLinear, explanation_mode
from bcos.modules.bcos_transform import bcos_scale
from bcos.modules.norms import BatchNormUncentered2d, DetachablePositionNorm2d, NoBias, Unaffine
from bcos.ops import cpu_kernels
from bcos.ops.bcos_conv2d import _convolution_backward
from bcos.ops.window_sums import window_sum, window_sum_transposed


@pytest.fixture(params=["fused", "plain"])
def backend(request, monkeypatch):
    """Layers built in the test use the fused operators or the plain implementation."""
    monkeypatch.setattr(ops, "_use_fused", request.param == "fused")
    return request.param


@pytest.fixture(params=["cpu-kernels", "eager"])
def kernels(request, monkeypatch):
    """Layers built in the test use the fused operators, which run the C++ kernels or their eager
    operations."""
    monkeypatch.setattr(ops, "_use_fused", True)
    if request.param == "eager":
        monkeypatch.setattr(cpu_kernels, "_loaded", False)
    elif not cpu_kernels.available():
        pytest.skip("the CPU kernels are not built here")
    return request.param


def reference_bcos_conv(layer: BcosConv2d, x: torch.Tensor, detach: bool) -> torch.Tensor:
    """``|lin| / ||patch|| · lin`` with autograd through every step (B = 2, no MaxOut)."""
    conv = layer.linear
    weight = conv.weight / conv.weight.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
    pads = _pads(conv)
    mode = "constant" if conv.padding_mode == "zeros" else conv.padding_mode
    xp = F.pad(x, pads, mode=mode)
    lin = F.conv2d(xp, weight, None, conv.stride, 0, conv.dilation, conv.groups)
    ones = torch.ones(conv.groups, x.shape[1] // conv.groups, *conv.kernel_size, dtype=x.dtype)
    sums = F.conv2d(xp * xp, ones, None, conv.stride, 0, conv.dilation, conv.groups)
    norm = (sums + 1e-6).sqrt().repeat_interleave(layer.out_channels // conv.groups, dim=1)
    scale = lin.abs() / norm
    if detach:
        scale = scale.detach()
    return scale * lin


def _pads(conv: torch.nn.Conv2d) -> list[int]:
    if conv.padding == "same":
        pads: list[int] = []
        for k, d in zip(reversed(conv.kernel_size), reversed(conv.dilation)):
            total = d * (k - 1)
            pads += [total // 2, total - total // 2]
        return pads
    ph, pw = conv.padding
    return [pw, pw, ph, ph]


def assert_fused_matches_reference(layer: BcosConv2d, x: torch.Tensor, explain: bool) -> None:
    """Output, input gradient and filter gradient of ``layer`` equal the reference formulation's."""
    reference = copy.deepcopy(layer)
    x_a, x_b = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    layer.set_explanation_mode(explain)
    out = layer(x_a)
    expected = reference_bcos_conv(reference, x_b, detach=explain)
    torch.testing.assert_close(out, expected)
    grad = torch.randn_like(out)
    out.backward(grad)
    expected.backward(grad)
    torch.testing.assert_close(x_a.grad, x_b.grad)
    torch.testing.assert_close(layer.linear.weight.grad, reference.linear.weight.grad)


CONV_CASES = [
    dict(in_channels=4, out_channels=6, kernel_size=3, padding=1),
    dict(in_channels=4, out_channels=6, kernel_size=3, stride=2, padding=1),
    dict(in_channels=4, out_channels=6, kernel_size=3, stride=2, padding=1, groups=2),
    dict(in_channels=4, out_channels=4, kernel_size=3, padding=1, groups=4),
    dict(in_channels=3, out_channels=4, kernel_size=1),
    dict(in_channels=3, out_channels=4, kernel_size=(3, 5), stride=(2, 1), padding=(1, 2)),
    dict(in_channels=6, out_channels=8, kernel_size=7, stride=2, padding=3),  # an ImageNet stem
    dict(in_channels=4, out_channels=4, kernel_size=3, padding=2, dilation=2, groups=2),
    dict(in_channels=3, out_channels=4, kernel_size=4, padding="same"),  # asymmetric padding
    dict(in_channels=3, out_channels=4, kernel_size=3, padding=1, padding_mode="reflect"),
    dict(in_channels=3, out_channels=4, kernel_size=2, padding=2),  # padding beyond half the kernel
]


def _case_id(kwargs: dict) -> str:
    return ",".join(f"{k}={v}" for k, v in kwargs.items())


@pytest.mark.filterwarnings("ignore:Using padding='same'")
@pytest.mark.parametrize("explain", [False, True], ids=["train", "explain"])
@pytest.mark.parametrize("kwargs", CONV_CASES, ids=_case_id)
def test_conv_matches_reference_forward_and_backward(kwargs, explain, backend):
    torch.manual_seed(0)
    layer = BcosConv2d(**kwargs).double()
    with torch.no_grad():  # filters far from unit norm, so a missing normalisation shows
        layer.linear.weight.mul_(torch.linspace(0.2, 5.0, layer.linear.weight.shape[0]).view(-1, 1, 1, 1))
    x = torch.randn(2, kwargs["in_channels"], 9, 8, dtype=torch.double)
    assert_fused_matches_reference(layer, x, explain)


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
@pytest.mark.parametrize("explain", [False, True], ids=["train", "explain"])
@pytest.mark.parametrize("kwargs", [CONV_CASES[0], CONV_CASES[2], CONV_CASES[6]], ids=_case_id)
def test_fused_conv_with_and_without_the_cpu_kernels_matches_reference(kwargs, explain, channels_last, kernels):
    torch.manual_seed(0)
    layer = BcosConv2d(**kwargs).double()
    assert layer.fused
    x = torch.randn(3, kwargs["in_channels"], 9, 8, dtype=torch.double)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    assert_fused_matches_reference(layer, x, explain)


def test_fused_conv_passes_gradcheck():
    torch.manual_seed(0)
    layer = BcosConv2d(3, 4, 3, stride=2, padding=1).double()
    assert layer.fused
    x = torch.randn(2, 3, 6, 5, dtype=torch.double, requires_grad=True)
    weight = layer.linear.weight.detach().clone().requires_grad_(True)

    def run(inputs: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return torch.func.functional_call(layer, {"linear.weight": w}, (inputs,))

    assert torch.autograd.gradcheck(run, (x, weight))


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
@pytest.mark.parametrize(
    "groups, encoded", [(2, False), (1, False), (1, True)], ids=["grouped", "one-group", "encoded"]
)
def test_the_conv_operator_passes_torch_library_opcheck(groups, encoded, channels_last, kernels):
    """Schema, fake (meta) implementation with the real strides, autograd registration, dispatch."""
    torch.manual_seed(0)
    h = torch.rand(2, 2, 7, 6, dtype=torch.double)
    x = torch.cat([h, 1 - h], 1)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    weight = torch.randn(6, 4 // groups, 3, 3, dtype=torch.double, requires_grad=True)
    args = (x.requires_grad_(True), weight, [2, 1], [1, 1], [1, 1], groups, False, encoded)
    torch.library.opcheck(torch.ops.bcos.conv2d_b2.default, args)


@pytest.mark.parametrize("dtype", [torch.double, torch.float32], ids=str)
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
def test_the_batch_norm_operator_passes_torch_library_opcheck(channels_last, dtype, kernels):
    torch.manual_seed(0)
    x = torch.randn(2, 4, 7, 6, dtype=dtype) + 1
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    weight = torch.rand(4, dtype=dtype, requires_grad=True)
    args = (x.requires_grad_(True), weight, None, 1e-5, False)
    torch.library.opcheck(torch.ops.bcos.uncentered_batch_norm.default, args)


@pytest.mark.filterwarnings("ignore:Using padding='same'")
def test_the_backend_is_chosen_when_the_layer_is_built(monkeypatch):
    monkeypatch.setattr(ops, "_use_fused", True)
    assert BcosConv2d(4, 4, 3, padding=1).fused
    assert BcosConv2d(4, 4, 3, padding="same").fused
    assert BatchNormUncentered2d(4).fused
    # what the operator does not cover is plain
    assert not BcosConv2d(4, 4, 3, padding=1, b=2.5).fused
    assert not BcosConv2d(4, 4, 3, padding=1, max_out=2).fused
    assert not BcosConv2d(4, 4, 3, padding=1, padding_mode="reflect").fused
    assert not BcosConv2d(4, 4, 4, padding="same").fused  # asymmetric
    layer = BcosConv2d(4, 4, 3, padding=1)
    ops.set_fused_ops(False)
    assert not BcosConv2d(4, 4, 3, padding=1).fused and not BatchNormUncentered2d(4).fused
    assert layer.fused  # built before the switch: keeps its choice


def test_the_environment_variable_switches_the_fused_operators_off():
    import subprocess
    import sys

    code = "import bcos.modules as m; print(m.BcosConv2d(2, 2, 3, padding=1).fused)"
    for value, expected in (("0", "False"), ("1", "True")):
        env = {**__import__("os").environ, ops.ENVIRONMENT_VARIABLE: value}
        result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
        assert result.stdout.strip() == expected


@pytest.mark.parametrize("need_x", [False, True], ids=["filters", "filters+input"])
def test_six_channel_stem_gradients_computed_three_channels_at_a_time_are_the_same(need_x):
    torch.manual_seed(0)
    x = torch.rand(2, 6, 30, 30)
    weight = torch.randn(8, 6, 7, 7)
    grad = torch.randn(2, 8, 15, 15)
    geometry = ([2, 2], [3, 3], [1, 1], 1)
    grad_x, grad_w = _convolution_backward(grad, x, weight, *geometry, need_x, True)
    expected_x, expected_w, _ = torch.ops.aten.convolution_backward(
        grad, x, weight, None, (2, 2), (3, 3), (1, 1), False, (0, 0), 1, (need_x, True, False)
    )
    torch.testing.assert_close(grad_w, expected_w, rtol=1e-5, atol=1e-5)
    if need_x:
        torch.testing.assert_close(grad_x, expected_x)
    else:
        assert grad_x is None


def test_fused_conv_on_channels_last_inputs_and_weights(backend):
    torch.manual_seed(0)
    layer = BcosConv2d(8, 8, 3, padding=1)
    layer_cl = copy.deepcopy(layer).to(memory_format=torch.channels_last)
    assert not layer_cl.linear.weight.is_contiguous()
    x = torch.randn(2, 8, 6, 6)
    x_cl = x.contiguous(memory_format=torch.channels_last).requires_grad_(True)
    x = x.requires_grad_(True)
    out, out_cl = layer(x), layer_cl(x_cl)
    torch.testing.assert_close(out_cl, out)
    out.sum().backward()
    out_cl.sum().backward()
    torch.testing.assert_close(x_cl.grad, x.grad)
    torch.testing.assert_close(layer_cl.linear.weight.grad, layer.linear.weight.grad)


def test_strided_1x1_conv_backward_on_channels_last_small_inputs_is_safe():
    # oneDNN's CPU filter gradient corrupted the heap (an abort a few calls later) for
    # channels-last inputs of small strided 1x1 convolutions, as after a position norm
    torch.manual_seed(0)
    layer = BcosConv2d(4, 8, 1, stride=2)
    plain = copy.deepcopy(layer)
    for _ in range(50):
        x = torch.rand(2, 4, 8, 8).contiguous(memory_format=torch.channels_last).requires_grad_(True)
        layer(x).square().sum().backward()
    x = torch.rand(2, 4, 8, 8)
    x_cl = x.contiguous(memory_format=torch.channels_last).requires_grad_(True)
    x = x.requires_grad_(True)
    layer.zero_grad(), plain.zero_grad()
    layer(x_cl).square().sum().backward()
    plain(x).square().sum().backward()
    torch.testing.assert_close(x_cl.grad, x.grad)
    torch.testing.assert_close(layer.linear.weight.grad, plain.linear.weight.grad)


def test_position_norm_keeps_the_memory_format_of_its_input():
    norm = DetachablePositionNorm2d(4)
    x = torch.rand(2, 4, 5, 5)
    assert norm(x).is_contiguous()
    assert norm(x.contiguous(memory_format=torch.channels_last)).is_contiguous(memory_format=torch.channels_last)


WINDOWS = [
    ((3, 3), (1, 1), (1, 1), (1, 1)),
    ((3, 3), (2, 2), (1, 1), (1, 1)),
    ((7, 7), (2, 2), (3, 3), (1, 1)),
    ((1, 1), (2, 2), (0, 0), (1, 1)),
    ((3, 5), (2, 1), (1, 2), (1, 1)),
    ((2, 2), (1, 1), (1, 1), (1, 1)),
    ((5, 3), (1, 1), (2, 1), (1, 1)),  # centred windows: neighbour sums without padding
    ((1, 1), (1, 1), (0, 0), (1, 1)),
    ((13, 3), (1, 1), (6, 1), (1, 1)),  # a window taller than the map
]


@pytest.mark.parametrize("window", WINDOWS, ids=str)
def test_window_sums_equal_a_ones_convolution_and_the_transpose_is_the_adjoint(window, kernels):
    torch.manual_seed(0)
    q = torch.rand(2, 3, 11, 10, dtype=torch.double)
    sums = window_sum(q, window)
    kernel, stride, padding, dilation = window
    direct = F.conv2d(q, torch.ones(3, 1, *kernel, dtype=q.dtype), None, stride, padding, dilation, 3)
    torch.testing.assert_close(sums, direct)
    g = torch.randn_like(direct)
    transposed = window_sum_transposed(g, q.shape[-2:], window)
    assert transposed.shape == q.shape
    torch.testing.assert_close((direct * g).sum(), (q * transposed).sum())  # <W q, g> == <q, Wᵀ g>


def test_dilated_window_sum_and_adjoint():
    torch.manual_seed(0)
    q = torch.rand(1, 2, 9, 9, dtype=torch.double)
    window = ((3, 3), (1, 2), (2, 1), (2, 3))
    direct = F.conv2d(q, torch.ones(2, 1, 3, 3, dtype=q.dtype), None, (1, 2), (2, 1), (2, 3), 2)
    torch.testing.assert_close(window_sum(q, window), direct)
    g = torch.randn_like(direct)
    transposed = window_sum_transposed(g, q.shape[-2:], window)
    torch.testing.assert_close((direct * g).sum(), (q * transposed).sum())


@pytest.mark.parametrize("explain", [False, True], ids=["train", "explain"])
def test_b2_transform_matches_plain_formula_with_broadcast_norms(explain):
    torch.manual_seed(0)
    lin = torch.randn(2, 3, 4, 5, 5, dtype=torch.double)  # grouped layout [N, G, O/G, H, W]
    norm = torch.rand(2, 3, 1, 5, 5, dtype=torch.double) + 0.5
    lin_a, norm_a = lin.clone().requires_grad_(True), norm.clone().requires_grad_(True)
    lin_b, norm_b = lin.clone().requires_grad_(True), norm.clone().requires_grad_(True)
    out = bcos_scale(lin_a, norm_a, 2, explain)
    scale = lin_b.abs() / norm_b
    expected = (scale.detach() if explain else scale) * lin_b
    torch.testing.assert_close(out, expected)
    grad = torch.randn_like(out)
    out.backward(grad)
    expected.backward(grad)
    torch.testing.assert_close(lin_a.grad, lin_b.grad)
    if explain:
        assert norm_a.grad is None or torch.all(norm_a.grad == 0)
    else:
        torch.testing.assert_close(norm_a.grad, norm_b.grad)


@pytest.mark.parametrize("explain", [False, True], ids=["train", "explain"])
def test_linear_and_maxout_conv_use_the_transform_correctly(explain, backend):
    torch.manual_seed(0)
    linear = BcosLinear(6, 4).double()
    x = torch.randn(3, 2, 6, dtype=torch.double, requires_grad=True)
    with explanation_mode(linear) if explain else torch.enable_grad():
        out = linear(x)
    weight = linear.linear.weight / linear.linear.weight.norm(dim=1, keepdim=True)
    x_ref = x.detach().clone().requires_grad_(True)
    lin = x_ref @ weight.T
    scale = lin.abs() / (x_ref.norm(dim=-1, keepdim=True) + 1e-12)
    expected = (scale.detach() if explain else scale) * lin
    torch.testing.assert_close(out, expected)
    out.sum().backward()
    expected.sum().backward()
    torch.testing.assert_close(x.grad, x_ref.grad)

    conv = BcosConv2d(3, 2, 3, padding=1, max_out=2).double()
    x = torch.randn(2, 3, 5, 5, dtype=torch.double, requires_grad=True)
    conv.set_explanation_mode(explain)
    out = conv(x)
    x_ref = x.detach().clone().requires_grad_(True)
    weight = conv.linear.weight / conv.linear.weight.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
    lin = F.conv2d(x_ref, weight, padding=1).unflatten(1, (2, 2)).amax(2)
    norm = (F.conv2d(x_ref * x_ref, torch.ones(1, 3, 3, 3, dtype=x.dtype), padding=1) + 1e-6).sqrt()
    scale = lin.abs() / norm
    expected = (scale.detach() if explain else scale) * lin
    torch.testing.assert_close(out, expected)
    out.sum().backward()
    expected.sum().backward()
    torch.testing.assert_close(x.grad, x_ref.grad)


def _reference_bnu(x, weight, bias, eps, detach):
    source = x.detach() if detach else x
    var = source.var(dim=(0, 2, 3), correction=0).view(1, -1, 1, 1)
    out = x / (var + eps).sqrt()
    if weight is not None:
        out = out * weight.view(1, -1, 1, 1)
    if bias is not None:
        out = out + bias.view(1, -1, 1, 1)
    return out


@pytest.mark.parametrize("explain", [False, True], ids=["train", "explain"])
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
@pytest.mark.parametrize(
    "make", [BatchNormUncentered2d, NoBias(BatchNormUncentered2d), Unaffine(BatchNormUncentered2d)],
    ids=["affine", "nobias", "unaffine"],
)  # fmt: skip
def test_uncentered_batch_norm_matches_formula(make, channels_last, explain, backend, kernels):
    torch.manual_seed(0)
    layer = make(3, momentum=0.5).double()
    if layer.weight is not None:
        torch.nn.init.uniform_(layer.weight, 0.5, 2.0)
    if layer.bias is not None:
        torch.nn.init.uniform_(layer.bias, -1.0, 1.0)
    params = [p.detach().clone().requires_grad_(True) if p is not None else None for p in (layer.weight, layer.bias)]
    x = torch.randn(4, 3, 5, 5, dtype=torch.double) * 2 + 3  # a large mean: uncentered matters
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    x_a, x_b = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    layer.set_explanation_mode(explain)
    out = layer(x_a)
    expected = _reference_bnu(x_b, *params, layer.eps, explain)
    torch.testing.assert_close(out, expected)
    grad = torch.randn_like(out)
    out.backward(grad)
    expected.backward(grad)
    torch.testing.assert_close(x_a.grad, x_b.grad)
    for ours, theirs in zip((layer.weight, layer.bias), params):
        if ours is not None:
            torch.testing.assert_close(ours.grad, theirs.grad)
    var = x.var(dim=(0, 2, 3), correction=0)
    torch.testing.assert_close(layer.running_var, 0.5 + 0.5 * var)


def test_fused_uncentered_batch_norm_gradcheck():
    torch.manual_seed(0)
    layer = BatchNormUncentered2d(2).double()
    torch.nn.init.uniform_(layer.weight, 0.5, 2.0)
    x = torch.randn(3, 2, 3, 3, dtype=torch.double, requires_grad=True) + 1
    assert torch.autograd.gradcheck(layer, (x,))


def test_fused_operators_keep_no_extra_activations_for_backward():
    """Conv + uncentered norm keep the input, the conv output (shared) and small maps only."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(BcosConv2d(8, 16, 3, padding=1), NoBias(BatchNormUncentered2d)(16))
    x = torch.randn(4, 8, 16, 16, requires_grad=True)
    storages: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = model(x)
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    activations = {ptr: n for ptr, n in storages.items() if ptr not in params}
    full = [n for n in activations.values() if n >= out.numel() * 4 // 2]
    # the input and the B-cos output (kept once, shared by both layers)
    assert sorted(full) == sorted([x.numel() * 4, out.numel() * 4])
    # no copy of the filters: their norms are folded into the element-wise work
    filter_bytes = model[0].linear.weight.numel() * 4
    filters = [n for n in activations.values() if n == filter_bytes]
    assert model[0].fused and filters == []
    small = sum(activations.values()) - sum(full) - sum(filters)
    assert small <= out.numel() * 4 // 8  # patch norms and per-channel statistics


def test_bfloat16_autocast_stays_in_bfloat16_and_matches_float32(backend):
    torch.manual_seed(0)
    model = torch.nn.Sequential(BcosConv2d(8, 8, 3, padding=1), NoBias(BatchNormUncentered2d)(8))
    x = torch.randn(2, 8, 6, 6)
    x16 = x.clone().requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out16 = model(x16)
    assert out16.dtype == torch.bfloat16
    out16.float().square().sum().backward()
    grad16 = model[0].linear.weight.grad.clone()
    model.zero_grad()
    x32 = x.clone().requires_grad_(True)
    out32 = model(x32)
    out32.square().sum().backward()
    assert x16.grad.dtype == torch.float32
    torch.testing.assert_close(out16.float(), out32, rtol=0.05, atol=0.05)
    # bf16 rounding alone gives errors of a few percent here (the plain autograd path too)
    assert (x16.grad - x32.grad).abs().max() <= 0.1 * x32.grad.abs().max()
    assert (grad16 - model[0].linear.weight.grad).abs().max() <= 0.1 * grad16.abs().max()


def test_torch_compile_fullgraph_forward_and_backward(backend):
    """No graph breaks in the layers (aot_eager: traced by dynamo and AOTAutograd)."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(BcosConv2d(4, 4, 3, padding=1), NoBias(BatchNormUncentered2d)(4))
    eager = copy.deepcopy(model)
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    x = torch.randn(2, 4, 5, 5)
    x_a, x_b = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = compiled(x_a)
    expected = eager(x_b)
    torch.testing.assert_close(out, expected)
    out.square().sum().backward()
    expected.square().sum().backward()
    torch.testing.assert_close(x_a.grad, x_b.grad)
    torch.testing.assert_close(model[0].linear.weight.grad, eager[0].linear.weight.grad)


def test_inductor_compiles_a_channels_last_training_step_with_the_fused_operators(monkeypatch):
    """The real compiler (not aot_eager) relies on the fake implementations' strides."""
    monkeypatch.setattr(ops, "_use_fused", True)
    torch.manual_seed(0)
    model = torch.nn.Sequential(BcosConv2d(4, 8, 3, padding=1), NoBias(BatchNormUncentered2d)(8), BcosConv2d(8, 4, 1))
    model = model.to(memory_format=torch.channels_last)
    eager = copy.deepcopy(model)
    compiled = torch.compile(model, fullgraph=True)
    x = torch.randn(3, 4, 6, 6).contiguous(memory_format=torch.channels_last)
    x_a, x_b = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = compiled(x_a)
    expected = eager(x_b)
    torch.testing.assert_close(out, expected)
    out.square().sum().backward()
    expected.square().sum().backward()
    torch.testing.assert_close(x_a.grad, x_b.grad)
    torch.testing.assert_close(model[0].linear.weight.grad, eager[0].linear.weight.grad)


def test_torch_compile_under_bfloat16_autocast_keeps_every_layer_in_bfloat16(backend):
    """Two fused layers in a row under autocast, as in the GPU benchmark: the first layer's
    autocast handling must not switch autocast off for the second one in the traced graph."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        BcosConv2d(8, 8, 3, padding=1), NoBias(BatchNormUncentered2d)(8), BcosConv2d(8, 8, 1)
    )
    eager = copy.deepcopy(model)
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    x = torch.randn(2, 8, 6, 6)
    x_a, x_b = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = compiled(x_a)
        expected = eager(x_b)
    assert out.dtype == expected.dtype == torch.bfloat16
    torch.testing.assert_close(out, expected, rtol=2e-2, atol=2e-2)
    out.float().square().sum().backward()
    expected.float().square().sum().backward()
    # bfloat16 rounding (both are ~1.5% of the largest entry away from float32 here)
    pairs = ((x_a.grad, x_b.grad), (model[0].linear.weight.grad, eager[0].linear.weight.grad))
    for grad, expected_grad in pairs:
        scale = expected_grad.abs().max().item()
        torch.testing.assert_close(grad, expected_grad, rtol=0, atol=0.04 * scale)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.filterwarnings("ignore:Using padding='same'")
@pytest.mark.parametrize("kwargs", CONV_CASES, ids=_case_id)
def test_conv_on_cuda_matches_the_reference(kwargs, backend):
    torch.manual_seed(0)
    layer = BcosConv2d(**kwargs).double()
    reference = copy.deepcopy(layer)
    layer.cuda()
    x = torch.randn(2, kwargs["in_channels"], 9, 8, dtype=torch.double)
    x_gpu, x_cpu = x.cuda().requires_grad_(True), x.clone().requires_grad_(True)
    out = layer(x_gpu)
    expected = reference_bcos_conv(reference, x_cpu, detach=False)
    torch.testing.assert_close(out.cpu(), expected)
    grad = torch.randn_like(expected)
    out.backward(grad.cuda())
    expected.backward(grad)
    torch.testing.assert_close(x_gpu.grad.cpu(), x_cpu.grad)
    torch.testing.assert_close(layer.linear.weight.grad.cpu(), reference.linear.weight.grad)


def test_second_derivatives_need_the_plain_layers(monkeypatch):
    """The fused operator's backward is not differentiable itself (a one-line error that names
    the switch); the plain layer's is."""
    x = torch.randn(1, 2, 4, 4, requires_grad=True)
    monkeypatch.setattr(ops, "_use_fused", True)
    fused = BcosConv2d(2, 2, 3, padding=1)
    (grad,) = torch.autograd.grad(fused(x).square().sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match=r"second derivatives .*set_fused_ops\(False\)"):
        grad.sum().backward()
    monkeypatch.setattr(ops, "_use_fused", False)
    plain = BcosConv2d(2, 2, 3, padding=1)
    plain.load_state_dict(fused.state_dict())
    (grad_plain,) = torch.autograd.grad(plain(x).square().sum(), x, create_graph=True)
    torch.testing.assert_close(grad_plain, grad)
    grad_plain.sum().backward()
    assert x.grad is not None


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
@pytest.mark.parametrize("explain", [False, True], ids=["train", "explain"])
@pytest.mark.parametrize("geometry", [dict(kernel_size=7, stride=2, padding=3), dict(kernel_size=3, padding=1)], ids=str)
def test_a_declared_inverse_encoding_gives_the_same_values_and_gradients(geometry, explain, channels_last, kernels):
    """The stem convolves x alone plus a constant map; output, input and filter gradients are
    those of the direct computation (float64, so only the order of sums differs)."""
    torch.manual_seed(0)
    direct = BcosConv2d(6, 8, **geometry).double()
    assert direct.fused
    encoded = copy.deepcopy(direct)
    encoded.inverse_encoded_input = True
    h = torch.rand(3, 3, 11, 10, dtype=torch.double)
    x = torch.cat([h, 1 - h], 1)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    x_a, x_b = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    direct.set_explanation_mode(explain), encoded.set_explanation_mode(explain)
    out, expected = encoded(x_a), direct(x_b)
    torch.testing.assert_close(out, expected)
    grad = torch.randn_like(out)
    out.backward(grad)
    expected.backward(grad)
    torch.testing.assert_close(x_a.grad, x_b.grad)
    torch.testing.assert_close(encoded.linear.weight.grad, direct.linear.weight.grad)
    # training's case: the images need no gradient, only the filters do
    encoded.zero_grad(), direct.zero_grad()
    encoded(x).backward(grad)
    direct(x).backward(grad)
    torch.testing.assert_close(encoded.linear.weight.grad, direct.linear.weight.grad)


def test_only_one_group_layers_with_an_even_number_of_channels_take_the_encoding():
    assert BcosConv2d(6, 4, 3).inverse_encoded_input is False
    with pytest.raises(InputError, match="one group and an even number of channels"):
        ops.conv2d_b2(torch.rand(1, 6, 4, 4), torch.rand(4, 3, 3, 3), [1, 1], [1, 1], [1, 1], 2, False, encoded=True)
    with pytest.raises(ConfigError, match="groups=2"):
        BcosConv2d(6, 4, 3, groups=2).inverse_encoded_input = True
    with pytest.raises(ConfigError, match="in_channels=3"):
        BcosConv2d(3, 4, 3).inverse_encoded_input = True
