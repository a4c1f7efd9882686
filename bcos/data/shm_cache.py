"""``cache_dataset="shm"``: put a training ImageFolder tree on a fast local disk before training.

The tree is either extracted from per-class tar files (``IMAGENET_TRAIN_TAR_FILES_DIR``, the
reference's way) or copied from the original ``train/`` folder, into ``<SHMTMPDIR>/train``. A
marker file records a finished copy, so later runs on the same node reuse it and an interrupted
copy is completed.
"""

from __future__ import annotations

import os
import shutil
import tarfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bcos.errors import DataNotFoundError

__all__ = ["COMPLETE_MARKER", "cache_train_tree"]

COMPLETE_MARKER = ".bcos-cache-complete"


def _extract(archive: Path, target: Path) -> None:
    with tarfile.open(archive) as tar:
        tar.extractall(target, filter="data")


def cache_train_tree(
    target: str | Path, *, source: str | Path | None = None, tar_dir: str | Path | None = None
) -> Path:
    """Fill ``target`` with the training tree from ``tar_dir`` (tar files) or ``source`` (a folder).

    Returns ``target``. Does nothing when ``target`` already holds a finished copy.
    """
    target = Path(target)
    if (target / COMPLETE_MARKER).is_file():
        return target
    try:
        target.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise DataNotFoundError(
            f"cannot create the cache folder {str(target)!r} ({error.strerror}); "
            "set SHMTMPDIR to a writable folder"
        ) from error
    if tar_dir is not None:
        archives = sorted(p for p in Path(tar_dir).glob("*.tar") if p.is_file()) if Path(tar_dir).is_dir() else []
        if not archives:
            raise DataNotFoundError(
                f"IMAGENET_TRAIN_TAR_FILES_DIR={str(tar_dir)!r} holds no .tar files; "
                "unset it to copy the train folder instead"
            )
        with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
            list(pool.map(lambda archive: _extract(archive, target), archives))
    elif source is not None:
        if not Path(source).is_dir():
            raise DataNotFoundError(f"the train folder {str(source)!r} to cache does not exist")
        shutil.copytree(source, target, dirs_exist_ok=True)
    else:
        raise DataNotFoundError("cache_train_tree needs a source folder or a folder of tar files")
    (target / COMPLETE_MARKER).touch()
    return target
