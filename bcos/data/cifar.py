"""CIFAR-10 on disk: download (checksum-verified) and reading of the ``cifar-10-batches-py`` files.

Expected layout under the data root (what the official archive extracts to)::

    <DATA_ROOT>/cifar-10-batches-py/
        data_batch_1 ... data_batch_5   training images (pickled dicts with "data" and "labels")
        test_batch                      test images
        batches.meta                    class names ("label_names")

Files are read with our own reader, so smaller data sets written in the same format (as the
tests do) load too; the datamodule warns when the sizes are not the official 50,000 / 10,000.
The reader unpickles only plain data and numpy arrays: a crafted file cannot run code.
"""

from __future__ import annotations

import contextlib
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from bcos.data.in_memory import InMemoryImageDataset
from bcos.errors import DataNotFoundError

__all__ = [
    "CIFAR10_URL",
    "CIFAR10_ARCHIVE_MD5",
    "CIFAR10_FOLDER",
    "CIFAR10_TRAIN_FILES",
    "CIFAR10_TEST_FILES",
    "CIFAR10_META_FILE",
    "cifar10_folder_is_complete",
    "download_cifar10",
    "CIFAR10Dataset",
]

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_ARCHIVE_MD5 = "c58f30108f718f92721af3b95e74349a"
CIFAR10_FOLDER = "cifar-10-batches-py"
CIFAR10_TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR10_TEST_FILES = ("test_batch",)
CIFAR10_META_FILE = "batches.meta"

_LAYOUT_HINT = (
    f"expected {CIFAR10_FOLDER}/ with {', '.join(CIFAR10_TRAIN_FILES[:1])}..{CIFAR10_TRAIN_FILES[-1]}, "
    f"{CIFAR10_TEST_FILES[0]} and {CIFAR10_META_FILE}"
)


def _all_files() -> tuple[str, ...]:
    return (*CIFAR10_TRAIN_FILES, *CIFAR10_TEST_FILES, CIFAR10_META_FILE)


def cifar10_folder_is_complete(root: str | Path) -> bool:
    """Whether ``<root>/cifar-10-batches-py`` holds every expected file."""
    folder = Path(root) / CIFAR10_FOLDER
    return all((folder / name).is_file() for name in _all_files())


def download_cifar10(root: str | Path) -> Path:
    """Download and extract CIFAR-10 into ``root`` unless it is already there; return the folder.

    The archive's MD5 checksum is verified by torchvision before extraction. Raises
    :class:`DataNotFoundError` (naming the root, the URL and the expected layout) on failure.
    """
    root = Path(root).expanduser()
    folder = root / CIFAR10_FOLDER
    if cifar10_folder_is_complete(root):
        return folder
    from torchvision.datasets.utils import download_and_extract_archive

    created = [folder for folder in (root, *root.parents) if not folder.exists()]
    try:
        root.mkdir(parents=True, exist_ok=True)
        download_and_extract_archive(CIFAR10_URL, str(root), md5=CIFAR10_ARCHIVE_MD5)
    except Exception as error:  # network, disk and checksum failures all mean "data not available"
        for folder in created:  # a mistyped DATA_ROOT leaves no folders behind
            with contextlib.suppress(OSError):
                folder.rmdir()  # only while empty
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise DataNotFoundError(
            f"CIFAR-10 is not in DATA_ROOT={str(root)!r} and downloading {CIFAR10_URL} failed ({reason}); "
            f"download and extract it there yourself ({_LAYOUT_HINT}) or point DATA_ROOT to a copy"
        ) from error
    if not cifar10_folder_is_complete(root):
        raise DataNotFoundError(
            f"the CIFAR-10 archive extracted into {str(root)!r} lacks files; {_LAYOUT_HINT}"
        )
    return folder


# What the official files (and numpy arrays pickled by any numpy version) need, and nothing else:
# the pickled dicts hold bytes, lists, ints and uint8 arrays.
_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),  # bytes pickled by Python 3 with protocol 2
}


