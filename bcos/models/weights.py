"""Published weight files: where they live, how they are fetched and verified.

A weight file is named ``<stem>-<hash>.pth`` where ``<hash>`` is the start of the file's SHA-256
(the torch.hub convention). A file is looked for, in order, in ``$BCOS_WEIGHTS_DIR`` (if set) and in
torch.hub's checkpoint cache (``$TORCH_HOME/hub/checkpoints``); otherwise it is downloaded into that
cache with torch.hub's downloader, which checks the hash. Local files are verified too, so a
truncated or wrong file is never used silently. Reading, hashing and loading the files is
:mod:`bcos.checkpoint_io`'s job (``weights_only=True``, strict loading).
"""

from __future__ import annotations

import errno
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TypeGuard

import torch

from bcos.checkpoint_io import verify_sha256_prefix
from bcos.errors import CheckpointError

__all__ = [
    "WEIGHTS_BASE_URL",
    "WEIGHTS_DIR_ENV",
    "WeightsFile",
    "search_dirs",
    "find_local_file",
    "fetch_weights_file",
    "hub_checkpoint_dir",
    "is_unwritable",
    "unwritable_cache_error",
]

WEIGHTS_BASE_URL = "https://github.com/B-cos/B-cos-v2/releases/download/v0.0.1-weights"
WEIGHTS_DIR_ENV = "BCOS_WEIGHTS_DIR"

# torch.hub's convention: the hash is the hex run between the last "-" and the first "." after it
_HASH_IN_NAME = re.compile(r"-([a-f0-9]{6,64})\.[A-Za-z0-9.]+$")


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
    dirs.append(hub_checkpoint_dir())
    return dirs


def hub_checkpoint_dir() -> Path:
    """torch.hub's checkpoint cache, ``$TORCH_HOME/hub/checkpoints`` (where torchvision's weights go too)."""
    # torch.hub.get_dir() honours $TORCH_HOME and torch.hub.set_dir(), as load_state_dict_from_url does
    return Path(torch.hub.get_dir()) / "checkpoints"


def find_local_file(file_name: str) -> Path | None:
    """The first existing ``file_name`` in :func:`search_dirs`, or None."""
    for folder in search_dirs():
        candidate = folder / file_name
        if candidate.is_file():
            return candidate
    return None


# errors of a cache folder that cannot take the file (a network failure has no errno or another one)
_UNWRITABLE = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT}


def is_unwritable(error: BaseException) -> TypeGuard[OSError]:
    """Whether ``error`` says a folder cannot take a file (no permission, read-only, full), not that a download failed."""
    return isinstance(error, OSError) and error.errno in _UNWRITABLE


def unwritable_cache_error(
    what: str, folder: Path, error: OSError, instead: str, cache: str = "torch.hub's cache", setting: str = "TORCH_HOME"
) -> CheckpointError:
    """The one-line error for a cache ``folder`` that cannot store ``what`` (see :func:`is_unwritable`).

    It names the folder, the reason, the environment variable ``setting`` that moves the cache and
    ``instead``, the other way to provide the file.
    """
    reason = (error.strerror or os.strerror(error.errno or 0)).lower()
    return CheckpointError(
        f"cannot store {what} in {cache} '{folder}' ({reason}); set {setting} to a writable folder, or {instead}"
    )


def _download_failed(weights: WeightsFile, error: BaseException) -> CheckpointError:
    places = " or ".join(str(d / weights.file_name) for d in search_dirs())
    reason = getattr(error, "reason", None) or error
    return CheckpointError(f"could not download {weights.url} ({reason}); download it by hand and place it at {places}")


def fetch_weights_file(weights: WeightsFile, progress: bool = True) -> Path:
    """Path to a verified local copy of ``weights``, downloading it into torch.hub's cache if needed.

    Raises :class:`CheckpointError` when a local copy has the wrong hash, when the download is
    impossible (the message names the URL and where to place the file by hand), or when the cache
    folder cannot take the file (it names the folder, ``TORCH_HOME`` and ``BCOS_WEIGHTS_DIR``).
    """
    local = find_local_file(weights.file_name)
    if local is not None:
        verify_sha256_prefix(local, weights.sha256_prefix, weights.url)
        return local

    target = hub_checkpoint_dir() / weights.file_name
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        # writes to a temporary file and renames it only after the hash prefix matched
        torch.hub.download_url_to_file(
            weights.url, str(target), hash_prefix=weights.sha256_prefix, progress=progress
        )
    except OSError as error:  # URLError (no network) and TimeoutError are OSErrors too
        if not is_unwritable(error):
            raise _download_failed(weights, error) from error
        raise unwritable_cache_error(
            weights.file_name, target.parent, error, f"put the file into a folder named by {WEIGHTS_DIR_ENV}"
        ) from error
    except RuntimeError as error:  # torch.hub: "invalid hash value (expected ..., got ...)"
        raise CheckpointError(
            f"the download of {weights.url} does not match its sha256 prefix {weights.sha256_prefix} "
            f"({error}); try again later or download it by hand into {target.parent}"
        ) from error
    return target
