"""B-cos CNN architectures: reference state-dict layout, reference numerics, builder behaviour.

Layouts are checked on the meta device (no memory, no compute). The ImageNet conformance vectors
need full 224x224 forward passes and are marked slow; the CIFAR ones are cheap.
"""

from __future__ import annotations

import json
import math
import sys
from functools import partial
from pathlib import Path

import pytest
import torch
from torch import nn

import bcos.models as models
from bcos.errors import ConfigError
from bcos.modules import BcosConv2d, explanation_mode, norms

CONFORMANCE = Path(__file__).resolve().parents[2] / "shared" / "conformance"
BNU_LINEAR = norms.NoBias(norms.BatchNormUncentered2d)

# CIFAR10/norm_ablations_final norm keys (inventory 3.4)
CIFAR_NORMS = {
    "an": norms.AllNorm2d,
    "bn": norms.BatchNorm2d,
    "gn": partial(norms.DetachableGroupNorm2d, 2),
    "in": norms.DetachableGNInstanceNorm2d,
    "ln": norms.DetachableGNLayerNorm2d,
    "pn": norms.DetachablePositionNorm2d,
    "anu": norms.AllNormUncentered2d,
    "bnu": norms.BatchNormUncentered2d,
    "gnu": partial(norms.GroupNormUncentered2d, 2),
    "inu": norms.GNInstanceNormUncentered2d,
    "lnu": norms.GNLayerNormUncentered2d,
    "pnu": norms.PositionNormUncentered2d,
}


@pytest.fixture(scope="module")
def conformance():
    if not (CONFORMANCE / "conformance.py").exists():
        pytest.skip("../shared/conformance not found next to the project")
    sys.path.insert(0, str(CONFORMANCE))
    import conformance

    return conformance


@pytest.fixture(scope="module")
def index(conformance):
    return json.loads((CONFORMANCE / "state_dict_index.json").read_text())


def build_for_spec(index: dict, spec: str, device: str | None = None) -> nn.Module:
    """Build the model an experiment config implies, by hand (the config system is tested elsewhere)."""
    dataset, collection, experiment = spec.split("/")
    arch = index["experiments"][f"{dataset}/{collection}"][experiment]["model_name"]
    if dataset == "CIFAR10":
        name = experiment.split("-seed=")[0]
        max_out = 1 if name.endswith("-nomaxout") else 2
        name = name.removesuffix("-nomaxout")
        norm_layer = nn.Identity
        if name.count("_") == 2:  # resnet_<d>_<norm>[-linear|-unaffine]
            norm_key, _, affine = name.split("_")[2].partition("-")
            wrap = {"": lambda f: f, "linear": norms.NoBias, "unaffine": norms.Unaffine}[affine]
            norm_layer = wrap(CIFAR_NORMS[norm_key])
        builder = getattr(models, f"cifar10_{arch}")
        args = dict(num_classes=10, norm_layer=norm_layer, logit_bias=-math.log(9))
    else:
        builder = getattr(models, arch)
        args = dict(num_classes=1000, norm_layer=BNU_LINEAR, logit_bias=-math.log(999))
        if experiment.endswith("_pn"):
            args["norm_layer"] = None  # the ConvNeXt default position norm
        if collection == "bcos_final_long" and arch.startswith("resnet"):
            args["stochastic_depth_prob"] = 0.1
        max_out = 1
    with torch.device(device or "cpu"):
        return builder(conv_layer=partial(BcosConv2d, b=2, max_out=max_out), **args)


def layout(model: nn.Module) -> list:
    return [[k, list(v.shape), str(v.dtype).removeprefix("torch.")] for k, v in model.state_dict().items()]


