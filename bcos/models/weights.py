"""Published weight files: where they live, how they are fetched, verified and loaded safely.

A weight file is named ``<stem>-<hash>.pth`` where ``<hash>`` is the start of the file's SHA-256
(the torch.hub convention). A file is looked for, in order, in ``$BCOS_WEIGHTS_DIR`` (if set) and in
torch.hub's checkpoint cache (``$TORCH_HOME/hub/checkpoints``); otherwise it is downloaded into that
cache with torch.hub's downloader, which checks the hash. Local files are verified too, so a
truncated or wrong file is never used silently. Files are loaded with ``weights_only=True``.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import re
import urllib.error
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from bcos.errors import CheckpointError

__all__ = [
    "WEIGHTS_BASE_URL",
    "WEIGHTS_DIR_ENV",
    "WeightsFile",
    "search_dirs",
    "find_local_file",
    "verify_sha256_prefix",
    "fetch_weights_file",
    "safe_load",
    "load_state_dict_file",
]

WEIGHTS_BASE_URL = "https://github.com/B-cos/B-cos-v2/releases/download/v0.0.1-weights"
WEIGHTS_DIR_ENV = "BCOS_WEIGHTS_DIR"

# torch.hub's convention: the hash is the hex run between the last "-" and the first "." after it
_HASH_IN_NAME = re.compile(r"-([a-f0-9]{6,64})\.[A-Za-z0-9.]+$")

# (resolved path, size, mtime_ns) -> sha256 hex digest; avoids re-hashing big files in one process
_digest_cache: dict[tuple[str, int, int], str] = {}


@dataclass(frozen=True)
class WeightsFile:
    """A published weights file: its download URL; name and hash prefix are read from the URL."""

    url: str

    def __post_init__(self) -> None:
        if _HASH_IN_NAME.search(self.file_name) is None:
            raise ValueError(f"weights URL {self.url!r} lacks a '-<sha256 prefix>.pth' file name")

    @property
    def file_name(self) -> str:
        """The file's name, e.g. ``resnet_18-68b4160fff.pth``."""
        return self.url.rsplit("/", 1)[-1]

    @property
    def sha256_prefix(self) -> str:
        """The leading hex digits of the file's SHA-256 digest, taken from its name."""
        match = _HASH_IN_NAME.search(self.file_name)
        assert match is not None  # checked in __post_init__
        return match.group(1)


def search_dirs() -> list[Path]:
    """Folders searched for weight files, in order: ``$BCOS_WEIGHTS_DIR``, then torch.hub's cache."""
    dirs = []
    custom = os.environ.get(WEIGHTS_DIR_ENV)
    if custom:
        dirs.append(Path(custom).expanduser())
    dirs.append(_hub_checkpoint_dir())
    return dirs


def _hub_checkpoint_dir() -> Path:
    # torch.hub.get_dir() honours $TORCH_HOME and torch.hub.set_dir(), as load_state_dict_from_url does
    return Path(torch.hub.get_dir()) / "checkpoints"


def find_local_file(file_name: str) -> Path | None:
    """The first existing ``file_name`` in :func:`search_dirs`, or None."""
    for folder in search_dirs():
        candidate = folder / file_name
        if candidate.is_file():
            return candidate
    return None


def _sha256(path: Path) -> str:
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _digest_cache:
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
        _digest_cache[key] = digest.hexdigest()
    return _digest_cache[key]


def verify_sha256_prefix(path: str | os.PathLike, prefix: str, url: str | None = None) -> None:
    """Raise :class:`CheckpointError` unless the SHA-256 of ``path`` starts with ``prefix``."""
    path = Path(path)
    digest = _sha256(path)
    if not digest.startswith(prefix.lower()):
        source = f" from {url}" if url else ""
        raise CheckpointError(
            f"weights file {path} has sha256 {digest[:len(prefix)]}..., expected {prefix}...: "
            f"it is corrupt or not the published file; delete it and download it again{source}"
        )


def fetch_weights_file(weights: WeightsFile, progress: bool = True) -> Path:
    """Path to a verified local copy of ``weights``, downloading it into torch.hub's cache if needed.

    Raises :class:`CheckpointError` when a local copy has the wrong hash, or when the download is
    impossible (the message names the URL and where to place the file by hand).
    """
    local = find_local_file(weights.file_name)
    if local is not None:
        verify_sha256_prefix(local, weights.sha256_prefix, weights.url)
        return local

    target = _hub_checkpoint_dir() / weights.file_name
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        # writes to a temporary file and renames it only after the hash prefix matched
        torch.hub.download_url_to_file(
            weights.url, str(target), hash_prefix=weights.sha256_prefix, progress=progress
        )
    except (urllib.error.URLError, OSError, TimeoutError) as error:
        places = " or ".join(str(d / weights.file_name) for d in search_dirs())
        reason = getattr(error, "reason", None) or error
        raise CheckpointError(
            f"could not download {weights.url} ({reason}); download it by hand and place it at {places}"
        ) from error
    except RuntimeError as error:  # torch.hub: "invalid hash value (expected ..., got ...)"
        raise CheckpointError(
            f"the download of {weights.url} does not match its sha256 prefix {weights.sha256_prefix} "
            f"({error}); try again later or download it by hand into {target.parent}"
        ) from error
    return target


def safe_load(path: str | os.PathLike, mmap: bool = False) -> Any:
    """Read a torch file onto the CPU with ``weights_only=True``: tensors and plain data only.

    This is the project's one primitive for reading checkpoints and weights files. A file that
    holds pickled Python objects (which could run code when unpickled) is refused without running
    anything. Raises :class:`CheckpointError` (one line naming the file and the fix) when the file
    is missing, unsafe, or corrupt/truncated.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint file at '{path}' (it does not exist); check the path")
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


_REFUSED_GLOBAL = re.compile(r"Unsupported global: GLOBAL (\S+)")


def _unreadable(path: Path, error: BaseException) -> str:
    detail = (str(error).strip().splitlines() or [type(error).__name__])[0][:200]
    return (
        f"cannot load '{path}' safely: it is not a readable torch checkpoint (corrupt or truncated: {detail}); "
        "re-download or re-create it"
    )


def load_state_dict_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Load a state dict from ``path`` safely (:func:`safe_load`: ``weights_only=True``, onto the CPU).

    Accepts a bare state dict, or a training checkpoint holding one under ``"state_dict"`` (then a
    ``"model."`` prefix shared by every key, as a LightningModule writes it, is removed).
    """
    loaded = safe_load(path)
    if isinstance(loaded, Mapping) and isinstance(loaded.get("state_dict"), Mapping):
        loaded = loaded["state_dict"]
        if loaded and all(key.startswith("model.") for key in loaded):
            loaded = {key[len("model.") :]: value for key, value in loaded.items()}
    if not isinstance(loaded, Mapping) or not all(
        isinstance(value, torch.Tensor) for value in loaded.values()
    ):
        raise CheckpointError(f"{path} does not hold a state dict (a mapping of names to tensors)")
    return dict(loaded)
