"""Atomic file writes: a file is either its old complete version or its new complete version.

Everything written into a run folder (checkpoints, metrics files, the resolved config, explanation
pictures) goes through :func:`atomic_open`: a temporary sibling ``.<name>.<random>.tmp`` is
written, flushed, synced and then renamed over the target with ``os.replace``. A process killed
half-way leaves only that hidden ``.tmp`` file, which no reader mistakes for data and which
:func:`remove_stale_temporaries` deletes when the next training takes the run folder.

New files get the usual permissions (``0o666`` minus the umask), as a plain ``open`` would give
them, so checkpoints stay readable by the group on shared clusters.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

__all__ = ["TEMPORARY_SUFFIX", "atomic_open", "atomic_write_text", "is_temporary", "remove_stale_temporaries"]

TEMPORARY_SUFFIX = ".tmp"


def is_temporary(path: str | os.PathLike) -> bool:
    """Whether ``path`` is named like a temporary file of :func:`atomic_open`."""
    name = Path(path).name
    return name.startswith(".") and name.endswith(TEMPORARY_SUFFIX)


def _create_temporary(path: Path) -> tuple[int, Path]:
    for _ in range(100):
        candidate = path.with_name(f".{path.name}.{secrets.token_hex(4)}{TEMPORARY_SUFFIX}")
        try:
            # O_EXCL: never reuse a name; mode 0o666 is reduced by the umask like a plain open()
            return os.open(candidate, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), candidate
        except FileExistsError:
            continue
    raise FileExistsError(f"could not create a temporary file next to {path}")


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO[Any]]:
    """Open a temporary sibling of ``path`` for writing; it replaces ``path`` only on success."""
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open only writes ('w' or 'wb'), got mode {mode!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = _create_temporary(path)
    try:
        with os.fdopen(fd, mode) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    with atomic_open(path, "wb") as handle:
        handle.write(text.encode("utf-8"))


def remove_stale_temporaries(*folders: str | os.PathLike) -> list[Path]:
    """Delete the temporary files that killed writers left directly inside ``folders``.

    Call it only while holding the lock of whoever writes there (no writer can be mid-write
    then); subfolders are left alone since other tools may be writing in them. Returns the deleted
    paths.
    """
    removed = []
    for folder in map(Path, folders):
        if not folder.is_dir():
            continue
        for candidate in folder.glob(f".*{TEMPORARY_SUFFIX}"):
            if candidate.is_file() and is_temporary(candidate):
                with contextlib.suppress(FileNotFoundError):
                    candidate.unlink()
                    removed.append(candidate)
    return removed