# --------------------------------------------------------------------------------------------
# State-dict layout equals the reference (released weights load)
# --------------------------------------------------------------------------------------------
LAYOUT_SPECS = [
    "ImageNet/bcos_final/resnet_18",
    "ImageNet/bcos_final/resnet_101",
    "ImageNet/bcos_final/resnext_50_32x4d",
    "ImageNet/bcos_final/densenet_121",
    "ImageNet/bcos_final/densenet_161",
    "ImageNet/bcos_final/vgg_11_bnu",
    "ImageNet/bcos_final_long/resnet_152",
    "ImageNet/bcos_final_long/convnext_tiny_pn",
    "ImageNet/bcos_final_long/convnext_tiny_bnu",
    "ImageNet/bcos_final_long/convnext_base_pn",
    "CIFAR10/norm_ablations_final/resnet_20",
    "CIFAR10/norm_ablations_final/resnet_20_an",
    "CIFAR10/norm_ablations_final/resnet_32_gnu-linear-nomaxout",
    "CIFAR10/norm_ablations_final/resnet_44_pn-unaffine",
    "CIFAR10/norm_ablations_final/resnet_56_bnu-linear-seed=420",
]


@pytest.mark.parametrize("spec", LAYOUT_SPECS)
def test_state_dict_layout_matches_reference(index, spec):
    dataset, collection, experiment = spec.split("/")
    entry = index["experiments"][f"{dataset}/{collection}"][experiment]
    model = build_for_spec(index, spec, device="meta")
    assert layout(model) == index["signatures"][entry["state_dict"]]
    assert sum(p.numel() for p in model.parameters()) == entry["n_params"]


@pytest.mark.parametrize(
    ("ours", "theirs", "kwargs"),
    [
        ("wide_resnet50_2", "wide_resnet50_2", {}),
        ("resnext101_32x8d", "resnext101_32x8d", {}),
        ("densenet201", "densenet201", {}),
    ],
)
def test_layout_mirrors_torchvision_for_models_outside_the_index(ours, theirs, kwargs):
    """With plain BatchNorm the B-cos model has torchvision's keys, convs renamed to ``.linear``."""
    import torchvision

    with torch.device("meta"):
        model = getattr(models, ours)(norm_layer=nn.BatchNorm2d, in_chans=3, **kwargs)
        reference = getattr(torchvision.models, theirs)()
    expected = {}
    for key, value in reference.state_dict().items():
        if key in ("fc.bias", "classifier.bias"):
            continue
        shape = list(value.shape)
        if key.endswith("weight") and value.dim() >= 2:
            key = key.removesuffix("weight") + "linear.weight"
            shape = shape + [1] * (4 - len(shape))  # the linear head is a 1x1 conv here
        expected[key] = shape
    assert {k: list(v.shape) for k, v in model.state_dict().items()} == expected


