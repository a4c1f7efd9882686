"""Declaring ``[x, 1 - x]`` inputs: which layer of each architecture reads the input, that the
declaration changes no value, and that training declares it exactly when its data is encoded."""

from __future__ import annotations

import math

import pytest
import torch
from torchvision.transforms import transforms as T

from bcos.data.presets import CIFAR10ClassificationPresetTest, ImageNetClassificationPresetEval
from bcos.data.transforms import AddInverse, ends_with_add_inverse
from bcos.models.base import BcosSequential
from bcos.models.convnext import convnext_atto
from bcos.models.densenet import BcosDenseNet
from bcos.models.resnet import cifar10_resnet20, resnet18
from bcos.models.vgg import BcosVGG, make_layers
from bcos.models.vit import SimpleViT
from bcos.modules import BcosConv2d, LogitLayer

CNNS = {
    "resnet": (lambda: cifar10_resnet20(num_classes=10), 16),
    "resnet-imagenet-stem": (lambda: resnet18(num_classes=10), 32),
    "densenet": (lambda: BcosDenseNet(growth_rate=4, block_config=(2, 2), num_init_features=8, num_classes=10), 16),
    "vgg": (lambda: BcosVGG(make_layers([8, "M", 512, "M"]), num_classes=10, init_weights=False), 8),
    "convnext": (lambda: convnext_atto(num_classes=10), 32),
}


@pytest.fixture(autouse=True)
def _fused(monkeypatch):
    """The declaration matters to the fused operator: build every layer with it."""
    from bcos import ops

    monkeypatch.setattr(ops, "_use_fused", True)


@pytest.mark.parametrize("family", CNNS)
def test_the_declared_input_layer_reads_the_input_and_logits_do_not_change(family):
    torch.manual_seed(0)
    build, size = CNNS[family]
    model = build().eval()
    h = torch.rand(2, 3, size, size)
    x = torch.cat([h, 1 - h], 1)
    seen = []
    handles = [m.register_forward_pre_hook(lambda m, args: seen.append((m, args[0]))) for m in model.modules()]
    with torch.no_grad():
        expected = model(x)
    for handle in handles:
        handle.remove()
    readers = {id(m) for m, inp in seen if inp is x and isinstance(m, BcosConv2d)}
    assert readers == {id(model.get_submodule(model.input_layer_name))}
    assert model.set_inputs_inverse_encoded() is True
    assert model.get_submodule(model.input_layer_name).inverse_encoded_input
    with torch.no_grad():
        torch.testing.assert_close(model(x), expected, rtol=1e-4, atol=1e-5)
    model.set_inputs_inverse_encoded(False)
    assert not model.get_submodule(model.input_layer_name).inverse_encoded_input


def test_a_vit_has_no_input_layer_to_declare():
    vit = SimpleViT(image_size=16, patch_size=8, num_classes=3, dim=16, depth=1, heads=2, mlp_dim=16)
    assert BcosSequential(vit, LogitLayer(logit_bias=-math.log(2))).set_inputs_inverse_encoded() is False


def test_ends_with_add_inverse():
    assert ends_with_add_inverse(CIFAR10ClassificationPresetTest(is_bcos=True))
    assert ends_with_add_inverse(ImageNetClassificationPresetEval(crop_size=224, is_bcos=True))
    assert not ends_with_add_inverse(ImageNetClassificationPresetEval(crop_size=224, is_bcos=False))
    assert ends_with_add_inverse(T.Compose([T.ToTensor(), T.Compose([AddInverse()])]))
    assert not ends_with_add_inverse(T.Compose([AddInverse(), T.RandomErasing()]))
    assert not ends_with_add_inverse(AddInverse(dim=-1))
    assert not ends_with_add_inverse(None) and not ends_with_add_inverse(T.Compose([]))


def test_training_declares_the_encoding_of_its_data_while_fitting_only(tmp_path):
    pytest.importorskip("lightning")
    from bcos.training.trainer import ClassificationLitModel

    module = ClassificationLitModel("Digits", "bcos_demo", "resnet_8_bnu-linear", base_directory=str(tmp_path))
    stem = module.model.get_submodule(module.model.input_layer_name)
    assert module.inputs_inverse_encoded and not stem.inverse_encoded_input
    module.on_fit_start()
    assert stem.inverse_encoded_input
    module.on_fit_end()
    assert not stem.inverse_encoded_input
