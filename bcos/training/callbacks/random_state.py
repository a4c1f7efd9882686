"""``RandomStateCheckpoint``: checkpoints carry the random number generators, so resuming is exact.

Lightning does not store the random number generators in checkpoints, so a run resumed from
``last.ckpt`` would shuffle and augment its next epoch differently from an uninterrupted run. This
callback saves the states of Python's, NumPy's and torch's generators (CPU and CUDA) with every
checkpoint and puts them back when a run resumes, before the first data-loader iterator of the
resumed run is created. A run killed and resumed on the CPU with ``num_workers=0`` then ends with
the same weights and metrics as an uninterrupted run. Persistent data-loader workers carry their
own random state from epoch to epoch, which no checkpoint can hold: with workers a resumed run is
equivalent, not bit-identical. The states are tensors and plain data, so checkpoints still load
with ``weights_only=True``.

Under DDP every process has its own generators (each augments its own part of the batch): the
checkpoint holds the states of all processes (gathered when it is written; only rank 0 writes the
file) and each process gets its own back, so a resumed multi-process run is as exact as a
one-process run. A run resumed with more processes than wrote the checkpoint gives the extra ranks
distinct streams derived from rank 0's state and their rank (with a warning: equivalent, not
identical); old checkpoints with one state resume the same way.
"""

from __future__ import annotations

import hashlib
import random
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities.rank_zero import rank_zero_only, rank_zero_warn

__all__ = ["RandomStateCheckpoint", "capture_random_state", "restore_random_state"]


def capture_random_state() -> dict[str, Any]:
    """The states of Python's, NumPy's and torch's (CPU and CUDA) generators as tensors and plain data."""
    version, internal, gauss = random.getstate()
    kind, keys, position, has_gauss, cached_gaussian = np.random.get_state()
    state: dict[str, Any] = {
        "python": [int(version), [int(value) for value in internal], gauss],
        "numpy": [str(kind), torch.from_numpy(keys.astype(np.int64)), int(position), int(has_gauss), float(cached_gaussian)],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_random_state(state: dict[str, Any]) -> None:
    """Put back the generator states of :func:`capture_random_state` (missing parts are left alone)."""
    if "python" in state:
        version, internal, gauss = state["python"]
        random.setstate((int(version), tuple(int(value) for value in internal), gauss))
    if "numpy" in state:
        kind, keys, position, has_gauss, cached_gaussian = state["numpy"]
        np.random.set_state((kind, keys.numpy().astype(np.uint32), int(position), int(has_gauss), float(cached_gaussian)))
    if "torch" in state:
        torch.set_rng_state(state["torch"])
    cuda_states = state.get("cuda")
    if cuda_states and torch.cuda.is_available() and len(cuda_states) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda_states)


def _reseed_for_rank(rank: int) -> None:
    # a seed from the restored stream and the rank: deterministic, and different on every rank
    draw = int(torch.randint(0, 2**62, (1,)).item())
    seed = int.from_bytes(hashlib.sha256(f"{draw}/{rank}".encode()).digest()[:4], "little")
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _world() -> tuple[int, int]:
    """(world size, rank) of the initialised process group, or (1, rank known to Lightning)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size(), dist.get_rank()
    return 1, int(getattr(rank_zero_only, "rank", 0) or 0)


class RandomStateCheckpoint(Callback):
    """Saves the random number generators of every process with each checkpoint and restores them on resume."""

    def state_dict(self) -> dict[str, Any]:
        """The generator states of all processes at the moment the checkpoint is written.

        Lightning builds the checkpoint on every rank (rank 0 writes it), so the states are gathered here.
        """
        state = capture_random_state()
        world_size, _ = _world()
        if world_size == 1:
            return {"ranks": [state]}
        gathered: list[Any] = [None] * world_size
        dist.all_gather_object(gathered, state)
        return {"ranks": gathered}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore this process's generators (Lightning calls this before the resumed run's first data is drawn)."""
        states = state_dict["ranks"] if "ranks" in state_dict else [state_dict]  # one state: older checkpoints
        world_size, rank = _world()
        if rank < len(states):
            restore_random_state(states[rank])
        else:
            restore_random_state(states[0])
            _reseed_for_rank(rank)
        if world_size != len(states):
            rank_zero_warn(
                f"the checkpoint holds the random state of {len(states)} process(es), this run has {world_size}: "
                "it continues with its own random streams, equivalent to but not identical with an uninterrupted run"
            )
