"""``python -m bcos.demo``: the Digits job with the pointing game, the Fashion-MNIST job, its errors."""

from __future__ import annotations

import re

import pytest

import bcos.data.fashion_mnist as fm
from bcos import demo

from helpers_data import tiny_fashion_mnist

ACCURACY_LINE = re.compile(r"^Test accuracy: \d+\.\d\d% top-1 \((\d+)/(\d+)\)$")
LOCALISATION_LINE = re.compile(
    r"^Localisation \((\d+) grids of 3x3, baseline 0\.111\): "
    + ", ".join(rf"{name} (\d\.\d\d\d)" for name in demo.LOCALISATION_EXPLAINERS)
    + "$"
)


@pytest.mark.slow
def test_the_digits_demo_trains_explains_and_localises(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert demo.main(["--localise", "--grids", "2"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    accuracy, localisation = ACCURACY_LINE.match(lines[-2]), LOCALISATION_LINE.match(lines[-1])
    assert accuracy and localisation, lines[-2:]
    assert int(accuracy.group(1)) >= 0.9 * 360 and accuracy.group(2) == "360"
    assert localisation.group(1) == "2"
    scores = [float(s) for s in localisation.groups()[1:]]
    assert all(0.0 <= s <= 1.0 for s in scores)
    run = tmp_path / "experiments" / "Digits" / "bcos_demo" / "resnet_8_bnu-linear"
    summaries = sorted(run.glob("localisation_analysis/*/*/*/smooth-1/*/summary.json"))
    assert {p.parts[-4] for p in summaries} == set(demo.LOCALISATION_EXPLAINERS)
    assert (tmp_path / "demo_output" / "explanations.png").is_file()
    assert len(list((tmp_path / "demo_output").glob("digit_*.png"))) == 10


def test_the_fashion_mnist_demo_reads_data_root(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(fm, "FASHION_MNIST_DEBIAN_FOLDER", tmp_path / "no-such-package")
    fm._load_split.cache_clear()
    tiny_fashion_mnist(tmp_path / "data", n_train=40, n_test=20)
    monkeypatch.setenv("DATA_ROOT", str(tmp_path / "data"))
    monkeypatch.chdir(tmp_path)
    try:
        status = demo.main(["--dataset", "FashionMNIST", "--experiment_name", "resnet_8_bnu-linear-epochs=1"])
    finally:
        fm._load_split.cache_clear()
    assert status == 0
    out = capsys.readouterr().out.strip().splitlines()
    match = ACCURACY_LINE.match(out[-1])
    assert match and match.group(2) == "20", out[-1]
    assert (tmp_path / "experiments" / "FashionMNIST" / "bcos_fast" / "resnet_8_bnu-linear-epochs=1" / "last.ckpt").is_file()
    pictures = sorted(p.name for p in (tmp_path / "demo_output").glob("image_*.png"))
    assert pictures == [f"image_{label}.png" for label in range(10)]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--grids", "0"], "--grids must be at least 1"),
        (["--smooth", "2"], "--smooth must be a positive odd number"),
        (["--threads", "0"], "--threads must be at least 1"),
    ],
)
def test_bad_options_are_one_line(argv, message, capsys):
    assert demo.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_an_unknown_dataset_is_refused_by_the_parser(capsys):
    with pytest.raises(SystemExit) as exit_info:
        demo.main(["--dataset", "FashionMnist"])
    assert exit_info.value.code == 2
    assert "FashionMNIST" in capsys.readouterr().err
