"""Tensor transforms of the data pipeline: the B-cos input encoding and the batch augmentations.

* :class:`AddInverse` turns an RGB image ``x`` into the 6-channel B-cos input ``[x, 1 - x]``.
* :class:`RandomMixup`, :class:`RandomCutmix` and :class:`SplitAndGrid` act on a whole batch
  ``(images [B, C, H, W] float, targets [B] int64)`` and return soft targets ``[B, num_classes]``.
* :class:`RandomBatchChoice` applies one of several batch transforms, chosen per batch, and
  :class:`CollateThen` runs a batch transform after the default collation (a ``collate_fn``).
* :func:`make_train_collate` builds the training ``collate_fn`` from the data-config options
  ``mixup_alpha``, ``cutmix_alpha`` and ``p_gridified``.

This module does not import Lightning.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import default_collate

from bcos.errors import ConfigError, InputError

__all__ = [
    "AddInverse",
    "ends_with_add_inverse",
    "RandomMixup",
    "RandomCutmix",
    "SplitAndGrid",
    "RandomBatchChoice",
    "CollateThen",
    "make_train_collate",
]

BatchTransform = Callable[[Tensor, Tensor], tuple[Tensor, Tensor]]


class AddInverse(torch.nn.Module):
    """Concatenate ``x`` and ``1 - x`` along ``dim`` (the channel axis of ``[C,H,W]`` or ``[B,C,H,W]``).

    B-cos networks take this encoding of an image with values in [0, 1]: it makes every colour
    recoverable from the direction of the input vector alone.
    """

    def __init__(self, dim: int = -3) -> None:
        super().__init__()
        self.dim = dim

    def forward(self, in_tensor: Tensor) -> Tensor:
        if not isinstance(in_tensor, Tensor):
            raise InputError(
                f"AddInverse expects a tensor, got {type(in_tensor).__name__}; "
                "put ToTensor() (or PILToTensor + ConvertImageDtype) before it"
            )
        return torch.cat([in_tensor, 1 - in_tensor], dim=self.dim)

    def extra_repr(self) -> str:
        return f"dim={self.dim}"


def ends_with_add_inverse(transform: Any) -> bool:
    """Whether every output of ``transform`` is ``[x, 1 - x]`` on the channel axis: its last step
    is a channel-axis :class:`AddInverse` (through presets and nested ``Compose``)."""
    if isinstance(transform, AddInverse):
        return transform.dim in (-3, 0)  # the channel axis of a [C, H, W] image
    steps = getattr(transform, "transforms", None)
    if steps is not None and not isinstance(steps, list | tuple):
        steps = getattr(steps, "transforms", None)  # a preset's Compose
    return isinstance(steps, list | tuple) and len(steps) > 0 and ends_with_add_inverse(steps[-1])


def _check_batch(batch: Tensor, target: Tensor, name: str) -> None:
    if batch.ndim != 4:
        raise InputError(f"{name} expects images [B, C, H, W], got shape {tuple(batch.shape)}")
    if target.ndim != 1 or target.shape[0] != batch.shape[0]:
        raise InputError(
            f"{name} expects integer targets [B] with B={batch.shape[0]}, got shape {tuple(target.shape)}"
        )
    if not batch.is_floating_point():
        raise InputError(f"{name} expects float images, got {batch.dtype}; convert them to float first")
    if target.dtype != torch.int64:
        raise InputError(f"{name} expects int64 class-index targets, got {target.dtype}")


def _check_parameters(name: str, num_classes: int, p: float, alpha: float) -> None:
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ConfigError(f"{name}: num_classes must be a positive integer, got {num_classes!r}")
    if not 0.0 <= p <= 1.0:
        raise ConfigError(f"{name}: p must lie in [0, 1], got {p!r}")
    if not alpha > 0:
        raise ConfigError(f"{name}: alpha must be positive, got {alpha!r}")


def _sample_lambda(alpha: float) -> float:
    """λ ~ Beta(α, α), drawn from torch's global generator (so ``torch.manual_seed`` fixes it)."""
    concentration = torch.tensor([alpha, alpha], dtype=torch.float)
    return float(torch.distributions.Dirichlet(concentration).sample()[0])


