"""``ExplanationsLogger``: B-cos explanations of a fixed set of validation images during training.

Every ``log_every_n_epochs`` epochs (after validation, on rank 0) the callback syncs a CPU copy of
the model, explains up to ``max_imgs`` fixed validation images in one batched call
(:func:`bcos.explain.contributions.explain`, predicted class) and draws a grid: a row of inputs
(titled ``label -> prediction``) above a row of their explanations (green frame when correct,
orange when wrong). The picture is saved as ``<run folder>/explanations/epoch_<E>.png`` and sent
to the TensorBoard and W&B loggers when they are active.
"""

from __future__ import annotations

import copy
import io
import warnings
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger
from lightning.pytorch.utilities import rank_zero_warn
from torch import nn

from bcos.errors import ConfigError
from bcos.explain.contributions import explain
from bcos.training.atomic import atomic_open

__all__ = ["ExplanationsLogger", "EXPLANATIONS_DIRNAME", "default_smoothing", "explanation_grid"]

EXPLANATIONS_DIRNAME = "explanations"
_COLUMNS = 8


def default_smoothing(height: int, width: int) -> int:
    """The reference's 15-pixel alpha smoothing, shrunk (odd, >= 1) for small images."""
    size = min(15, min(height, width) // 4)
    return max(1, size if size % 2 == 1 else size - 1)


def _class_index(label: Any) -> int:
    # soft or one-hot labels count as their strongest class
    label = torch.as_tensor(label)
    return int(label.argmax()) if label.numel() > 1 else int(label)


def _unwrap(model: nn.Module) -> nn.Module:
    # torch.compile wraps the module; the copy and its weights come from the original
    return getattr(model, "_orig_mod", model)


def _framed(cell: np.ndarray, color: tuple[int, int, int] | None, width: int) -> np.ndarray:
    framed = np.zeros((cell.shape[0] + 2 * width, cell.shape[1] + 2 * width, 3), dtype=np.uint8)
    if color is not None:
        framed[:] = color
    framed[width:-width, width:-width] = cell
    return framed


def explanation_grid(
    images: torch.Tensor,
    labels: torch.Tensor,
    predictions: torch.Tensor,
    explanations: np.ndarray,
    columns: int = _COLUMNS,
    min_cell_size: int = 96,
) -> np.ndarray:
    """One uint8 RGB picture: rows of inputs above rows of their explanations.

    Explanations are drawn over black and framed green when the prediction is right, orange when
    it is wrong. Small images are enlarged (nearest neighbour) to at least ``min_cell_size`` pixels.

    Args:
        images: [N, 6, H, W] B-cos inputs ``[x, 1-x]`` (the first three channels are shown).
        labels, predictions: [N] true and predicted classes.
        explanations: [N, H, W, 4] RGBA explanation images in [0, 1].
    """
    n, _, height, width = images.shape
    columns = max(1, min(columns, n))
    scale = max(1, -(-min_cell_size // max(height, width)))
    frame = max(2, scale)

    def cell(rgb: np.ndarray) -> np.ndarray:
        rgb = np.clip(rgb * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return rgb.repeat(scale, axis=0).repeat(scale, axis=1)

    inputs = images[:, :3].permute(0, 2, 3, 1).clamp(0, 1).numpy()
    shown = explanations[..., :3] * explanations[..., 3:4]  # RGBA over black
    blank = _framed(np.zeros((height * scale, width * scale, 3), np.uint8), None, frame)
    rows = []
    for start in range(0, n, columns):
        chunk = range(start, min(start + columns, n))
        top = [_framed(cell(inputs[i]), None, frame) for i in chunk]
        bottom = [
            _framed(cell(shown[i]), (0, 255, 0) if labels[i] == predictions[i] else (255, 165, 0), frame)
            for i in chunk
        ]
        pad = [blank] * (columns - len(chunk))
        rows += [np.concatenate(top + pad, axis=1), np.concatenate(bottom + pad, axis=1)]
    return np.concatenate(rows, axis=0)


class ExplanationsLogger(Callback):
    """Logs explanations of fixed validation images every ``log_every_n_epochs`` epochs.

    Args:
        log_every_n_epochs: log after every n-th epoch's validation.
        idx: indices of the validation images to explain (default: ``max_imgs`` distinct random
            ones, drawn with seed 42 so every run shows the same images).
        max_imgs: at most this many images.
        smooth: alpha smoothing of the explanation images (default: :func:`default_smoothing`).
    """

    def __init__(
        self,
        log_every_n_epochs: int = 1,
        idx: torch.Tensor | list[int] | None = None,
        max_imgs: int = 32,
        smooth: int | None = None,
    ) -> None:
        if log_every_n_epochs < 1:
            raise ConfigError(f"log_every_n_epochs must be >= 1, got {log_every_n_epochs}")
        if max_imgs < 1:
            raise ConfigError(f"max_imgs must be >= 1, got {max_imgs}")
        self.log_every_n_epochs = log_every_n_epochs
        self.max_imgs = max_imgs
        self.idx = None if idx is None else torch.as_tensor(idx, dtype=torch.long)[:max_imgs]
        self.smooth = smooth
        self.enabled = True
        self.images: torch.Tensor | None = None
        self.labels: torch.Tensor | None = None
        self.model_copy: nn.Module | None = None
        self.last_saved: Path | None = None

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Switch off (with a warning) for models that are not B-cos models."""
        if stage == "fit" and not getattr(pl_module, "is_bcos", False):
            rank_zero_warn("explanation logging is on but the model is not a B-cos model; it is skipped")
            self.enabled = False

    def _collect_images(self, trainer: pl.Trainer) -> None:
        loaders = trainer.val_dataloaders
        loader = loaders[0] if isinstance(loaders, (list, tuple)) else loaders
        dataset = loader.dataset
        if self.idx is None:
            generator = torch.Generator().manual_seed(42)
            self.idx = torch.randperm(len(dataset), generator=generator)[: self.max_imgs]
        samples = [dataset[int(i)] for i in self.idx]
        self.images = torch.stack([torch.as_tensor(image) for image, _ in samples]).float()
        self.labels = torch.tensor([_class_index(label) for _, label in samples], dtype=torch.long)
        if self.images.shape[1] != 6:
            rank_zero_warn(
                f"explanation logging needs 6-channel [x, 1-x] inputs, got {self.images.shape[1]} channels; it is skipped"
            )
            self.enabled = False

    def _sync_model(self, pl_module: pl.LightningModule) -> nn.Module:
        source = _unwrap(pl_module.model)
        if self.model_copy is None:
            self.model_copy = copy.deepcopy(source).cpu().float()
            # a model compiled in place (--compile) would recompile its CPU copy in explanation mode
            if getattr(self.model_copy, "_compiled_call_impl", None) is not None:
                self.model_copy._compiled_call_impl = None
            self.model_copy.requires_grad_(False)
        with torch.no_grad():
            state = {k: v.detach().to("cpu", copy=True) for k, v in source.state_dict().items()}
            self.model_copy.load_state_dict(state)
        return self.model_copy.eval()

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Explain the fixed images and save / log the grid (rank 0, every n-th epoch)."""
        if not self.enabled or trainer.sanity_checking or trainer.fast_dev_run or not trainer.is_global_zero:
            return
        if (trainer.current_epoch + 1) % self.log_every_n_epochs != 0:
            return
        if self.images is None:
            self._collect_images(trainer)
            if not self.enabled:
                return
        self.log_explanations(trainer, pl_module)

    def log_explanations(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> Path:
        """Explain the images with the current weights; returns the saved PNG's path."""
        from PIL import Image

        assert self.images is not None and self.labels is not None
        model = self._sync_model(pl_module)
        height, width = self.images.shape[-2:]
        smooth = self.smooth if self.smooth is not None else default_smoothing(height, width)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            result = explain(model, self.images, smooth=smooth)
        grid = explanation_grid(self.images, self.labels, result.prediction, result.explanation)

        buffer = io.BytesIO()
        Image.fromarray(grid).save(buffer, format="png")
        path = Path(trainer.default_root_dir) / EXPLANATIONS_DIRNAME / f"epoch_{trainer.current_epoch}.png"
        with atomic_open(path, "wb") as handle:
            handle.write(buffer.getvalue())
        self.last_saved = path

        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger):
                logger.experiment.add_image("explanations", grid, global_step=trainer.current_epoch, dataformats="HWC")
            elif isinstance(logger, WandbLogger):
                logger.log_image("explanations", [grid])
        return path
