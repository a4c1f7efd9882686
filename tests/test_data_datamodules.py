"""Datamodules: the registry rule, CIFAR-10 from disk, Digits, ImageFolder, ImageNet paths, loaders."""

from __future__ import annotations

import pickle
import warnings

import numpy as np
import pytest
import torch

from bcos.data import datamodules as dm
from bcos.data.cifar import CIFAR10_FOLDER, CIFAR10_URL
from bcos.data.presets import CIFAR10ClassificationPresetTest, CIFAR10ClassificationPresetTrain
from bcos.data.sampler import RASampler
from bcos.errors import ConfigError, DataNotFoundError, UnknownNameError
from helpers_data import make_tiny_cifar10, make_tiny_image_folder


def _data_config(**changes):
    config = dict(
        train_transform=CIFAR10ClassificationPresetTrain(is_bcos=True),
        test_transform=CIFAR10ClassificationPresetTest(is_bcos=True),
        batch_size=8,
        num_workers=0,
        num_classes=10,
    )
    config.update(changes)
    return config


@pytest.fixture
def no_download(monkeypatch):
    """Make every download fail at once, as without network access."""

    def refuse(*args, **kwargs):
        raise OSError("network unreachable")

    monkeypatch.setattr("torchvision.datasets.utils.download_and_extract_archive", refuse)


@pytest.fixture
def tiny_cifar(tmp_path, monkeypatch):
    root = make_tiny_cifar10(tmp_path / "data", n_train=40, n_test=20)
    monkeypatch.setenv("DATA_ROOT", str(root))
    return root


# ------------------------------------------------------------------------------------ registry
def test_builtin_datasets_are_registered():
    registry = dm.registry()
    assert {"CIFAR10", "ImageNet", "Digits", "ImageFolder"} <= set(registry)
    assert dm.get_datamodule_class("CIFAR10") is dm.CIFAR10DataModule
    assert dm.ClassificationDataModule.registry() == registry
    with pytest.raises(UnknownNameError, match="did you mean 'CIFAR10'"):
        dm.get_datamodule_class("CIFAR1O")


def test_new_subclass_is_registered_and_usable():
    try:

        class ToyDataModule(dm.ClassificationDataModule):
            NUM_CLASSES = 3

            def make_train_dataset(self, transform):
                return [(transform(torch.full((2,), float(i))), i % 3) for i in range(6)]

            def make_eval_dataset(self, transform):
                return [(transform(torch.zeros(2)), 0)]

        assert dm.get_datamodule_class("Toy") is ToyDataModule
        datamodule = ToyDataModule(dict(train_transform=lambda x: x, test_transform=lambda x: x, batch_size=4))
        images, labels = next(iter(datamodule.train_dataloader()))
        assert images.shape == (4, 2) and labels.shape == (4,)
        assert len(datamodule.test_dataloader()) == 1
    finally:
        dm._REGISTRY.pop("Toy", None)


def test_registry_rule_errors():
    with pytest.raises(ConfigError, match="NUM_CLASSES"):

        class NoClassesDataModule(dm.ClassificationDataModule):
            pass

    with pytest.raises(ConfigError, match="DataModule"):

        class BadName(dm.ClassificationDataModule):
            NUM_CLASSES = 2

    with pytest.raises(ConfigError, match="already registered"):

        class CIFAR10DataModule(dm.ClassificationDataModule):
            NUM_CLASSES = 10

    class Base(dm.ClassificationDataModule, register=False):
        pass

    assert "NoClasses" not in dm.registry() and "Base" not in dm.registry()
    assert dm.get_datamodule_class("CIFAR10").__module__ == "bcos.data.datamodules"