class _RandomPairMix(torch.nn.Module):
    """Shared part of Mixup and CutMix: checks, one-hot targets, pairing with the batch rolled by one."""

    def __init__(self, num_classes: int, p: float = 0.5, alpha: float = 1.0, inplace: bool = False) -> None:
        super().__init__()
        _check_parameters(type(self).__name__, num_classes, p, alpha)
        self.num_classes = num_classes
        self.p = p
        self.alpha = alpha
        self.inplace = inplace

    def forward(self, batch: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
        _check_batch(batch, target, type(self).__name__)
        if target.numel() and (int(target.min()) < 0 or int(target.max()) >= self.num_classes):
            raise InputError(
                f"{type(self).__name__}: targets must lie in [0, {self.num_classes - 1}], "
                f"got values in [{int(target.min())}, {int(target.max())}]"
            )
        if not self.inplace:
            batch = batch.clone()
        soft_target = F.one_hot(target, num_classes=self.num_classes).to(dtype=batch.dtype)
        if torch.rand(1).item() >= self.p:
            return batch, soft_target
        # Rolling by one pairs every sample with its neighbour; cheaper than a random permutation.
        partner_batch = batch.roll(1, 0)
        partner_target = soft_target.roll(1, 0)
        batch, lam = self._mix_images(batch, partner_batch)
        return batch, soft_target * lam + partner_target * (1.0 - lam)

    def _mix_images(self, batch: Tensor, partner: Tensor) -> tuple[Tensor, float]:
        raise NotImplementedError

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}, p={self.p}, alpha={self.alpha}, inplace={self.inplace}"


class RandomMixup(_RandomPairMix):
    """Mixup (Zhang et al., 2018) with probability ``p``: ``λ·x_i + (1-λ)·x_{i-1}``, λ ~ Beta(α, α).

    Returns the (mixed) images and soft targets ``[B, num_classes]`` that sum to 1 per sample.
    """

    def _mix_images(self, batch: Tensor, partner: Tensor) -> tuple[Tensor, float]:
        lam = _sample_lambda(self.alpha)
        batch.mul_(lam).add_(partner, alpha=1.0 - lam)
        return batch, lam


class RandomCutmix(_RandomPairMix):
    """CutMix (Yun et al., 2019) with probability ``p``: paste a box of ``x_{i-1}`` into ``x_i``.

    The box is centred at a uniform random pixel with sides ``sqrt(1-λ)`` times the image sides
    (λ ~ Beta(α, α)), clipped at the border; the target weight λ is then recomputed from the
    clipped box area.
    """

    def _mix_images(self, batch: Tensor, partner: Tensor) -> tuple[Tensor, float]:
        lam = _sample_lambda(self.alpha)
        height, width = batch.shape[-2:]
        center_x = int(torch.randint(width, (1,)))
        center_y = int(torch.randint(height, (1,)))
        half_ratio = 0.5 * math.sqrt(1.0 - lam)
        half_w, half_h = int(half_ratio * width), int(half_ratio * height)
        x1, x2 = max(center_x - half_w, 0), min(center_x + half_w, width)
        y1, y2 = max(center_y - half_h, 0), min(center_y + half_h, height)
        batch[:, :, y1:y2, x1:x2] = partner[:, :, y1:y2, x1:x2]
        return batch, 1.0 - (x2 - x1) * (y2 - y1) / (width * height)


