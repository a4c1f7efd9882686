"""Occlusion: how much each class score drops when a square window of the image is hidden.

Windows of ``ks x ks`` pixels slide with step ``stride``; window ``(i, j)`` covers rows
``[i·stride - pad, i·stride - pad + ks)`` with ``pad = (ks - stride) // 2`` (so windows are centred
on their stride cell; clipped at the border). Each pixel of a window receives the score drop
divided by the window's pixel count, summed over all windows containing it, so the attributions of
a window add up to its drop. With ``ks = stride`` the windows tile the image; with ``ks = stride = 1``
and a model that is a sum of per-pixel terms, the attribution of a pixel is exactly its term.

The forward passes of all (image, window) pairs are batched (``batch_size`` at a time), and
:meth:`attribute_selection` reads every requested class from the same passes. Hidden pixels take the
value ``fill`` on the colour channels; for B-cos ``[x, 1 - x]`` inputs the inverse channels are
set to ``1 - fill`` (the reference zeroed all six channels).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bcos.errors import ConfigError
from bcos.explain.methods.base import Explainer, replace_where
from bcos.explanation.checks import check_target_range, has_inverse_channels

__all__ = ["Occlusion", "window_coverage"]


def _pair(name: str, value: int | tuple[int, int]) -> tuple[int, int]:
    pair = (value, value) if isinstance(value, int) else tuple(value)
    if len(pair) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in pair):
        raise ConfigError(f"Occlusion {name} must be a positive int or a pair of them, got {value!r}")
    return pair  # type: ignore[return-value]


def window_coverage(size: int, ks: int, stride: int, device: torch.device | None = None) -> Tensor:
    """Boolean [num_windows, size]: which of ``size`` positions each 1-D window covers."""
    pad = (ks - stride) // 2
    count = -(-size // stride)  # ceil
    starts = torch.arange(count, device=device) * stride - pad
    positions = torch.arange(size, device=device)
    return (positions[None] >= starts[:, None]) & (positions[None] < starts[:, None] + ks)


class Occlusion(Explainer):
    """Sliding-window occlusion, one map [N, 1, H, W].

    Args:
        ks: window size (int or (height, width)).
        stride: step between windows (int or pair).
        batch_size: occluded images per forward pass.
        only_positive: count only score drops (occluding that lowers the score), not rises.
        fill: value of hidden colour pixels (0: black for B-cos inputs, the data mean for
            normalised inputs).
    """

    produces_map = True

    def __init__(
        self,
        model: nn.Module,
        ks: int | tuple[int, int] = 32,
        stride: int | tuple[int, int] = 32,
        batch_size: int = 8,
        only_positive: bool = False,
        fill: float = 0.0,
    ) -> None:
        super().__init__(model)
        self.ks = _pair("ks", ks)
        self.stride = _pair("stride", stride)
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ConfigError(f"Occlusion batch_size must be a positive integer, got {batch_size!r}")
        self.batch_size = batch_size
        self.only_positive = only_positive
        self.fill = float(fill)

    def _attribute(self, inputs: Tensor, targets: Tensor) -> Tensor:
        return self._attribute_selection(inputs, targets[:, None])[:, 0]

    def _score_drops(self, inputs: Tensor, rows: Tensor, cols: Tensor) -> tuple[Tensor, Tensor]:
        """Per image and window, ``score(x) - score(x occluded)`` for every class: [N, K, classes].

        Also returns the original scores [N, classes].
        """
        n = inputs.shape[0]
        inverse = has_inverse_channels(inputs)
        num_windows = rows.shape[0] * cols.shape[0]
        with torch.no_grad():
            original = self.model(inputs)
            drops = []
            pairs = n * num_windows
            for start in range(0, pairs, self.batch_size):
                index = torch.arange(start, min(start + self.batch_size, pairs), device=inputs.device)
                image, window = index // num_windows, index % num_windows
                hidden = rows[window // cols.shape[0]][:, :, None] & cols[window % cols.shape[0]][:, None, :]
                keep = (~hidden)[:, None].to(inputs.dtype)
                occluded = replace_where(inputs[image], keep, self.fill, inverse)
                drops.append(original[image] - self.model(occluded))
        return torch.cat(drops).reshape(n, num_windows, -1), original

    def _attribute_selection(self, inputs: Tensor, targets: Tensor) -> Tensor:
        n, t = targets.shape
        height, width = inputs.shape[-2:]
        (kh, kw), (sh, sw) = self.ks, self.stride
        rows = window_coverage(height, kh, sh, inputs.device)
        cols = window_coverage(width, kw, sw, inputs.device)
        drops, original = self._score_drops(inputs, rows, cols)
        check_target_range(targets, original.shape[1])
        if self.only_positive:
            drops = drops.clamp(min=0)
        selected = drops.gather(2, targets[:, None, :].expand(-1, drops.shape[1], -1))  # [N, K, T]
        area = (rows.sum(1)[:, None] * cols.sum(1)[None, :]).reshape(-1).to(inputs.dtype)  # [K]
        per_pixel = (selected / area.clamp(min=1)[None, :, None]).permute(0, 2, 1)  # [N, T, K]
        grid = per_pixel.reshape(n * t, 1, rows.shape[0], cols.shape[0])
        # spread each window's value over its pixels: a transposed convolution with a ones kernel
        canvas = F.conv_transpose2d(grid, torch.ones(1, 1, kh, kw, dtype=grid.dtype, device=grid.device), stride=(sh, sw))
        pad_h, pad_w = (kh - sh) // 2, (kw - sw) // 2
        # canvas row r + pad is image row r; F.pad with negative amounts crops
        canvas = F.pad(canvas, (-pad_w, pad_w + width - canvas.shape[-1], -pad_h, pad_h + height - canvas.shape[-2]))
        return canvas.reshape(n, t, 1, height, width)
