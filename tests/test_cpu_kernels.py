"""The C++ CPU kernels of the fused operators, each against the eager operations it replaces
(float64), and their build. Whole layers with and without the kernels: ``test_ops``."""

from __future__ import annotations

import os
import shutil
import warnings

import pytest
import torch
import torch.nn.functional as F

from bcos.ops import cpu_kernels

needs_kernels = pytest.mark.skipif(
    not cpu_kernels.available(), reason=f"fused CPU kernels disabled ({cpu_kernels.ENVIRONMENT_VARIABLE}=0)"
)


def test_kernels_build_on_this_machine_unless_disabled():
    if os.environ.get(cpu_kernels.ENVIRONMENT_VARIABLE) == "0":
        pytest.skip(f"{cpu_kernels.ENVIRONMENT_VARIABLE}=0")
    assert cpu_kernels.available(), "the CPU kernels failed to build: is a C++ compiler and ninja installed?"


def test_a_failed_build_says_it_is_building_warns_once_and_falls_back(monkeypatch, tmp_path, capsys):
    import torch.utils.cpp_extension as tooling

    def no_compiler(*args, **kwargs):
        raise RuntimeError("Ninja is required to load C++ extensions")

    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    monkeypatch.setattr(tooling, "load", no_compiler)
    monkeypatch.setattr(cpu_kernels, "_loaded", None)
    with pytest.warns(RuntimeWarning, match="Ninja is required.*eager PyTorch operations"):
        assert not cpu_kernels.available()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert not cpu_kernels.available()  # decided once: no second warning
    assert "building the fused CPU kernels once" in capsys.readouterr().err


def test_the_environment_variable_disables_the_build(monkeypatch):
    monkeypatch.setenv(cpu_kernels.ENVIRONMENT_VARIABLE, "0")
    monkeypatch.setattr(cpu_kernels, "_loaded", None)
    assert not cpu_kernels.available()


@needs_kernels
def test_usable_only_for_contiguous_cpu_floats_of_one_dtype():
    x = torch.randn(2, 3, 4, 5)
    assert cpu_kernels.usable(x, x.double().float())
    assert not cpu_kernels.usable(x, x.double())  # mixed dtypes
    assert not cpu_kernels.usable(x.bfloat16())
    assert not cpu_kernels.usable(x.transpose(2, 3))
    assert not cpu_kernels.usable(x.contiguous(memory_format=torch.channels_last))


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