class SplitAndGrid(torch.nn.Module):
    """Turn the first ``p_gridified`` share of a batch into 2x2 grids of four images each.

    Each group of four images is tiled (first two on top, left to right) and resized bilinearly back
    to the original size; its target is the union of the four one-hot targets (clamped to 1). The
    number of gridified images is rounded down to a multiple of four. Returns images and
    multi-hot targets ``[B', num_classes]`` where ``B' = B - 3 * (number of grids)``.
    """

    def __init__(self, p_gridified: float, num_classes: int) -> None:
        super().__init__()
        _check_parameters(type(self).__name__, num_classes, p_gridified, 1.0)
        self.p = p_gridified
        self.num_classes = num_classes

    def forward(self, batch: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
        _check_batch(batch, target, type(self).__name__)
        hot = F.one_hot(target, num_classes=self.num_classes).to(dtype=batch.dtype)
        num_grids = int(len(batch) * self.p) // 4
        if num_grids == 0:
            return batch, hot
        n = 4 * num_grids
        _, channels, height, width = batch.shape
        groups = batch[:n].reshape(num_grids, 2, 2, channels, height, width)
        # [G, row, col, C, H, W] -> [G, C, row, H, col, W] -> [G, C, 2H, 2W]
        tiled = groups.permute(0, 3, 1, 4, 2, 5).reshape(num_grids, channels, 2 * height, 2 * width)
        grids = F.interpolate(tiled, size=(height, width), mode="bilinear", align_corners=False)
        grid_targets = hot[:n].reshape(num_grids, 4, self.num_classes).sum(1).clamp(0, 1)
        return torch.cat([grids, batch[n:]]), torch.cat([grid_targets, hot[n:]])

    def extra_repr(self) -> str:
        return f"p_gridified={self.p}, num_classes={self.num_classes}"


class RandomBatchChoice(torch.nn.Module):
    """Apply one of ``transforms`` to each batch, chosen uniformly with torch's global generator."""

    def __init__(self, transforms: Sequence[BatchTransform]) -> None:
        super().__init__()
        if not transforms:
            raise ConfigError("RandomBatchChoice needs at least one batch transform")
        self.transforms = list(transforms)

    def forward(self, batch: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
        index = int(torch.randint(len(self.transforms), (1,)))
        return self.transforms[index](batch, target)

    def extra_repr(self) -> str:
        return ", ".join(repr(t) for t in self.transforms)


class CollateThen:
    """A picklable ``collate_fn``: ``default_collate`` the samples, then apply a batch transform."""

    def __init__(self, batch_transform: BatchTransform) -> None:
        self.batch_transform = batch_transform

    def __call__(self, samples: list[Any]) -> tuple[Tensor, Tensor]:
        images, targets = default_collate(samples)
        return self.batch_transform(images, targets)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.batch_transform!r})"


def make_train_collate(
    num_classes: int,
    mixup_alpha: float = 0.0,
    cutmix_alpha: float = 0.0,
    p_gridified: float = 0.0,
) -> CollateThen | None:
    """The training ``collate_fn`` for the data-config options, or None for plain collation.

    With both ``mixup_alpha`` and ``cutmix_alpha`` positive, every batch gets Mixup or CutMix
    (chosen uniformly per batch); gridify (``p_gridified``) cannot be combined with them.
    """
    for key, value in (("mixup_alpha", mixup_alpha), ("cutmix_alpha", cutmix_alpha)):
        if not isinstance(value, (int, float)) or value < 0:
            raise ConfigError(f"data.{key} must be a number >= 0 (0 disables it), got {value!r}")
    if not isinstance(p_gridified, (int, float)) or not 0.0 <= p_gridified <= 1.0:
        raise ConfigError(f"data.p_gridified must lie in [0, 1], got {p_gridified!r}")
    if p_gridified and (mixup_alpha or cutmix_alpha):
        raise ConfigError(
            "data.p_gridified cannot be combined with mixup_alpha/cutmix_alpha; set one of them to 0"
        )
    if p_gridified:
        return CollateThen(SplitAndGrid(p_gridified, num_classes))
    mixers: list[BatchTransform] = []
    if mixup_alpha > 0:
        mixers.append(RandomMixup(num_classes, p=1.0, alpha=mixup_alpha))
    if cutmix_alpha > 0:
        mixers.append(RandomCutmix(num_classes, p=1.0, alpha=cutmix_alpha))
    if not mixers:
        return None
    return CollateThen(mixers[0] if len(mixers) == 1 else RandomBatchChoice(mixers))
