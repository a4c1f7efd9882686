"""gradient_to_image numerics (against the conformance vectors) and the plotting helpers."""

from __future__ import annotations

import sys
from pathlib import Path

import matplotlib
import numpy as np
import pytest
import torch

from bcos.errors import InputError
from bcos.explanation.visualize import (
    gradient_to_image,
    gradients_to_images,
    plot_contribution_map,
    plot_image_grid,
)

matplotlib.use("Agg")

CONFORMANCE = Path(__file__).resolve().parents[2] / "shared" / "conformance"
CIFAR_VECTORS = sorted((CONFORMANCE / "vectors").glob("CIFAR10__*.pt"))


def _conformance():
    if str(CONFORMANCE) not in sys.path:
        sys.path.insert(0, str(CONFORMANCE))
    import conformance

    return conformance


def _random_pair(n: int = 3, hw: int = 20, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, hw, hw, generator=g)
    return torch.cat([x, 1 - x], 1), torch.randn(n, 6, hw, hw, generator=g)


@pytest.mark.skipif(not CIFAR_VECTORS, reason="conformance vectors not found next to the project")
@pytest.mark.parametrize("path", CIFAR_VECTORS, ids=lambda p: p.stem)
def test_rgba_matches_reference_vectors(path):
    conformance = _conformance()
    vector = conformance.load_vector(path)
    image = conformance.make_input(vector["hw"], 1, True)[0]
    rgba = gradient_to_image(image, vector["pred_dynamic_linear_weights"])
    assert rgba.shape == (vector["hw"], vector["hw"], 4) and rgba.dtype == np.float32
    assert np.abs(rgba - vector["pred_explanation_rgba"].numpy()).max() < 1e-3


def test_batched_equals_single_calls():
    images, weights = _random_pair(n=3)
    # make one sample's alpha scale very different, so a shared percentile would show
    weights[1] *= 1000
    batched = gradients_to_images(images, weights, smooth=5, alpha_percentile=90)
    for i in range(3):
        np.testing.assert_allclose(batched[i], gradient_to_image(images[i], weights[i], 5, 90), atol=1e-6)


def test_colour_and_alpha_rules():
    hw = 8
    x = torch.full((3, hw, hw), 0.5)
    image = torch.cat([x, 1 - x])
    weights = torch.zeros(6, hw, hw)
    weights[0] = 1.0  # only "red" has positive weight: pure red, opaque (positive contribution)
    weights[:, :, : hw // 2] *= -1  # left half: every weight negative -> contributes negatively
    rgba = gradient_to_image(image, weights, smooth=0, alpha_percentile=100)
    right, left = rgba[:, hw // 2 :], rgba[:, : hw // 2]
    np.testing.assert_allclose(right[..., :3], np.broadcast_to([1.0, 0.0, 0.0], right[..., :3].shape), atol=1e-6)
    np.testing.assert_allclose(right[..., 3], 1.0, atol=1e-6)
    assert left[..., 3].max() < 1e-6  # negative contributions are transparent


def test_even_smoothing_kernel_keeps_size():
    images, weights = _random_pair(n=1, hw=12)
    assert gradient_to_image(images[0], weights[0], smooth=4).shape == (12, 12, 4)


@pytest.mark.parametrize(
    "image, weights",
    [
        (torch.rand(3, 8, 8), torch.rand(3, 8, 8)),  # 3-channel input
        (torch.rand(6, 8, 8), torch.rand(6, 8, 9)),  # shapes differ
        (torch.rand(1, 6, 8, 8), torch.rand(1, 6, 8, 8)),  # batched input to the single version
    ],
)
def test_bad_shapes_raise_input_error(image, weights):
    with pytest.raises(InputError):
        gradient_to_image(image, weights)


def test_bad_percentile_raises():
    images, weights = _random_pair(n=1)
    with pytest.raises(InputError, match="alpha_percentile"):
        gradient_to_image(images[0], weights[0], alpha_percentile=150)


def test_plot_contribution_map_symmetric_range_and_clipping():
    import matplotlib.pyplot as plt

    values = torch.linspace(-1, 1, 100).reshape(10, 10)
    values[0, 0] = -50.0  # outlier: clipped at the 99th percentile of |values|
    ax, image = plot_contribution_map(values, percentile=99)
    vmin, vmax = image.get_clim()
    assert vmin == pytest.approx(-vmax)
    assert vmax < 50 and vmax >= 1.0
    assert list(ax.get_xticks()) == []
    _, image = plot_contribution_map(values.numpy()[None], vmin=-3, vmax=2, percentile=None)
    assert image.get_clim() == (-3, 2)
    with pytest.raises(InputError):
        plot_contribution_map(torch.zeros(2, 3, 3))
    plt.close("all")


def test_plot_image_grid_layout():
    import matplotlib.pyplot as plt

    images, weights = _random_pair(n=3, hw=8)
    rgba = gradients_to_images(images, weights)
    fig, axes = plot_image_grid([images[0], rgba[0], rgba[1], images[2, :3]], titles=list("abcd"), ncols=3)
    assert axes.shape == (2, 3)
    assert axes[0, 1].get_title() == "b"
    assert not axes[1, 2].axison  # the unused sixth cell is hidden
    with pytest.raises(InputError):
        plot_image_grid([rgba[0]], titles=["a", "b"])
    plt.close(fig)
