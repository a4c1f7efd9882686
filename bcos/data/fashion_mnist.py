"""Fashion-MNIST: 70,000 28x28 greyscale photos of clothing in 10 classes, read from IDX files.

The four files (``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte``,
``t10k-labels-idx1-ubyte``, each optionally gzipped) are looked up, in this order, in

1. ``<root>``, ``<root>/FashionMNIST/raw`` (torchvision's layout) and ``<root>/fashion-mnist``, where
   ``root`` is the config's ``data.root`` or the ``DATA_ROOT`` setting;
2. ``/usr/share/datasets/fashion-mnist`` (Debian's ``dataset-fashion-mnist`` package);
3. downloaded into ``<DATA_ROOT>/FashionMNIST/raw`` when ``DATA_ROOT`` is set and the machine is
   online (the archives' MD5 checksums are verified before the files are moved into place; a failed
   download leaves nothing behind). Local files are checked for their IDX structure (header, sizes,
   labels), not for checksums: Debian recompresses the archives, and test copies are smaller.

Images are padded by 2 black pixels on every side to 32x32 (the photos keep their pixels, nothing
is interpolated) and converted to RGB, so CIFAR-style models and presets apply unchanged. The
split is the official one: 60,000 training and 10,000 test images.
"""

from __future__ import annotations

import contextlib
import functools
import gzip
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from bcos.data.categories import FASHION_MNIST_CATEGORIES
from bcos.data.in_memory import InMemoryImageDataset
from bcos.errors import DataNotFoundError

__all__ = [
    "FASHION_MNIST_CATEGORIES",
    "FASHION_MNIST_DEBIAN_FOLDER",
    "FASHION_MNIST_FILES",
    "FASHION_MNIST_IMAGE_SIZE",
    "find_fashion_mnist",
    "download_fashion_mnist",
    "read_idx",
    "FashionMNISTDataset",
]

FASHION_MNIST_DEBIAN_FOLDER = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_IMAGE_SIZE = 32
_PAD = (FASHION_MNIST_IMAGE_SIZE - 28) // 2

# file stem -> MD5 of the gzipped file published by Zalando (the same list torchvision verifies)
FASHION_MNIST_FILES: dict[str, str] = {
    "train-images-idx3-ubyte": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
    "train-labels-idx1-ubyte": "25c81989df183df01b3e8a0aad5dffbe",
    "t10k-images-idx3-ubyte": "bef4ecab320f06d8554ea6380940ec79",
    "t10k-labels-idx1-ubyte": "bb300cfdad3c16e7a12a480ee83cd310",
}
_MIRROR = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
_SPLIT_FILES = {True: ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
                False: ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}  # fmt: skip
_IDX_DTYPE = {0x08: np.uint8}


def _file_in(folder: Path, stem: str) -> Path | None:
    for name in (stem, stem + ".gz"):
        if (folder / name).is_file():
            return folder / name
    return None


def _candidate_folders(root: str | Path | None) -> list[Path]:
    folders = []
    if root:
        root = Path(root).expanduser()
        folders += [root, root / "FashionMNIST" / "raw", root / "fashion-mnist"]
    folders.append(FASHION_MNIST_DEBIAN_FOLDER)
    return folders


def find_fashion_mnist(root: str | Path | None) -> Path | None:
    """The first candidate folder (see the module docstring) holding all four files, or None."""
    for folder in _candidate_folders(root):
        if all(_file_in(folder, stem) for stem in FASHION_MNIST_FILES):
            return folder
    return None