# ------------------------------------------------------------------------------------ config checks
def test_config_validation():
    with pytest.raises(ConfigError, match="num_classes=5"):
        dm.CIFAR10DataModule(_data_config(num_classes=5))
    with pytest.raises(UnknownNameError, match="mixup_alpha"):
        dm.CIFAR10DataModule(_data_config(mixup_alhpa=0.2))
    with pytest.raises(ConfigError, match="config\\['data'\\]"):
        dm.CIFAR10DataModule({"data": _data_config(), "model": {}})
    with pytest.raises(ConfigError, match="batch_size"):
        dm.CIFAR10DataModule(_data_config(batch_size=0))
    with pytest.raises(ConfigError, match="onthefly"):
        dm.CIFAR10DataModule(_data_config(cache_dataset="onthefly"))
    with pytest.raises(ConfigError, match="shm"):
        dm.CIFAR10DataModule(_data_config(cache_dataset="shm"))


def test_datamodule_does_not_mutate_the_config():
    config = _data_config(mixup_alpha=0.2)
    before = dict(config)
    datamodule = dm.DigitsDataModule(config)
    datamodule.config["batch_size"] = 1
    assert config == before


# ------------------------------------------------------------------------------------ CIFAR-10
def test_cifar10_from_tiny_tree(tiny_cifar, no_download):
    datamodule = dm.CIFAR10DataModule(_data_config())
    with pytest.warns(dm.DatasetSizeWarning, match="the official one"):
        datamodule.prepare_data()
        datamodule.setup("fit")
    assert len(datamodule.train_dataset) == 40 and len(datamodule.eval_dataset) == 20
    assert datamodule.train_dataset.classes == datamodule.CATEGORIES
    images, labels = next(iter(datamodule.train_dataloader()))
    assert images.shape == (8, 6, 32, 32) and labels.dtype == torch.int64
    test_images, test_labels = next(iter(datamodule.test_dataloader()))
    assert test_labels.tolist() == [i % 10 for i in range(8)]
    assert torch.allclose(test_images[:, :3] + test_images[:, 3:], torch.ones(8, 3, 32, 32))


def test_cifar10_pixels_round_trip(tiny_cifar):
    from bcos.data.cifar import CIFAR10Dataset

    dataset = CIFAR10Dataset(tiny_cifar, train=False)
    with open(tiny_cifar / CIFAR10_FOLDER / "test_batch", "rb") as file:
        raw = pickle.load(file)
    image, label = dataset[3]
    expected = raw[b"data"][3].reshape(3, 32, 32).transpose(1, 2, 0)
    assert np.array_equal(np.asarray(image), expected) and label == raw[b"labels"][3]


def test_cifar10_missing_data_root(monkeypatch):
    monkeypatch.delenv("DATA_ROOT", raising=False)
    datamodule = dm.CIFAR10DataModule(_data_config())
    with pytest.raises(DataNotFoundError, match="DATA_ROOT is not set"):
        datamodule.setup("test")


def test_cifar10_download_failure_names_root_url_and_layout(tmp_path, monkeypatch, no_download):
    monkeypatch.setenv("DATA_ROOT", str(tmp_path / "empty"))
    datamodule = dm.CIFAR10DataModule(_data_config())
    with pytest.raises(DataNotFoundError) as error:
        datamodule.prepare_data()
    message = str(error.value)
    assert str(tmp_path / "empty") in message and CIFAR10_URL in message and CIFAR10_FOLDER in message
    assert "network unreachable" in message and "\n" not in message


def test_cifar10_truncated_file_is_a_clear_error(tiny_cifar):
    path = tiny_cifar / CIFAR10_FOLDER / "data_batch_2"
    path.write_bytes(path.read_bytes()[:100])
    datamodule = dm.CIFAR10DataModule(_data_config())
    with pytest.raises(DataNotFoundError, match="data_batch_2.*corrupt or truncated"):
        datamodule.setup("fit")


