"""BcosConv2d / BcosLinear against naive computations written out here (unfold, cosine formula)."""

from __future__ import annotations

import math
import pickle
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from bcos.errors import ConfigError, InputError, UnknownNameError
from bcos.modules import (
    BcosConv2d,
    BcosConv2dWithScale,
    BcosLinear,
    NormedConv2d,
    NormedLinear,
    explanation_mode,
)


def _pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


def naive_bcos_conv(layer: BcosConv2d, x: torch.Tensor) -> torch.Tensor:
    """Every patch made explicit with unfold; cos(x, w) and ||x|| computed from the vectors (float64)."""
    conv = layer.linear
    x = x.double()
    weight = conv.weight.detach().double()
    kh, kw = conv.kernel_size
    dh, dw = conv.dilation
    if conv.padding == "same":
        pads = []
        for k, d in ((kw, dw), (kh, dh)):
            total = d * (k - 1)
            pads += [total // 2, total - total // 2]
    elif conv.padding == "valid":
        pads = [0, 0, 0, 0]
    else:
        ph, pw = conv.padding
        pads = [pw, pw, ph, ph]
    mode = "constant" if conv.padding_mode == "zeros" else conv.padding_mode
    xp = F.pad(x, pads, mode=mode)
    n, c = x.shape[:2]
    g, o, m = layer.groups, layer.out_channels, layer.max_out
    cols = F.unfold(xp, (kh, kw), dilation=(dh, dw), stride=conv.stride)  # [N, C*kh*kw, L]
    h_out = (xp.shape[2] - dh * (kh - 1) - 1) // conv.stride[0] + 1
    w_out = (xp.shape[3] - dw * (kw - 1) - 1) // conv.stride[1] + 1
    cols = cols.view(n, g, -1, h_out * w_out)  # patches of each group
    w = weight.view(g, o * m // g, -1)
    w = w / w.norm(dim=-1, keepdim=True)
    lin = torch.einsum("gok,ngkl->ngol", w, cols).reshape(n, o, m, -1).amax(2)
    norms = (cols.pow(2).sum(2) + 1e-6).sqrt()  # [N, G, L]
    norms = norms.repeat_interleave(o // g, dim=1)
    if layer.b == 1:
        out = lin
    elif layer.b == 2:
        out = lin.abs() / norms * lin
    else:
        out = ((lin / norms).abs() + 1e-6).pow(layer.b - 1) * lin
    return out.view(n, o, h_out, w_out)


CONV_CASES = [
    dict(in_channels=3, out_channels=4, kernel_size=3, padding=1),
    dict(in_channels=3, out_channels=4, kernel_size=1),
    dict(in_channels=4, out_channels=6, kernel_size=3, stride=2, padding=1, groups=2),
    dict(in_channels=4, out_channels=4, kernel_size=3, padding=1, groups=4, max_out=2),
    dict(in_channels=3, out_channels=4, kernel_size=3, padding=2, dilation=2),
    dict(in_channels=3, out_channels=4, kernel_size=3, padding=(1, 3), dilation=(1, 3)),
    dict(in_channels=4, out_channels=2, kernel_size=3, padding=2, dilation=2, max_out=3, groups=2),
    dict(in_channels=3, out_channels=4, kernel_size=3, padding=1, padding_mode="reflect"),
    dict(in_channels=3, out_channels=4, kernel_size=3, padding=1, padding_mode="replicate", max_out=2),
    dict(in_channels=4, out_channels=4, kernel_size=3, padding=2, padding_mode="circular", dilation=2, groups=2),
    dict(in_channels=3, out_channels=4, kernel_size=(3, 5), stride=(2, 1), padding=(1, 2)),
    dict(in_channels=3, out_channels=4, kernel_size=2, padding=2),  # padding beyond half the kernel
    dict(in_channels=3, out_channels=4, kernel_size=4, padding="same"),  # asymmetric padding
    dict(in_channels=3, out_channels=4, kernel_size=3, padding="same", dilation=2, padding_mode="reflect"),
    dict(in_channels=3, out_channels=4, kernel_size=3, padding="valid", b=1),
    dict(in_channels=3, out_channels=4, kernel_size=3, padding=1, b=2.5, max_out=2),
]


@pytest.mark.filterwarnings("ignore:Using padding='same'")
@pytest.mark.parametrize("kwargs", CONV_CASES, ids=lambda kw: ",".join(f"{k}={v}" for k, v in kw.items()))
def test_conv_matches_naive_patch_computation(kwargs):
    torch.manual_seed(0)
    layer = BcosConv2d(**kwargs)
    x = torch.randn(2, kwargs["in_channels"], 9, 8)
    out = layer(x)
    expected = naive_bcos_conv(layer, x)
    assert out.shape == expected.shape
    torch.testing.assert_close(out.double(), expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("kwargs", CONV_CASES[:10], ids=str)
def test_patch_norms_match_unfold(kwargs):
    torch.manual_seed(1)
    layer = BcosConv2d(**kwargs)
    x = torch.randn(1, kwargs["in_channels"], 7, 7)
    norms = layer.calc_patch_norms(x)
    # ||patch|| = |ŵᵀx| / |cos| for any filter: check directly with a ones-filter conv on x²
    mode = "constant" if layer.padding_mode == "zeros" else layer.padding_mode
    ph, pw = layer.linear.padding
    xp = F.pad(x * x, (pw, pw, ph, ph), mode=mode)
    ones = torch.ones(layer.groups, layer.in_channels // layer.groups, *layer.linear.kernel_size)
    direct = F.conv2d(xp, ones, None, layer.linear.stride, 0, layer.linear.dilation, layer.groups)
    torch.testing.assert_close(norms, (direct + 1e-6).sqrt(), rtol=1e-5, atol=1e-6)


def test_reflect_padding_changes_norms_at_the_border():
    torch.manual_seed(0)
    zeros = BcosConv2d(2, 3, 3, padding=1)
    reflect = BcosConv2d(2, 3, 3, padding=1, padding_mode="reflect")
    x = torch.randn(1, 2, 6, 6) + 3
    n_zeros, n_reflect = zeros.calc_patch_norms(x), reflect.calc_patch_norms(x)
    torch.testing.assert_close(n_zeros[..., 1:-1, 1:-1], n_reflect[..., 1:-1, 1:-1])
    assert (n_reflect[..., 0, :] > n_zeros[..., 0, :]).all()


def test_state_dict_layout_and_repr():
    layer = BcosConv2d(4, 6, kernel_size=3, padding=1, groups=2, max_out=2)
    sd = layer.state_dict()
    assert list(sd) == ["linear.weight"]
    assert sd["linear.weight"].shape == (12, 2, 3, 3)
    assert isinstance(layer.linear, NormedConv2d) and layer.linear.bias is None
    assert layer.extra_repr() == "B=2, max_out=2"
    assert BcosConv2d(2, 2).extra_repr() == "B=2"
    assert layer.patch_size == 9
    assert layer.bias is False


def test_maxout_channel_layout_is_o_times_m_plus_m():
    layer = BcosConv2d(1, 2, kernel_size=1, max_out=3, b=1)
    with torch.no_grad():
        # filter o*M+m = (o*M+m) + 1 (positive); all normalised to 1 so output = x for every unit
        # except unit 4 (o=1, m=1) which is flipped negative: max must ignore it
        layer.linear.weight.copy_(torch.tensor([1.0, 1, 1, 1, -1, 1]).view(6, 1, 1, 1))
    x = -torch.ones(1, 1, 1, 1)
    assert layer(x).flatten().tolist() == [-1.0, 1.0]


def test_unknown_keyword_arguments_are_rejected_with_the_valid_names():
    with pytest.raises(TypeError, match=r"scale_fact.*valid: .*max_out"):
        BcosConv2d(3, 4, scale_fact=10)
    with pytest.raises(TypeError, match="maxout.*did you mean 'max_out'"):
        BcosConv2d(3, 4, maxout=2)
    with pytest.raises(TypeError, match="valid: in_features"):
        BcosLinear(3, 4, kernel_size=3)
    BcosConv2d(3, 4, bias=False)  # accepted for convenience
    with pytest.raises(ConfigError, match="bias"):
        BcosConv2d(3, 4, bias=True)
    with pytest.raises(ConfigError, match="bias"):
        BcosLinear(3, 4, bias=True)
    with pytest.raises(ConfigError, match="max_out"):
        BcosConv2d(3, 4, max_out=0)
    with pytest.raises(UnknownNameError, match="did you mean 'reflect'"):
        BcosConv2d(3, 4, padding_mode="reflex")


def test_conv_rejects_unbatched_input():
    with pytest.raises(InputError, match="4D"):
        BcosConv2d(3, 4)(torch.randn(3, 5, 5))


def _conv_input_channels(module, x):
    channels = []

    class Counter(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            if func in (F.conv2d, torch.conv2d):
                channels.append(args[0].shape[1])
            return func(*args, **(kwargs or {}))

    with Counter():
        module(x)
    return channels


def test_plain_patch_norms_never_convolve_the_full_input():
    """The squares are summed over each group's channels first: the window sums run on
    ``groups`` channels, not on ``in_channels``."""
    x = torch.randn(1, 8, 8, 8)
    assert _conv_input_channels(BcosConv2d(8, 8, 3, padding=1, max_out=2), x) == [8, 1]
    assert _conv_input_channels(BcosConv2d(8, 8, 3, padding=1, groups=4, padding_mode="reflect"), x) == [8, 4]
    assert _conv_input_channels(BcosConv2d(8, 8, 3, padding=2, dilation=2, b=3), x) == [8, 1]


@pytest.mark.parametrize("b", [2, 3])
def test_explanation_mode_detaches_the_dynamic_scale(b):
    torch.manual_seed(0)
    layer = BcosConv2d(3, 4, 3, padding=1, groups=1, max_out=2, b=b)
    x = torch.randn(2, 3, 6, 6, requires_grad=True)
    normal = layer(x)
    (grad_normal,) = torch.autograd.grad(normal[:, 1].sum(), x)
    with explanation_mode(layer):
        assert layer.is_in_explanation_mode
        detached = layer(x)
        # every output is linear in x given the frozen scale: sum(x * d out / d x) == out
        for pos in [(0, 1, 2, 3), (1, 3, 0, 0), (0, 0, 5, 5)]:
            (grad,) = torch.autograd.grad(detached[pos], x, retain_graph=True)
            torch.testing.assert_close((x * grad).sum(), detached[pos], rtol=1e-5, atol=1e-6)
        (grad_detached,) = torch.autograd.grad(detached[:, 1].sum(), x)
    assert not layer.is_in_explanation_mode
    torch.testing.assert_close(detached, normal)  # forward unchanged
    assert not torch.allclose(grad_detached, grad_normal, atol=1e-4)


def test_explanation_mode_weight_gradient_flows_only_through_the_linear_part():
    torch.manual_seed(0)
    layer = BcosConv2d(2, 3, 1)
    x = torch.randn(4, 2, 1, 1)
    with explanation_mode(layer):
        out = layer(x)
        out.sum().backward()
    w = layer.linear.weight.detach().clone().requires_grad_(True)
    w_hat = w / torch.linalg.vector_norm(w, dim=(1, 2, 3), keepdim=True)
    lin = F.conv2d(x, w_hat)
    scale = (lin.abs() / (x.pow(2).sum(1, keepdim=True) + 1e-6).sqrt()).detach()
    (scale * lin).sum().backward()
    torch.testing.assert_close(layer.linear.weight.grad, w.grad)


def test_conv_with_scale_is_deprecated_and_divides_by_its_scale():
    torch.manual_seed(0)
    with pytest.warns(DeprecationWarning, match="use BcosConv2d"):
        scaled = BcosConv2dWithScale(4, 3, kernel_size=3, padding=1)
    assert scaled.scale == pytest.approx(3 * math.sqrt(4) / 100)
    with pytest.warns(DeprecationWarning):
        assert BcosConv2dWithScale(4, 3, kernel_size=(2, 8)).scale == pytest.approx(4 * 2 / 100)
    plain = BcosConv2d(4, 3, kernel_size=3, padding=1)
    plain.load_state_dict(scaled.state_dict())
    x = torch.randn(1, 4, 5, 5)
    torch.testing.assert_close(scaled(x), plain(x) / scaled.scale)
    assert scaled.extra_repr().startswith("scale=0.060, B=2")
    with pytest.raises(ConfigError, match="use BcosConv2d"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        BcosConv2dWithScale(4, 3, scale=1.0)
    with pytest.raises(TypeError, match="scale_factor"):
        BcosConv2dWithScale(4, 3, scale_fct=10)


def test_conv_pickles_and_runs_on_meta_device():
    layer = BcosConv2d(8, 16, 3, padding=2, dilation=2, groups=2, max_out=2, device="meta")
    assert layer.linear.weight.device.type == "meta"
    out = layer(torch.empty(2, 8, 10, 10, device="meta"))
    assert out.shape == (2, 16, 10, 10)
    clone = pickle.loads(pickle.dumps(BcosConv2d(2, 2, 3, padding_mode="reflect", padding=1)))
    assert clone.padding_mode == "reflect"


def test_channels_last_input_gives_same_result():
    torch.manual_seed(0)
    layer = BcosConv2d(4, 6, 3, padding=1, groups=2, max_out=2)
    x = torch.randn(2, 4, 6, 6)
    torch.testing.assert_close(layer(x.to(memory_format=torch.channels_last)), layer(x), rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------------------------------------
# BcosLinear


def naive_bcos_linear(layer: BcosLinear, x: torch.Tensor) -> torch.Tensor:
    w = layer.linear.weight.detach().double()
    x = x.double()
    cos_num = x @ (w / w.norm(dim=1, keepdim=True)).T  # ŵᵀx
    lin = cos_num.unflatten(-1, (layer.out_features, layer.max_out)).amax(-1)
    norm = x.norm(dim=-1, keepdim=True) + 1e-12
    if layer.b == 2:
        return lin.abs() / norm * lin
    return ((lin / norm).abs() + 1e-6).pow(layer.b - 1) * lin


@pytest.mark.parametrize("b,max_out", [(2, 1), (2, 3), (1.5, 2), (1, 1)])
def test_linear_matches_cosine_formula_on_any_leading_shape(b, max_out):
    torch.manual_seed(0)
    layer = BcosLinear(5, 4, b=b, max_out=max_out)
    x = torch.randn(2, 3, 5)
    out = layer(x)
    assert out.shape == (2, 3, 4)
    if b == 1:
        w = layer.linear.weight
        expected = (x @ (w / w.norm(dim=1, keepdim=True)).T).unflatten(-1, (4, max_out)).amax(-1)
        torch.testing.assert_close(out, expected)
    else:
        torch.testing.assert_close(out.double(), naive_bcos_linear(layer, x), rtol=1e-5, atol=1e-6)
    assert list(layer.state_dict()) == ["linear.weight"]
    assert layer.linear.weight.shape == (4 * max_out, 5)
    assert isinstance(layer.linear, NormedLinear)


def test_linear_cosine_identity():
    # output / ||ŵᵀx|| ... for B=2: out = cos · ŵᵀx, so out / (ŵᵀx)² · ||x|| = sign(cos)
    torch.manual_seed(0)
    layer = BcosLinear(6, 3)
    x = torch.randn(4, 6)
    w = layer.linear.weight.detach()
    cos = F.cosine_similarity(x[:, None, :], w[None], dim=-1)
    expected = cos.abs() * (x @ (w / w.norm(dim=1, keepdim=True)).T)
    torch.testing.assert_close(layer(x), expected, rtol=1e-5, atol=1e-6)


def test_linear_explanation_mode_is_linear_given_the_scale():
    torch.manual_seed(0)
    layer = BcosLinear(6, 3, max_out=2)
    x = torch.randn(2, 6, requires_grad=True)
    normal = layer(x)
    with explanation_mode(layer):
        out = layer(x)
        (grad,) = torch.autograd.grad(out[1, 2], x)
    torch.testing.assert_close(out, normal)
    torch.testing.assert_close((x * grad).sum(), out[1, 2])
    assert layer.extra_repr() == "B=2, max_out=2"
