"""Norm layers: torch's norms where they should agree, hand formulas where uncentered, detach rules,
NoBias/Unaffine wrappers and the reference's state-dict layout."""

from __future__ import annotations

import copy
import functools
import json
import pickle
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bcos.errors import ConfigError, InputError
from bcos.modules import explanation_mode
from bcos.modules.norms import (
    AllNorm2d,
    AllNormUncentered2d,
    BatchNorm2d,
    BatchNormUncentered2d,
    DetachableGNInstanceNorm2d,
    DetachableGNLayerNorm2d,
    DetachableGroupNorm2d,
    DetachableLayerNorm,
    DetachablePositionNorm2d,
    GNInstanceNormUncentered2d,
    GNLayerNormUncentered2d,
    GroupNormUncentered2d,
    NoBias,
    PositionNormUncentered2d,
    Unaffine,
    group_norm_uncentered,
)

NORMS_MAP = {  # the CIFAR-10 norm ablation's names
    "an": AllNorm2d,
    "bn": BatchNorm2d,
    "gn": functools.partial(DetachableGroupNorm2d, 2),
    "in": DetachableGNInstanceNorm2d,
    "ln": DetachableGNLayerNorm2d,
    "pn": DetachablePositionNorm2d,
    "anu": AllNormUncentered2d,
    "bnu": BatchNormUncentered2d,
    "gnu": functools.partial(GroupNormUncentered2d, 2),
    "inu": GNInstanceNormUncentered2d,
    "lnu": GNLayerNormUncentered2d,
    "pnu": PositionNormUncentered2d,
}


def _randomise_affine(layer: nn.Module) -> nn.Module:
    with torch.no_grad():
        for name in ("weight", "bias"):
            p = getattr(layer, name, None)
            if p is not None:
                p.copy_(torch.randn_like(p))
    return layer


