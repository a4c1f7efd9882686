"""Reading and writing torch files: checkpoints, weights files, their hashes.

The project's one place for it: every checkpoint or weights file is read with :func:`safe_load`
(``torch.load(weights_only=True)`` onto the CPU: tensors and plain data only, so a crafted pickle
cannot run code), written with :func:`atomic_torch_save` (a temporary sibling renamed over the
target, see :mod:`bcos.atomic_io`), hashed with :func:`sha256_of_file`, and loaded into a model
with :func:`load_state_dict_into`, whose errors say which keys or shapes differ.

Three formats are understood (:func:`checkpoint_format`):

* training checkpoints: the weights under ``state_dict``; a LightningModule's keys carry the
  prefix ``model.``, the EMA model's ``ema.module.``;
* "simple" checkpoints: the model's weights under ``model_state_dict``;
* plain weights files (``<name>-<sha256[:10]>.pth``): a state dict of tensors.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from bcos.atomic_io import atomic_open
from bcos.errors import CheckpointError

__all__ = [
    "MODEL_PREFIX",
    "EMA_PREFIX",
    "safe_load",
    "load_checkpoint_file",
    "atomic_torch_save",
    "sha256_of_file",
    "sha256_of_bytes",
    "verify_sha256_prefix",
    "checkpoint_format",
    "change_state_dict_keys",
    "extract_model_state_dict",
    "load_state_dict_file",
    "load_state_dict_into",
]

StateDict = dict[str, Any]

MODEL_PREFIX = "model."
EMA_PREFIX = "ema.module."
SIMPLE_STATE_DICT_KEY = "model_state_dict"
TRAINING_STATE_DICT_KEY = "state_dict"

_REFUSED_GLOBAL = re.compile(r"Unsupported global: GLOBAL (\S+)")

# (resolved path, size, mtime_ns) -> sha256 hex digest; avoids re-hashing big files in one process
_digest_cache: dict[tuple[str, int, int], str] = {}


# ------------------------------------------------------------------------------------ reading
def safe_load(path: str | os.PathLike, mmap: bool = False) -> Any:
    """Read a torch file onto the CPU with ``weights_only=True``: tensors and plain data only.

    A file that holds pickled Python objects (which could run code when unpickled) is refused
    without running anything. Raises :class:`CheckpointError` (one line naming the file and the
    fix) when the file is missing, unsafe, or corrupt/truncated.
    """
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(
            f"'{path}' is a folder, not a checkpoint or weights file; pass a file inside it (e.g. '{path / 'last.ckpt'}')"
        )
    if not path.is_file():
        raise CheckpointError(f"no checkpoint file at '{path}' (it does not exist); check the path")
    other_format = _other_format(path)
    if other_format is not None:
        raise CheckpointError(f"cannot load '{path}': {other_format}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as error:
        refused = _REFUSED_GLOBAL.search(str(error))
        if refused is not None:
            raise CheckpointError(
                f"cannot load '{path}' safely: it is not a plain checkpoint, it contains pickled Python objects "
                f"({refused[1]}) that could run code, so it is refused; re-save it as a dict of tensors and plain "
                "data (e.g. model.state_dict())"
            ) from None
        raise CheckpointError(_unreadable(path, error)) from None
    except Exception as error:  # noqa: BLE001 - torch raises many types for corrupt or truncated files
        raise CheckpointError(_unreadable(path, error)) from None


def _other_format(path: Path) -> str | None:
    """What is wrong with a file that is readable but no torch file (safetensors, HDF5, empty), else None."""
    try:
        with path.open("rb") as handle:
            head = handle.read(16)
    except OSError as error:
        return f"it cannot be read ({(error.strerror or str(error)).lower()}); check its permissions"
    if not head:
        return "the file is empty (0 bytes); re-download or re-create it"
    if len(head) >= 9 and head[8:9] == b"{" and 0 < int.from_bytes(head[:8], "little") < 100_000_000:
        return (
            "it is a safetensors file, not a torch file; convert it once with "
            "torch.save(safetensors.torch.load_file(PATH), 'weights.pth') (pip install safetensors) and pass that file"
        )
    if head.startswith(b"\x89HDF"):
        return "it is an HDF5 file (e.g. Keras weights), not a torch file; pass a PyTorch .pth/.ckpt file"
    return None


def _unreadable(path: Path, error: BaseException) -> str:
    detail = (str(error).strip().splitlines() or [type(error).__name__])[0][:200]
    return (
        f"cannot load '{path}' safely: it is not a readable torch checkpoint (corrupt or truncated: {detail}); "
        "re-download or re-create it"
    )


def load_checkpoint_file(path: str | os.PathLike) -> dict[str, Any]:
    """:func:`safe_load` a checkpoint or weights file and check that it holds a dict."""
    content = safe_load(path)
    if not isinstance(content, dict):
        raise CheckpointError(
            f"'{path}' does not hold a state dict: it holds a {type(content).__name__}, not a dict of weights; "
            "save model.state_dict()"
        )
    return content


# ------------------------------------------------------------------------------------ writing
def atomic_torch_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save(obj, path)`` atomically: a reader sees the old file or the complete new one."""
    path = Path(path)
    with atomic_open(path, "wb") as handle:
        torch.save(obj, handle)
    return path