def test_cifar_densenet_depths_give_three_blocks_of_equal_depth():
    for depth, growth in [(52, 12), (190, 40)]:
        with torch.device("meta"):
            model = getattr(models, f"cifar10_densenet{depth}")()
        blocks = [m for n, m in model.features.named_children() if n.startswith("denseblock")]
        assert [len(b) for b in blocks] == [(depth - 4) // 6] * 3
        assert model.features.conv0.linear.weight.shape == (2 * growth, 6, 3, 3)
        assert model.num_classes == 10


def test_cifar_resnext_widths():
    with torch.device("meta"):
        small, large = models.cifar10_resnext47_16x8d(), models.cifar10_resnext29_8x64d()
    # bottleneck width = planes * width_per_group / 64 * groups; stage widths start at inplanes
    assert small.layer1[0].conv2.linear.weight.shape == (32, 2, 3, 3)
    assert len(small.layer1) == 5 and small.layer4 is None
    assert small.fc.linear.weight.shape == (10, 64 * 4, 1, 1)
    assert large.layer1[0].conv2.linear.weight.shape == (512, 64, 3, 3)
    assert large.fc.linear.weight.shape == (10, 256 * 4, 1, 1)


def test_vgg_plain_and_bnu_share_indices():
    """The plain VGG keeps an Identity in every norm slot, so its keys are the _bnu keys minus the norms."""
    with torch.device("meta"):
        plain, bnu = models.vgg16(), models.vgg16_bnu()
    conv_keys = lambda m: [k for k in m.state_dict() if k.endswith("linear.weight")]  # noqa: E731
    assert conv_keys(plain) == conv_keys(bnu)
    assert len(conv_keys(plain)) == 13 + 3
    assert all(k.endswith("linear.weight") for k in plain.state_dict())
    assert isinstance(bnu.features[1], norms.BatchNormUncentered2d) and bnu.features[1].bias is None


# --------------------------------------------------------------------------------------------
# Numerics equal the reference (conformance vectors)
# --------------------------------------------------------------------------------------------
def _explain_one(model: nn.Module, x: torch.Tensor, target: int | None = None):
    """W(x) = d logit / d x in explanation mode, the contribution map and the logit."""
    x = x.clone().requires_grad_(True)
    with explanation_mode(model):
        out = model(x)
        target = int(out[0].argmax()) if target is None else target
        (weights,) = torch.autograd.grad(out[0, target], x)
    return target, out[0, target].detach(), weights[0], (x * weights).sum(1)[0].detach()


CIFAR_VECTORS = [
    "resnet_20",
    "resnet_20_an",
    "resnet_20_bnu-linear-nomaxout",
    "resnet_20_lnu-unaffine",
    "resnet_20_pn-linear-nomaxout",
]


@pytest.mark.parametrize("experiment", CIFAR_VECTORS)
def test_cifar_conformance(conformance, index, experiment):
    vec = conformance.load_vector(
        CONFORMANCE / "vectors" / f"CIFAR10__norm_ablations_final__{experiment}.pt"
    )
    model = build_for_spec(index, vec["spec"])
    conformance.fill_weights(model, vec["buffers"])
    assert conformance.compare_logits(model, vec) < 1e-3

    x = conformance.make_input(vec["hw"], 1, True)
    for prefix in ("pred", "class3"):
        target = None if prefix == "pred" else int(vec["class3_class"])
        cls, logit, weights, cmap = _explain_one(model, x, target)
        assert cls == int(vec[f"{prefix}_class"])
        assert conformance.rel_err(weights, vec[f"{prefix}_dynamic_linear_weights"]) < 1e-3
        assert conformance.rel_err(cmap, vec[f"{prefix}_contribution_map"]) < 1e-3
        if experiment != "resnet_20_an":  # a centered norm's bias breaks exact completeness
            assert float(cmap.sum()) + model.logit_layer.logit_bias == pytest.approx(float(logit), abs=1e-4)


IMAGENET_VECTORS = [
    "bcos_final__resnet_18",
    "bcos_final__resnext_50_32x4d",
    "bcos_final__densenet_121",
    "bcos_final__vgg_11_bnu",
    "bcos_final_long__convnext_tiny_bnu",
    "bcos_final_long__convnext_tiny_pn",
]


@pytest.mark.slow
@pytest.mark.parametrize("name", IMAGENET_VECTORS)
def test_imagenet_conformance(conformance, index, name):
    """One 224x224 pass per model: the logits, or (VGG, logits too flat) the contribution map."""
    vec = conformance.load_vector(CONFORMANCE / "vectors" / f"ImageNet__{name}.pt")
    model = build_for_spec(index, vec["spec"])
    conformance.fill_weights(model, vec["buffers"])
    error = conformance.compare_logits(model, vec)
    if error is None:
        cls, _, _, cmap = _explain_one(model, conformance.make_input(vec["hw"], 1, True))
        assert cls == int(vec["pred_class"])
        error = conformance.rel_err(cmap, vec["pred_contribution_map"])
    assert error < 1e-3


# --------------------------------------------------------------------------------------------
# Forward, classifier / feature extractor, logit layer
# --------------------------------------------------------------------------------------------
def _tiny_models() -> dict[str, nn.Module]:
    torch.manual_seed(0)
    return {
        "resnet": models.cifar10_resnet20(num_classes=4, norm_layer=BNU_LINEAR),
        "resnet4": models.resnet18(num_classes=4, inplanes=8),
        "bottleneck": models.BcosResNet(
            models.Bottleneck, [1, 1, 1], num_classes=4, inplanes=8, groups=2,
            width_per_group=8, small_inputs=True,
        ),  # fmt: skip
        "densenet": models.BcosDenseNet(
            growth_rate=4, block_config=(2, 2), num_init_features=8, num_classes=4, small_inputs=True
        ),
        "convnext": models.BcosConvNeXt(
            [models.CNBlockConfig(8, 16, 1), models.CNBlockConfig(16, None, 1)], num_classes=4
        ),
    }


@pytest.mark.parametrize("family", ["resnet", "resnet4", "bottleneck", "densenet", "convnext"])
def test_forward_shape_and_feature_extractor_plus_classifier(family):
    model = _tiny_models()[family].eval()
    x = torch.rand(2, 6, 32, 32)
    with torch.no_grad():
        out = model(x)
        features = model.get_feature_extractor()(x)
        logits = model.get_classifier()(features).mean(dim=(2, 3))
    assert out.shape == (2, 4)
    assert features.dim() == 4  # no pooling
    torch.testing.assert_close(out, model.logit_layer(logits))


def test_vgg_forward_shape_any_input_size():
    with torch.device("meta"):  # 130M parameters: check shapes only
        model = models.vgg11_bnu(num_classes=7)
        assert model(torch.zeros(2, 6, 64, 96)).shape == (2, 7)
        assert model.get_feature_extractor()(torch.zeros(1, 6, 64, 96)).shape == (1, 512, 2, 3)


def test_vgg_no_pool_strides_instead_of_pooling():
    with torch.device("meta"):
        pooled, strided = models.vgg11(), models.vgg11(no_pool=True)
        x = torch.zeros(1, 6, 64, 64)
        assert pooled.features(x).shape == strided.features(x).shape == (1, 512, 2, 2)
    assert not any(isinstance(m, nn.AvgPool2d) for m in strided.modules())
    assert strided.features[0].linear.stride == (2, 2)
    assert pooled.features[0].linear.stride == (1, 1)


def test_logit_bias_default_explicit_zero_and_single_class():
    with torch.device("meta"):
        assert models.resnet18().logit_layer.logit_bias == pytest.approx(-math.log(999))
        assert models.cifar10_resnet20().logit_layer.logit_bias == pytest.approx(-math.log(9))
        assert models.convnext_atto(logit_bias=0.0).logit_layer.logit_bias == 0.0
        assert models.vgg11(logit_bias=0.0).logit_layer.logit_bias == 0.0
        assert models.densenet121(logit_temperature=2.0).logit_layer.logit_temperature == 2.0
    model = models.cifar10_resnet20(num_classes=1, logit_bias=0.0).eval()
    assert model.logit_layer.logit_bias == 0.0
    assert model(torch.rand(1, 6, 8, 8)).shape == (1, 1)
    with torch.device("meta"):
        assert models.cifar10_densenet52(num_classes=1).logit_layer.logit_bias == 0.0


def test_builders_work_without_explicit_layers():
    """The reference's VGG builders crashed without conv_layer and norm_layer."""
    with torch.device("meta"):
        for name in ["vgg11_bnu", "vgg13", "resnet34", "densenet121", "convnext_atto"]:
            model = getattr(models, name)()
            assert model.num_classes == 1000
            convs = [m for m in model.modules() if isinstance(m, BcosConv2d)]
            assert convs and convs[0].linear.in_channels == 6
    # the last one built is the ConvNeXt: its default norm is a bias-free position norm, eps 1e-6
    assert isinstance(model.features[1], norms.DetachablePositionNorm2d)
    assert model.features[1].eps == 1e-6 and model.features[1].bias is None


# --------------------------------------------------------------------------------------------
# Builder arguments
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("builder", "kwargs", "suggestion"),
    [
        ("resnet18", {"num_clases": 10}, "num_classes"),
        ("cifar10_resnext29_32x4d", {"groups": 8}, None),  # fixed by the architecture
        ("densenet161", {"growth_rate": 12}, None),
        ("vgg11_bnu", {"scale_fact": 1000}, None),
        ("convnext_tiny", {"layerscale": 0.1}, "layer_scale"),
    ],
)
def test_unknown_keyword_raises_type_error_naming_valid_ones(builder, kwargs, suggestion):
    with pytest.raises(TypeError, match="valid keyword arguments: .*num_classes") as info:
        getattr(models, builder)(**kwargs)
    assert repr(next(iter(kwargs))) in str(info.value)
    if suggestion:
        assert f"did you mean {suggestion!r}" in str(info.value)