class _ArrayUnpickler(pickle.Unpickler):
    """An unpickler that builds only plain data and numpy arrays, so a crafted file cannot run code."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED_GLOBALS:
            raise _RefusedGlobal(f"{module}.{name}")
        if module.startswith("numpy.core.") and np.lib.NumpyVersion(np.__version__) >= "2.0.0":
            module = "numpy._core." + module.removeprefix("numpy.core.")  # without the deprecation warning
        return super().find_class(module, name)


class _RefusedGlobal(pickle.UnpicklingError):
    pass


def _unpickle(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as file:
            content = _ArrayUnpickler(file, encoding="bytes").load()
    except FileNotFoundError as error:
        raise DataNotFoundError(f"CIFAR-10 file {str(path)!r} is missing; {_LAYOUT_HINT}") from error
    except _RefusedGlobal as error:
        raise DataNotFoundError(
            f"CIFAR-10 file {str(path)!r} contains pickled Python objects ({error}) that could run code, so it "
            f"is refused; delete {str(path.parent)!r} and download CIFAR-10 again"
        ) from None
    except Exception as error:  # truncated or garbled pickles raise many different errors
        raise DataNotFoundError(
            f"CIFAR-10 file {str(path)!r} is corrupt or truncated ({type(error).__name__}); "
            f"delete {str(path.parent)!r} so it is downloaded again"
        ) from error
    if not isinstance(content, dict):
        raise DataNotFoundError(f"CIFAR-10 file {str(path)!r} is not a pickled dict; delete it and re-download")
    # Files written by Python 2 (the official ones) have bytes keys when read with encoding="bytes".
    return {key.decode("latin1") if isinstance(key, bytes) else key: value for key, value in content.items()}


def _read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    entry = _unpickle(path)
    labels_key = "labels" if "labels" in entry else "fine_labels"
    if "data" not in entry or labels_key not in entry:
        raise DataNotFoundError(f"CIFAR-10 file {str(path)!r} lacks 'data' or 'labels'; delete it and re-download")
    data = np.asarray(entry["data"])
    labels = np.asarray(entry[labels_key], dtype=np.int64)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(labels) != len(data):
        raise DataNotFoundError(
            f"CIFAR-10 file {str(path)!r} has data of shape {data.shape} ({data.dtype}) and "
            f"{len(labels)} labels; expected uint8 [N, 3072] and N labels. Delete it and re-download"
        )
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels


class CIFAR10Dataset(InMemoryImageDataset):
    """CIFAR-10 images (PIL, RGB, 32x32) and labels read from ``<root>/cifar-10-batches-py``.

    Args:
        root: the folder that contains ``cifar-10-batches-py`` (the ``DATA_ROOT``).
        train: the five training batches (True) or the test batch (False).
        transform: applied to each PIL image.
        target_transform: applied to each integer label.
    """

    def __init__(
        self,
        root: str | Path,
        train: bool = True,
        transform: Callable | None = None,
        target_transform: Callable | None = None,
    ) -> None:
        self.root = Path(root).expanduser()
        self.train = train
        self.transform = transform
        self.target_transform = target_transform
        folder = self.root / CIFAR10_FOLDER
        if not folder.is_dir():
            raise DataNotFoundError(f"no CIFAR-10 folder at {str(folder)!r}; {_LAYOUT_HINT}")
        files = CIFAR10_TRAIN_FILES if train else CIFAR10_TEST_FILES
        images, labels = zip(*(_read_batch(folder / name) for name in files))
        self.data: np.ndarray = np.concatenate(images)
        self.targets: list[int] = np.concatenate(labels).tolist()
        meta = _unpickle(folder / CIFAR10_META_FILE)
        names = meta.get("label_names")
        if not isinstance(names, (list, tuple)) or not names:
            raise DataNotFoundError(
                f"{str(folder / CIFAR10_META_FILE)!r} lacks 'label_names'; delete it and re-download"
            )
        self.classes: list[str] = [n.decode("latin1") if isinstance(n, bytes) else str(n) for n in names]
        if self.targets and not 0 <= min(self.targets) <= max(self.targets) < len(self.classes):
            raise DataNotFoundError(
                f"CIFAR-10 labels under {str(folder)!r} exceed the {len(self.classes)} classes of "
                f"{CIFAR10_META_FILE}; delete the folder and re-download"
            )

    def __repr__(self) -> str:
        split = "train" if self.train else "test"
        return f"{type(self).__name__}(root={str(self.root)!r}, split={split!r}, size={len(self)})"
