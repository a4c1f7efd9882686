"""The fused C++ CPU kernels and the ``[x, 1 - x]`` stem shortcut against plain formulations.

Every kernel is compared in float64 with the eager operations it replaces; whole layers are run
with the kernels and with the eager fallback against the autograd reference of
``test_modules_perf_equivalence``.
"""

from __future__ import annotations

import copy
import os
import shutil
import warnings

import pytest
import torch
import torch.nn.functional as F

import bcos.modules.bcos_conv as bcos_conv
from bcos.modules import BcosConv2d, cpu_kernels
from bcos.modules.inverse_encoding import (
    conv2d_over_encoding,
    encoded_half,
    filter_grad_over_encoding,
)
from bcos.modules.norms import BatchNormUncentered2d, NoBias, Unaffine
from tests import test_modules_perf_equivalence as plain_formulas
from tests.test_modules_perf_equivalence import CONV_CASES, _case_id, assert_fused_matches_reference

needs_kernels = pytest.mark.skipif(
    not cpu_kernels.available(), reason=f"fused CPU kernels disabled ({cpu_kernels.ENVIRONMENT_VARIABLE}=0)"
)


def test_kernels_build_on_this_machine_unless_disabled():
    if os.environ.get(cpu_kernels.ENVIRONMENT_VARIABLE) == "0":
        pytest.skip(f"{cpu_kernels.ENVIRONMENT_VARIABLE}=0")
    assert cpu_kernels.available(), "the CPU kernels failed to build: is a C++ compiler and ninja installed?"


def test_a_failed_build_warns_once_and_falls_back(monkeypatch, tmp_path):
    import torch.utils.cpp_extension as tooling

    def no_compiler(*args, **kwargs):
        raise RuntimeError("Ninja is required to load C++ extensions")

    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    monkeypatch.setattr(tooling, "load", no_compiler)
    monkeypatch.setattr(cpu_kernels, "_loaded", None)
    with pytest.warns(RuntimeWarning, match="Ninja is required.*eager operations"):
        assert not cpu_kernels.available()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert not cpu_kernels.available()  # decided once: no second warning


def test_the_environment_variable_disables_the_build(monkeypatch):
    monkeypatch.setenv(cpu_kernels.ENVIRONMENT_VARIABLE, "0")
    monkeypatch.setattr(cpu_kernels, "_loaded", None)
    assert not cpu_kernels.available()


@needs_kernels
def test_usable_only_for_untracked_contiguous_cpu_floats():
    x = torch.randn(2, 3, 4, 5)
    assert cpu_kernels.usable(x, x.double().float())
    assert not cpu_kernels.usable(x, x.double())  # mixed dtypes
    assert not cpu_kernels.usable(x.bfloat16())
    assert not cpu_kernels.usable(x.transpose(2, 3))
    assert not cpu_kernels.usable(x.contiguous(memory_format=torch.channels_last))
    tracked = x.clone().requires_grad_(True)
    assert not cpu_kernels.usable(tracked)
    with torch.no_grad():
        assert cpu_kernels.usable(tracked)


@needs_kernels
@pytest.mark.parametrize("shape", [(2, 5, 7, 9), (1, 1, 1, 1), (3, 64, 40, 33)])
def test_channel_square_sums(shape):
    x = torch.randn(shape, dtype=torch.float64)
    torch.testing.assert_close(torch.ops.bcos_cpu.channel_square_sums(x), (x * x).sum(1, keepdim=True))


@needs_kernels
@pytest.mark.parametrize("with_scale", [False, True])
def test_scale_output_in_place(with_scale):
    lin = torch.randn(3, 6, 35, 40, dtype=torch.float64)
    inv = torch.rand(3, 1, 35, 40, dtype=torch.float64)
    scale = torch.rand(6, dtype=torch.float64) if with_scale else None
    expected = lin * lin.abs() * inv * (1 if scale is None else scale.view(1, -1, 1, 1))
    result = torch.ops.bcos_cpu.scale_output_(lin, inv, scale)
    assert result.data_ptr() == lin.data_ptr()
    torch.testing.assert_close(result, expected)