@pytest.mark.parametrize("builder", ["resnet18", "densenet121", "vgg11_bnu", "convnext_tiny"])
def test_pretrained_points_to_the_registry(builder):
    with pytest.raises(ConfigError, match=r"bcos\.create_model\(name, pretrained=True\)"):
        getattr(models, builder)(pretrained=True)


def test_densenet121_growth_rate_and_stem_are_overridable():
    with torch.device("meta"):
        model = models.densenet121(growth_rate=16, num_init_features=32)
    assert model.features.conv0.linear.weight.shape[0] == 32
    assert model.features.denseblock1.denselayer1.conv2.linear.weight.shape[0] == 16


# --------------------------------------------------------------------------------------------
# Training features
# --------------------------------------------------------------------------------------------
def test_stochastic_depth_grows_linearly_and_is_off_in_eval():
    with torch.device("meta"):
        resnet = models.resnet50(stochastic_depth_prob=0.2)
        convnext = models.convnext_atto()  # default 0.1
    blocks = [b for layer in (resnet.layer1, resnet.layer2, resnet.layer3, resnet.layer4) for b in layer]
    probs = [0.0 if b.stochastic_depth is None else b.stochastic_depth.p for b in blocks]
    assert probs == pytest.approx([0.2 * i / 15 for i in range(16)])
    cn_probs = [m.stochastic_depth.p for m in convnext.modules() if isinstance(m, models.CNBlock)]
    assert cn_probs[0] == 0.0 and cn_probs[-1] == pytest.approx(0.1) and len(cn_probs) == 12

    torch.manual_seed(0)
    model = models.cifar10_resnet20(num_classes=3, stochastic_depth_prob=0.9).eval()
    x = torch.rand(2, 6, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(model(x), model(x))


def test_stochastic_depth_drops_whole_samples_and_rescales_the_rest():
    layer = models.resnet.StochasticDepth(0.5).train()
    torch.manual_seed(0)
    out = layer(torch.ones(64, 3, 2, 2))
    per_sample = out.flatten(1)
    assert set(per_sample.unique().tolist()) == {0.0, 2.0}
    assert (per_sample == per_sample[:, :1]).all()  # one decision per sample ("row" mode)
    assert 10 < int((per_sample[:, 0] == 0).sum()) < 54
    x = torch.rand(4, 3)
    assert layer.eval()(x) is x


def test_densenet_memory_efficient_gives_same_outputs_and_gradients():
    torch.manual_seed(0)
    kwargs = dict(growth_rate=4, block_config=(2, 2), num_init_features=8, num_classes=3, small_inputs=True)
    plain = models.BcosDenseNet(**kwargs)
    efficient = models.BcosDenseNet(memory_efficient=True, **kwargs)
    efficient.load_state_dict(plain.state_dict())
    x = torch.rand(2, 6, 8, 8)
    outs, grads = [], []
    for model in (plain, efficient):
        out = model(x)
        out.sum().backward()
        outs.append(out)
        grads.append(model.features.denseblock1.denselayer1.conv1.linear.weight.grad)
    torch.testing.assert_close(outs[0], outs[1])
    torch.testing.assert_close(grads[0], grads[1])


def test_zero_init_residual_zeroes_the_last_norm_of_each_block():
    model = models.cifar10_resnet20(norm_layer=BNU_LINEAR, zero_init_residual=True)
    blocks = [b for layer in (model.layer1, model.layer2, model.layer3) for b in layer]
    assert all(not b.bn2.weight.detach().any() for b in blocks)
    assert all(b.bn1.weight.detach().eq(1).all() for b in blocks)


def test_models_are_bcos_util_models():
    model = _tiny_models()["resnet"]
    assert isinstance(model, models.BcosUtilMixin)
    assert type(model).__mro__[1] is models.BcosUtilMixin
    assert callable(model.explain) and callable(model.explanation_mode)
