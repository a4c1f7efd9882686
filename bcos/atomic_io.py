"""The one writer module: atomic files, safe path components, results folders marked until complete.

Every file the project writes (checkpoints, metrics, the resolved config, explanation pictures,
``report.html``, ``predictions.json``, the localisation results and caches, exported programs)
goes through :func:`atomic_open`: a temporary sibling ``.<name>.<random>.tmp`` is written,
flushed, synced and then renamed over the target with ``os.replace``. A file is therefore either
its old complete version or its new complete version. A writer that fails removes its temporary;
a process killed half-way leaves only that hidden ``.tmp`` file, which no reader mistakes for data
and which :func:`remove_stale_temporaries` deletes when the next training takes the run folder.
A write that fails for a reason the user can fix (disk full, read-only or unwritable folder)
raises :class:`~bcos.errors.OutputError` with one line naming the file and the fix.

:func:`safe_path_component` reduces any value (an option value, a file or model name) to a name
that cannot leave its folder, and :func:`results_folder` marks a folder ``INCOMPLETE`` until all
of its files are written.

New files get the usual permissions (``0o666`` minus the umask), as a plain ``open`` would give
them, so checkpoints stay readable by the group on shared clusters.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from bcos.errors import OutputError

__all__ = [
    "INCOMPLETE_MARKER",
    "TEMPORARY_SUFFIX",
    "atomic_open",
    "atomic_write_bytes",
    "atomic_write_text",
    "is_temporary",
    "output_error",
    "remove_stale_temporaries",
    "results_folder",
    "safe_path_component",
]

TEMPORARY_SUFFIX = ".tmp"
#: the file that marks a results folder whose writer has not finished (see :func:`results_folder`)
INCOMPLETE_MARKER = "INCOMPLETE"
_INCOMPLETE_TEXT = "bcos: the results in this folder are incomplete (the command writing them failed or was stopped); run it again\n"

# failures of a write that the user can fix, and how
_FIXES = {
    errno.ENOSPC: "free disk space or choose another output folder",
    errno.EDQUOT: "free space within your disk quota or choose another output folder",
    errno.EROFS: "the file system is read-only; choose another output folder",
    errno.EACCES: "make the folder writable or choose another output folder",
    errno.EPERM: "make the folder writable or choose another output folder",
}


def output_error(path: str | os.PathLike, error: OSError) -> OSError:
    """``error`` as a one-line :class:`OutputError` when the user can fix it, else ``error`` itself."""
    if isinstance(error, OutputError) or error.errno not in _FIXES:
        return error
    reason = error.strerror or os.strerror(error.errno)
    message = f"cannot write '{path}': {reason.lower()}; {_FIXES[error.errno]} (an earlier version of the file, if any, is kept)"
    return OutputError(message, error.errno)


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
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, temporary = _create_temporary(path)
    except OSError as error:
        raise output_error(path, error) from None
    try:
        with os.fdopen(fd, mode) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException as error:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        if isinstance(error, OSError) and output_error(path, error) is not error:
            raise output_error(path, error) from None
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_open(path, "wb") as handle:
        handle.write(data)


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


def safe_path_component(value: object, max_length: int = 80) -> str:
    """``value`` as one file or folder name that cannot leave its folder or hide.

    Characters other than letters, digits and ``. _ = , + -`` become ``_``, leading dots are
    dropped (no ``..``, no hidden names) and an empty result becomes ``_``. When anything had to
    change, or the name is longer than ``max_length``, a short hash of the original value is
    appended, so two different values never share a name (``a/b`` and ``a_b`` stay apart).
    """
    text = str(value)
    name = re.sub(r"[^A-Za-z0-9._=,+-]", "_", text).lstrip(".") or "_"
    if name == text and len(name) <= max_length:
        return name
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    return f"{name[: max(1, max_length - 9)]}-{digest}"


@contextlib.contextmanager
def results_folder(folder: str | os.PathLike) -> Iterator[Path]:
    """Create ``folder`` and mark it ``INCOMPLETE`` until the ``with`` block has written everything.

    The marker file is removed only when the block ends without an error; a failure or a kill
    leaves it, so nobody takes a folder mixing old and new results for a finished one.
    """
    folder = Path(folder)
    marker = folder / INCOMPLETE_MARKER
    if marker.exists() and not _is_our_marker(marker):
        raise OutputError(f"'{marker}' exists and was not written by bcos; move it away or choose another output folder", errno.EEXIST)
    atomic_write_text(marker, _INCOMPLETE_TEXT)
    yield folder
    marker.unlink()


def _is_our_marker(path: Path) -> bool:
    try:
        return path.is_file() and path.read_text(errors="replace") == _INCOMPLETE_TEXT
    except OSError:
        return False
