"""Issue 13, beyond its named cases: unusual data and settings end in one line naming the file or setting.

Broken, truncated and non-image files inside a training data folder (ImageFolder-based data sets),
decompression bombs, 16-bit images, mistyped data roots (ImageNet, ImageFolder, CIFAR-10) and bad
numbers given on the command line or in a config.
"""

from __future__ import annotations

import json
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers_data import make_tiny_image_folder
from helpers_tiny_model import TINY_NAME, register_tiny_model, save_tiny_weights
from PIL import Image

from bcos.cli.main import main as bcos_main
from bcos.data.image_files import UnreadableImageError, load_image
from bcos.errors import BcosError

CLASSES = ["apple", "banana"]


def _truncate(path: Path) -> Path:
    path.write_bytes(path.read_bytes()[:60])
    return path


def _error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("error:")]


# ------------------------------------------------------------------------------------ the image loader
@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (_truncate, "the file is truncated"),
        (lambda p: p.write_bytes(b"<html>a saved web page</html>"), "not an image file PIL can read"),
        (lambda p: p.write_bytes(b""), "not an image file PIL can read"),
        (lambda p: p.unlink(), "the file is gone"),
    ],
    ids=["truncated", "not-an-image", "empty", "deleted"],
)
def test_a_broken_image_is_one_line_naming_the_file_and_the_fix(tmp_path, damage, reason):
    root = make_tiny_image_folder(tmp_path / "data", CLASSES, 1, splits=("train",))
    path = root / "train" / "apple" / "0.png"
    assert load_image(path).mode == "RGB"
    damage(path)
    with pytest.raises(UnreadableImageError) as caught:
        load_image(path)
    message = str(caught.value)
    assert message == f"cannot read the image '{path}': {message.split(': ', 1)[1]}" and "\n" not in message
    assert reason in message and message.endswith("remove the file or replace it with a good copy")


def test_a_broken_link_of_a_finetune_split_names_the_original(tmp_path):
    original = _truncate(make_tiny_image_folder(tmp_path / "data", CLASSES, 1, splits=("all",)) / "all" / "apple" / "0.png")
    link = tmp_path / "split" / "apple.png"
    link.parent.mkdir()
    link.symlink_to(original)
    with pytest.raises(UnreadableImageError, match=rf"'{link}' \(a link to '{original}'\): the file is truncated"):
        load_image(link)


def test_a_decompression_bomb_is_one_line_with_its_size(tmp_path, monkeypatch):
    path = tmp_path / "bomb.png"
    Image.new("RGB", (64, 48)).save(path)  # a bomb once the limit is lowered below half its pixels
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 64 * 48 // 2 - 1)
    with pytest.raises(UnreadableImageError) as caught:
        load_image(path)
    assert str(caught.value) == (
        f"the image '{path}' has 3,072 pixels, more than PIL's decompression-bomb limit of 3,070 "
        "(twice PIL.Image.MAX_IMAGE_PIXELS); remove the file or replace it with a downscaled copy"
    )
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 64 * 48 - 1)  # PIL only warns between the limit and twice it
    with pytest.warns(Image.DecompressionBombWarning):
        assert load_image(path).size == (64, 48)


def test_16_bit_training_images_are_scaled_not_clipped_white(tmp_path):
    path = tmp_path / "grey16.png"
    Image.fromarray(np.linspace(0, 65535, 64).reshape(8, 8).astype(np.uint16)).save(path)
    with Image.open(path) as image:
        assert image.mode.startswith("I")
    rgb = np.asarray(load_image(path))
    assert rgb.dtype == np.uint8 and rgb.shape == (8, 8, 3)
    assert rgb[0, 0, 0] == 0 and rgb[-1, -1, 0] == 255 and 100 < rgb[4, 0, 0] < 155  # PIL alone gives 255 almost everywhere


