"""RISE: saliency as the score-weighted average of random masks (Petsiuk et al., 2018).

``n`` random binary ``s x s`` grids (each cell kept with probability ``p1``) are upsampled
bilinearly to ``(s + 1)`` cells of ``ceil(H / s)`` pixels and cropped at a random shift to H x W.
For class c the saliency is ``Σ_i P_c(M_i ⊙ x) · M_i / (n · p1)`` with P the model's probabilities
(sigmoid for B-cos models, else softmax).

The masks come from a seeded ``torch.Generator`` (the same masks on CPU and GPU) and are cached as
``<cache_dir>/rise_masks/masks-n<n>-s<s>-p<p1>-H<H>-W<W>-seed<seed>.pt`` (loaded with
``weights_only=True``). Masked images go through the model ``batch_size`` at a time, and
:meth:`attribute_selection` reads every requested class from the same passes. Masking blends the
colour channels towards ``fill``; for B-cos ``[x, 1 - x]`` inputs the inverse channels follow.
"""

from __future__ import annotations

import math
import os
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bcos.checkpoint_io import atomic_torch_save, safe_load
from bcos.errors import CheckpointError, ConfigError, OutputError
from bcos.explain.methods.base import Explainer, probability_function, replace_where
from bcos.explanation.checks import check_target_range, has_inverse_channels

__all__ = ["RISE", "generate_rise_masks", "default_cache_dir"]


def default_cache_dir() -> Path:
    """``$BCOS_CACHE_DIR`` if set, else ``$XDG_CACHE_HOME/bcos`` (``~/.cache/bcos``)."""
    explicit = os.environ.get("BCOS_CACHE_DIR")
    if explicit:
        return Path(explicit).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "bcos"


def generate_rise_masks(n: int, s: int, p1: float, size: tuple[int, int], seed: int = 42) -> Tensor:
    """``n`` RISE masks [n, 1, H, W] in [0, 1], the same for the same arguments on every machine."""
    height, width = size
    generator = torch.Generator().manual_seed(seed)
    cell_h, cell_w = math.ceil(height / s), math.ceil(width / s)
    grids = (torch.rand(n, 1, s, s, generator=generator) < p1).float()
    shifts_y = torch.randint(0, cell_h, (n,), generator=generator)
    shifts_x = torch.randint(0, cell_w, (n,), generator=generator)
    upsampled = F.interpolate(grids, size=((s + 1) * cell_h, (s + 1) * cell_w), mode="bilinear", align_corners=False)
    masks = torch.empty(n, 1, height, width)
    for i in range(n):
        y, x = int(shifts_y[i]), int(shifts_x[i])
        masks[i] = upsampled[i, :, y : y + height, x : x + width]
    return masks


class RISE(Explainer):
    """Randomized Input Sampling for Explanation, one map [N, 1, H, W].

    Args:
        n: number of random masks.
        s: cells per side of the random grids.
        p1: probability that a cell is kept.
        batch_size: masked images per forward pass.
        seed: seed of the mask generator.
        cache_dir: folder for the mask cache (default :func:`default_cache_dir`); None-like ``""``
            disables the cache.
        fill: value of masked-out colour pixels.
    """

    produces_map = True

    def __init__(
        self,
        model: nn.Module,
        n: int = 6000,
        s: int = 6,
        p1: float = 0.1,
        batch_size: int = 8,
        seed: int = 42,
        cache_dir: str | os.PathLike | None = None,
        fill: float = 0.0,
    ) -> None:
        super().__init__(model)
        for name, value in (("n", n), ("s", s), ("batch_size", batch_size)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"RISE {name} must be a positive integer, got {value!r}")
        if not 0 < p1 <= 1:
            raise ConfigError(f"RISE p1 (probability of keeping a cell) must be in (0, 1], got {p1!r}")
        self.n, self.s, self.p1 = n, s, float(p1)
        self.batch_size = batch_size
        self.seed = seed
        self.cache_dir = default_cache_dir() if cache_dir is None else (Path(cache_dir) if str(cache_dir) else None)
        self.fill = float(fill)
        self._to_probabilities = probability_function(model)
        self._masks: dict[tuple[int, int], Tensor] = {}

    def mask_file(self, size: tuple[int, int]) -> Path | None:
        """Where the masks for images of ``size`` are cached (None without a cache)."""
        if self.cache_dir is None:
            return None
        name = f"masks-n{self.n}-s{self.s}-p{self.p1:g}-H{size[0]}-W{size[1]}-seed{self.seed}.pt"
        return self.cache_dir / "rise_masks" / name

    def masks(self, size: tuple[int, int]) -> Tensor:
        """The masks [n, 1, H, W] for images of ``size`` (from memory, the cache, or generated)."""
        if size in self._masks:
            return self._masks[size]
        path = self.mask_file(size)
        masks = None
        if path is not None and path.is_file():
            try:
                loaded = safe_load(path)
                if isinstance(loaded, Tensor) and loaded.shape == (self.n, 1, *size):
                    masks = loaded
            except CheckpointError:  # a corrupt cache file is regenerated
                masks = None
        if masks is None:
            masks = generate_rise_masks(self.n, self.s, self.p1, size, self.seed)
            if path is not None:
                try:
                    atomic_torch_save(masks, path)  # concurrent jobs never read a partial file
                except OutputError as error:  # an unwritable or full cache costs time, not the results
                    warnings.warn(f"RISE masks are not cached: {error}; pass cache_dir='' to skip the cache", stacklevel=2)
        self._masks[size] = masks
        return masks

    def _attribute(self, inputs: Tensor, targets: Tensor) -> Tensor:
        return self._attribute_selection(inputs, targets[:, None])[:, 0]

    def _attribute_selection(self, inputs: Tensor, targets: Tensor) -> Tensor:
        n_images = inputs.shape[0]
        size = (int(inputs.shape[-2]), int(inputs.shape[-1]))
        masks = self.masks(size).to(device=inputs.device, dtype=inputs.dtype)
        inverse = has_inverse_channels(inputs)
        pairs = n_images * self.n
        probabilities = []
        with torch.no_grad():
            for start in range(0, pairs, self.batch_size):
                index = torch.arange(start, min(start + self.batch_size, pairs), device=inputs.device)
                image, mask = index // self.n, index % self.n
                masked = replace_where(inputs[image], masks[mask], self.fill, inverse)
                probabilities.append(self._to_probabilities(self.model(masked)))
        scores = torch.cat(probabilities).reshape(n_images, self.n, -1)  # [N, n, classes]
        check_target_range(targets, scores.shape[2])
        selected = scores.gather(2, targets[:, None, :].expand(-1, self.n, -1))  # [N, n, T]
        saliency = torch.einsum("bmt,mhw->bthw", selected, masks[:, 0]) / (self.n * self.p1)
        return saliency[:, :, None]
