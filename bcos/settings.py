"""Where the data sets live, read from the environment each time a path is needed.

=============================== ================================================================
Environment variable            Meaning
=============================== ================================================================
``DATA_ROOT``                   Folder for CIFAR-10 and Fashion-MNIST (downloaded there when missing;
                                Fashion-MNIST is also read from Debian's package folder).
``IMAGENET_PATH``               Folder holding the ImageNet ``train/`` and ``val/`` ImageFolder trees.
``SHMTMPDIR``                   Fast local folder for ``cache_dataset="shm"`` (default ``/dev/shm``).
``IMAGENET_TRAIN_TAR_FILES_DIR`` Optional folder of per-class ``.tar`` files of the ImageNet train
                                split, extracted into ``SHMTMPDIR`` by ``cache_dataset="shm"``.
=============================== ================================================================

Either set the environment variables or edit the lines in ``PATHS_SET_HERE`` below (a path there
wins over the environment variable; None reads the variable). Read a setting with the functions
(``data_root()``, ...) or the reference's attribute names (``bcos.settings.DATA_ROOT``, ...). Both
read the environment at call time, so a test or script can change ``os.environ`` after import.
Assigning an attribute in code (``bcos.settings.DATA_ROOT = "/data"``) overrides both for both
spellings.
"""

from __future__ import annotations

import os
import sys

__all__ = [
    "PATHS_SET_HERE",
    "data_root",
    "imagenet_path",
    "shm_tmp_dir",
    "imagenet_train_tar_files_dir",
    "DATA_ROOT",
    "IMAGENET_PATH",
    "SHMTMPDIR",
    "IMAGENET_TRAIN_TAR_FILES_DIR",
]

# ------------------------------------------------------------------------------- lines to edit
# Replace None by a path, e.g. "DATA_ROOT": "/data/cifar10", to fix it for every run on this
# machine (it then wins over the environment variable); None reads the environment variable.
PATHS_SET_HERE: dict[str, str | None] = {
    "DATA_ROOT": None,  # CIFAR-10 / Fashion-MNIST folder (downloaded there when missing)
    "IMAGENET_PATH": None,  # folder with ImageNet's train/ and val/ class folders
    "SHMTMPDIR": None,  # fast local folder for cache_dataset="shm" (default /dev/shm)
    "IMAGENET_TRAIN_TAR_FILES_DIR": None,  # optional folder of per-class ImageNet train .tar files
}
# -------------------------------------------------------------------------------------------------

# attribute name -> (environment variable, default)
_SETTINGS: dict[str, tuple[str, str | None]] = {
    "DATA_ROOT": ("DATA_ROOT", None),
    "IMAGENET_PATH": ("IMAGENET_PATH", None),
    "SHMTMPDIR": ("SHMTMPDIR", "/dev/shm"),
    "IMAGENET_TRAIN_TAR_FILES_DIR": ("IMAGENET_TRAIN_TAR_FILES_DIR", None),
}


def _read(name: str) -> str | None:
    module_vars = vars(sys.modules[__name__])
    if name in module_vars:  # assigned in code: takes precedence over the environment
        return module_vars[name]
    if PATHS_SET_HERE.get(name):  # edited above
        return PATHS_SET_HERE[name]
    env_var, default = _SETTINGS[name]
    value = os.environ.get(env_var)
    return value if value else default


def data_root() -> str | None:
    """The root folder of CIFAR-10 and Fashion-MNIST (``DATA_ROOT``), or None when unset."""
    return _read("DATA_ROOT")


def imagenet_path() -> str | None:
    """The folder with ImageNet's ``train/`` and ``val/`` trees (``IMAGENET_PATH``), or None."""
    return _read("IMAGENET_PATH")


def shm_tmp_dir() -> str:
    """The fast local folder used by ``cache_dataset="shm"`` (``SHMTMPDIR``, default /dev/shm)."""
    value = _read("SHMTMPDIR")
    assert value is not None  # it has a default
    return value


def imagenet_train_tar_files_dir() -> str | None:
    """The folder of per-class ImageNet train tar files (``IMAGENET_TRAIN_TAR_FILES_DIR``), or None."""
    return _read("IMAGENET_TRAIN_TAR_FILES_DIR")


def __getattr__(name: str) -> str | None:
    # Module attributes the code did not assign are read from the environment on every access.
    if name in _SETTINGS:
        return _read(name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
