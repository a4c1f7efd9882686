"""The Fashion-MNIST data set: IDX reading, where the files are found, errors, and the datamodule.

Small data sets are written in the real on-disk format (gzipped IDX files); the tests marked
``debian`` read the real files of the ``dataset-fashion-mnist`` package (installed by ``.ci/run``).
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
import torch

import bcos.data.fashion_mnist as fm
from bcos.data.presets import CIFAR10ClassificationPresetTest
from bcos.errors import DataNotFoundError

from helpers_data import tiny_fashion_mnist, write_idx

DEBIAN = pytest.mark.skipif(
    not fm.FASHION_MNIST_DEBIAN_FOLDER.is_dir(), reason="apt-get install dataset-fashion-mnist (.ci/run does)"
)


@pytest.fixture
def no_debian(monkeypatch, tmp_path):
    """Pretend the Debian package is not installed."""
    monkeypatch.setattr(fm, "FASHION_MNIST_DEBIAN_FOLDER", tmp_path / "no-such-package")
    fm._load_split.cache_clear()
    yield
    fm._load_split.cache_clear()


@pytest.mark.parametrize("layout", ["", "FashionMNIST/raw", "fashion-mnist"])
@pytest.mark.parametrize("compress", [True, False])
def test_the_files_are_found_in_every_layout_and_padded_to_32x32_rgb(tmp_path, no_debian, layout, compress):
    root = tmp_path / "data"
    tiny_fashion_mnist(root / layout, compress=compress)
    train = fm.FashionMNISTDataset(root, train=True)
    test = fm.FashionMNISTDataset(root, train=False)
    assert (len(train), len(test)) == (20, 10)
    image, label = train[3]
    assert image.size == (32, 32) and image.mode == "RGB" and label == 3
    pixels = np.asarray(image)
    raw = fm.read_idx(fm._file_in(root / layout, "train-images-idx3-ubyte"))[3]
    assert (pixels[:2] == 0).all() and (pixels[:, -2:] == 0).all()  # 2 black pixels of padding
    np.testing.assert_array_equal(pixels[2:30, 2:30, 0], raw)  # the photo itself is not interpolated
    np.testing.assert_array_equal(pixels[..., 0], pixels[..., 2])


def test_missing_data_names_all_three_places(tmp_path, no_debian, monkeypatch):
    with pytest.raises(DataNotFoundError) as error:
        fm.FashionMNISTDataset(None)
    message = str(error.value)
    assert "\n" not in message
    assert "DATA_ROOT" in message and "apt-get install dataset-fashion-mnist" in message and "download" in message

    import torchvision.datasets.utils as tv_utils

    def offline(*args, **kwargs):
        raise OSError("Name or service not known")

    monkeypatch.setattr(tv_utils, "download_url", offline)
    with pytest.raises(DataNotFoundError, match=r"download into .*FashionMNIST/raw failed \(Name or service not known\)"):
        fm.FashionMNISTDataset(tmp_path / "empty")


def test_a_download_is_checksum_verified(tmp_path, no_debian, monkeypatch):
    import torchvision.datasets.utils as tv_utils

    seen = []

    def fake_download(url, root, filename, md5):
        seen.append((url, filename, md5))
        tiny_fashion_mnist(tmp_path / "source")
        Path(root, filename).write_bytes((tmp_path / "source" / filename).read_bytes())

    monkeypatch.setattr(tv_utils, "download_url", fake_download)
    dataset = fm.FashionMNISTDataset(tmp_path / "root")
    assert len(dataset) == 20 and dataset.folder == (tmp_path / "root" / "FashionMNIST" / "raw").resolve()
    assert [md5 for _, _, md5 in seen] == list(fm.FASHION_MNIST_FILES.values())
    assert all(url.endswith(name) for url, name, _ in seen)


def test_a_failed_download_leaves_nothing_behind(tmp_path, no_debian, monkeypatch):
    import torchvision.datasets.utils as tv_utils

    def third_file_corrupt(url, root, filename, md5):
        if filename.startswith("t10k-images"):
            Path(root, filename).write_bytes(b"not the archive")
            raise RuntimeError("File not found or corrupted.")
        tiny_fashion_mnist(tmp_path / "source")
        Path(root, filename).write_bytes((tmp_path / "source" / filename).read_bytes())

    monkeypatch.setattr(tv_utils, "download_url", third_file_corrupt)
    with pytest.raises(DataNotFoundError, match="corrupted"):
        fm.FashionMNISTDataset(tmp_path / "mistyped" / "root")
    assert not (tmp_path / "mistyped").exists()


@pytest.mark.parametrize(
    "damage, match",
    [
        (lambda p: p.write_bytes(p.read_bytes()[:100]), "corrupt or truncated"),
        (lambda p: p.write_bytes(gzip.compress(b"\x00\x00\x0d\x03" + bytes(12))), "not an unsigned-byte IDX file"),
        (lambda p: p.write_bytes(gzip.compress(gzip.decompress(p.read_bytes())[:-5])), "header promises"),
    ],
)
def test_a_damaged_file_is_one_line_naming_it(tmp_path, no_debian, damage, match):
    root = tiny_fashion_mnist(tmp_path / "data")
    damage(root / "train-images-idx3-ubyte.gz")
    with pytest.raises(DataNotFoundError, match=match) as error:
        fm.FashionMNISTDataset(root, train=True)
    assert "train-images-idx3-ubyte.gz" in str(error.value) and "\n" not in str(error.value)


def test_labels_outside_0_to_9_are_refused(tmp_path, no_debian):
    root = tiny_fashion_mnist(tmp_path / "data")
    write_idx(root / "t10k-labels-idx1-ubyte.gz", np.full(10, 12))
    with pytest.raises(DataNotFoundError, match="label 12"):
        fm.FashionMNISTDataset(root, train=False)


def test_the_datamodule_reads_data_root_and_encodes_for_bcos(tmp_path, no_debian, monkeypatch):
    from bcos.data.datamodules import FashionMNISTDataModule, get_datamodule_class

    assert get_datamodule_class("FashionMNIST") is FashionMNISTDataModule
    tiny_fashion_mnist(tmp_path / "data")
    monkeypatch.setenv("DATA_ROOT", str(tmp_path / "data"))
    transform = CIFAR10ClassificationPresetTest(is_bcos=True)
    config = dict(batch_size=4, num_workers=0, num_classes=10, train_transform=transform, test_transform=transform)
    datamodule = FashionMNISTDataModule(config)
    with pytest.warns(UserWarning, match="official one"):  # 20 / 10 images instead of the official 60,000 / 10,000
        datamodule.setup("fit")
    images, labels = next(iter(datamodule.val_dataloader()))
    assert images.shape == (4, 6, 32, 32) and torch.allclose(images[:, :3] + images[:, 3:], torch.ones(()))
    assert labels.tolist() == [0, 1, 2, 3]


@DEBIAN
def test_the_debian_package_is_the_official_data_set():
    fm._load_split.cache_clear()
    train = fm.FashionMNISTDataset(None, train=True, download=False)
    test = fm.FashionMNISTDataset(None, train=False, download=False)
    assert (len(train), len(test)) == (60_000, 10_000)
    assert np.bincount(train.targets).tolist() == [6000] * 10 and np.bincount(test.targets).tolist() == [1000] * 10
    assert train.folder == fm.FASHION_MNIST_DEBIAN_FOLDER.resolve()


@DEBIAN
def test_the_fashion_mnist_configs_build_and_train_one_step():
    from bcos.experiments.utils import Experiment

    for collection, name in [("bcos_fast", "resnet_8_bnu-linear"), ("baseline", "resnet_8")]:
        experiment = Experiment("FashionMNIST", collection, name)
        model = experiment.get_model()
        config = experiment.config
        images = torch.rand(4, 3, 32, 32)
        inputs = torch.cat([images, 1 - images], 1) if config["model"]["is_bcos"] else images
        loss = config["criterion"](model(inputs), torch.tensor([0, 1, 2, 3]))
        loss.backward()
        assert torch.isfinite(loss)
