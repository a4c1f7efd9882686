"""Turn a training checkpoint into a release weights file ``<name>-<sha256[:10]>.pth``.

The output holds only the model's (or the EMA model's) state dict with the Lightning prefix
removed; the hash prefix in the name follows torch.hub's ``check_hash`` convention, so the file can
be published and verified as the pretrained weights are.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from bcos.atomic_io import atomic_open
from bcos.checkpoint_io import extract_model_state_dict, load_checkpoint_file, sha256_of_bytes
from bcos.errors import CheckpointError

__all__ = ["StrippedCheckpoint", "strip_checkpoint", "stripped_output_path", "WEIGHTS_SUFFIX"]

WEIGHTS_SUFFIX = ".pth"
HASH_PREFIX_LENGTH = 10


@dataclass(frozen=True)
class StrippedCheckpoint:
    """Where the weights went, their full SHA-256, the source epoch and whether they are EMA weights."""

    path: Path
    sha256: str
    epoch: int | None
    ema: bool


def stripped_output_path(checkpoint: Path, output: Path | None, sha256: str) -> Path:
    """The final file name: ``<name>-<sha256[:10]><suffix>``.

    Without ``output`` the name is the run folder's (the experiment name) in the working
    directory; an existing directory as ``output`` keeps that name inside it; any other ``output``
    gives folder, name and (default ``.pth``) suffix.
    """
    if output is None:
        folder, name, suffix = Path.cwd(), checkpoint.resolve().parent.name, WEIGHTS_SUFFIX
    elif output.is_dir():
        folder, name, suffix = output, checkpoint.resolve().parent.name, WEIGHTS_SUFFIX
    else:
        folder, name, suffix = output.parent, output.stem, output.suffix or WEIGHTS_SUFFIX
    return folder / f"{name}-{sha256[:HASH_PREFIX_LENGTH]}{suffix}"


def strip_checkpoint(checkpoint: str | os.PathLike, output: str | os.PathLike | None = None, ema: bool = False) -> StrippedCheckpoint:
    """Write the model weights of ``checkpoint`` to a hash-named ``.pth`` file, atomically."""
    checkpoint = Path(checkpoint)
    content = load_checkpoint_file(checkpoint)
    state_dict = extract_model_state_dict(content, ema=ema, source=checkpoint)
    epoch = content.get("epoch")

    # Serialise in memory: the bytes (and so the hash) then do not depend on the file name.
    buffer = io.BytesIO()
    torch.save(state_dict, buffer)
    data = buffer.getvalue()
    sha256 = sha256_of_bytes(data)

    target = stripped_output_path(checkpoint, Path(output) if output is not None else None, sha256)
    if not target.parent.is_dir():
        raise CheckpointError(f"output folder '{target.parent}' does not exist; create it or pick another --output")
    with atomic_open(target, "wb") as stream:
        stream.write(data)
    return StrippedCheckpoint(path=target, sha256=sha256, epoch=epoch if isinstance(epoch, int) else None, ema=ema)