def _grad(fn, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    x = x.detach().clone().requires_grad_(True)
    (grad,) = torch.autograd.grad((fn(x) * g).sum(), x)
    return grad


# ------------------------------------------------------------------------------------------------
# centered: agree with torch, detach only the variance in explanation mode


CENTERED_VS_TORCH = [
    (lambda: DetachableGroupNorm2d(2, 6), lambda: nn.GroupNorm(2, 6)),
    (lambda: DetachableGNInstanceNorm2d(6), lambda: nn.GroupNorm(6, 6)),
    (lambda: DetachableGNLayerNorm2d(6), lambda: nn.GroupNorm(1, 6)),
]


@pytest.mark.parametrize("make,make_torch", CENTERED_VS_TORCH, ids=["gn", "in", "ln"])
def test_detachable_group_norms_agree_with_torch(make, make_torch):
    torch.manual_seed(0)
    ours, theirs = _randomise_affine(make()), make_torch()
    theirs.load_state_dict(ours.state_dict())
    x = torch.randn(3, 6, 4, 5) * 2 + 1
    torch.testing.assert_close(ours(x), theirs(x))
    g = torch.randn_like(x)
    normal_grad = _grad(ours, x, g)
    torch.testing.assert_close(normal_grad, _grad(theirs, x, g), rtol=1e-4, atol=1e-5)
    with explanation_mode(ours):
        torch.testing.assert_close(ours(x), theirs(x), rtol=1e-5, atol=1e-5)
        detached_grad = _grad(ours, x, g)
    # hand formula with a constant std: d/dx of w * (x - mean) / std
    groups = ours.num_groups
    xg = x.unflatten(1, (groups, -1))
    std = (xg.var(dim=(2, 3, 4), correction=0, keepdim=True) + ours.eps).sqrt()
    gw = (g * ours.weight.detach()[None, :, None, None]).unflatten(1, (groups, -1))
    expected = ((gw - gw.mean(dim=(2, 3, 4), keepdim=True)) / std).flatten(1, 2)
    torch.testing.assert_close(detached_grad, expected, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(detached_grad, normal_grad, atol=1e-3)


def test_position_norm_is_layer_norm_over_channels():
    torch.manual_seed(0)
    pn = _randomise_affine(DetachablePositionNorm2d(5))
    x = torch.randn(2, 5, 3, 4)
    expected = F.layer_norm(x.permute(0, 2, 3, 1), (5,), pn.weight, pn.bias, pn.eps).permute(0, 3, 1, 2)
    torch.testing.assert_close(pn(x), expected)
    g = torch.randn_like(x)
    with explanation_mode(pn):
        torch.testing.assert_close(pn(x), expected, rtol=1e-5, atol=1e-5)
        grad = _grad(pn, x, g)
    std = (x.var(dim=1, correction=0, keepdim=True) + pn.eps).sqrt()
    gw = g * pn.weight.detach()[None, :, None, None]
    torch.testing.assert_close(grad, (gw - gw.mean(1, keepdim=True)) / std, rtol=1e-4, atol=1e-5)
    assert pn.features == 5
    with pytest.raises(ConfigError, match="int"):
        DetachablePositionNorm2d((5,))  # type: ignore[arg-type]


def test_detachable_layer_norm_agrees_with_torch():
    torch.manual_seed(0)
    ours = _randomise_affine(DetachableLayerNorm((3, 4)))
    theirs = nn.LayerNorm((3, 4))
    theirs.load_state_dict(ours.state_dict())
    x = torch.randn(2, 5, 3, 4)
    torch.testing.assert_close(ours(x), theirs(x))
    g = torch.randn_like(x)
    with explanation_mode(ours):
        torch.testing.assert_close(ours(x), theirs(x), rtol=1e-5, atol=1e-5)
        grad = _grad(ours, x, g)
    std = (x.var(dim=(-2, -1), correction=0, keepdim=True) + ours.eps).sqrt()
    gw = g * ours.weight.detach()
    torch.testing.assert_close(grad, (gw - gw.mean((-2, -1), keepdim=True)) / std, rtol=1e-4, atol=1e-5)


def test_all_norm_uses_one_statistic_for_everything():
    torch.manual_seed(0)
    an = _randomise_affine(AllNorm2d(7))
    x = torch.randn(3, 7, 4, 4) * 3 + 2
    expected = (x - x.mean()) / (x.var(correction=0) + an.eps).sqrt() * an.weight + an.bias
    torch.testing.assert_close(an(x), expected, rtol=1e-5, atol=1e-5)
    assert an.running_mean.shape == (1,)
    torch.testing.assert_close(an.running_mean, 0.1 * x.mean().reshape(1))
    torch.testing.assert_close(an.running_var, 0.9 + 0.1 * x.var().reshape(1))  # torch: unbiased
    an.eval()
    expected = (x - an.running_mean) / (an.running_var + an.eps).sqrt() * an.weight + an.bias
    torch.testing.assert_close(an(x), expected)


@pytest.mark.parametrize("cls", [AllNorm2d, BatchNorm2d])
def test_centered_batch_norms_only_explain_in_eval(cls):
    layer = cls(4)
    with pytest.raises(ConfigError, match=r"eval\(\)"):
        layer.set_explanation_mode(True)
    layer.set_explanation_mode(False)  # switching off is always fine
    layer.eval()
    x = torch.randn(2, 4, 3, 3)
    plain = layer(x)
    with explanation_mode(layer):
        torch.testing.assert_close(layer(x), plain)


def test_centered_batch_norm_is_torch_batch_norm():
    torch.manual_seed(0)
    ours, theirs = _randomise_affine(BatchNorm2d(4)), nn.BatchNorm2d(4)
    theirs.load_state_dict(ours.state_dict())
    x = torch.randn(3, 4, 2, 2)
    torch.testing.assert_close(ours(x), theirs(x))
    torch.testing.assert_close(ours.running_var, theirs.running_var)


# ------------------------------------------------------------------------------------------------
# uncentered: hand formulas (mean NOT subtracted, divisor = biased centered std)


def test_batch_norm_uncentered_training_eval_and_running_stats():
    torch.manual_seed(0)
    bnu = _randomise_affine(BatchNormUncentered2d(3, momentum=0.25))
    w, b = bnu.weight.detach()[None, :, None, None], bnu.bias.detach()[None, :, None, None]
    x = torch.randn(4, 3, 5, 5) * 2 + 1.5
    var = x.var(dim=(0, 2, 3), correction=0)
    out = bnu(x)
    torch.testing.assert_close(out, x / (var[None, :, None, None] + bnu.eps).sqrt() * w + b, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(bnu.running_var, 0.75 + 0.25 * var)  # biased batch variance
    assert torch.equal(bnu.running_mean, torch.zeros(3))  # kept for the state dict, never used
    assert bnu.num_batches_tracked.item() == 1
    bnu.eval()
    rv = bnu.running_var.clone()
    torch.testing.assert_close(bnu(x), x / (rv[None, :, None, None] + bnu.eps).sqrt() * w + b)
    assert torch.equal(bnu.running_var, rv) and bnu.num_batches_tracked.item() == 1


def test_batch_norm_uncentered_cumulative_average_when_momentum_is_none():
    bnu = BatchNormUncentered2d(2, momentum=None)
    x1, x2 = torch.randn(3, 2, 4, 4), torch.randn(3, 2, 4, 4) * 3
    bnu(x1)
    bnu(x2)
    expected = (x1.var(dim=(0, 2, 3), correction=0) + x2.var(dim=(0, 2, 3), correction=0)) / 2
    torch.testing.assert_close(bnu.running_var, expected)
    assert bnu.num_batches_tracked.item() == 2


def test_batch_norm_uncentered_without_running_stats_uses_batch_statistics():
    bnu = BatchNormUncentered2d(2, affine=False, track_running_stats=False).eval()
    x = torch.randn(3, 2, 4, 4)
    expected = x / (x.var(dim=(0, 2, 3), correction=0)[None, :, None, None] + 1e-5).sqrt()
    torch.testing.assert_close(bnu(x), expected)
    assert bnu.running_var is None and list(bnu.state_dict()) == []


def test_batch_norm_uncentered_explanation_mode_in_training_detaches_the_variance():
    torch.manual_seed(0)
    bnu = _randomise_affine(BatchNormUncentered2d(3))
    x, g = torch.randn(4, 3, 3, 3), torch.randn(4, 3, 3, 3)
    normal = _grad(bnu, x, g)
    with explanation_mode(bnu):
        grad = _grad(bnu, x, g)
    std = (x.var(dim=(0, 2, 3), correction=0) + bnu.eps).sqrt()
    torch.testing.assert_close(grad, g * (bnu.weight.detach() / std)[None, :, None, None])
    assert not torch.allclose(grad, normal, atol=1e-3)


def test_all_norm_uncentered_scalar_statistics():
    torch.manual_seed(0)
    anu = _randomise_affine(AllNormUncentered2d(5))
    x = torch.randn(2, 5, 3, 3) + 1
    var = x.var(correction=0)
    torch.testing.assert_close(anu(x), x / (var + anu.eps).sqrt() * anu.weight + anu.bias)
    torch.testing.assert_close(anu.running_var, 0.9 + 0.1 * var.reshape(1))
    assert {k: tuple(v.shape) for k, v in anu.state_dict().items()} == {
        "weight": (1,), "bias": (1,), "running_mean": (1,), "running_var": (1,), "num_batches_tracked": ()
    }
    anu.eval()
    torch.testing.assert_close(anu(x), x / (anu.running_var + anu.eps).sqrt() * anu.weight + anu.bias)


GROUP_UNCENTERED = [
    (lambda: GroupNormUncentered2d(2, 6), 2),
    (lambda: GNInstanceNormUncentered2d(6), 6),
    (lambda: GNLayerNormUncentered2d(6), 1),
]


@pytest.mark.parametrize("make,groups", GROUP_UNCENTERED, ids=["gnu", "inu", "lnu"])
def test_group_norms_uncentered_hand_formula_and_detach(make, groups):
    torch.manual_seed(0)
    layer = _randomise_affine(make())
    x = torch.randn(2, 6, 3, 4) + 2
    xg = x.unflatten(1, (groups, -1))
    std = (xg.var(dim=(2, 3, 4), correction=0, keepdim=True) + layer.eps).sqrt()
    w, b = layer.weight.detach()[None, :, None, None], layer.bias.detach()[None, :, None, None]
    expected = (xg / std).flatten(1, 2) * w + b
    torch.testing.assert_close(layer(x), expected, rtol=1e-5, atol=1e-5)
    g = torch.randn_like(x)
    normal = _grad(layer, x, g)
    with explanation_mode(layer):
        torch.testing.assert_close(layer(x), expected, rtol=1e-5, atol=1e-5)
        grad = _grad(layer, x, g)
    torch.testing.assert_close(grad, ((g * w).unflatten(1, (groups, -1)) / std).flatten(1, 2), rtol=1e-5, atol=1e-6)
    assert not torch.allclose(grad, normal, atol=1e-3)
    torch.testing.assert_close(group_norm_uncentered(x, groups, layer.weight, layer.bias), expected, rtol=1e-5, atol=1e-5)


def test_position_norm_uncentered_hand_formula_and_detach():
    torch.manual_seed(0)
    pnu = _randomise_affine(PositionNormUncentered2d(4))
    x = torch.randn(2, 4, 3, 3) + 1
    std = (x.var(dim=1, correction=0, keepdim=True) + pnu.eps).sqrt()
    w, b = pnu.weight.detach()[None, :, None, None], pnu.bias.detach()[None, :, None, None]
    torch.testing.assert_close(pnu(x), x / std * w + b, rtol=1e-5, atol=1e-5)
    g = torch.randn_like(x)
    with explanation_mode(pnu):
        grad = _grad(pnu, x, g)
    torch.testing.assert_close(grad, g * w / std, rtol=1e-5, atol=1e-6)


def test_norms_reject_bad_input():
    with pytest.raises(InputError, match="divisible"):
        GroupNormUncentered2d(4, 8)(torch.randn(2, 6, 3, 3))
    with pytest.raises(InputError, match="4D"):
        BatchNormUncentered2d(3)(torch.randn(2, 3, 5))
    with pytest.raises(InputError, match="4D"):
        AllNorm2d(3)(torch.randn(2, 3, 5))


# ------------------------------------------------------------------------------------------------
# wrappers and state-dict layout


def test_wrappers_remove_parameters_and_rename():
    layer = NoBias(BatchNormUncentered2d)(4)
    assert layer.bias is None and layer.weight is not None
    assert "bias" not in layer.state_dict()
    assert repr(layer).startswith("BatchNormUncentered2dNoBias(")
    assert isinstance(layer, BatchNormUncentered2d)
    unaffine = Unaffine(functools.partial(DetachableGroupNorm2d, 2))(4)
    assert unaffine.weight is None and unaffine.bias is None
    assert repr(unaffine).startswith("DetachableGroupNorm2dUnaffine(")
    x = torch.randn(2, 4, 3, 3)
    torch.testing.assert_close(unaffine(x), F.group_norm(x, 2))
    with explanation_mode(unaffine):
        torch.testing.assert_close(unaffine(x), F.group_norm(x, 2), rtol=1e-5, atol=1e-5)
    factory = NoBias(DetachablePositionNorm2d)
    assert factory.__name__ == "DetachablePositionNorm2dNoBias"
    assert Unaffine(functools.partial(GroupNormUncentered2d, 2)).__name__ == "GroupNormUncentered2dUnaffine"
    assert repr(factory) == "NoBias(DetachablePositionNorm2d)"
    assert factory == NoBias(DetachablePositionNorm2d) and factory != Unaffine(DetachablePositionNorm2d)
    # picklable and copyable (EMA copies the model; checkpoints of whole models pickle it)
    clone = pickle.loads(pickle.dumps(layer))
    assert repr(clone).startswith("BatchNormUncentered2dNoBias(") and clone.bias is None
    assert repr(copy.deepcopy(unaffine)).startswith("DetachableGroupNorm2dUnaffine(")
    assert pickle.loads(pickle.dumps(factory))(3).bias is None
    with pytest.raises(ConfigError, match="bias"):
        NoBias(BatchNormUncentered2d)(4, affine=False)


def _reference_layer_entries(signature: list, prefix: str = "bn1.") -> list[tuple[str, tuple, str]]:
    return [(k[len(prefix):], tuple(shape), dtype) for k, shape, dtype in signature if k.startswith(prefix)]


def test_state_dict_layout_matches_the_reference_cifar_resnet20():
    index_path = Path(__file__).resolve().parents[1].parent / "shared" / "conformance" / "state_dict_index.json"
    if not index_path.exists():
        pytest.skip("conformance index not available")
    index = json.loads(index_path.read_text())
    experiments = index["experiments"]["CIFAR10/norm_ablations_final"]
    checked = 0
    for key, make in NORMS_MAP.items():
        for suffix, wrap in [("", None), ("-linear", NoBias), ("-unaffine", Unaffine)]:
            signature = index["signatures"][experiments[f"resnet_20_{key}{suffix}"]["state_dict"]]
            layer = (wrap(make) if wrap else make)(16)
            ours = [(k, tuple(v.shape), str(v.dtype).removeprefix("torch.")) for k, v in layer.state_dict().items()]
            assert ours == _reference_layer_entries(signature), f"{key}{suffix}"
            checked += 1
    assert checked == 36