def test_cifar10_mixup_cutmix_and_ra_sampler(tiny_cifar, monkeypatch):
    monkeypatch.setenv("PL_GLOBAL_SEED", "7")
    datamodule = dm.CIFAR10DataModule(_data_config(mixup_alpha=0.2, cutmix_alpha=1.0, ra_repetitions=2))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dm.DatasetSizeWarning)
        loader = datamodule.train_dataloader()  # sets itself up
    assert isinstance(loader.sampler, RASampler) and loader.sampler.seed == 7 and loader.sampler.repetitions == 2
    images, soft = next(iter(loader))
    assert images.shape == (8, 6, 32, 32) and soft.shape == (8, 10)
    assert torch.allclose(soft.sum(1), torch.ones(8))
    # evaluation batches are never mixed
    _, labels = next(iter(datamodule.val_dataloader()))
    assert labels.dtype == torch.int64 and labels.ndim == 1


# ------------------------------------------------------------------------------------ Digits
def test_digits_split_sizes_stratification_and_determinism():
    from bcos.data.digits import DigitsDataset, digits_split

    train, test = DigitsDataset(train=True), DigitsDataset(train=False)
    assert (len(train), len(test)) == (1437, 360)
    train_idx, test_idx = digits_split()
    assert not set(train_idx.tolist()) & set(test_idx.tolist())
    assert len(set(train_idx.tolist()) | set(test_idx.tolist())) == 1797
    test_counts = np.bincount(test.targets, minlength=10)
    train_counts = np.bincount(train.targets, minlength=10)
    share = test_counts / (test_counts + train_counts)
    assert np.all(np.abs(share - 0.2) < 0.02), share
    image, label = train[0]
    assert image.size == (32, 32) and image.mode == "RGB" and 0 <= label < 10
    # same split and pixels when rebuilt from scratch
    digits_split.cache_clear()
    again_train, again_test = digits_split()
    assert np.array_equal(again_train, train_idx) and np.array_equal(again_test, test_idx)
    assert np.array_equal(np.asarray(DigitsDataset(train=True)[5][0]), np.asarray(train[5][0]))


def test_digits_images_look_like_the_sklearn_digits():
    from sklearn.datasets import load_digits

    from bcos.data.digits import DigitsDataset, digits_split

    digits = load_digits()
    index = int(digits_split()[1][0])
    image, label = DigitsDataset(train=False)[0]
    assert label == digits.target[index]
    grey = np.asarray(image)[..., 0].astype(float)
    assert np.array_equal(np.asarray(image)[..., 0], np.asarray(image)[..., 2])  # grey as RGB
    pooled = grey.reshape(8, 4, 8, 4).mean(axis=(1, 3)) * 16 / 255
    assert np.corrcoef(pooled.ravel(), digits.images[index].ravel())[0, 1] > 0.9


def test_digits_datamodule_loaders():
    datamodule = dm.DigitsDataModule(_data_config(batch_size=16))
    datamodule.setup("fit")
    images, labels = next(iter(datamodule.train_dataloader()))
    assert images.shape == (16, 6, 32, 32) and labels.max() < 10
    assert len(datamodule.test_dataloader().dataset) == 360


# ------------------------------------------------------------------------------------ ImageFolder / ImageNet
def test_image_folder_datamodule_counts_classes(tmp_path):
    root = make_tiny_image_folder(tmp_path / "shapes", ["circle", "square", "star"], n_per_class=3)
    config = _data_config(root=str(root), num_classes=None, batch_size=4)
    datamodule = dm.get_datamodule_class("ImageFolder")(config)
    assert datamodule.num_classes == 3 and datamodule.categories == ["circle", "square", "star"]
    datamodule.setup("fit")
    images, labels = next(iter(datamodule.train_dataloader()))
    assert images.shape == (4, 6, 32, 32) and set(labels.tolist()) <= {0, 1, 2}
    with pytest.raises(DataNotFoundError, match="3 class folders"):
        bad = dm.ImageFolderDataModule({**config, "num_classes": 4})
        bad.setup("test")
    with pytest.raises(ConfigError, match="data.root"):
        dm.ImageFolderDataModule(_data_config(num_classes=None))


