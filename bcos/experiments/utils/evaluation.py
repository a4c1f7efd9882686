"""Top-1 / top-5 accuracy of a classifier over a data loader (the ``evaluate.py`` measurement)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

from bcos.errors import DataNotFoundError

__all__ = ["count_correct", "evaluate_model", "format_accuracy"]


def count_correct(output: torch.Tensor, target: torch.Tensor, topk: tuple[int, ...] = (1, 5)) -> list[int]:
    """Number of samples whose target is among the ``k`` highest logits, for each ``k`` in ``topk``.

    Soft or one-hot targets (``[N, C]``) count their argmax class. With fewer than ``k`` classes
    every sample counts as a top-``k`` hit.
    """
    if target.ndim == 2:
        target = target.argmax(dim=1)
    largest = min(max(topk), output.shape[1])
    predictions = output.topk(largest, dim=1, largest=True, sorted=True).indices
    hits = predictions.eq(target[:, None])
    return [int(hits[:, : min(k, largest)].any(dim=1).sum()) for k in topk]


def _progress(iterable: Iterable, enabled: bool, total: int | None) -> Iterable:
    if not enabled:
        return iterable
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return iterable
    return tqdm(iterable, total=total, desc="Evaluating", unit="batch")


def evaluate_model(
    model: torch.nn.Module,
    dataloader: Iterable,
    device: torch.device | str = "cpu",
    progress: bool = True,
) -> dict[str, Any]:
    """Top-1 and top-5 accuracy of ``model`` on the ``(images, targets)`` batches of ``dataloader``.

    The model is moved to ``device`` and run in eval mode under ``torch.inference_mode``; its
    previous train/eval mode is restored afterwards.

    Returns:
        ``{"samples", "correct_top1", "correct_top5", "acc1", "acc5"}`` (accuracies as fractions).
    """
    device = torch.device(device)
    was_training = model.training
    model.to(device).eval()
    samples = correct_top1 = correct_top5 = 0
    try:
        total = len(dataloader)  # type: ignore[arg-type]
    except TypeError:
        total = None
    try:
        with torch.inference_mode():
            for images, targets in _progress(dataloader, progress, total):
                images = images.to(device, non_blocking=True)
                targets = targets.to(device, non_blocking=True)
                hits1, hits5 = count_correct(model(images), targets, topk=(1, 5))
                samples += images.shape[0]
                correct_top1 += hits1
                correct_top5 += hits5
    finally:
        model.train(was_training)
    if samples == 0:
        raise DataNotFoundError("the data loader yielded no samples; check the data set and its split")
    return {
        "samples": samples,
        "correct_top1": correct_top1,
        "correct_top5": correct_top5,
        "acc1": correct_top1 / samples,
        "acc5": correct_top5 / samples,
    }


def format_accuracy(result: dict[str, Any]) -> str:
    """``"Acc@1 xx.xxx% Acc@5 yy.yyy%"``, the format of the published numbers."""
    return f"Acc@1 {result['acc1']:.3%} Acc@5 {result['acc5']:.3%}"
