"""Quantus and Captum perturb images, not the six-channel ``[x, 1 - x]`` encoding.

A B-cos ResNet-8 of the Digits demo (32x32, random weights, its logit bias) is explained in image
space through :class:`ImageSpaceModel`; the real Quantus 0.6 and Captum packages run their metrics
on it. A forward pre-hook on the B-cos model's stem records every input it gets, so the tests see that
every perturbed input (baselines, noise, NoiseTunnel, infidelity) was still a valid encoding of an
image, and that "black" reached the model as ``[0, 1]``.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import quantus  # the quantus extra (and the dev extra): the interop is tested with the real package
import torch
from torch import nn

from bcos.data.transforms import AddInverse
from bcos.errors import InputError
from bcos.experiments.Digits.bcos_demo.experiment_parameters import CONFIGS
from bcos.experiments.Digits.bcos_demo.model import get_model
from bcos.explain.image_space import ImageSpaceModel
from bcos.explain.methods import get_explainer
from bcos.explain.quantus_adapter import CaptumAttribution, EncodedInputWarning, quantus_explain_func
from bcos.explanation.checks import has_inverse_channels
from bcos.explanation.contributions import explain, find_logit_layer


N = 4


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def model() -> nn.Module:
    torch.manual_seed(0)
    return get_model(CONFIGS["resnet_8_bnu-linear"]["model"]).eval()


@pytest.fixture()
def recorded(model):
    """Every input the B-cos model's stem receives during a test (GradCAM calls the feature extractor alone)."""
    inputs: list[torch.Tensor] = []
    handle = model.conv1.register_forward_pre_hook(lambda module, args: inputs.append(args[0].detach().clone()))
    yield inputs
    handle.remove()