@pytest.mark.parametrize("workers", [0, 1])
def test_a_broken_file_in_a_data_loader_worker_is_the_same_one_line(tmp_path, workers):
    from bcos.data.datamodules import ImageFolderDataModule
    from bcos.data.presets import CIFAR10ClassificationPresetTest

    root = make_tiny_image_folder(tmp_path / "data", CLASSES, 2)
    broken = _truncate(root / "train" / "banana" / "3.png")
    transform = CIFAR10ClassificationPresetTest(is_bcos=True)
    data = ImageFolderDataModule(
        dict(root=str(root), train_transform=transform, test_transform=transform, batch_size=4, num_workers=workers)
    )
    data.setup("fit")
    with pytest.raises(UnreadableImageError) as caught:
        list(data.train_dataloader())
    message = str(caught.value)  # torch re-creates the error in the main process with the worker's traceback
    assert message.startswith(f"cannot read the image '{broken}': the file is truncated") and "\n" not in message
    assert len(list(data.val_dataloader())) == 1  # the intact split still loads


def test_an_error_re_raised_by_torch_for_a_worker_keeps_its_one_line():
    from torch._utils import ExceptionWrapper

    from bcos.errors import ConfigError

    try:
        raise ConfigError("data.x must be 1; fix the config")
    except ConfigError:
        wrapper = ExceptionWrapper(where="in DataLoader worker process 3")
    with pytest.raises(ConfigError) as caught:
        wrapper.reraise()
    assert str(caught.value) == "data.x must be 1; fix the config"
    assert str(BcosError("Caught nothing; an ordinary message")) == "Caught nothing; an ordinary message"


# ------------------------------------------------------------------------------------ every command
@pytest.fixture
def tiny(monkeypatch, tmp_path):
    register_tiny_model(monkeypatch)
    return save_tiny_weights(tmp_path / "tiny.pth")


def test_a_broken_image_in_the_data_folder_is_one_line_for_train_evaluate_localise_and_explain(tiny, tmp_path, capsys):
    data = make_tiny_image_folder(tmp_path / "fruit", CLASSES, 4, image_size=36)
    base = tmp_path / "runs"
    train = ["train", "--finetune", TINY_NAME, "--data-dir", str(data), "--weights", str(tiny), "--base_directory", str(base),
             "--epochs", "1", "--batch-size", "4", "--num-workers", "0", "--name", "fruit", "--refresh_rate", "50"]  # fmt: skip
    assert bcos_main(train) == 0
    run = base / "ImageFolder" / "finetune" / "fruit"
    capsys.readouterr()

    broken = _truncate(data / "val" / "banana" / "5.png")
    fix = "the file is truncated (an interrupted download or copy?); remove the file or replace it with a good copy"
    evaluate = ["evaluate", "--dataset", "ImageFolder", "--base_network", "finetune", "--experiment_name", "fruit",
                "--reload", "last", "--base_directory", str(base), "--no-progress"]  # fmt: skip
    assert bcos_main(evaluate) == 2
    assert _error_lines(capsys.readouterr().err) == [f"error: cannot read the image '{broken}': {fix}"]

    localise = ["localise", "--save_path", str(run), "--analysis_config", "500_2x2_noconfthresh", "--smooth", "1",
                "--sample_size", "1", "--device", "cpu"]  # fmt: skip
    assert bcos_main(localise) == 2
    err = capsys.readouterr().err
    assert _error_lines(err) == [f"error: cannot read the image '{broken}': {fix}"] and "Traceback" not in err

    with pytest.warns(UserWarning, match=r"skipping .*5.png: not a readable image"):  # explain skips it and goes on
        assert bcos_main(["explain", str(data / "val" / "banana"), "--run", str(run), "--reload", "last",
                          "--output", str(tmp_path / "explained"), "--no-progress"]) == 0  # fmt: skip
    assert len(json.loads((tmp_path / "explained" / "predictions.json").read_text())) == 3
    capsys.readouterr()

    broken.unlink()  # removed as the message says: validation reads again; now a training image breaks
    _truncate(data / "train" / "apple" / "0.png")
    assert bcos_main([*train, "--force-no-resume"]) == 2
    err = capsys.readouterr().err
    assert _error_lines(err) == [f"error: cannot read the image '{data / 'train' / 'apple' / '0.png'}': {fix}"]
    assert "Traceback" not in err


