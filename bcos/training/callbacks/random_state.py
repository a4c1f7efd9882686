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

Checkpoints are written by rank 0 only; on resume every other rank derives its own distinct
streams from the restored state and its rank, so ranks do not augment in lockstep.
"""

from __future__ import annotations

import hashlib
import random
from typing import Any

import numpy as np
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities.rank_zero import rank_zero_only

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


class RandomStateCheckpoint(Callback):
    """Saves the random number generators with each checkpoint and restores them on resume."""

    def state_dict(self) -> dict[str, Any]:
        """The generator states at the moment the checkpoint is written."""
        return capture_random_state()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore the generators (Lightning calls this before the resumed run's first data is drawn)."""
        restore_random_state(state_dict)
        rank = int(getattr(rank_zero_only, "rank", 0) or 0)  # set by Lightning before restoring
        if rank > 0:
            _reseed_for_rank(rank)