def test_image_folder_train_and_val_classes_must_match(tmp_path):
    root = make_tiny_image_folder(tmp_path / "a", ["x", "y"], n_per_class=2, splits=("train",))
    make_tiny_image_folder(root, ["x", "z"], n_per_class=2, splits=("val",))
    datamodule = dm.ImageFolderDataModule(_data_config(root=str(root), num_classes=None))
    with pytest.raises(DataNotFoundError, match="differ"):
        datamodule.setup("fit")


def test_make_image_folder_datamodule_registers_a_named_dataset(tmp_path):
    root = make_tiny_image_folder(tmp_path / "flowers", ["rose", "tulip"], n_per_class=2)
    try:
        cls = dm.make_image_folder_datamodule("Flowers", root)
        assert cls.__name__ == "FlowersDataModule" and cls.NUM_CLASSES == 2
        assert dm.get_datamodule_class("Flowers") is cls
        assert dm.make_image_folder_datamodule("Flowers", root) is cls
        datamodule = cls(_data_config(num_classes=2))
        datamodule.setup("test")
        assert len(datamodule.eval_dataset) == 4 and datamodule.categories == ["rose", "tulip"]
        with pytest.raises(ConfigError, match="already registered"):
            dm.make_image_folder_datamodule("Flowers", tmp_path)
    finally:
        dm._REGISTRY.pop("Flowers", None)


def test_image_folder_shm_cache(tmp_path, monkeypatch):
    root = make_tiny_image_folder(tmp_path / "src", ["a", "b"], n_per_class=2)
    monkeypatch.setenv("SHMTMPDIR", str(tmp_path / "shm"))
    datamodule = dm.ImageFolderDataModule(_data_config(root=str(root), num_classes=2, cache_dataset="shm"))
    datamodule.prepare_data()
    cached = tmp_path / "shm" / "ImageFolder" / "train"
    assert sorted(p.name for p in cached.iterdir() if p.is_dir()) == ["a", "b"]
    datamodule.setup("fit")
    assert datamodule.train_dataset.root == str(cached) and len(datamodule.train_dataset) == 4


def test_imagenet_paths(tmp_path, monkeypatch):
    config = _data_config(num_classes=1000)
    monkeypatch.delenv("IMAGENET_PATH", raising=False)
    with pytest.raises(DataNotFoundError, match="IMAGENET_PATH is not set"):
        dm.ImageNetDataModule(config).setup("test")
    monkeypatch.setenv("IMAGENET_PATH", str(tmp_path / "missing"))
    with pytest.raises(DataNotFoundError, match="'val' folder"):
        dm.ImageNetDataModule(config).setup("test")
    make_tiny_image_folder(tmp_path / "subset", ["n01", "n02"], n_per_class=1)
    monkeypatch.setenv("IMAGENET_PATH", str(tmp_path / "subset"))
    with pytest.raises(DataNotFoundError, match="2 class folders.*1000 classes"):
        dm.ImageNetDataModule(config).setup("test")
    assert len(dm.ImageNetDataModule.CATEGORIES) == 1000


def test_shm_cache_extracts_per_class_tar_files(tmp_path):
    import tarfile

    from bcos.data.shm_cache import COMPLETE_MARKER, cache_train_tree

    source = make_tiny_image_folder(tmp_path / "src", ["n1", "n2"], n_per_class=2, splits=("train",))
    tars = tmp_path / "tars"
    tars.mkdir()
    for name in ("n1", "n2"):
        with tarfile.open(tars / f"{name}.tar", "w") as tar:
            tar.add(source / "train" / name, arcname=name)
    target = cache_train_tree(tmp_path / "shm" / "train", tar_dir=tars)
    assert sorted(p.name for p in (target / "n2").iterdir()) == ["2.png", "3.png"]
    assert (target / COMPLETE_MARKER).is_file()
    with pytest.raises(DataNotFoundError, match="no .tar files"):
        cache_train_tree(tmp_path / "other", tar_dir=tmp_path / "src")