# ------------------------------------------------------------------------------------ hashing
def sha256_of_file(path: str | os.PathLike) -> str:
    """The hex SHA-256 digest of a file's bytes (remembered per path, size and mtime in this process)."""
    path = Path(path)
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _digest_cache:
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        _digest_cache[key] = digest.hexdigest()
    return _digest_cache[key]


def sha256_of_bytes(data: bytes) -> str:
    """The hex SHA-256 digest of ``data`` (e.g. a serialised state dict before it gets its file name)."""
    return hashlib.sha256(data).hexdigest()


def verify_sha256_prefix(path: str | os.PathLike, prefix: str, url: str | None = None) -> None:
    """Raise :class:`CheckpointError` unless the SHA-256 of ``path`` starts with ``prefix``."""
    digest = sha256_of_file(path)
    if not digest.startswith(prefix.lower()):
        source = f" from {url}" if url else ""
        raise CheckpointError(
            f"weights file {path} has sha256 {digest[:len(prefix)]}..., expected {prefix}...: "
            f"it is corrupt or not the published file; delete it and download it again{source}"
        )


# ------------------------------------------------------------------------------------ formats
def checkpoint_format(content: Mapping[str, Any]) -> str:
    """``"lightning"`` (a training checkpoint), ``"simple"`` or ``"weights"`` (a plain state dict).

    Raises :class:`CheckpointError` for anything else.
    """
    is_training = isinstance(content.get(TRAINING_STATE_DICT_KEY), Mapping)
    is_simple = SIMPLE_STATE_DICT_KEY in content
    if is_training and is_simple:
        raise CheckpointError(
            f"ambiguous checkpoint: it has both {TRAINING_STATE_DICT_KEY!r} and {SIMPLE_STATE_DICT_KEY!r}; keep only one"
        )
    if is_training:
        return "lightning"
    if is_simple:
        return "simple"
    if content and all(isinstance(key, str) and isinstance(value, torch.Tensor) for key, value in content.items()):
        return "weights"
    keys = ", ".join(sorted(map(str, content))[:6]) or "nothing"
    raise CheckpointError(
        f"unsupported checkpoint format (top-level keys: {keys}); expected a training checkpoint "
        f"({TRAINING_STATE_DICT_KEY!r}), a dict with {SIMPLE_STATE_DICT_KEY!r}, or a plain state dict of tensors"
    )


def change_state_dict_keys(
    state_dict: Mapping[str, Any],
    prefix_filter: str | None = None,
    filter_fn: Callable[[str], bool] | None = None,
    remove_prefix: bool = True,
) -> StateDict:
    """Keep the keys starting with ``prefix_filter`` (stripping it) or those ``filter_fn`` accepts."""
    if prefix_filter is not None and filter_fn is not None:
        raise ValueError("pass only one of prefix_filter and filter_fn")
    if prefix_filter is not None:
        cut = len(prefix_filter) if remove_prefix else 0
        return {key[cut:]: value for key, value in state_dict.items() if key.startswith(prefix_filter)}
    if filter_fn is not None:
        return {key: value for key, value in state_dict.items() if filter_fn(key)}
    return dict(state_dict)