def _images(n: int = N, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def _bias(model: nn.Module) -> float:
    return float(find_logit_layer(model).logit_bias)


def _all_encoded(inputs: list[torch.Tensor]) -> bool:
    return len(inputs) > 0 and all(has_inverse_channels(x, atol=1e-5) for x in inputs)


# --------------------------------------------------------------------------------------------
# the image-space model
# --------------------------------------------------------------------------------------------
def test_image_space_model_recomputes_the_encoding(model):
    images = _images()
    image_model = ImageSpaceModel(model)
    torch.testing.assert_close(image_model(images), model(AddInverse()(images)))
    with pytest.raises(InputError, match=r"takes images \[N, 3, H, W\] in \[0, 1\], got \[4, 6, 32, 32\]; pass the image, not its \[x, 1-x\] encoding"):
        image_model(AddInverse()(images))
    with pytest.raises(InputError, match="needs no ImageSpaceModel"):
        ImageSpaceModel(nn.Sequential(nn.Conv2d(3, 4, 3)))
    with pytest.raises(InputError, match="wrap the B-cos model only once"):
        ImageSpaceModel(image_model)


def test_ours_in_image_space_sums_x_and_inverse_and_keeps_completeness(model):
    images, targets = _images(), torch.tensor([0, 3, 7, 9])
    image_model = ImageSpaceModel(model)
    attributions = get_explainer(image_model, "Ours").attribute(images, targets)
    assert attributions.shape == (N, 3, 32, 32)
    logits = model(AddInverse()(images)).gather(1, targets[:, None])[:, 0].detach()
    torch.testing.assert_close(attributions.sum(dim=(1, 2, 3)), logits - _bias(model), rtol=1e-4, atol=1e-6)
    six = get_explainer(model, "Ours").attribute(AddInverse()(images), targets)
    torch.testing.assert_close(attributions, six[:, :3] + six[:, 3:])
    # the naive wrapper's W(x) is the image-space gradient W_x - W_(1-x): x times it misses sum W_(1-x)
    naive = explain(nn.Sequential(AddInverse(dim=1), model), images, targets, explanation_image=False)
    naive_sum = (images * naive.dynamic_linear_weights).sum(dim=(1, 2, 3))
    weights = explain(model, AddInverse()(images), targets, explanation_image=False).dynamic_linear_weights
    missing = weights[:, 3:].sum(dim=(1, 2, 3))
    torch.testing.assert_close(naive_sum, logits - _bias(model) - missing, rtol=1e-4, atol=1e-6)
    assert missing.abs().max() > 0.5 * (logits - _bias(model)).abs().max()  # off by as much as the logit itself
    relative = get_explainer(image_model, "OursRelative").attribute(images, targets)
    all_logits = model(AddInverse()(images)).detach()
    expected = (all_logits - all_logits.mean(1, keepdim=True)).gather(1, targets[:, None])[:, 0]
    torch.testing.assert_close(relative.sum(dim=(1, 2, 3)), expected, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("name", ["IxG", "IntGrad", "GCam", "Occlusion"])
def test_post_hoc_explainers_run_in_image_space(model, recorded, name):
    options = {"IntGrad": {"n_steps": 4}, "Occlusion": {"ks": 8, "stride": 8}}.get(name, {})
    attributions = get_explainer(ImageSpaceModel(model), name, **options).attribute(_images(2), [1, 2])
    channels = 1 if name in ("GCam", "Occlusion") else 3
    assert attributions.shape == (2, channels, 32, 32) and torch.isfinite(attributions).all()
    assert _all_encoded(recorded)  # IntGrad's black baseline and Occlusion's patches too


def test_gradcam_default_layer_is_the_same_in_image_space(model):
    images = _images(2)
    image_space = get_explainer(ImageSpaceModel(model), "GCam").attribute(images, [4, 5])
    torch.testing.assert_close(image_space, get_explainer(model, "GCam").attribute(AddInverse()(images), [4, 5]))


# --------------------------------------------------------------------------------------------
# Captum
# --------------------------------------------------------------------------------------------
def test_captum_infidelity_with_gradcam_maps_expanded(model, recorded):
    from captum.metrics import infidelity

    images, targets = _images(), torch.tensor([0, 1, 2, 3])
    image_model = ImageSpaceModel(model)
    gradcam = CaptumAttribution(get_explainer(image_model, "GCam"))
    attributions = gradcam.attribute(images, target=targets)
    assert attributions.shape == images.shape
    assert torch.equal(attributions[:, 0], attributions[:, 2])  # the map, repeated over the channels
    assert CaptumAttribution(get_explainer(image_model, "GCam"), expand_maps=False).attribute(images, target=targets).shape == (N, 1, 32, 32)

    def perturb(inputs: torch.Tensor):
        noise = 0.05 * torch.randn_like(inputs)
        return noise, (inputs - noise).clamp(0, 1)

    torch.manual_seed(0)
    scores = infidelity(image_model, perturb, images, attributions, target=targets, n_perturb_samples=3)
    assert scores.shape == (N,) and torch.isfinite(scores).all()
    assert _all_encoded(recorded)


def test_captum_noise_tunnel_adds_noise_to_the_image(model, recorded):
    from captum.attr import NoiseTunnel

    images, targets = _images(2), torch.tensor([3, 8])
    ours = CaptumAttribution(get_explainer(ImageSpaceModel(model), "Ours"))
    smoothed = NoiseTunnel(ours).attribute(images, nt_type="smoothgrad", nt_samples=3, stdevs=0.1, target=targets)
    assert smoothed.shape == (2, 3, 32, 32) and torch.isfinite(smoothed).all()
    assert _all_encoded(recorded) and len(recorded) >= 1
    noiseless = NoiseTunnel(ours).attribute(images, nt_type="smoothgrad", nt_samples=2, stdevs=0.0, target=targets)
    torch.testing.assert_close(noiseless, ours.attribute(images, target=targets), rtol=1e-4, atol=1e-5)


def test_captum_image_space_attribution_refuses_the_encoding(model):
    ours = CaptumAttribution(get_explainer(ImageSpaceModel(model), "Ours"))
    with pytest.raises(InputError, match=r"Ours of an ImageSpaceModel takes images \[N, 3, H, W\] .*drop AddInverse"):
        ours.attribute(AddInverse()(_images(1)), target=0)


# --------------------------------------------------------------------------------------------
# Quantus 0.6
# --------------------------------------------------------------------------------------------
def _labels(model: nn.Module, images: torch.Tensor) -> np.ndarray:
    return model(AddInverse()(images)).argmax(1).numpy()


def test_quantus_pointing_game_in_image_space(model):
    images = _images()
    masks = np.zeros((N, 1, 32, 32), dtype=np.float32)
    masks[:, :, 8:24, 8:24] = 1
    metric = quantus.PointingGame(disable_warnings=True, display_progressbar=False)
    scores = metric(
        model=ImageSpaceModel(model), x_batch=images.numpy(), y_batch=_labels(model, images), a_batch=None,
        s_batch=masks, explain_func=quantus_explain_func, explain_func_kwargs={"method": "Ours"}, device="cpu",
    )  # fmt: skip
    assert len(scores) == N and all(score in (0, 1, True, False) for score in scores)


def test_quantus_faithfulness_correlation_black_baseline_is_the_black_image(model, recorded):
    images = _images()
    images[:, :, 0, 0] = 0  # Quantus's "black" is the image's minimum
    metric = quantus.FaithfulnessCorrelation(
        nr_runs=4, subset_size=64, perturb_baseline="black", abs=False, return_aggregate=False,
        disable_warnings=True, display_progressbar=False,
    )  # fmt: skip
    scores = metric(
        model=ImageSpaceModel(model), x_batch=images.numpy(), y_batch=_labels(model, images), a_batch=None,
        explain_func=quantus_explain_func, explain_func_kwargs={"method": "Ours", "reduce_channels": False}, device="cpu",
    )  # fmt: skip
    assert len(scores) == N and np.isfinite(scores).all()
    assert _all_encoded(recorded)
    # a replaced pixel reached the model as black: x = 0 in every colour channel and 1 - x = 1
    perturbed = [x for x in recorded if x.shape[0] == 1 or not torch.equal(x[:, :3], images)]
    black = [(x[:, :3] == 0).all(dim=1) & (x[:, 3:] == 1).all(dim=1) for x in perturbed]
    assert any(mask.any() for mask in black)


def test_quantus_max_sensitivity_noise_on_the_image(model, recorded):
    images = _images(2)
    metric = quantus.MaxSensitivity(
        nr_samples=2, lower_bound=0.1,
        disable_warnings=True, display_progressbar=False, return_aggregate=False,
    )  # fmt: skip
    scores = metric(
        model=ImageSpaceModel(model), x_batch=images.numpy(), y_batch=_labels(model, images), a_batch=None,
        explain_func=quantus_explain_func, explain_func_kwargs={"method": "Ours"}, device="cpu",
    )  # fmt: skip
    assert len(scores) == 2 and np.isfinite(scores).all()
    assert _all_encoded(recorded) and len(recorded) > 2


def test_quantus_explain_func_enforces_the_contract(model):
    images = _images(2)
    attributions = quantus_explain_func(ImageSpaceModel(model), images.numpy(), np.array([1, 2]), method="IxG", reduce_channels=False)
    assert attributions.shape == (2, 3, 32, 32)
    with pytest.raises(InputError, match=r"give Quantus the model in image space: bcos.explain.image_space.ImageSpaceModel\(model\)"):
        quantus_explain_func(model, images.numpy(), np.array([1, 2]))
    with pytest.warns(EncodedInputWarning, match="perturbs the six"):
        quantus_explain_func(model, AddInverse()(images).numpy(), np.array([1, 2]))
    with warnings.catch_warnings():
        warnings.simplefilter("error", EncodedInputWarning)
        quantus_explain_func(ImageSpaceModel(model), images.numpy(), 1)
