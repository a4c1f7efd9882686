"""A lock on a run folder so that two trainings never write into the same folder at once.

The lock is an advisory ``flock`` on the run folder's lock file (``RunFolder.lock_file``): the operating system releases it
when the process ends (even when killed), so a crash or preemption never leaves a stale lock. The
file itself stays and records who held it last (host and process id) for the error message.

Forked children (data-loader workers) close their copy of the lock's descriptor right after the
fork: a ``flock`` lives as long as any process holds the descriptor, and workers orphaned by a
killed training would otherwise keep the folder locked for seconds after its death.
"""

from __future__ import annotations

import fcntl
import os
import socket
from pathlib import Path

from bcos.errors import ConfigError
from bcos.experiments.utils.run_folder import RunFolder

__all__ = ["RunFolderLock"]

# descriptors of the locks this process holds; forked children must not keep them
_held_descriptors: set[int] = set()


def _close_inherited_locks() -> None:
    # only close: flock(LOCK_UN) here would release the parent's lock too
    for fd in _held_descriptors:
        try:
            os.close(fd)
        except OSError:
            pass
    _held_descriptors.clear()


os.register_at_fork(after_in_child=_close_inherited_locks)


class RunFolderLock:
    """Context manager holding the exclusive lock of a run folder.

    Raises :class:`bcos.errors.ConfigError` on entry when another process holds it, or when the
    run folder cannot be created or written.
    """

    def __init__(self, run_folder: RunFolder | str | os.PathLike) -> None:
        if not isinstance(run_folder, RunFolder):
            run_folder = RunFolder(Path(run_folder))
        self.path = run_folder.lock_file
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        """Whether this object currently holds the lock."""
        return self._fd is not None

    def acquire(self) -> None:
        """Take the lock or raise ConfigError naming the holder."""
        if self._fd is not None:
            return
        try:  # the first write into the run folder: a folder that cannot be written fails here
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as error:
            raise ConfigError(
                f"cannot create the run folder {self.path.parent} ({error.strerror or error}); "
                "choose a writable --base_directory"
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode("utf-8", "replace").strip() or "another process"
            os.close(fd)
            raise ConfigError(
                f"run folder {self.path.parent} is in use by another training ({holder}); "
                f"wait for it to finish or choose another --base_directory/--experiment_name"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on host {socket.gethostname()}\n".encode(), 0)
        self._fd = fd
        _held_descriptors.add(fd)

    def release(self) -> None:
        """Give the lock back (the lock file stays)."""
        if self._fd is None:
            return
        _held_descriptors.discard(self._fd)
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> RunFolderLock:
        self.acquire()
        return self

    def __exit__(self, *exc_info) -> None:
        self.release()
