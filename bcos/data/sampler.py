"""Repeated-augmentation sampler (Hoffer et al. 2020; the DeiT / torchvision-recipe variant).

Every epoch, each training image is drawn ``repetitions`` times (each copy gets its own random
augmentation) and the copies are spread over the processes; each process then keeps only about
``len(dataset) / world_size`` indices, so an epoch costs as much as an ordinary one.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sized

import torch
import torch.distributed as dist
from torch.utils.data import DistributedSampler

from bcos.errors import ConfigError

__all__ = ["RASampler"]


def _world() -> tuple[int, int]:
    """(world size, rank) of the initialised process group, or (1, 0) without one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size(), dist.get_rank()
    return 1, 0


class RASampler(DistributedSampler):
    """Sampler with repeated augmentation; works with and without ``torch.distributed``.

    Args:
        dataset: the data set to sample from (only its length is used).
        num_replicas: number of processes; default: the process group's world size, or 1 when no
            process group is initialised.
        rank: this process's rank; default: the process group's rank, or 0.
        shuffle: shuffle each epoch with ``seed + epoch`` (call :meth:`set_epoch` every epoch).
        seed: base seed, identical on every process.
        repetitions: how often each index is repeated per epoch.

    Per process and epoch it yields ``floor((N // 256 * 256) / num_replicas)`` indices (``N`` =
    ``len(dataset)``), like the reference; data sets with fewer than 256 items use ``N`` instead
    of 0 so that tiny data sets still train. It subclasses :class:`DistributedSampler` so that
    Lightning keeps it instead of inserting its own distributed sampler.
    """

    def __init__(
        self,
        dataset: Sized,
        num_replicas: int | None = None,
        rank: int | None = None,
        shuffle: bool = True,
        seed: int = 0,
        repetitions: int = 3,
    ) -> None:
        world_size, world_rank = _world()
        num_replicas = world_size if num_replicas is None else num_replicas
        rank = world_rank if rank is None else rank
        if not isinstance(num_replicas, int) or num_replicas < 1:
            raise ConfigError(f"RASampler: num_replicas must be a positive integer, got {num_replicas!r}")
        if not isinstance(rank, int) or not 0 <= rank < num_replicas:
            raise ConfigError(f"RASampler: rank must lie in [0, {num_replicas - 1}], got {rank!r}")
        if not isinstance(repetitions, int) or isinstance(repetitions, bool) or repetitions < 1:
            raise ConfigError(f"data.ra_repetitions must be a positive integer, got {repetitions!r}")
        # Passing num_replicas and rank explicitly keeps DistributedSampler from requiring a group.
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed)
        self.repetitions = repetitions
        size = len(dataset)
        self.num_samples = math.ceil(size * repetitions / num_replicas)
        self.total_size = self.num_samples * num_replicas
        per_epoch = size // 256 * 256 or size
        self.num_selected_samples = per_epoch // num_replicas if size else 0
        if size and self.num_selected_samples == 0:
            self.num_selected_samples = 1

    def __iter__(self) -> Iterator[int]:
        size = len(self.dataset)  # type: ignore[arg-type]
        if size == 0:
            return iter([])
        if self.shuffle:
            generator = torch.Generator()
            generator.manual_seed(self.seed + self.epoch)
            order = torch.randperm(size, generator=generator)
        else:
            order = torch.arange(size)
        indices = order.repeat_interleave(self.repetitions)
        # pad by wrapping around so every process gets the same number of indices
        padding = self.total_size - len(indices)
        if padding > 0:
            indices = torch.cat([indices, indices.repeat(math.ceil(padding / len(indices)))[:padding]])
        mine = indices[self.rank : self.total_size : self.num_replicas]
        return iter(mine[: self.num_selected_samples].tolist())

    def __len__(self) -> int:
        return self.num_selected_samples