# ------------------------------------------------------------------------------------ mistyped data roots
def _datamodule(name: str, **config):
    from bcos.data.datamodules import get_datamodule_class
    from bcos.data.presets import CIFAR10ClassificationPresetTest

    transform = CIFAR10ClassificationPresetTest(is_bcos=True)
    return get_datamodule_class(name)(dict(train_transform=transform, test_transform=transform, batch_size=2, **config))


def test_a_mistyped_imagenet_path_names_the_path_and_the_variable(tmp_path, monkeypatch):
    from bcos.errors import DataNotFoundError

    monkeypatch.setenv("IMAGENET_PATH", str(tmp_path / "imagenet_typo"))
    with pytest.raises(DataNotFoundError) as caught:
        _datamodule("ImageNet").setup("test")
    message = str(caught.value)
    assert f"'{tmp_path / 'imagenet_typo'}' does not exist" in message and "IMAGENET_PATH" in message and "\n" not in message
    monkeypatch.setenv("IMAGENET_PATH", str(tmp_path))  # exists, but holds no val/ tree
    with pytest.raises(DataNotFoundError, match=rf"no ImageNet 'val' folder at '{tmp_path / 'val'}'"):
        _datamodule("ImageNet").setup("test")


def test_a_mistyped_image_folder_root_names_the_path_and_the_setting(tmp_path):
    from bcos.errors import DataNotFoundError

    with pytest.raises(DataNotFoundError) as caught:
        _datamodule("ImageFolder", root=str(tmp_path / "fruit_typo"))
    message = str(caught.value)
    assert f"'{tmp_path / 'fruit_typo'}' does not exist" in message and "data.root in the config" in message
    assert "\n" not in message


def test_a_mistyped_data_dir_for_finetuning_is_one_line(tiny, tmp_path, capsys):
    assert bcos_main(["train", "--finetune", TINY_NAME, "--data-dir", str(tmp_path / "fruit_typo"),
                      "--base_directory", str(tmp_path / "runs")]) == 2  # fmt: skip
    (line,) = _error_lines(capsys.readouterr().err)
    assert str(tmp_path / "fruit_typo") in line and "--data-dir" in line
    assert not (tmp_path / "runs").exists()


def test_a_mistyped_cifar10_data_root_names_it_and_leaves_no_folder_behind(tmp_path, monkeypatch):
    import torchvision.datasets.utils as tv_utils

    from bcos.errors import DataNotFoundError

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(tv_utils, "download_and_extract_archive", offline)
    typo = tmp_path / "cifar_typo" / "data"
    monkeypatch.setenv("DATA_ROOT", str(typo))
    with pytest.raises(DataNotFoundError) as caught:
        _datamodule("CIFAR10").setup("test")
    message = str(caught.value)
    assert f"CIFAR-10 is not in DATA_ROOT='{typo}'" in message and "point DATA_ROOT to a copy" in message
    assert "\n" not in message
    assert not (tmp_path / "cifar_typo").exists()  # the mistyped folder is not left behind


