"""Turning dynamic linear weights into pictures.

``gradient_to_image`` reproduces the B-cos colour explanation exactly (same numerics as the
reference, so released models give the same images): every pixel is coloured by the direction of
its weight vector W(x) over the six input channels [r, g, b, 1-r, 1-g, 1-b] and made opaque in
proportion to the strength of W(x), but only where the pixel contributes positively.

``plot_contribution_map`` and ``plot_image_grid`` are small matplotlib helpers; matplotlib is
imported only when they are called.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from bcos.errors import InputError

if TYPE_CHECKING:  # matplotlib is optional at import time
    import matplotlib.axes
    import matplotlib.figure
    import matplotlib.image

__all__ = [
    "gradient_to_image",
    "gradients_to_images",
    "plot_contribution_map",
    "plot_image_grid",
]

# torch.quantile refuses inputs with more elements than this
_QUANTILE_MAX_NUMEL = 2**24


def _check_pair(images: Tensor, weights: Tensor, batched: bool) -> None:
    expected_dim = 4 if batched else 3
    layout = "[N, 6, H, W]" if batched else "[6, H, W]"
    for name, t in (("image", images), ("linear_mapping", weights)):
        if not isinstance(t, Tensor):
            raise InputError(f"{name} must be a torch.Tensor of shape {layout}, got {type(t).__name__}")
        if t.dim() != expected_dim or t.shape[-3] != 6:
            raise InputError(
                f"{name} must have shape {layout} (the 6-channel [x, 1-x] encoding), got {list(t.shape)}; "
                "apply AddInverse to 3-channel images"
            )
    if images.shape != weights.shape:
        raise InputError(
            f"image and linear_mapping must have the same shape, got {list(images.shape)} and {list(weights.shape)}"
        )


def _smooth(alpha: Tensor, kernel: int) -> Tensor:
    """Box filter that keeps the size; zero padding counts towards the mean (as the reference).

    For odd kernels this is ``avg_pool2d(kernel, stride=1, padding=(kernel - 1) // 2)``; even kernels
    (which crash in the reference) pad one more pixel at the bottom/right.
    """
    # a window of 2*size-1 already covers the whole image from every pixel (the output is constant,
    # and the percentile normalisation removes the 1/kernel² scale), so a larger one changes nothing
    # but would allocate an absurd padded tensor
    kernel = min(kernel, 2 * max(alpha.shape[-2:]) - 1)
    before, after = (kernel - 1) // 2, kernel // 2
    padded = F.pad(alpha, (before, after, before, after))
    return F.avg_pool2d(padded, kernel, stride=1)


def _quantile_per_sample(alpha: Tensor, q: float) -> Tensor:
    flat = alpha.flatten(1)
    per_chunk = max(1, _QUANTILE_MAX_NUMEL // max(1, flat.shape[1]))
    if flat.shape[1] > _QUANTILE_MAX_NUMEL:
        raise InputError(f"image too large for the alpha percentile ({flat.shape[1]} pixels > {_QUANTILE_MAX_NUMEL})")
    parts = [torch.quantile(chunk, q, dim=1) for chunk in flat.split(per_chunk)]
    return torch.cat(parts).view(-1, 1, 1, 1)


def _rgba(images: Tensor, weights: Tensor, smooth: int, alpha_percentile: float) -> Tensor:
    """Batched core: [N, 6, H, W] images and weights -> [N, H, W, 4] tensor."""
    if not 0 <= alpha_percentile <= 100:
        raise InputError(f"alpha_percentile must be in [0, 100], got {alpha_percentile}")
    if smooth < 0:
        raise InputError(f"smooth must be a non-negative kernel size (0 disables smoothing), got {smooth}")
    # float32 at least: quantile and the 1e-12 guards need it
    dtype = torch.promote_types(images.dtype, torch.float32)
    images = images.detach().to(dtype)
    weights = weights.detach().to(dtype)
    contributions = (images * weights).sum(1, keepdim=True)
    # each pixel's weight vector scaled so its largest entry has magnitude 1; negative weights drop out
    direction = weights / (weights.abs().amax(1, keepdim=True) + 1e-12)
    direction = direction.clamp(min=0)
    # colour of channel c = its share against the inverse channel (r vs 1-r, ...)
    rgb = direction[:, :3] / (direction[:, :3] + direction[:, 3:] + 1e-12)
    alpha = weights.norm(p=2, dim=1, keepdim=True)
    alpha = torch.where(contributions < 0, torch.full_like(alpha, 1e-12), alpha)
    if smooth:
        alpha = _smooth(alpha, smooth)
    alpha = (alpha / _quantile_per_sample(alpha, alpha_percentile / 100)).clip(0, 1)
    return torch.cat([rgb, alpha], 1).permute(0, 2, 3, 1)


def gradient_to_image(
    image: Tensor,
    linear_mapping: Tensor,
    smooth: int = 15,
    alpha_percentile: float = 99.5,
) -> np.ndarray:
    """RGBA explanation image of one sample.

    Args:
        image: the 6-channel input ``[x, 1-x]``, shape [6, H, W].
        linear_mapping: its dynamic linear weights W(x) for the explained class, shape [6, H, W].
        smooth: kernel size of the box filter applied to the alpha channel (0 disables it).
        alpha_percentile: the alpha channel is divided by this percentile (in [0, 100]) and clipped to [0, 1].

    Returns:
        float32 numpy array [H, W, 4] with values in [0, 1].
    """
    _check_pair(image, linear_mapping, batched=False)
    return gradients_to_images(image[None], linear_mapping[None], smooth, alpha_percentile)[0]


def gradients_to_images(
    images: Tensor,
    linear_mappings: Tensor,
    smooth: int = 15,
    alpha_percentile: float = 99.5,
) -> np.ndarray:
    """Batched :func:`gradient_to_image`: [N, 6, H, W] inputs -> numpy [N, H, W, 4].

    Each sample is normalised by its own alpha percentile, so the result equals N single calls.
    """
    _check_pair(images, linear_mappings, batched=True)
    rgba = _rgba(images, linear_mappings, smooth, alpha_percentile)
    return rgba.float().cpu().numpy()


def _to_numpy_2d(contribution_map: Any) -> np.ndarray:
    if isinstance(contribution_map, Tensor):
        contribution_map = contribution_map.detach().float().cpu().numpy()
    contribution_map = np.asarray(contribution_map, dtype=np.float64)
    if contribution_map.ndim == 3 and contribution_map.shape[0] == 1:
        contribution_map = contribution_map[0]
    if contribution_map.ndim != 2:
        raise InputError(
            f"contribution_map must be a 2-D [H, W] map (index one sample of a batch), got shape {list(contribution_map.shape)}"
        )
    return contribution_map


def plot_contribution_map(
    contribution_map: Tensor | np.ndarray,
    ax: matplotlib.axes.Axes | None = None,
    vrange: float | str | None = None,
    vmin: float | None = None,
    vmax: float | None = None,
    hide_ticks: bool = True,
    cmap: str = "bwr",
    percentile: float | None = 99.5,
) -> tuple[matplotlib.axes.Axes, matplotlib.image.AxesImage]:
    """Show a contribution map [H, W] with a diverging colour map centred on zero.

    Values are clipped at the ``percentile`` of their magnitudes (None disables clipping). The
    colour range is ``[-vrange, vrange]`` with ``vrange`` the largest remaining magnitude unless
    given; ``vmin``/``vmax`` override either end. A [1, H, W] map is accepted as well.

    Returns:
        ``(ax, image)``; a new figure is created when ``ax`` is None.
    """
    values = _to_numpy_2d(contribution_map)
    if percentile is not None:
        cutoff = np.percentile(np.abs(values), percentile)
        values = np.clip(values, -cutoff, cutoff)
    if ax is None:
        import matplotlib.pyplot as plt

        _, ax = plt.subplots(1)
    if vrange is None or vrange == "auto":
        vrange = float(np.max(np.abs(values)))
    image = ax.imshow(
        values,
        cmap=cmap,
        vmin=-vrange if vmin is None else vmin,
        vmax=vrange if vmax is None else vmax,
    )
    if hide_ticks:
        ax.set_xticks([])
        ax.set_yticks([])
    return ax, image


def _to_displayable(image: Any) -> np.ndarray:
    """Tensor [C, H, W] (C in 1, 3, 4, 6) or array [H, W(, C)] -> array matplotlib can show."""
    if isinstance(image, Tensor):
        image = image.detach().float().cpu()
        if image.dim() == 3 and image.shape[0] in (1, 3, 4, 6):
            if image.shape[0] == 6:  # [x, 1-x] encoding: show the image itself
                image = image[:3]
            image = image.permute(1, 2, 0)
        image = image.numpy()
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[-1] not in (3, 4)):
        raise InputError(f"cannot show an image of shape {list(image.shape)}; expected [H, W], [H, W, 3|4] or [C, H, W]")
    return image


def plot_image_grid(
    images: Sequence[Any],
    titles: Sequence[str] | None = None,
    ncols: int | None = None,
    cell_size: float = 2.5,
    background: str | None = "black",
) -> tuple[matplotlib.figure.Figure, np.ndarray]:
    """Show images (e.g. inputs next to their RGBA explanations) in a grid without ticks.

    Args:
        images: a sequence (or a batched array/tensor) of images; tensors may be [C, H, W].
        titles: optional title per image.
        ncols: images per row (default: all in one row).
        cell_size: size of one cell in inches.
        background: axes face colour behind transparent pixels (None keeps matplotlib's).

    Returns:
        ``(figure, axes)`` with ``axes`` a 2-D array of shape [rows, ncols].
    """
    import matplotlib.pyplot as plt

    images = list(images)
    if not images:
        raise InputError("plot_image_grid needs at least one image")
    if titles is not None and len(titles) != len(images):
        raise InputError(f"got {len(titles)} titles for {len(images)} images; pass one title per image")
    ncols = len(images) if ncols is None else ncols
    if ncols < 1:
        raise InputError(f"ncols must be positive, got {ncols}")
    nrows = -(-len(images) // ncols)
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(cell_size * ncols, cell_size * nrows), squeeze=False
    )
    for i, ax in enumerate(axes.flat):
        ax.set_xticks([])
        ax.set_yticks([])
        if i >= len(images):
            ax.axis("off")
            continue
        if background is not None:
            ax.set_facecolor(background)
        ax.imshow(_to_displayable(images[i]))
        if titles is not None:
            ax.set_title(titles[i])
    return fig, axes
