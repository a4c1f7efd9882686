"""Atomic file writes: a file is either the old complete version or the new complete version.

Everything training writes into a run folder (checkpoints, metrics files, the resolved config) goes
through a temporary file in the same folder that is flushed, synced and then renamed over the
target with ``os.replace``, so a crash or preemption never leaves a truncated file behind. The
primitives live in :mod:`bcos.atomic_io` and :mod:`bcos.checkpoint_io` (``atomic_torch_save``);
this module adapts them to Lightning's checkpoint IO.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from lightning.fabric.utilities.cloud_io import get_filesystem
from lightning.pytorch.plugins.io import TorchCheckpointIO

from bcos.atomic_io import atomic_open, atomic_write_text
from bcos.checkpoint_io import atomic_torch_save

__all__ = ["AtomicCheckpointIO", "atomic_open", "atomic_write_text", "atomic_torch_save"]


def _is_local(path: str | os.PathLike) -> bool:
    return "://" not in str(path) or str(path).startswith("file://")


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoint IO that writes local checkpoints atomically and loads them safely.

    Loading defaults to ``torch.load(weights_only=True)``: our checkpoints hold only tensors and
    plain data, so resuming never unpickles arbitrary objects.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        """Write ``checkpoint`` to ``path`` through a temporary file and a rename."""
        if not _is_local(path) or storage_options is not None:
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        atomic_torch_save(checkpoint, str(path).removeprefix("file://"))

    def load_checkpoint(self, path, map_location: Callable | Any = None, weights_only: bool | None = None):
        """Load a checkpoint (tensors and plain data only unless ``weights_only=False``)."""
        if weights_only is None:
            weights_only = True
        if map_location is None:
            map_location = "cpu"
        return super().load_checkpoint(path, map_location=map_location, weights_only=weights_only)

    def remove_checkpoint(self, path) -> None:
        """Delete a checkpoint file (top-k pruning); a missing file is not an error."""
        fs = get_filesystem(path)
        if fs.exists(path):
            fs.rm(path, recursive=True)