def download_fashion_mnist(root: str | Path | None) -> Path:
    """The folder with the four files: found locally, else downloaded into ``<root>/FashionMNIST/raw``.

    Raises :class:`DataNotFoundError` naming all three places when the data is nowhere and cannot
    be downloaded (no root set, offline, or a checksum mismatch).
    """
    found = find_fashion_mnist(root)
    if found is not None:
        return found
    places = (
        f"set DATA_ROOT to a folder with the four IDX files (or FashionMNIST/raw/ below it), "
        f"install the Debian package (apt-get install dataset-fashion-mnist: {FASHION_MNIST_DEBIAN_FOLDER}), "
        "or set DATA_ROOT on a machine that is online to download it there"
    )
    if not root:
        raise DataNotFoundError(f"Fashion-MNIST not found; {places}")
    target = Path(root).expanduser() / "FashionMNIST" / "raw"
    from torchvision.datasets.utils import download_url

    created = [folder for folder in (target, *target.parents) if not folder.exists()]
    staging: Path | None = None
    try:
        target.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".download-", dir=target))
        for stem, md5 in FASHION_MNIST_FILES.items():  # all four verified before any is moved into place
            if _file_in(target, stem) is None:
                download_url(_MIRROR + stem + ".gz", str(staging), filename=stem + ".gz", md5=md5)
        for downloaded in staging.iterdir():
            os.replace(downloaded, target / downloaded.name)
    except Exception as error:  # network, disk and checksum failures all mean "data not available"
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise DataNotFoundError(f"Fashion-MNIST not found and its download into {target} failed ({reason}); {places}")
    finally:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)  # a partial or corrupt download never stays
        for folder in created:  # a mistyped DATA_ROOT leaves no folders behind
            with contextlib.suppress(OSError):
                folder.rmdir()  # only while empty
    return target


def read_idx(path: str | Path) -> np.ndarray:
    """An IDX file (optionally gzipped) as a numpy array; a malformed file raises DataNotFoundError."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as handle:
            raw = handle.read()
    except (OSError, EOFError) as error:
        raise DataNotFoundError(f"cannot read {path} ({error}); the file is corrupt or truncated: replace it")
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPE:
        raise DataNotFoundError(f"{path} is not an unsigned-byte IDX file; replace it")
    ndim = raw[3]
    header = 4 + 4 * ndim
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    if len(raw) != header + int(np.prod(shape)):
        raise DataNotFoundError(f"{path} has {len(raw) - header} data bytes, its header promises shape {shape}; replace it")
    return np.frombuffer(raw, dtype=_IDX_DTYPE[raw[2]], offset=header).reshape(shape)


@functools.lru_cache(maxsize=4)
def _load_split(folder: Path, train: bool) -> tuple[np.ndarray, np.ndarray]:
    """Padded RGB images [N, 32, 32, 3] (uint8, read-only) and labels [N] (int64) of one split."""
    image_stem, label_stem = _SPLIT_FILES[train]
    images_path, labels_path = _file_in(folder, image_stem), _file_in(folder, label_stem)
    assert images_path is not None and labels_path is not None
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise DataNotFoundError(
            f"{images_path} holds {images.shape} and {labels_path} {labels.shape}: not images [N, H, W] "
            "with one label each; replace them"
        )
    if labels.size and int(labels.max()) >= len(FASHION_MNIST_CATEGORIES):
        raise DataNotFoundError(f"{labels_path} has label {int(labels.max())}; Fashion-MNIST labels are 0..9")
    padded = np.pad(images, ((0, 0), (_PAD, _PAD), (_PAD, _PAD)))
    rgb = np.ascontiguousarray(np.repeat(padded[..., None], 3, axis=-1))
    rgb.setflags(write=False)
    targets = labels.astype(np.int64)
    targets.setflags(write=False)
    return rgb, targets


class FashionMNISTDataset(InMemoryImageDataset):
    """The train or test split of Fashion-MNIST: PIL RGB 32x32 images and integer labels 0..9."""

    def __init__(
        self,
        root: str | Path | None = None,
        train: bool = True,
        transform: Callable | None = None,
        target_transform: Callable | None = None,
        download: bool = True,
    ) -> None:
        folder = download_fashion_mnist(root) if download else find_fashion_mnist(root)
        if folder is None:
            raise DataNotFoundError(f"Fashion-MNIST not found in {', '.join(map(str, _candidate_folders(root)))}")
        self.folder = Path(os.path.realpath(folder))
        self.train = train
        self.data, targets = _load_split(self.folder, train)
        self.targets: list[int] = targets.tolist()
        self.classes: list[str] = list(FASHION_MNIST_CATEGORIES)
        self.transform = transform
        self.target_transform = target_transform

    def __repr__(self) -> str:
        return f"{type(self).__name__}(split={'train' if self.train else 'test'!r}, size={len(self)}, folder={str(self.folder)!r})"