@needs_kernels
@pytest.mark.parametrize("detach", [False, True])
@pytest.mark.parametrize("with_scale", [False, True])
def test_scale_backward_gradient_and_channel_sums(detach, with_scale):
    out = torch.randn(2, 5, 33, 31, dtype=torch.float64)
    grad = torch.randn_like(out)
    inv = torch.rand(2, 1, 33, 31, dtype=torch.float64)
    scale = torch.rand(5, dtype=torch.float64) if with_scale else None
    channel_scale = 1 if scale is None else scale.view(1, -1, 1, 1)
    factor = 1.0 if detach else 4.0
    result, sums = torch.ops.bcos_cpu.scale_backward(out, inv, grad, scale, factor, True)
    torch.testing.assert_close(result, (out.abs() * inv * channel_scale * factor).sqrt() * grad)
    torch.testing.assert_close(sums, (grad * out).sum(1, keepdim=True))
    _, no_sums = torch.ops.bcos_cpu.scale_backward(out, inv, grad, scale, factor, False)
    assert no_sums.numel() == 0


@needs_kernels
@pytest.mark.parametrize("kernel", [(3, 3), (5, 5), (1, 3), (7, 1), (3, 5)])
@pytest.mark.parametrize("size", [(9, 11), (1, 2), (2, 1)])
def test_same_window_sum_equals_a_zero_padded_box_filter(kernel, size):
    q = torch.rand(2, 3, *size, dtype=torch.float64)
    ones = torch.ones(3, 1, *kernel, dtype=torch.float64)
    expected = F.conv2d(q, ones, padding=(kernel[0] // 2, kernel[1] // 2), groups=3)
    torch.testing.assert_close(torch.ops.bcos_cpu.same_window_sum(q, *kernel), expected)


@needs_kernels
@pytest.mark.parametrize("raw", [False, True])
def test_project_filter_grad_onto_the_unit_sphere(raw):
    grad = torch.randn(7, 4, 3, 3, dtype=torch.float64)
    weight = torch.randn(7, 4, 3, 3, dtype=torch.float64)
    norm = weight.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
    dot = (grad * weight).sum((1, 2, 3), keepdim=True)
    expected = grad - weight * dot / norm.square()
    if not raw:
        expected = expected / norm
    result = torch.ops.bcos_cpu.project_filter_grad_(grad.clone(), weight, norm, raw)
    torch.testing.assert_close(result, expected)


@pytest.mark.parametrize("kernels", ["fused-kernels", "eager"])
@pytest.mark.parametrize("kwargs", CONV_CASES, ids=_case_id)
def test_layers_with_and_without_the_kernels_match_the_reference(kwargs, kernels, monkeypatch):
    if kernels == "eager":
        monkeypatch.setattr(cpu_kernels, "_loaded", False)
    elif not cpu_kernels.available():
        pytest.skip("fused CPU kernels disabled")
    torch.manual_seed(0)
    layer = BcosConv2d(**kwargs).double()
    x = torch.randn(3, kwargs["in_channels"], 11, 10, dtype=torch.float64)
    for explain in (False, True):
        assert_fused_matches_reference(copy.deepcopy(layer), x, explain)


def test_encoded_half_detects_exactly_the_inverse_encoding():
    h = torch.rand(2, 3, 5, 6)
    encoded = torch.cat([h, 1 - h], 1)
    torch.testing.assert_close(encoded_half(encoded), h, rtol=0, atol=0)
    assert encoded_half(torch.cat([h, h], 1)) is None
    nearly = encoded.clone()
    nearly[1, 4, 4, 5] += 1e-3  # differs far from the first row the quick test reads
    assert encoded_half(nearly) is None
    assert encoded_half(torch.rand(2, 5, 4, 4)) is None  # odd channel count


@pytest.mark.parametrize(
    "geometry", [((2, 2), (3, 3), (1, 1)), ((1, 1), (1, 1), (1, 1)), ((1, 2), (0, 2), (2, 1))]
)
def test_convolution_over_the_encoding_equals_the_direct_one(geometry):
    stride, padding, dilation = geometry
    h = torch.rand(3, 3, 13, 12, dtype=torch.float64)
    x = torch.cat([h, 1 - h], 1)
    weight = torch.randn(5, 6, 5, 3, dtype=torch.float64)
    expected = F.conv2d(x, weight, None, stride, padding, dilation)
    torch.testing.assert_close(conv2d_over_encoding(h, weight, stride, padding, dilation), expected)
    grad = torch.randn_like(expected)
    _, expected_grad, _ = torch.ops.aten.convolution_backward(
        grad, x, weight, None, stride, padding, dilation, False, (0, 0), 1, (False, True, False)
    )
    torch.testing.assert_close(
        filter_grad_over_encoding(grad, h, weight, stride, padding, dilation), expected_grad
    )


@pytest.mark.parametrize("kernels", ["fused-kernels", "eager"])
def test_an_encoded_stem_takes_the_shortcut_with_the_same_results(kernels, monkeypatch):
    if kernels == "eager":
        monkeypatch.setattr(cpu_kernels, "_loaded", False)
    calls = []
    original = bcos_conv.conv2d_over_encoding

    def spy(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(bcos_conv, "conv2d_over_encoding", spy)
    torch.manual_seed(0)
    stem = BcosConv2d(6, 8, 7, stride=2, padding=3).double()
    reference = copy.deepcopy(stem)
    h = torch.rand(2, 3, 20, 18, dtype=torch.float64)
    x = torch.cat([h, 1 - h], 1)
    out = stem(x)
    assert calls, "the [x, 1-x] input did not take the shortcut"
    expected = reference(x.clone().requires_grad_(True))  # needs the input gradient: plain path
    assert len(calls) == 1
    torch.testing.assert_close(out, expected)
    grad = torch.randn_like(out)
    out.backward(grad)
    expected.backward(grad)
    torch.testing.assert_close(stem.linear.weight.grad, reference.linear.weight.grad)
    stem(torch.cat([h, h], 1))  # not encoded: the direct convolution
    assert len(calls) == 1


@pytest.mark.parametrize("explain", [False, True], ids=["train", "explain"])
@pytest.mark.parametrize("make", ["affine", "nobias", "unaffine"])
def test_uncentered_batch_norm_without_the_kernels_matches_the_formula(make, explain, monkeypatch):
    monkeypatch.setattr(cpu_kernels, "_loaded", False)
    makers = {"affine": BatchNormUncentered2d, "nobias": NoBias(BatchNormUncentered2d)}
    makers["unaffine"] = Unaffine(BatchNormUncentered2d)
    plain_formulas.test_fused_uncentered_batch_norm_matches_formula(makers[make], False, explain)


@needs_kernels
def test_uncentered_batch_norm_kernel_keeps_float32_precision_for_large_means():
    """The variance from float64 moments stays accurate when the mean dwarfs the spread."""
    torch.manual_seed(0)
    x = torch.randn(8, 4, 9, 9) * 0.05 + 100.0
    weight, bias = torch.rand(4) + 0.5, torch.randn(4)
    out, mean, invstd = torch.ops.bcos_cpu.uncentered_batch_norm(x, weight, bias, 1e-5)
    exact = x.double()
    var = exact.var(dim=(0, 2, 3), correction=0)
    expected = exact / (var + 1e-5).sqrt().view(1, -1, 1, 1) * weight.double().view(1, -1, 1, 1)
    expected = expected + bias.double().view(1, -1, 1, 1)
    torch.testing.assert_close(mean.double(), exact.mean(dim=(0, 2, 3)))
    torch.testing.assert_close(invstd.double(), (var + 1e-5).rsqrt(), rtol=1e-4, atol=0)
    torch.testing.assert_close(out.double(), expected, rtol=1e-4, atol=0)
    grad = torch.randn_like(x)
    grad_x, grad_w, grad_b = torch.ops.bcos_cpu.uncentered_batch_norm_backward(
        grad, x, weight, mean, invstd, True, True, True
    )
    reference = exact.clone().requires_grad_(True)
    w64 = weight.double().requires_grad_(True)
    b64 = bias.double().requires_grad_(True)
    scale = (reference.var(dim=(0, 2, 3), correction=0) + 1e-5).rsqrt().view(1, -1, 1, 1)
    (reference * scale * w64.view(1, -1, 1, 1) + b64.view(1, -1, 1, 1)).backward(grad.double())
    for ours, theirs in ((grad_x, reference.grad), (grad_w, w64.grad), (grad_b, b64.grad)):
        torch.testing.assert_close(ours.double(), theirs, rtol=0, atol=1e-3 * theirs.abs().max().item())


def test_the_pip_ninja_is_found_when_it_is_not_on_the_path(tmp_path):
    ninja = pytest.importorskip("ninja")
    empty = str(tmp_path)
    path = cpu_kernels._with_ninja(empty)
    assert path.split(os.pathsep) == [ninja.BIN_DIR, empty]
    assert shutil.which("ninja", path=path)


def test_an_encoded_channels_last_input_keeps_a_channels_last_output():
    torch.manual_seed(0)
    stem = BcosConv2d(6, 8, 3, padding=1)
    h = torch.rand(2, 3, 9, 9)
    x = torch.cat([h, 1 - h], 1).contiguous(memory_format=torch.channels_last)
    assert encoded_half(x) is not None
    out = stem(x)
    assert out.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(out, stem(x.clone().requires_grad_(True)), rtol=1e-5, atol=1e-5)