def extract_model_state_dict(content: Mapping[str, Any], ema: bool = False, source: str | os.PathLike = "checkpoint") -> StateDict:
    """The model's (or with ``ema=True`` the EMA model's) state dict inside a loaded checkpoint.

    In a training checkpoint the keys with the ``model.`` (``ema.module.``) prefix are the model's;
    a state dict stored there without any such prefix is taken as it is.
    """
    kind = checkpoint_format(content)
    if kind == "lightning":
        stored = content[TRAINING_STATE_DICT_KEY]
        prefix = EMA_PREFIX if ema else MODEL_PREFIX
        state_dict = change_state_dict_keys(stored, prefix_filter=prefix)
        if state_dict:
            return state_dict
        if ema:
            raise CheckpointError(
                f"'{source}' has no EMA weights ('{EMA_PREFIX}*' keys); the run was trained without EMA: drop ema=True / --ema"
            )
        if stored and not any(key.startswith(EMA_PREFIX) for key in stored):
            return dict(stored)
        raise CheckpointError(f"'{source}' has no model weights ('{MODEL_PREFIX}*' keys); it is not a bcos training checkpoint")
    if ema:
        raise CheckpointError(f"'{source}' holds a single set of weights without EMA; drop ema=True / --ema")
    if kind == "simple":
        return dict(content[SIMPLE_STATE_DICT_KEY])
    return dict(content)


def load_state_dict_file(path: str | os.PathLike, ema: bool = False) -> StateDict:
    """The model's state dict in a checkpoint or weights file of any of the three formats, read safely."""
    state_dict = extract_model_state_dict(load_checkpoint_file(path), ema=ema, source=path)
    if not all(isinstance(value, torch.Tensor) for value in state_dict.values()):
        raise CheckpointError(f"'{path}' does not hold a state dict (a mapping of names to tensors)")
    return state_dict


# ------------------------------------------------------------------------------------ into a model
def _shape(value: Any) -> list[int] | None:
    return list(value.shape) if isinstance(value, torch.Tensor) else None


def _is_resized_classifier(own: list[int], loaded: list[int] | None, new_num_classes: int | None) -> bool:
    """Whether a tensor differs from the model's only by its first dimension, the new class count."""
    return new_num_classes is not None and loaded is not None and own[:1] == [new_num_classes] and own[1:] == loaded[1:]


def load_state_dict_into(
    model: nn.Module,
    state_dict: Mapping[str, Any],
    source: str | os.PathLike = "checkpoint",
    new_num_classes: int | None = None,
) -> None:
    """Load ``state_dict`` into ``model`` strictly; any difference raises one clear :class:`CheckpointError`.

    The error counts and names the missing and unexpected keys and the shape mismatches, so a
    wrong file is never half-loaded silently. With ``new_num_classes`` (fine-tuning), tensors that
    differ from the model's only because their first dimension is the new class count (the
    classifier's weight and bias) keep their fresh initialisation. A model built under
    ``torch.device("meta")`` takes the loaded tensors themselves (no initialisation cost).
    """
    own = model.state_dict()
    missing = [key for key in own if key not in state_dict]
    unexpected = [key for key in state_dict if key not in own]
    misshaped = [key for key in own if key in state_dict and _shape(state_dict[key]) != _shape(own[key])]
    resized = [key for key in misshaped if _is_resized_classifier(_shape(own[key]), _shape(state_dict[key]), new_num_classes)]
    mismatched = [key for key in misshaped if key not in resized]
    if missing or unexpected or mismatched:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing key(s) (e.g. {', '.join(missing[:3])})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected key(s) (e.g. {', '.join(unexpected[:3])})")
        if mismatched:
            shown = "; ".join(
                f"{key}: checkpoint {_shape(state_dict[key])} vs model {_shape(own[key])}" for key in mismatched[:3]
            )
            parts.append(f"{len(mismatched)} shape mismatch(es) ({shown})")
        raise CheckpointError(
            f"'{source}' does not fit the model: {', '.join(parts)}; "
            "load it into the architecture/config it was trained with"
        )
    on_meta = any(t.is_meta for t in own.values())
    kept = {key: value for key, value in state_dict.items() if key not in resized}
    try:
        model.load_state_dict(kept, strict=not resized, assign=on_meta)
    except RuntimeError as error:
        raise CheckpointError(f"'{source}' does not fit the model: {str(error).splitlines()[0]}") from None
    if on_meta and any(t.is_meta for t in (*model.parameters(), *model.buffers())):
        raise CheckpointError(
            f"'{source}' left tensors of the model on the meta device (a new classifier?); build the model on a real device"
        )