# ------------------------------------------------------------------------------------ bad numbers
def test_an_absurd_localisation_smoothing_window_is_exact_without_the_memory():
    from bcos.errors import ConfigError
    from bcos.explain.localisation import cell_fractions
    from bcos.explain.localisation.pointing_game import smooth_attributions

    torch.manual_seed(0)
    maps = torch.randn(2, 12, 12, dtype=torch.float64)
    direct = torch.nn.functional.avg_pool2d(maps[:, None], 31, stride=1, padding=15)[:, 0]  # 31 > 2*12-1: whole image
    torch.testing.assert_close(smooth_attributions(maps, 31), direct)
    huge = smooth_attributions(maps, 200_001)  # unbounded, this pads to 200,012² pixels (320 GB)
    torch.testing.assert_close(huge, direct * (31 / 200_001) ** 2)
    torch.testing.assert_close(cell_fractions(maps, 2, smooth=200_001), cell_fractions(maps, 2, smooth=23))
    for bad in (0, -3, 4, 2.5, float("nan"), True):
        with pytest.raises(ConfigError, match="smooth must be a positive odd integer"):
            smooth_attributions(maps, bad)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (dict(warmup_epochs=float("nan")), "warmup_epochs must be positive"),
        (dict(warmup_epochs=-1), "warmup_epochs must be positive"),
        (dict(name="steplr", step_size=0), "step_size must be a positive number of epochs, got 0"),
        (dict(name="steplr", step_size=float("nan")), "step_size must be a positive number of epochs, got nan"),
        (dict(epochs=float("inf")), "epochs must be positive, got inf"),
        (dict(warmup_decay=float("nan")), r"warmup_decay must be in \(0, 1\]"),
    ],
)
def test_nan_or_non_positive_schedule_lengths_are_config_errors(settings, message):
    from bcos.errors import ConfigError
    from bcos.optim import LRSchedulerFactory

    with pytest.raises(ConfigError, match=message):
        LRSchedulerFactory(**{"name": "cosineannealinglr", "epochs": 4, **settings})


def test_bad_numbers_on_the_command_line_are_one_line(tiny, tmp_path, capsys):
    flat = make_tiny_image_folder(tmp_path / "fruit", CLASSES, 3, splits=("all",), image_size=36) / "all"
    train = ["train", "--finetune", TINY_NAME, "--data-dir", str(flat), "--weights", str(tiny),
             "--base_directory", str(tmp_path / "runs"), "--fast_dev_run"]  # fmt: skip
    image = flat / "apple" / "0.png"
    explain = ["explain", str(image), "--model", TINY_NAME, "--weights", str(tiny), "--output", str(tmp_path / "out")]
    localise = ["localise", "--model", TINY_NAME, "--weights", str(tiny), "--device", "cpu", "--output_dir", str(tmp_path / "loc")]
    cases = [
        ([*train, "--lr", "nan"], "optimizer lr must be a non-negative number, got nan"),
        ([*train, "--lr", "-1"], "fine-tuning needs lr > 0"),
        ([*train, "--weight-decay", "nan"], "optimizer weight_decay must be a finite number, got nan"),
        ([*train, "--epochs", "0"], "fine-tuning epochs must be at least 1, got 0"),
        ([*train, "--batch-size", "0"], "fine-tuning batch_size must be at least 1, got 0"),
        ([*train, "--val-fraction", "nan"], "val_fraction must be between 0 and 1, got nan"),
        ([*train, "--num-workers", "-1"], "num_workers must be >= 0, got -1"),
        ([*explain, "--smooth", "-1"], "--smooth must be >= 0, got -1"),
        ([*explain, "--batch-size", "0"], "--batch-size must be at least 1, got 0"),
        ([*explain, "--top-k", "0"], "--top-k must be at least 1, got 0"),
        ([*localise, "--smooth", "4"], "smooth must be a positive odd integer (1 means no smoothing), got 4"),
        ([*localise, "--smooth", "-1"], "smooth must be a positive odd integer (1 means no smoothing), got -1"),
        ([*localise, "--smooth", "1", "--sample_size", "0"], "--sample_size must be at least 1, got 0"),
        ([*localise, "--smooth", "1", "--batch_size", "0"], "--batch_size must be at least 1, got 0"),
    ]
    for argv, message in cases:
        assert bcos_main(argv) == 2, argv
        err = capsys.readouterr().err
        assert _error_lines(err) == [f"error: {message}" + _error_lines(err)[0].split(message, 1)[1]], (argv, err)
        assert "Traceback" not in err
    assert not (tmp_path / "out").exists() and not (tmp_path / "loc").exists()
