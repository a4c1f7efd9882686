"""Explainers behind one interface: every method on a tiny B-cos CNN and ViT, and method-specific facts."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from bcos import models
from bcos.errors import ConfigError, InputError, UnknownNameError
from bcos.explanation.contributions import explain
from bcos.explain.methods import (
    EXPLAINER_CONFIGS,
    explainer_options,
    get_explainer,
    get_explainer_config,
    list_explainers,
)
from bcos.explain.methods.occlusion import window_coverage
from bcos.explain.methods.rise import generate_rise_masks
from bcos.explain.quantus_adapter import CaptumAttribution, quantus_explain_func
from bcos.models.base import BcosSequential
from bcos.models.vit import SimpleViT
from bcos.modules import LogitLayer

NUM_CLASSES = 5
# small settings for the expensive methods so that every explainer runs in well under a second
FAST = {
    "IntGrad": {"n_steps": 8},
    "Occlusion": {"ks": 4, "stride": 4, "batch_size": 16},
    "RISE": {"n": 24, "s": 2, "batch_size": 24, "cache_dir": ""},
    "LIME": {"num_samples": 24, "batch_size": 24, "kernel_size": 2},
}


def _cnn() -> nn.Module:
    torch.manual_seed(0)
    return models.BcosResNet(models.BasicBlock, [1, 1, 1], num_classes=NUM_CLASSES, inplanes=4, small_inputs=True).eval()


def _vit() -> nn.Module:
    torch.manual_seed(0)
    vit = SimpleViT(image_size=8, patch_size=4, num_classes=NUM_CLASSES, dim=16, depth=1, heads=2, mlp_dim=16)
    return BcosSequential(vit, LogitLayer(logit_bias=-math.log(NUM_CLASSES - 1))).eval()


def _images(n: int = 3, hw: int = 8, seed: int = 0) -> torch.Tensor:
    x = torch.rand(n, 3, hw, hw, generator=torch.Generator().manual_seed(seed))
    return torch.cat([x, 1 - x], 1)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models run fastest on one thread (and a busy machine makes OpenMP threads spin)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def tiny_models() -> dict[str, nn.Module]:
    return {"cnn": _cnn(), "vit": _vit()}


# --------------------------------------------------------------------------------------------
# every explainer, both architectures
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("architecture", ["cnn", "vit"])
@pytest.mark.parametrize("name", list_explainers())
def test_every_explainer_on_a_mixed_target_batch(tiny_models, architecture, name):
    model = tiny_models[architecture]
    x = _images()
    before = x.clone()
    explainer = get_explainer(model, name, **FAST.get(name, {}))
    attributions = explainer.attribute(x, [0, 3, 4])
    channels = 1 if explainer.produces_map else 6
    assert attributions.shape == (3, channels, 8, 8)
    assert torch.isfinite(attributions).all()
    assert attributions.abs().sum() > 0
    # nothing is left behind on the caller's tensor or the model
    assert torch.equal(x, before) and not x.requires_grad and x.grad is None
    assert all(p.grad is None for p in model.parameters())
    # each sample is explained for its own class: the batch equals the samples one by one
    single = torch.cat([explainer.attribute(x[i : i + 1], t) for i, t in enumerate([0, 3, 4])])
    torch.testing.assert_close(attributions, single, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", list_explainers())
def test_attribute_selection_matches_attribute(tiny_models, name):
    model = tiny_models["cnn"]
    x = _images(2)
    explainer = get_explainer(model, name, **FAST.get(name, {}))
    selection = explainer.attribute_selection(x, [1, 2, 4])
    assert selection.shape[:2] == (2, 3)
    for k, target in enumerate([1, 2, 4]):
        torch.testing.assert_close(selection[:, k], explainer.attribute(x, target), rtol=1e-4, atol=1e-5)
    per_sample = explainer.attribute_selection(x, torch.tensor([[0, 1], [2, 3]]))
    torch.testing.assert_close(per_sample[1, 0], explainer.attribute(x[1:], 2)[0], rtol=1e-4, atol=1e-5)


# --------------------------------------------------------------------------------------------
# method-specific facts
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("architecture", ["cnn", "vit"])
def test_ours_is_the_core_explanation(tiny_models, architecture):
    model = tiny_models[architecture]
    x = _images()
    targets = torch.tensor([2, 0, 1])
    attributions = get_explainer(model, "Ours").attribute(x, targets)
    core = explain(model, x, targets, explanation_image=False)
    torch.testing.assert_close(attributions, x * core.dynamic_linear_weights)
    torch.testing.assert_close(attributions.sum(1), core.contribution_map)


def test_ours_contributions_add_up_to_the_logit_on_a_cnn(tiny_models):
    model = tiny_models["cnn"]
    x = _images()
    attributions = get_explainer(model, "Ours").attribute(x, [1, 1, 3])
    with torch.no_grad():
        logits = model(x)
    expected = logits[torch.arange(3), torch.tensor([1, 1, 3])] - model.logit_layer.logit_bias
    torch.testing.assert_close(attributions.flatten(1).sum(1), expected, rtol=1e-4, atol=1e-4)


def test_ours_relative_is_ours_minus_the_class_average(tiny_models):
    model = tiny_models["cnn"]
    x = _images(2)
    ours = get_explainer(model, "Ours").attribute_selection(x, list(range(NUM_CLASSES)))  # [2, K, 6, H, W]
    relative = get_explainer(model, "OursRelative").attribute(x, [3, 0])
    expected = ours[torch.arange(2), torch.tensor([3, 0])] - ours.mean(1)
    torch.testing.assert_close(relative, expected, rtol=1e-4, atol=1e-5)


def test_ours_refuses_a_model_without_explanation_mode():
    with pytest.raises(InputError, match="B-cos model"):
        get_explainer(nn.Sequential(nn.Flatten(), nn.Linear(12, 2)), "Ours")


@pytest.mark.parametrize("model_name", ["bcos_without_norms", "pixel_sum"])
def test_integrated_gradients_completeness_gap_is_small(model_name):
    # Completeness is f(x) - f(0). Normalisation layers make a network scale-invariant (f jumps at
    # x = 0), so the check uses a B-cos CNN without norms and a non-linear pixel-wise model.
    torch.manual_seed(0)
    if model_name == "bcos_without_norms":
        model = models.BcosResNet(
            models.BasicBlock, [1, 1, 1], num_classes=NUM_CLASSES, inplanes=4, small_inputs=True, norm_layer=None
        ).eval()
    else:
        model = _PixelSum().eval()
    x = _images()
    targets = torch.tensor([0, 2, 1])
    attributions = get_explainer(model, "IntGrad", n_steps=16).attribute(x, targets)
    with torch.no_grad():
        difference = (model(x) - model(torch.zeros_like(x)))[torch.arange(3), targets]
    gap = (attributions.flatten(1).sum(1) - difference).abs()
    assert (gap <= 1e-3 * difference.abs() + 1e-4).all(), (gap, difference)
    if model_name == "bcos_without_norms":
        # B-cos layers are positively homogeneous (f(a·x) = a·f(x)): the gradient is the same all
        # along the path, so Integrated Gradients from zero is Input x Gradient (up to the norms'
        # epsilon, which matters only for path points very close to zero)
        input_x_gradient = get_explainer(model, "IxG").attribute(x, targets)
        assert (attributions - input_x_gradient).abs().max() < 0.05 * input_x_gradient.abs().max()


def test_input_x_gradient_and_gradient_relation(tiny_models):
    model = tiny_models["cnn"]
    x = _images(2)
    gradient = get_explainer(model, "Grad").attribute(x, [1, 2])
    torch.testing.assert_close(get_explainer(model, "IxG").attribute(x, [1, 2]), x * gradient)
    # B-cos networks have no ReLU modules: Guided Backprop is the plain gradient there
    torch.testing.assert_close(get_explainer(model, "GB").attribute(x, [1, 2]), gradient)


class _PixelSum(nn.Module):
    """Logit k = Σ_pixels w_k(pixel) · g(colour): a model without interactions between pixels."""

    def __init__(self, channels: int = 3, hw: int = 8, classes: int = 3) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(classes, hw, hw, generator=torch.Generator().manual_seed(1)))
        self.channels = channels

    def per_pixel(self, x: torch.Tensor) -> torch.Tensor:
        colour = x[:, :3]
        return (colour**2).sum(1)  # non-linear per pixel, zero for a black pixel

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.einsum("nhw,khw->nk", self.per_pixel(x), self.weight)


@pytest.mark.parametrize("bcos_encoding", [False, True])
def test_occlusion_of_a_pixel_independent_model_is_exact(bcos_encoding):
    model = _PixelSum().eval()
    x = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(2))
    if bcos_encoding:
        x = torch.cat([x, 1 - x], 1)  # occluding keeps the inverse channels consistent (1 - 0)
    targets = torch.tensor([0, 2])
    exact = model.per_pixel(x) * model.weight[targets]  # each pixel's own term
    single = get_explainer(model, "Occlusion", ks=1, stride=1, batch_size=64).attribute(x, targets)
    torch.testing.assert_close(single[:, 0], exact, rtol=1e-4, atol=1e-5)
    # 4x4 tiles: every pixel of a tile carries the tile's total divided by its 16 pixels
    tiles = get_explainer(model, "Occlusion", ks=4, stride=4).attribute(x, targets)[:, 0]
    expected = exact.reshape(2, 2, 4, 2, 4).sum(dim=(2, 4)) / 16
    torch.testing.assert_close(tiles, expected.repeat_interleave(4, 1).repeat_interleave(4, 2), rtol=1e-4, atol=1e-5)


def test_occlusion_windows_are_centred_and_clipped():
    coverage = window_coverage(8, ks=5, stride=2)
    assert coverage.shape == (4, 8)
    assert coverage[0].nonzero().flatten().tolist() == [0, 1, 2, 3]  # [-1, 4) clipped
    assert coverage[1].nonzero().flatten().tolist() == [1, 2, 3, 4, 5]
    assert coverage.any(0).all()  # every pixel is occluded by some window


def test_gradcam_uses_mean_gradient_weights_on_the_last_feature_map(tiny_models):
    model = tiny_models["cnn"]
    x = _images(2)
    targets = torch.tensor([1, 4])
    features = model.get_feature_extractor()(x).detach().requires_grad_(True)
    logits = model.get_classifier()(features).mean(dim=(2, 3))
    (gradient,) = torch.autograd.grad(logits[torch.arange(2), targets].sum(), features)
    expected = (gradient.mean(dim=(2, 3), keepdim=True) * features).sum(1, keepdim=True).clamp(min=0).detach()
    cam = get_explainer(model, "GCam").attribute(x, targets)
    assert features.shape[-1] == 2  # two stride-2 stages: 8x8 -> 2x2, upsampled by nearest neighbours
    torch.testing.assert_close(cam, expected.repeat_interleave(4, 2).repeat_interleave(4, 3), rtol=1e-4, atol=1e-6)
    by_name = get_explainer(model, "GCam", target_layer="layer3").attribute(x, targets)
    torch.testing.assert_close(by_name, cam, rtol=1e-4, atol=1e-6)


def test_gradcam_on_a_vit_uses_the_token_map(tiny_models):
    cam = get_explainer(tiny_models["vit"], "GCam").attribute(_images(2), [0, 1])
    # 8x8 image, 4x4 patches: the map is constant on each patch
    blocks = cam[:, 0].reshape(2, 2, 4, 2, 4)
    assert torch.allclose(blocks, blocks[:, :, :1, :, :1].expand_as(blocks))


def test_gradcam_needs_a_feature_map():
    with pytest.raises(ConfigError, match="target_layer"):
        get_explainer(nn.Sequential(nn.Flatten(), nn.Linear(12, 2)), "GCam")


def test_rise_masks_are_seeded_and_cached(tmp_path, tiny_models):
    masks = generate_rise_masks(16, 3, 0.5, (8, 8), seed=7)
    assert masks.shape == (16, 1, 8, 8) and 0 <= masks.min() and masks.max() <= 1
    torch.testing.assert_close(masks, generate_rise_masks(16, 3, 0.5, (8, 8), seed=7))
    assert not torch.equal(masks, generate_rise_masks(16, 3, 0.5, (8, 8), seed=8))
    explainer = get_explainer(tiny_models["cnn"], "RISE", n=16, s=3, p1=0.5, seed=7, cache_dir=tmp_path)
    result = explainer.attribute(_images(1), 2)
    path = explainer.mask_file((8, 8))
    assert path.is_file() and path.parent == tmp_path / "rise_masks"
    torch.testing.assert_close(torch.load(path, weights_only=True), masks)
    again = get_explainer(tiny_models["cnn"], "RISE", n=16, s=3, p1=0.5, seed=7, cache_dir=tmp_path)
    torch.testing.assert_close(again.attribute(_images(1), 2), result)


def test_rise_saliency_is_the_probability_weighted_mask_average():
    model = _PixelSum().eval()
    x = torch.rand(1, 3, 8, 8, generator=torch.Generator().manual_seed(3))
    explainer = get_explainer(model, "RISE", n=12, s=2, p1=0.5, cache_dir="", batch_size=5)
    masks = explainer.masks((8, 8))
    with torch.no_grad():
        probabilities = torch.softmax(model(masks * x), dim=1)[:, 1]  # no to_probabilities: softmax
    expected = (probabilities[:, None, None] * masks[:, 0]).sum(0) / (12 * 0.5)
    torch.testing.assert_close(explainer.attribute(x, 1)[0, 0], expected, rtol=1e-5, atol=1e-6)


def test_lime_works_for_ten_classes_and_finds_the_evidence():
    class LeftHalf(nn.Module):
        """Class 7 is the brightness of the left half; the other nine classes are constant."""

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            left = x[:, :3, :, :8].mean(dim=(1, 2, 3)) * 10
            logits = torch.zeros(x.shape[0], 10)
            logits[:, 7] = left
            return logits

    x = torch.zeros(1, 3, 16, 16)
    x[:, :, :, :8] = 0.9  # a bright left half, a dark right half: two clear superpixel regions
    x[:, :, 4:12, 10:14] = 0.5
    x = torch.cat([x, 1 - x], 1)
    options = dict(num_samples=64, batch_size=32, num_features=2, kernel_size=1)
    explainer = get_explainer(LeftHalf().eval(), "LIME", hide_color=0.0, **options)
    mask = explainer.attribute(x, 7)[0, 0]
    assert set(mask.unique().tolist()) <= {0.0, 1.0}
    assert mask[:, :8].mean() > 0.9 and mask[:, 8:].sum() == 0
    torch.testing.assert_close(explainer.attribute(x, 7), explainer.attribute(x, 7))  # seeded
    # hiding a uniform superpixel by its own mean colour changes nothing: no evidence is found
    assert get_explainer(LeftHalf().eval(), "LIME", **options).attribute(x, 7).sum() == 0


# --------------------------------------------------------------------------------------------
# registry, configurations and input errors
# --------------------------------------------------------------------------------------------
def test_registry_names_and_configurations():
    assert list_explainers() == [
        "Ours", "OursRelative", "IxG", "Grad", "GB", "IntGrad", "DeepLIFT", "GCam", "Occlusion", "RISE", "LIME",
    ]  # fmt: skip
    assert set(EXPLAINER_CONFIGS["Occlusion"]) == {"default", "Occ5", "Occ9", "Occ9-TI", "Occ13-TI"}
    assert get_explainer_config("Occlusion", "Occ13-TI") == {"ks": 13, "stride": 4, "batch_size": 1}
    assert get_explainer_config("RISE")["p1"] == 0.1
    for name in list_explainers():  # every named configuration fits its explainer's options
        for config in EXPLAINER_CONFIGS[name].values():
            assert set(config) <= set(explainer_options(name)), name
    explainer = get_explainer(_cnn(), "Occlusion", "Occ9", batch_size=3)
    assert (explainer.ks, explainer.stride, explainer.batch_size) == ((9, 9), (2, 2), 3)


def test_registry_errors_suggest_the_closest_name():
    model = _cnn()
    with pytest.raises(UnknownNameError, match="did you mean 'GCam'"):
        get_explainer(model, "Gcam")
    with pytest.raises(UnknownNameError, match="did you mean 'Occ9'"):
        get_explainer(model, "Occlusion", "occ9x")
    with pytest.raises(UnknownNameError, match="did you mean 'n_steps'"):
        get_explainer(model, "IntGrad", nsteps=5)


def test_bad_inputs_and_targets_raise_input_errors(tiny_models):
    explainer = get_explainer(tiny_models["cnn"], "IxG")
    with pytest.raises(InputError, match="out of range"):
        explainer.attribute(_images(2), [0, NUM_CLASSES])
    with pytest.raises(InputError, match="2 samples"):
        explainer.attribute(_images(2), [0, 1, 2])
    with pytest.raises(InputError, match="shape"):
        explainer.attribute(torch.rand(6, 8), 0)
    with pytest.raises(InputError, match="out of range"):
        get_explainer(tiny_models["cnn"], "RISE", **FAST["RISE"]).attribute(_images(1), 9)


def test_explainers_under_inference_mode(tiny_models):
    x = _images(2)
    with torch.inference_mode():
        attributions = get_explainer(tiny_models["cnn"], "Ours").attribute(x, [0, 1])
    assert attributions.shape == (2, 6, 8, 8)


# --------------------------------------------------------------------------------------------
# adapters
# --------------------------------------------------------------------------------------------
def test_quantus_explain_func_returns_numpy_maps(tiny_models):
    model = tiny_models["cnn"]
    x = _images(2)
    result = quantus_explain_func(model=model, inputs=x.numpy(), targets=np.array([1, 3]), method="Ours")
    assert isinstance(result, np.ndarray) and result.shape == (2, 1, 8, 8) and result.dtype == np.float32
    expected = explain(model, x, [1, 3], explanation_image=False).contribution_map
    np.testing.assert_allclose(result[:, 0], expected.numpy(), rtol=1e-5, atol=1e-6)
    full = quantus_explain_func(model, x.numpy(), 1, method="IntGrad", reduce_channels=False, n_steps=4)
    assert full.shape == (2, 6, 8, 8)


def test_captum_attribution_plugs_into_noise_tunnel(tiny_models):
    from captum.attr import Attribution, NoiseTunnel

    model = tiny_models["cnn"]
    x = _images(2)
    wrapped = CaptumAttribution(get_explainer(model, "Ours"))
    assert isinstance(wrapped, Attribution) and wrapped.multiplies_by_inputs
    torch.testing.assert_close(wrapped.attribute(x, target=torch.tensor([0, 2])), get_explainer(model, "Ours").attribute(x, [0, 2]))
    smoothed = NoiseTunnel(wrapped).attribute(x, nt_type="smoothgrad", nt_samples=3, stdevs=0.0, target=torch.tensor([0, 2]))
    torch.testing.assert_close(smoothed, wrapped.attribute(x, target=torch.tensor([0, 2])), rtol=1e-4, atol=1e-5)
