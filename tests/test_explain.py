"""The explanation core: batched W(x), contribution maps, completeness, input hygiene, errors."""

from __future__ import annotations

import math
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from bcos.errors import InputError
from bcos.explain import check_completeness, dynamic_linear_weights, explain, gradients_to_images
from bcos.models.base import BcosUtilMixin
from bcos.modules.bcos_conv import BcosConv2d
from bcos.modules.logit_layer import LogitLayer

CONFORMANCE = Path(__file__).resolve().parents[2] / "shared" / "conformance"
NUM_CLASSES = 5


class TinyBcosNet(BcosUtilMixin, nn.Module):
    """Two B-cos convs, global average pooling, a logit layer: exactly dynamic linear."""

    def __init__(self, extra_bias: bool = False, logit_temperature: float | None = None) -> None:
        super().__init__()
        self.conv1 = BcosConv2d(6, 8, kernel_size=3, padding=1)
        self.conv2 = BcosConv2d(8, NUM_CLASSES, kernel_size=3, padding=1)
        # a plain conv with a bias adds an input-independent offset: completeness must then fail
        self.offset = nn.Conv2d(NUM_CLASSES, NUM_CLASSES, 1, bias=True) if extra_bias else nn.Identity()
        self.logit_layer = LogitLayer(logit_temperature=logit_temperature, logit_bias=-math.log(NUM_CLASSES - 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.offset(self.conv2(self.conv1(x)))
        return self.logit_layer(x.mean(dim=(2, 3)))


def _model(**kwargs) -> TinyBcosNet:
    torch.manual_seed(0)
    model = TinyBcosNet(**kwargs).eval()
    if isinstance(model.offset, nn.Conv2d):
        nn.init.constant_(model.offset.bias, 0.5)
    return model


def _images(n: int = 4, hw: int = 8, seed: int = 1) -> torch.Tensor:
    x = torch.rand(n, 3, hw, hw, generator=torch.Generator().manual_seed(seed))
    return torch.cat([x, 1 - x], 1)


def test_batched_explanation_equals_single_calls():
    model, x = _model(), _images(4)
    targets = [0, 3, 3, 1]
    batched = explain(model, x, targets)
    assert len(batched) == 4
    assert batched.dynamic_linear_weights.shape == (4, 6, 8, 8)
    assert batched.contribution_map.shape == (4, 8, 8)
    assert batched.explanation.shape == (4, 8, 8, 4)
    assert batched.explained_class_idx.tolist() == targets
    for i in range(4):
        single = explain(model, x[i], targets[i])  # a [C, H, W] image is a batch of one
        assert len(single) == 1
        torch.testing.assert_close(batched.dynamic_linear_weights[i], single.dynamic_linear_weights[0], rtol=1e-5, atol=1e-7)
        torch.testing.assert_close(batched.contribution_map[i], single.contribution_map[0], rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(batched.explanation[i], single.explanation[0], atol=1e-5)
        assert batched.explained_logit[i] == pytest.approx(float(single.explained_logit[0]), rel=1e-6)


def test_default_target_is_the_prediction_and_fields_are_consistent():
    model, x = _model(), _images(3)
    result = explain(model, x)
    with torch.no_grad():
        logits = model(x)
    torch.testing.assert_close(result.logits, logits)
    assert torch.equal(result.prediction, logits.argmax(1))
    assert torch.equal(result.explained_class_idx, result.prediction)
    torch.testing.assert_close(result.explained_logit, logits.max(1).values)
    torch.testing.assert_close(result.contribution_map, (x * result.dynamic_linear_weights).sum(1))
    np.testing.assert_allclose(result.explanation, gradients_to_images(x, result.dynamic_linear_weights), atol=1e-6)
    # a tensor target and a single int for all samples
    assert explain(model, x, torch.tensor([2, 2, 4])).explained_class_idx.tolist() == [2, 2, 4]
    assert explain(model, x, 1).explained_class_idx.tolist() == [1, 1, 1]


def test_explanation_mode_leaves_forward_unchanged_but_changes_gradient():
    model, x = _model(), _images(2)
    with torch.no_grad():
        plain = model(x)
        with model.explanation_mode():
            detached = model(x)
    torch.testing.assert_close(plain, detached, rtol=0, atol=0)
    # the plain gradient differs from W(x): explanation mode is really used for the backward
    xg = x.clone().requires_grad_(True)
    (plain_grad,) = torch.autograd.grad(model(xg)[:, 0].sum(), xg)
    weights = dynamic_linear_weights(model, x, 0)
    assert not torch.allclose(plain_grad, weights, rtol=1e-3, atol=0)


@pytest.mark.parametrize("temperature", [None, 0.25])
def test_completeness_holds_for_a_bcos_cnn(temperature):
    model, x = _model(logit_temperature=temperature), _images(3)
    result = check_completeness(model, x, target=[0, 1, 4], rtol=1e-5, atol=1e-6)
    assert result.ok and bool(result)
    assert result.logit_bias == pytest.approx(-math.log(NUM_CLASSES - 1))
    assert result.logit_temperature == temperature
    torch.testing.assert_close(result.contribution_sum + result.logit_bias, result.logit, rtol=1e-5, atol=1e-6)
    # contributions are not trivially zero: they carry the logit minus the bias
    assert result.contribution_sum.abs().min() > 1e-4


def test_completeness_fails_with_an_input_independent_offset():
    result = check_completeness(_model(extra_bias=True), _images(2))
    assert not result.ok
    assert result.max_abs_error > 0.1


def test_caller_tensor_and_parameters_are_left_untouched():
    model = _model()
    x = _images(2)
    before = x.clone()
    explain(model, x)
    assert not x.requires_grad and x.grad is None
    assert torch.equal(x, before)
    leaf = _images(2).requires_grad_(True)
    explain(model, leaf, [1, 2])
    assert leaf.requires_grad and leaf.grad is None
    assert all(p.grad is None for p in model.parameters())
    # nothing is carried between calls: the same tensor twice gives the same answer
    first, second = explain(model, leaf, 1), explain(model, leaf, 1)
    torch.testing.assert_close(first.dynamic_linear_weights, second.dynamic_linear_weights, rtol=0, atol=0)
    assert all(not getattr(m, "detach", False) for m in model.modules())  # explanation mode switched off again


def test_works_under_no_grad_and_inference_mode():
    model, x = _model(), _images(2)
    reference = explain(model, x).dynamic_linear_weights
    with torch.no_grad():
        torch.testing.assert_close(explain(model, x).dynamic_linear_weights, reference)
    with torch.inference_mode():
        x_inference = _images(2)
        torch.testing.assert_close(explain(model, x_inference).dynamic_linear_weights, reference)


def test_training_mode_warns():
    model = _model().train()
    with pytest.warns(UserWarning, match="training mode"):
        explain(model, _images(2))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        explain(model.eval(), _images(2))


def test_key_access_mirrors_the_reference_dict():
    model = _model()
    one = model.explain(_images(1), idx=2)
    assert one["prediction"] == int(one.prediction[0]) and isinstance(one["prediction"], int)
    assert one["explained_class_idx"] == 2
    assert one["explanation"].shape == (8, 8, 4)
    assert one["contribution_map"].shape == (1, 8, 8)
    batch = model.explain(_images(3))
    assert batch["prediction"].shape == (3,)
    sample = batch[-1]
    assert len(sample) == 1 and sample.explanation.shape == (1, 8, 8, 4)
    torch.testing.assert_close(sample.dynamic_linear_weights[0], batch.dynamic_linear_weights[2])
    assert batch.to("cpu").logits.device.type == "cpu"
    with pytest.raises(KeyError):
        batch["contributions"]
    with pytest.raises(IndexError):
        batch[3]


def test_attribute_is_input_times_dynamic_weights():
    model, x = _model(), _images(2)
    weights = dynamic_linear_weights(model, x, [3, 3])
    torch.testing.assert_close(model.attribute(x, 3), x * weights)
    selection = model.attribute_selection(x, [0, 4])
    assert selection.shape == (4, 6, 8, 8)
    torch.testing.assert_close(selection[2:], x * dynamic_linear_weights(model, x, 4))


@pytest.mark.parametrize(
    "inputs, target, match",
    [
        (torch.rand(0, 6, 8, 8), None, "empty batch"),
        (torch.rand(2, 3, 8, 8), None, "AddInverse"),
        (torch.full((1, 6, 8, 8), float("nan")), None, "NaN"),
        (torch.rand(2, 6, 8, 8), 5, "out of range"),
        (torch.rand(2, 6, 8, 8), [-1, 0], "out of range"),
        (torch.rand(2, 6, 8, 8), [0, 1, 2], "one class index per sample"),
        (torch.rand(2, 6, 8, 8), torch.tensor([0.5, 1.0]), "integer"),
        (torch.rand(6, 8), None, "shape"),
    ],
)
def test_bad_inputs_raise_input_errors(inputs, target, match):
    with pytest.raises(InputError, match=match):
        explain(_model(), inputs, target)


@pytest.mark.parametrize(
    "inputs, target",
    [
        (torch.rand(0, 6, 8, 8), 0),
        (torch.rand(2, 3, 8, 8), 0),
        (torch.full((1, 6, 8, 8), float("inf")), 0),
        (torch.rand(2, 6, 8, 8), 5),
        (torch.rand(2, 6, 8, 8), [-1, 0]),
        (torch.rand(2, 6, 8, 8), [0, 1, 2]),
        (torch.rand(2, 6, 8, 8), torch.tensor([0.5, 1.0])),
        (torch.rand(6, 8), 0),
    ],
)
def test_model_explain_and_the_explainers_give_one_message_per_mistake(inputs, target):
    """Both entry points check with bcos.explanation.checks, so the same mistake reads the same."""
    from bcos.explain.methods import get_explainer

    model = _model()
    messages = []
    for call in (lambda: model.explain(inputs, target), lambda: get_explainer(model, "IxG").attribute(inputs, target)):
        with pytest.raises(InputError) as error:
            call()
        messages.append(str(error.value))
    assert messages[0] == messages[1]


def test_the_models_floor_imports_nothing_above_it():
    """model.explain works with only the explanation core loaded: bcos.explain is never imported."""
    import subprocess
    import sys

    code = (
        "import sys, torch\n"
        "from bcos.models.resnet import cifar10_resnet20\n"
        "model = cifar10_resnet20().eval()\n"
        "x = torch.rand(1, 6, 32, 32)\n"
        "model.explain(x); model.attribute(x, 0)\n"
        "above = sorted(m for m in sys.modules if m.split('.')[:2] in (['bcos', 'explain'], ['bcos', 'experiments'])\n"
        "               or m.startswith('bcos.data.datamodules'))\n"
        "print(above)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_cnn_conformance_rgba():
    """The RGBA explanation of a CIFAR B-cos ResNet-20 equals the reference's (needs the CNN zoo)."""
    vector_path = CONFORMANCE / "vectors" / "CIFAR10__norm_ablations_final__resnet_20_bnu-linear-nomaxout.pt"
    if not vector_path.exists():
        pytest.skip("conformance vectors not found next to the project")
    try:
        from bcos.models.resnet import cifar10_resnet20
        from bcos.modules.norms import BatchNormUncentered2d, NoBias
    except ImportError as error:
        pytest.skip(f"CNN models not available yet: {error}")
    sys.path.insert(0, str(CONFORMANCE))
    import conformance

    vector = conformance.load_vector(vector_path)
    model = cifar10_resnet20(
        num_classes=10, norm_layer=NoBias(BatchNormUncentered2d), logit_bias=-math.log(9)
    )
    conformance.fill_weights(model, vector["buffers"])
    x = conformance.make_input(vector["hw"], 1, True)
    result = explain(model, x)
    assert int(result.prediction[0]) == int(vector["pred_class"])
    assert conformance.rel_err(result.dynamic_linear_weights[0], vector["pred_dynamic_linear_weights"]) < 1e-3
    assert conformance.rel_err(result.contribution_map[0], vector["pred_contribution_map"]) < 1e-3
    assert np.abs(result.explanation[0] - vector["pred_explanation_rgba"].numpy()).max() < 1e-3
    assert check_completeness(model, x).ok


def test_numpy_and_scalar_targets():
    model, x = _model(), _images(2)
    assert explain(model, x, np.int64(3)).explained_class_idx.tolist() == [3, 3]
    assert explain(model, x, np.array([1, 2])).explained_class_idx.tolist() == [1, 2]
    assert explain(model, x, torch.tensor(4)).explained_class_idx.tolist() == [4, 4]
    with pytest.raises(InputError, match="class indices"):
        explain(model, x, 2.0)


def test_reference_compatible_imports():
    import bcos.common as common
    from bcos.explain.visualize import gradient_to_image, plot_contribution_map
    from bcos.modules import explanation_mode

    assert common.BcosUtilMixin is BcosUtilMixin
    assert common.explanation_mode is explanation_mode
    assert common.gradient_to_image is gradient_to_image
    assert common.plot_contribution_map is plot_contribution_map
    x = _images(1)[0]
    weights = dynamic_linear_weights(_model(), x)[0]
    np.testing.assert_array_equal(BcosUtilMixin.gradient_to_image(x, weights), gradient_to_image(x, weights))
