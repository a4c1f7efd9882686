"""LIME for images (Ribeiro et al., 2016), written here so it needs no ``lime`` package.

For each image:

1. split it into superpixels with scikit-image's quickshift (``kernel_size``, ``max_dist``,
   ``ratio``; on the colour channels, as the ``lime`` package does);
2. draw ``num_samples`` random on/off patterns of the superpixels (the first keeps all); an "off"
   superpixel takes its mean colour (``lime``'s default ``hide_color=None``) or the colour
   ``hide_color`` (e.g. 0: black);
3. run the perturbed images through the model ``batch_size`` at a time and take class
   probabilities (sigmoid for B-cos models, else softmax) — for every class at once;
4. weight each pattern by ``sqrt(exp(-d² / kernel_width²))`` with d its cosine distance to the
   all-on pattern, and for each explained class fit a weighted ridge regression of the probability
   on the pattern: first on all superpixels (``alpha = 0.01``) to pick the ``num_features`` with the
   largest coefficients, then on those (``alpha = 1``);
5. return the mask of the selected superpixels with a positive coefficient (``binary=True``, the
   reference's output) or their coefficients.

Differences to the reference: any number of classes (it assumed 1000), feature selection always
by the largest weights (``lime`` uses forward selection for six or fewer features), and B-cos
``[x, 1 - x]`` inputs are perturbed on the colour channels with the inverse channels recomputed.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from bcos.errors import ConfigError
from bcos.explain.methods.base import Explainer, probability_function, replace_where
from bcos.explanation.checks import check_target_range, has_inverse_channels

__all__ = ["LIME", "weighted_ridge", "segment_image"]

#: coefficients (probability per superpixel) at or below this count as no effect
_NO_EFFECT = 1e-9


def weighted_ridge(features: np.ndarray, targets: np.ndarray, weights: np.ndarray, alpha: float) -> np.ndarray:
    """Coefficients [F, K] of ridge regressions with intercept, one per target column.

    Minimises ``Σ_i w_i (y_i - b - x_i·β)² + alpha |β|²`` (the same fit as scikit-learn's ``Ridge``
    with ``sample_weight``): centre with weighted means, then solve the normal equations.
    """
    w = weights / weights.sum()
    x_centred = features - w @ features
    y_centred = targets - w @ targets
    gram = x_centred.T @ (weights[:, None] * x_centred) + alpha * np.eye(features.shape[1])
    return np.linalg.solve(gram, x_centred.T @ (weights[:, None] * y_centred))


def segment_image(image: np.ndarray, kernel_size: float, max_dist: float, ratio: float) -> np.ndarray:
    """Quickshift superpixels of an [H, W, 3] image in [0, 1], labelled 0..F-1."""
    from skimage.segmentation import quickshift

    segments = quickshift(image.astype(np.float64), kernel_size=kernel_size, max_dist=max_dist, ratio=ratio)
    _, labels = np.unique(segments, return_inverse=True)
    return labels.reshape(segments.shape)


class LIME(Explainer):
    """Local surrogate explanations on quickshift superpixels, one map [N, 1, H, W].

    Args:
        num_samples: perturbed images per explained image.
        num_features: superpixels kept in the explanation.
        kernel_size, max_dist, ratio: quickshift parameters.
        batch_size: perturbed images per forward pass.
        kernel_width: width of the exponential kernel on the cosine distance.
        binary: return a 0/1 mask of the positive selected superpixels (else their coefficients).
        seed: seed of the random patterns (the same explanations on every run).
        hide_color: colour of hidden superpixels; None uses each superpixel's mean colour (then a
            uniform superpixel cannot be hidden at all: use 0 for dark-background data such as digits).
    """

    produces_map = True

    def __init__(
        self,
        model: nn.Module,
        num_samples: int = 256,
        num_features: int = 3,
        kernel_size: float = 1,
        batch_size: int = 2,
        max_dist: float = 200,
        ratio: float = 0.2,
        kernel_width: float = 0.25,
        binary: bool = True,
        seed: int = 0,
        hide_color: float | None = None,
    ) -> None:
        super().__init__(model)
        for name, value in (("num_samples", num_samples), ("num_features", num_features), ("batch_size", batch_size)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"LIME {name} must be a positive integer, got {value!r}")
        if kernel_width <= 0:
            raise ConfigError(f"LIME kernel_width must be positive, got {kernel_width!r}")
        self.num_samples = num_samples
        self.num_features = num_features
        self.kernel_size, self.max_dist, self.ratio = kernel_size, max_dist, ratio
        self.batch_size = batch_size
        self.kernel_width = kernel_width
        self.binary = binary
        self.seed = seed
        self.hide_color = None if hide_color is None else float(hide_color)
        self._to_probabilities = probability_function(model)

    def _attribute(self, inputs: Tensor, targets: Tensor) -> Tensor:
        return self._attribute_selection(inputs, targets[:, None])[:, 0]

    def _colour_image(self, image: Tensor, inverse: bool) -> np.ndarray:
        """The image as [H, W, 3] in [0, 1] for the segmentation."""
        colour = image[:3] if inverse or image.shape[0] >= 3 else image[:1].expand(3, -1, -1)
        array = colour.permute(1, 2, 0).detach().cpu().double().numpy()
        if not inverse:  # normalised inputs: stretch to [0, 1] for quickshift's colour conversion
            low, high = array.min(), array.max()
            array = (array - low) / (high - low) if high > low else np.zeros_like(array)
        return np.clip(array, 0, 1)

    def _explain_one(self, image: Tensor, targets: Tensor, inverse: bool) -> Tensor:
        rng = np.random.default_rng(self.seed)  # per image: an explanation never depends on the batch
        segments_np = segment_image(self._colour_image(image, inverse), self.kernel_size, self.max_dist, self.ratio)
        num_segments = int(segments_np.max()) + 1
        segments = torch.from_numpy(segments_np).to(image.device)
        if self.hide_color is not None:
            fudged: Tensor | float = self.hide_color
        else:  # mean colour of every superpixel, painted back: the image "off" superpixels show
            channels = image.shape[0]
            sums = torch.zeros(channels, num_segments, dtype=image.dtype, device=image.device)
            sums.index_add_(1, segments.reshape(-1), image.reshape(channels, -1))
            counts = torch.bincount(segments.reshape(-1), minlength=num_segments).to(image.dtype)
            fudged = (sums / counts)[:, segments][None]  # [1, C, H, W]

        patterns = rng.integers(0, 2, size=(self.num_samples, num_segments))
        patterns[0] = 1
        patterns_t = torch.from_numpy(patterns).to(device=image.device, dtype=image.dtype)
        probabilities = []
        with torch.no_grad():
            for start in range(0, self.num_samples, self.batch_size):
                keep = patterns_t[start : start + self.batch_size][:, segments][:, None]  # [b, 1, H, W]
                perturbed = replace_where(image[None].expand(keep.shape[0], -1, -1, -1), keep, fudged, inverse)
                probabilities.append(self._to_probabilities(self.model(perturbed)))
        scores = torch.cat(probabilities)
        check_target_range(targets, scores.shape[1])
        labels = scores[:, targets].double().cpu().numpy()  # [S, T]

        on = patterns.sum(1)
        cosine = np.where(on > 0, on / np.sqrt(np.maximum(on, 1) * num_segments), 0.0)
        weights = np.sqrt(np.exp(-((1 - cosine) ** 2) / self.kernel_width**2))
        data = patterns.astype(np.float64)
        all_coefficients = weighted_ridge(data, labels, weights, alpha=0.01)  # [F, T]
        maps = np.zeros((targets.shape[0], num_segments))
        for column in range(targets.shape[0]):
            chosen = np.argsort(-np.abs(all_coefficients[:, column]), kind="stable")[: self.num_features]
            coefficients = weighted_ridge(data[:, chosen], labels[:, column : column + 1], weights, alpha=1.0)[:, 0]
            if self.binary:
                # round-off of a constant response must not count as positive evidence
                maps[column, chosen] = (coefficients > _NO_EFFECT).astype(np.float64)
            else:
                maps[column, chosen] = coefficients
        result = torch.from_numpy(maps).to(device=image.device, dtype=image.dtype)[:, segments]  # [T, H, W]
        return result[:, None]

    def _attribute_selection(self, inputs: Tensor, targets: Tensor) -> Tensor:
        inverse = has_inverse_channels(inputs)
        return torch.stack([self._explain_one(image, row, inverse) for image, row in zip(inputs, targets)])
