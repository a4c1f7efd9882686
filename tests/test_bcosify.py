"""bcos.bcosify on real torchvision and timm models (random weights, nothing downloaded).

The central property: with B = 1 a B-cosified model computes the original's logits on ``[x, 1-x]``
images (the input normalisation folded into the widened stem). Then: unsupported modules fail in
one line, the report lists every replacement, and the result is a B-cos model (explanations,
completeness without biases, post-hoc explainers, export).
"""

from __future__ import annotations

import re
import urllib.error

import pytest
import torch
import torchvision.models as tvm
from torch import nn

import bcos
from bcos.bcosification import (
    BcosifiedConv2d,
    BcosifiedLinear,
    BcosifiedModel,
    UnsupportedModuleError,
    get_b,
    set_b,
)
from bcos.bcosification.sources import load_source_model, resolve_source
from bcos.data.transforms import AddInverse
from bcos.errors import DataNotFoundError, UnknownNameError
from bcos.explanation.contributions import check_completeness

timm = pytest.importorskip("timm")

SIZE = 64


def _trained_looking(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random norm statistics and affine parameters, as a trained model has (fresh ones are 0/1)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.copy_(torch.randn(module.num_features, generator=generator) * 0.1)
                module.running_var.copy_(torch.rand(module.num_features, generator=generator) + 0.5)
            if isinstance(module, nn.BatchNorm2d | nn.LayerNorm) and module.weight is not None:
                module.weight.copy_(torch.rand(module.weight.shape, generator=generator) + 0.5)
                module.bias.copy_(torch.randn(module.bias.shape, generator=generator) * 0.1)
    return model.eval()


def _source(name: str) -> nn.Module:
    torch.manual_seed(0)
    if name.startswith("timm/"):
        arch = name[5:]
        kwargs = {"img_size": SIZE} if arch.startswith("vit") else {}
        return _trained_looking(timm.create_model(arch, pretrained=False, **kwargs))
    return _trained_looking(getattr(tvm, name)())


def _normalise(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    config = getattr(model, "pretrained_cfg", None)
    mean, std = (config["mean"], config["std"]) if config else ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    return (images - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)


MODELS = [
    "resnet18", "resnet50", "densenet121", "vgg16_bn", "convnext_tiny", "efficientnet_b0",
    "mobilenet_v3_small", "timm/vit_small_patch16_224", "timm/resnet18", "timm/convnext_atto",
]  # fmt: skip


@pytest.mark.parametrize("name", MODELS)
def test_b1_reproduces_the_original_logits(name):
    original = _source(name)
    images = torch.rand(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = original(_normalise(original, images))
        converted = bcos.bcosify(original, b=1).eval()
        logits = converted(AddInverse()(images))
    assert isinstance(converted, BcosifiedModel)
    assert expected.abs().max() > 1e-3, "the test needs logits of a meaningful size"
    torch.testing.assert_close(logits, expected, rtol=1e-4, atol=1e-4 * float(expected.abs().max()))
    # every convolution and linear layer was converted, and the original was not touched
    n_layers = sum(type(m) in (nn.Conv2d, nn.Linear) for m in original.modules())
    assert sum(isinstance(m, BcosifiedConv2d | BcosifiedLinear) for m in converted.modules()) == n_layers
    assert not any(isinstance(m, BcosifiedConv2d) for m in original.modules())


def test_b2_changes_the_outputs_and_set_b_goes_back():
    original = _source("resnet18")
    x = AddInverse()(torch.rand(2, 3, SIZE, SIZE))
    model = bcos.bcosify(original, b=2).eval()
    assert get_b(model) == model.b == 2
    with torch.no_grad():
        at_two = model(x)
        assert set_b(model, 1) == 21
        at_one = model(x)
        expected = original(_normalise(original, x[:, :3]))
    assert not torch.allclose(at_two, at_one)
    torch.testing.assert_close(at_one, expected, rtol=1e-4, atol=1e-4)


def test_input_layer_without_normalisation_reads_x_only():
    original = _source("resnet18")
    model = bcos.bcosify(original, b=1, normalization=None).eval()
    stem = model.model.conv1.conv
    assert stem.in_channels == 6
    torch.testing.assert_close(stem.weight[:, :3], original.conv1.weight)
    assert stem.weight[:, 3:].abs().max() == 0
    images = torch.rand(2, 3, SIZE, SIZE)
    with torch.no_grad():
        torch.testing.assert_close(model(AddInverse()(images)), original(images), rtol=1e-4, atol=1e-5)


def test_unsupported_module_is_named_in_one_line():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Tanh(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
    with pytest.raises(UnsupportedModuleError) as error:
        bcos.bcosify(model)
    message = str(error.value)
    assert "\n" not in message
    assert "1 (torch.nn.modules.activation.Tanh)" in message


def test_torchvision_vit_is_refused_and_its_attention_named_by_path():
    from torchvision.models import vision_transformer as tv_vit

    model = tvm.VisionTransformer(image_size=32, patch_size=16, num_layers=1, num_heads=2, hidden_dim=8, mlp_dim=16)
    with pytest.raises(UnsupportedModuleError, match=r"<model> \(torchvision\.models\.vision_transformer\.VisionTransformer\)"):
        bcos.bcosify(model)
    containers = (tv_vit.VisionTransformer, tv_vit.Encoder, tv_vit.EncoderBlock, tv_vit.MLPBlock)
    with pytest.raises(UnsupportedModuleError) as error:
        bcos.bcosify(model, trusted=containers)
    assert str(error.value).startswith(
        "bcosify cannot convert encoder.layers.encoder_layer_0.self_attention (torch.nn.modules.activation.MultiheadAttention)"
    )


class _MyBlock(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.relu = nn.ReLU()

    def forward(self, x):
        return self.relu(self.conv(x)) + self.conv(x)


def test_own_containers_are_walked_when_trusted():
    model = nn.Sequential(_MyBlock(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3)).eval()
    with pytest.raises(UnsupportedModuleError, match=r"^bcosify cannot convert 0 \(.*_MyBlock\)"):
        bcos.bcosify(model)
    converted = bcos.bcosify(model, b=1, trusted=(_MyBlock,)).eval()
    images = torch.rand(2, 3, 8, 8)
    with torch.no_grad():
        expected = model(_normalise(model, images))
        torch.testing.assert_close(converted(AddInverse()(images)), expected, rtol=1e-4, atol=1e-5)


def test_report_lists_every_replacement(capsys):
    original = _source("efficientnet_b0")
    model = bcos.bcosify(original, report=True)
    printed = capsys.readouterr().out
    report = model.bcosify_report
    replaced = {c.path for c in report.replacements}
    assert "features.0.0" in replaced  # the stem
    assert "features.1.0.block.1" in replaced  # a squeeze-and-excitation block
    assert "features.1.0.block.1.block.fc1" in replaced  # its convolution, inside the gate
    assert report.input_layer == "features.0.0"
    assert sum(1 for c in report.replacements if c.result == "BcosifiedConv2d") == 81
    assert re.search(r"features\.0\.0 +Conv2d -> BcosifiedConv2d .*widened to \[x, 1-x\]", printed)
    assert report.counts()["SiLU -> DetachableSiLU"] == 33
    assert report.to_dict()["b"] == 2


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v3_small", "timm/convnext_atto"])
def test_without_biases_the_contributions_sum_to_the_logit(name):
    model = bcos.bcosify(_source(name), b=2, bias="remove").eval()
    x = AddInverse()(torch.rand(3, 3, SIZE, SIZE))
    result = check_completeness(model, x, rtol=1e-3, atol=1e-4)
    assert result.ok, result.max_abs_error
    assert model.bcosify_report.logit_bias is not None


def test_with_biases_completeness_is_not_claimed():
    model = bcos.bcosify(_source("resnet18"), b=2, bias="keep").eval()
    x = AddInverse()(torch.rand(2, 3, SIZE, SIZE))
    assert not check_completeness(model, x).ok  # the biases contribute too (documented)


def test_vit_attention_is_detached_in_explanation_mode():
    model = bcos.bcosify(_source("timm/vit_small_patch16_224"), b=2, bias="remove").eval()
    x = AddInverse()(torch.rand(1, 3, SIZE, SIZE))
    explanation = model.explain(x)
    assert explanation.dynamic_linear_weights.shape == x.shape
    attention = model.model.blocks[0].attn
    with model.explanation_mode():
        assert attention.q_norm.detach and attention.k_norm.detach
    assert not attention.q_norm.detach


def test_a_bcosified_model_works_with_explanations_explainers_and_export(tmp_path):
    from bcos.deploy import export_program
    from bcos.explain.methods import get_explainer

    model = bcos.bcosify(_source("resnet18"), b=2, bias="remove").eval()
    x = AddInverse()(torch.rand(2, 3, SIZE, SIZE))
    explanation = model.explain(x)
    assert explanation.explanation.shape == (2, SIZE, SIZE, 4)
    features = model.get_feature_extractor()(x)
    torch.testing.assert_close(model.get_classifier()(features), model(x))
    for name in ("Ours", "IxG", "GCam"):
        attribution = get_explainer(model, name).attribute(x, target=torch.tensor([0, 1]))
        assert attribution.shape[0] == 2 and attribution.shape[-2:] == (SIZE, SIZE)
    program = export_program(model, x)
    torch.testing.assert_close(program.module()(x), model(x))


def test_bad_options_are_one_line_errors():
    model = _source("resnet18")
    with pytest.raises(UnknownNameError, match="did you mean 'remove'"):
        bcos.bcosify(model, bias="remov")
    with pytest.raises(bcos.errors.ConfigError, match="b must be a finite number >= 1"):
        bcos.bcosify(model, b=0.5)
    for b in (float("inf"), float("nan")):  # issue 16: infinity was accepted and written into bcosify.json
        with pytest.raises(bcos.errors.ConfigError, match="b must be a finite number >= 1"):
            bcos.bcosify(model, b=b)
    with pytest.raises(bcos.errors.ConfigError, match="already B-cosified"):
        bcos.bcosify(bcos.bcosify(model))


def test_source_models_by_name_and_from_a_local_weights_file(tmp_path):
    assert resolve_source("resnet18") == ("torchvision", "resnet18")
    assert resolve_source("timm/resnet18") == ("timm", "resnet18")
    assert resolve_source("vit_small_patch16_224") == ("timm", "vit_small_patch16_224")
    with pytest.raises(UnknownNameError, match="did you mean 'resnet18'"):
        resolve_source("resnet81")
    original = _source("resnet18")
    path = tmp_path / "resnet18.pth"
    torch.save(original.state_dict(), path)
    loaded = load_source_model("resnet18", weights=path, num_classes=7)  # offline: no download
    assert loaded.fc.out_features == 7
    torch.testing.assert_close(loaded.conv1.weight, original.conv1.weight)


def test_an_impossible_download_is_one_line_naming_weights(monkeypatch, tmp_path):
    import torchvision.models._api as api

    def offline(*args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(api, "load_state_dict_from_url", offline)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(DataNotFoundError) as error:
        load_source_model("resnet18")
    assert "\n" not in str(error.value) and "--weights FILE" in str(error.value)


def test_bad_builder_arguments_are_not_called_a_failed_download():
    """Issue 16: only errors of fetching the weights become the 'could not be downloaded' line."""
    with pytest.raises(ValueError, match="positive image size") as caught:
        load_source_model("timm/vit_small_patch16_224", img_size=0)  # pretrained: fails before any download
    assert not isinstance(caught.value, DataNotFoundError)
    with pytest.raises(TypeError, match="bogus"):
        load_source_model("resnet18", bogus=1)
