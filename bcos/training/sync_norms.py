"""Synchronised batch statistics for ``--sync_batchnorm``, the uncentred norms included.

Under DDP each process normalises with the statistics of its own part of the batch. With
``--sync_batchnorm`` the batch norms use the statistics of the whole batch, summed over all
processes, as if one process saw the whole batch; useful when the batch per process is small.

Lightning's own ``sync_batchnorm`` swaps every ``nn.BatchNorm*`` (and every subclass) for
``nn.SyncBatchNorm``, which *centres*: the uncentred B-cos norms (``BatchNormUncentered2d``,
``AllNormUncentered2d``, subclasses of ``nn.BatchNorm2d``) would silently become different layers.
:class:`SyncBatchNormPlugin` replaces it: the uncentred norms get a synchronised version of
themselves, the standard batch norms ``nn.SyncBatchNorm``, and a batch-statistics norm that cannot
be synchronised (``AllNorm2d``) is refused by :func:`check_syncable` before training starts.
Group, layer, instance and position norms use per-sample statistics and need nothing.

The synchronised uncentred norms keep the module, its parameters, buffers and state-dict keys:
only the class changes (to a subclass that adds no state), so checkpoints load into the plain
model and per-layer settings such as ``NoBias`` stay.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from lightning.pytorch.plugins import LayerSync
from torch import Tensor, nn

from bcos.errors import ConfigError
from bcos.modules.norms import AllNorm2d, AllNormUncentered2d, BatchNormUncentered2d

__all__ = [
    "SyncBatchNormUncentered2d",
    "SyncAllNormUncentered2d",
    "SyncBatchNormPlugin",
    "check_syncable",
    "global_variance",
]


def _several_processes() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


class _SumOverProcesses(torch.autograd.Function):
    """All-reduce (sum) that the gradient passes through: every process's input feeds every output."""

    @staticmethod
    def forward(ctx: Any, tensor: Tensor) -> Tensor:
        total = tensor.clone()
        dist.all_reduce(total)
        return total

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        total = grad.clone()
        dist.all_reduce(total)
        return total


def global_variance(input: Tensor, dims: tuple[int, ...]) -> Tensor:
    """The biased variance of ``input`` over ``dims`` and over every process's ``input``.

    Sums of ``x`` and ``x²`` (in float64) and the element count are summed over the processes with
    a differentiable all-reduce, so the gradient reaches every process's input as it would in one
    process holding the whole batch.
    """
    count = 1
    for dim in dims:
        count *= input.shape[dim]
    sums = torch.stack(
        [
            input.sum(dims, dtype=torch.float64),
            (input * input).sum(dims, dtype=torch.float64),
            torch.full_like(input.sum(dims, dtype=torch.float64), float(count)).detach(),
        ]
    )
    total = _SumOverProcesses.apply(sums)
    mean = total[0] / total[2]
    return (total[1] / total[2] - mean * mean).clamp_min(0)


class _SyncVariance:
    """Training forward with the variance of the whole batch over all processes (else the plain layer)."""

    eps: float
    momentum: float | None
    training: bool
    track_running_stats: bool
    running_var: Tensor | None
    num_batches_tracked: Tensor | None
    weight: Tensor | None
    bias: Tensor | None
    detach: bool
    _sync_dims: tuple[int, ...]

    def forward(self, input: Tensor) -> Tensor:
        if not (self.training and _several_processes()):
            return super().forward(input)  # type: ignore[misc]
        if input.dim() != 4:
            raise ValueError(f"{type(self).__name__} expects a 4D input [N, C, H, W], got {input.dim()}D")
        factor = 0.0 if self.momentum is None else self.momentum
        if self.track_running_stats and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
            if self.momentum is None:  # cumulative moving average
                factor = 1.0 / float(self.num_batches_tracked)
        var = global_variance(input.detach() if self.detach else input, self._sync_dims)
        if self.track_running_stats and self.running_var is not None:
            with torch.no_grad():
                self.running_var.lerp_(var.detach().reshape(self.running_var.shape).to(self.running_var.dtype), factor)
        scale = (var + self.eps).rsqrt().to(input.dtype)
        if self.weight is not None:
            scale = scale * self.weight
        out = input * scale.reshape(1, -1, 1, 1)
        return out if self.bias is None else out + self.bias.reshape(1, -1, 1, 1)


class SyncBatchNormUncentered2d(_SyncVariance, BatchNormUncentered2d):
    """``BatchNormUncentered2d`` whose training statistics cover the batches of all processes."""

    _sync_dims = (0, 2, 3)


class SyncAllNormUncentered2d(_SyncVariance, AllNormUncentered2d):
    """``AllNormUncentered2d`` whose training variance covers the batches of all processes."""

    _sync_dims = (0, 1, 2, 3)


_SYNCED = {BatchNormUncentered2d: SyncBatchNormUncentered2d, AllNormUncentered2d: SyncAllNormUncentered2d}
_UNSYNCED = {synced: plain for plain, synced in _SYNCED.items()}


def check_syncable(model: nn.Module) -> None:
    """Raise ConfigError when ``model`` has a batch-statistics norm that ``--sync_batchnorm`` cannot synchronise."""
    for name, module in model.named_modules():
        if isinstance(module, AllNorm2d):
            raise ConfigError(
                f"--sync_batchnorm cannot synchronise {name} ({type(module).__name__}, one mean over batch and "
                "channels); train without --sync_batchnorm"
            )


def _is_plain_batch_norm(module: nn.Module) -> bool:
    return isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(
        module, (*_SYNCED, *_UNSYNCED, AllNorm2d, nn.SyncBatchNorm)
    )


class SyncBatchNormPlugin(LayerSync):
    """Lightning layer-sync plugin: synchronised uncentred norms and ``nn.SyncBatchNorm`` for the standard ones."""

    def apply(self, model: nn.Module) -> nn.Module:
        """Switch every batch norm of ``model`` to its synchronised version (in place; returns the model)."""
        check_syncable(model)
        for module in model.modules():
            if type(module) in _SYNCED:
                module.__class__ = _SYNCED[type(module)]
        return _convert_standard(model)

    def revert(self, model: nn.Module) -> nn.Module:
        """Switch the synchronised uncentred norms back (``nn.SyncBatchNorm`` layers stay)."""
        for module in model.modules():
            if type(module) in _UNSYNCED:
                module.__class__ = _UNSYNCED[type(module)]
        return model


def _convert_standard(module: nn.Module) -> nn.Module:
    if _is_plain_batch_norm(module):
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    for name, child in module.named_children():
        converted = _convert_standard(child)
        if converted is not child:
            setattr(module, name, converted)
    return module
