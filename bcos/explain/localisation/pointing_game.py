"""The grid pointing game: how much of an explanation falls on the image of the explained class.

``g x g`` images of distinct classes, each classified correctly and confidently, are tiled into one
input (a "grid"). Each of the g² classes is explained on the grid; its score is the share of the
positive attribution (summed over channels, optionally smoothed) that lies in its own cell. A
method that ignores the input scores ``1 / g²`` on average (the uniform baseline); a perfect one 1.

This module holds the pieces: the 16 analysis configurations, the confidence ranking, the grids,
the scores and their summary and plot. Loading the model and the data and writing the result files
is :mod:`.analysis`'s job (:func:`~bcos.explain.localisation.run_localisation`).

Layout: image k of a grid sits at row ``k // g``, column ``k % g`` (row-major), and target k of the
grid is the class of image k, so target k's own cell is cell k.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bcos.errors import ConfigError, InputError, unknown_name

__all__ = [
    "LocalisationConfig",
    "LOCALISATION_CONFIGS",
    "get_localisation_config",
    "ConfidenceRanking",
    "rank_by_confidence",
    "ranking_to_plain",
    "ranking_from_plain",
    "grid_blocks",
    "make_grids",
    "smooth_attributions",
    "cell_fractions",
    "localisation_scores",
    "evaluate_grids",
    "LocalisationSummary",
    "plot_scores",
]


# ------------------------------------------------------------------------------------ configurations
@dataclass(frozen=True)
class LocalisationConfig:
    """One analysis configuration, named ``<sample_size>_<g>x<g>[_rescale][_noconfthresh]``.

    Attributes:
        name: the configuration's name.
        sample_size: number of grids to evaluate (fewer if the data set runs out of images).
        grid_size: g, the grid is g x g images.
        do_rescale: shrink every image by g so that a grid has the size of one image.
        conf_thresh: minimum confidence (probability of the true class) of a used image.
    """

    name: str
    sample_size: int
    grid_size: int
    do_rescale: bool
    conf_thresh: float

    @property
    def n_imgs(self) -> int:
        """Images per grid (g²)."""
        return self.grid_size**2

    @property
    def baseline(self) -> float:
        """The expected score of an input-independent (uniform) attribution: 1 / g²."""
        return 1.0 / self.n_imgs

    def to_dict(self) -> dict[str, Any]:
        """Plain data (for config logs and summaries)."""
        return {**asdict(self), "n_imgs": self.n_imgs}


def _build_configs() -> dict[str, LocalisationConfig]:
    configs = {}
    for sample_size in (500, 250):
        for grid in (2, 3):
            for rescale in (False, True):
                for threshold in (0.5, 0.0):
                    name = f"{sample_size}_{grid}x{grid}" + ("_rescale" if rescale else "")
                    name += "_noconfthresh" if threshold == 0.0 else ""
                    configs[name] = LocalisationConfig(name, sample_size, grid, rescale, threshold)
    return configs


#: the 16 named configurations of the reference
LOCALISATION_CONFIGS: dict[str, LocalisationConfig] = _build_configs()


def get_localisation_config(name: str) -> LocalisationConfig:
    """The configuration ``name`` (e.g. ``500_3x3``); unknown names raise with the closest match."""
    if name not in LOCALISATION_CONFIGS:
        raise unknown_name(
            "analysis config", name, LOCALISATION_CONFIGS,
            hint="names are {250,500}_{2x2,3x3} with optional _rescale and _noconfthresh, e.g. 500_3x3",
        )
    return LOCALISATION_CONFIGS[name]


# ------------------------------------------------------------------------------------ confidences
#: class -> [(dataset index, logit, probability)] of its correctly classified images, most confident first
ConfidenceRanking = dict[int, list[tuple[int, float, float]]]


def rank_by_confidence(
    model: nn.Module,
    batches: Any,
    num_classes: int,
    to_probabilities: Callable[[Tensor], Tensor] | None = None,
    device: torch.device | str | None = None,
) -> ConfidenceRanking:
    """Rank the correctly classified images of each class by their logit, highest first.

    ``batches`` yields ``(images, labels)`` in dataset order (a non-shuffled loader). The
    probability is ``to_probabilities(logits)`` (default: the model's own ``to_probabilities``,
    sigmoid for B-cos models, else a softmax).
    """
    if to_probabilities is None:
        own = getattr(model, "to_probabilities", None)
        to_probabilities = own if callable(own) else (lambda logits: torch.softmax(logits, dim=1))
    if device is None:
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
    ranking: ConfidenceRanking = {c: [] for c in range(num_classes)}
    index = 0
    with torch.inference_mode():
        for images, labels in batches:
            logits = model(images.to(device))
            if logits.dim() != 2 or logits.shape[1] != num_classes:
                raise InputError(
                    f"the model gives {list(logits.shape)[1:]} outputs per image but the data set has {num_classes} "
                    "classes; analyse the model on the data set it was trained for"
                )
            probabilities = to_probabilities(logits)
            best, predicted = logits.max(1)
            for i in range(len(labels)):
                label = int(labels[i])
                if int(predicted[i]) == label:
                    ranking[label].append((index + i, float(best[i]), float(probabilities[i, label])))
            index += len(labels)
    for entries in ranking.values():
        entries.sort(key=lambda entry: (-entry[1], entry[0]))
    return ranking


def ranking_to_plain(ranking: ConfidenceRanking) -> dict[str, list[list[float]]]:
    """JSON-ready form of a ranking (class keys as strings)."""
    return {str(c): [[i, logit, p] for i, logit, p in entries] for c, entries in ranking.items()}


def ranking_from_plain(plain: Mapping[str, Sequence[Sequence[float]]]) -> ConfidenceRanking:
    """Inverse of :func:`ranking_to_plain`."""
    try:
        return {int(c): [(int(i), float(logit), float(p)) for i, logit, p in entries] for c, entries in plain.items()}
    except (TypeError, ValueError) as error:
        raise ConfigError(f"not a confidence ranking ({error}); delete the file or use --force_confidence_calculation") from None


def grid_blocks(
    ranking: ConfidenceRanking,
    grid_size: int,
    conf_thresh: float,
    max_grids: int | None = None,
    seed: int = 42,
) -> list[list[int]]:
    """Dataset indices of the images of each grid: blocks of g² images of distinct classes.

    A class is available while its next unused image has a probability above ``conf_thresh``.
    While at least g² classes are available, g² of them are drawn at random (seeded) and each
    contributes its next most confident image. Every image is used at most once; the result stops
    at ``max_grids`` blocks or when fewer than g² classes are left.
    """
    n = grid_size**2
    rng = np.random.default_rng(seed)
    position = {c: 0 for c in ranking}

    def available(c: int) -> bool:
        entries = ranking[c]
        return position[c] < len(entries) and entries[position[c]][2] > conf_thresh

    classes = sorted(ranking)
    blocks: list[list[int]] = []
    while max_grids is None or len(blocks) < max_grids:
        candidates = [c for c in classes if available(c)]
        if len(candidates) < n:
            break
        chosen = rng.choice(candidates, size=n, replace=False)
        block = []
        for c in chosen:
            block.append(ranking[int(c)][position[int(c)]][0])
            position[int(c)] += 1
        blocks.append(block)
    return blocks


# ------------------------------------------------------------------------------------ grids and scores
def make_grids(images: Tensor, grid_size: int) -> Tensor:
    """Tile [B, g², C, H, W] images into [B, C, g·H, g·W] grids (image k at row k // g, column k % g)."""
    if images.dim() != 5 or images.shape[1] != grid_size**2:
        raise InputError(f"expected images of shape [B, {grid_size**2}, C, H, W], got {list(images.shape)}")
    b, _, c, h, w = images.shape
    g = grid_size
    return images.reshape(b, g, g, c, h, w).permute(0, 3, 1, 4, 2, 5).reshape(b, c, g * h, g * w)


def smooth_attributions(maps: Tensor, smooth: int) -> Tensor:
    """Average-pool [..., H, W] maps with an odd ``smooth x smooth`` window (stride 1, same size).

    ``smooth = 1`` returns the maps unchanged. Zero padding counts towards the average, as in the
    reference.
    """
    if not isinstance(smooth, int) or isinstance(smooth, bool) or smooth < 1 or smooth % 2 == 0:
        raise ConfigError(f"smooth must be a positive odd integer (1 means no smoothing), got {smooth!r}")
    if smooth == 1:
        return maps
    shape = maps.shape
    flat = maps.reshape(-1, 1, *shape[-2:])
    # a window of 2*size-1 already sums the whole image at every pixel; a larger one only divides
    # that sum by more (rescaled below) but would allocate an absurd padded tensor
    window = min(smooth, 2 * max(shape[-2:]) - 1)
    smoothed = F.avg_pool2d(flat, window, stride=1, padding=(window - 1) // 2)
    if window != smooth:
        smoothed = smoothed * (window / smooth) ** 2
    return smoothed.reshape(shape)


def cell_fractions(attributions: Tensor, grid_size: int, smooth: int = 1) -> Tensor:
    """Share of the positive attribution in each grid cell.

    Args:
        attributions: [..., H, W] maps of grids (sum channels first).
        grid_size: g.
        smooth: odd smoothing window applied before clamping (1: none).

    Returns:
        [..., g²] fractions (row-major cells), all zero where a map has no positive attribution.
    """
    height, width = attributions.shape[-2:]
    if height % grid_size or width % grid_size:
        raise InputError(f"a {grid_size}x{grid_size} grid needs a size divisible by {grid_size}, got {height}x{width}")
    maps = smooth_attributions(attributions.float(), smooth).clamp(min=0)
    h, w = height // grid_size, width // grid_size
    cells = maps.reshape(*maps.shape[:-2], grid_size, h, grid_size, w).sum(dim=(-3, -1))
    cells = cells.reshape(*cells.shape[:-2], grid_size**2)
    total = cells.sum(-1, keepdim=True)
    return torch.where(total > 0, cells / total.clamp(min=torch.finfo(cells.dtype).tiny), torch.zeros_like(cells))


def localisation_scores(attributions: Tensor, grid_size: int, smooth: int = 1) -> Tensor:
    """Scores [B, g²]: the share of target k's positive attribution inside cell k.

    ``attributions`` is [B, g², C', H, W] (channels are summed first) or [B, g², H, W].
    """
    if attributions.dim() == 5:
        attributions = attributions.sum(2)
    if attributions.dim() != 4 or attributions.shape[1] != grid_size**2:
        raise InputError(
            f"expected attributions [B, {grid_size**2}, (C,) H, W] for a {grid_size}x{grid_size} grid, "
            f"got {list(attributions.shape)}"
        )
    fractions = cell_fractions(attributions, grid_size, smooth)  # [B, g², g²]
    return torch.diagonal(fractions, dim1=1, dim2=2)


def evaluate_grids(
    explainer: Any,
    dataset: Any,
    blocks: Sequence[Sequence[int]],
    grid_size: int,
    smooth: int = 1,
    device: torch.device | str = "cpu",
    grids_per_batch: int = 1,
    on_progress: Callable[[int, int], None] | None = None,
) -> np.ndarray:
    """Play the pointing game on the grids of ``blocks``; scores [len(blocks), g²] (float64).

    ``dataset[i]`` returns ``(image [C, H, W], label)``; ``explainer.attribute_selection(grids,
    targets)`` returns [B, g², C', g·H, g·W]. ``grids_per_batch`` grids are explained together.
    ``on_progress(done, total)`` is called after every batch.
    """
    if grids_per_batch < 1:
        raise ConfigError(f"grids_per_batch must be at least 1, got {grids_per_batch}")
    scores = []
    total = len(blocks)
    for start in range(0, total, grids_per_batch):
        chunk = blocks[start : start + grids_per_batch]
        images, labels = [], []
        for block in chunk:
            samples = [dataset[int(i)] for i in block]
            images.append(torch.stack([torch.as_tensor(image) for image, _ in samples]))
            labels.append([int(label) for _, label in samples])
        if any(len(set(row)) != len(row) for row in labels):
            raise InputError("a grid holds two images of the same class; build the blocks with grid_blocks()")
        grids = make_grids(torch.stack(images), grid_size).to(device)
        targets = torch.tensor(labels, dtype=torch.long, device=device)
        attributions = explainer.attribute_selection(grids, targets)
        scores.append(localisation_scores(attributions, grid_size, smooth).double().cpu().numpy())
        if on_progress is not None:
            on_progress(min(start + grids_per_batch, total), total)
    if not scores:
        return np.zeros((0, grid_size**2))
    return np.concatenate(scores)


# ------------------------------------------------------------------------------------ summary
@dataclass(frozen=True)
class LocalisationSummary:
    """Statistics of the scores; ``mean`` is the reported localisation metric."""

    count: int
    mean: float
    std: float
    median: float
    q25: float
    q75: float
    min: float
    max: float
    baseline: float

    @classmethod
    def from_scores(cls, scores: np.ndarray, grid_size: int) -> LocalisationSummary:
        """Summarise scores of a g x g analysis (any shape; NaN-free)."""
        values = np.asarray(scores, dtype=np.float64).reshape(-1)
        baseline = 1.0 / grid_size**2
        if values.size == 0:
            nan = math.nan
            return cls(0, nan, nan, nan, nan, nan, nan, nan, baseline)
        q25, median, q75 = np.percentile(values, [25, 50, 75])
        return cls(
            count=int(values.size),
            mean=float(values.mean()),
            std=float(values.std()),
            median=float(median),
            q25=float(q25),
            q75=float(q75),
            min=float(values.min()),
            max=float(values.max()),
            baseline=baseline,
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain data (the ``summary.json`` content)."""
        return asdict(self)

    def format(self) -> str:
        """A short human-readable report."""
        if self.count == 0:
            return "no scores (no grid could be built)"
        return (
            f"localisation score over {self.count} targets: mean {self.mean:.4f} (std {self.std:.4f}), "
            f"median {self.median:.4f}, quartiles {self.q25:.4f} / {self.q75:.4f}, "
            f"range {self.min:.4f}..{self.max:.4f}; uniform baseline {self.baseline:.4f}"
        )


def plot_scores(scores: np.ndarray, summary: LocalisationSummary, title: str = "") -> Any:
    """A histogram of the scores with the mean and the uniform baseline (a matplotlib ``Figure``)."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6, 4), layout="constrained")
    axes = figure.subplots()
    values = np.asarray(scores, dtype=np.float64).reshape(-1)
    axes.hist(values, bins=np.linspace(0, 1, 41), color="tab:blue", alpha=0.8)
    if summary.count:
        axes.axvline(summary.mean, color="tab:red", label=f"mean {summary.mean:.3f}")
    axes.axvline(summary.baseline, color="black", linestyle="--", label=f"uniform baseline {summary.baseline:.3f}")
    axes.set_xlim(0, 1)
    axes.set_xlabel("share of positive attribution in the target's cell")
    axes.set_ylabel("targets")
    axes.set_title(title or "localisation scores")
    axes.legend(loc="upper left")
    return figure
