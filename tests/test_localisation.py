"""The grid pointing game: configurations, grids, scores, summaries, and the command end to end.

The end-to-end tests train a small B-cos ResNet on the bundled digits once (module-scoped
fixture, through ``train.py``'s ``main`` with a test-only collection ``Digits/localisation_test``)
and run ``python -m interpretability.analyses.localisation``'s ``main`` on it.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

import bcos.experiments.utils.collections as collections_module
import bcos.experiments.utils.experiment as experiment_module
from bcos import models
from bcos.cli.localisation import main as localisation_main
from bcos.cli.localisation import submit_main
from bcos.data.presets import CIFAR10ClassificationPresetTest, CIFAR10ClassificationPresetTrain
from bcos.errors import ConfigError, InputError, UnknownNameError
from bcos.explain.localisation import (
    LOCALISATION_CONFIGS,
    LocalisationSummary,
    cell_fractions,
    evaluate_grids,
    get_localisation_config,
    grid_blocks,
    localisation_scores,
    make_grids,
    plot_scores,
    rank_by_confidence,
    ranking_from_plain,
    ranking_to_plain,
    smooth_attributions,
    weights_identity,
)
from bcos.models.registry import EvalTransformSpec
from bcos.modules import BinaryCrossEntropyLoss, norms
from bcos.optim import LRSchedulerFactory, OptimizerFactory

COLLECTION = "localisation_test"
EXPERIMENT = "resnet_tiny"
EPOCHS = 4
#: the result folder of the last checkpoint: Lightning's epoch index + 1, as in the reference
EPOCH_DIR = f"epoch_{EPOCHS}"


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Small models train and run fastest on one thread (a busy machine makes OpenMP threads spin)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


# --------------------------------------------------------------------------------------------
# configurations
# --------------------------------------------------------------------------------------------
def test_the_sixteen_analysis_configs():
    assert len(LOCALISATION_CONFIGS) == 16
    config = get_localisation_config("500_3x3")
    assert (config.sample_size, config.grid_size, config.n_imgs, config.do_rescale, config.conf_thresh) == (500, 3, 9, False, 0.5)
    assert config.baseline == pytest.approx(1 / 9)
    other = get_localisation_config("250_2x2_rescale_noconfthresh")
    assert (other.sample_size, other.grid_size, other.do_rescale, other.conf_thresh) == (250, 2, True, 0.0)
    assert {c.name for c in LOCALISATION_CONFIGS.values()} == set(LOCALISATION_CONFIGS)
    with pytest.raises(UnknownNameError, match="did you mean '500_3x3'"):
        get_localisation_config("500_3x3x")


# --------------------------------------------------------------------------------------------
# confidences and grid blocks
# --------------------------------------------------------------------------------------------
class _FixedLogits(nn.Module):
    """Returns the logits stored for each image (images carry their index in pixel [0, 0, 0])."""

    def __init__(self, logits: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("table", logits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.table[x[:, 0, 0, 0].long()]


def test_rank_by_confidence_keeps_correct_images_most_confident_first():
    logits = torch.tensor([[3.0, 0.0], [5.0, 0.0], [0.0, 1.0], [2.0, 4.0], [1.0, 0.0]])
    labels = torch.tensor([0, 0, 0, 1, 0])  # image 2 is misclassified
    images = torch.arange(5.0)[:, None, None, None].expand(5, 1, 2, 2)
    batches = [(images[:3], labels[:3]), (images[3:], labels[3:])]
    ranking = rank_by_confidence(_FixedLogits(logits), batches, num_classes=2)
    assert [i for i, _, _ in ranking[0]] == [1, 0, 4]
    assert [i for i, _, _ in ranking[1]] == [3]
    assert ranking[0][0][1] == 5.0
    # probabilities: the model has no to_probabilities, so a softmax
    assert ranking[1][0][2] == pytest.approx(torch.softmax(torch.tensor([2.0, 4.0]), 0)[1].item())
    assert ranking_from_plain(json.loads(json.dumps(ranking_to_plain(ranking)))) == ranking
    with pytest.raises(InputError, match="3 classes"):
        rank_by_confidence(_FixedLogits(logits), batches, num_classes=3)


def _ranking(num_classes: int, per_class: int) -> dict:
    # image index = class * 100 + rank; probability falls with the rank
    return {
        c: [(c * 100 + r, 10.0 - r, 1.0 - r / (per_class + 1)) for r in range(per_class)] for c in range(num_classes)
    }


def test_grid_blocks_use_distinct_classes_and_every_image_once():
    ranking = _ranking(num_classes=12, per_class=5)
    blocks = grid_blocks(ranking, grid_size=3, conf_thresh=0.0)
    used = [i for block in blocks for i in block]
    assert len(used) == len(set(used))
    # blocks are drawn while 9 classes still have images: afterwards fewer than 9 do
    left = {c for c in range(12) if sum(i // 100 == c for i in used) < 5}
    assert len(blocks) <= 60 // 9 and len(left) < 9
    for block in blocks:
        assert len(block) == 9 and len({i // 100 for i in block}) == 9
    # each class's images come most confident first
    for c in range(12):
        ranks = [i % 100 for i in used if i // 100 == c]
        assert ranks == sorted(ranks) == list(range(len(ranks)))
    assert grid_blocks(ranking, 3, 0.0) == blocks  # seeded
    assert grid_blocks(ranking, 3, 0.0, seed=1) != blocks
    assert grid_blocks(ranking, 3, 0.0, max_grids=2) == blocks[:2]


def test_grid_blocks_respect_the_confidence_threshold():
    ranking = _ranking(num_classes=4, per_class=4)  # probabilities 1.0, 0.8, 0.6, 0.4
    blocks = grid_blocks(ranking, grid_size=2, conf_thresh=0.5)
    assert len(blocks) == 3 and all(i % 100 < 3 for block in blocks for i in block)
    assert len(grid_blocks(ranking, grid_size=2, conf_thresh=0.0)) == 4
    assert grid_blocks(_ranking(3, 4), grid_size=2, conf_thresh=0.0) == []  # too few classes


# --------------------------------------------------------------------------------------------
# grids and scores
# --------------------------------------------------------------------------------------------
def test_make_grids_is_row_major():
    images = torch.arange(9.0)[None, :, None, None, None].expand(1, 9, 2, 4, 4)
    grid = make_grids(images, 3)
    assert grid.shape == (1, 2, 12, 12)
    for k in range(9):
        row, column = divmod(k, 3)
        assert (grid[0, :, 4 * row : 4 * row + 4, 4 * column : 4 * column + 4] == k).all()


def test_scores_are_the_positive_share_of_the_own_cell():
    g = 2
    maps = torch.zeros(1, 4, 8, 8)
    maps[0, 0, :4, :4] = 1.0  # target 0: all inside its own cell (top left)
    maps[0, 1] = 1.0  # target 1: uniform
    maps[0, 2, 4:, :4] = 3.0  # target 2: cell 2 (bottom left) ...
    maps[0, 2, :4, :4] = 1.0  # ... and a quarter of that in cell 0 ...
    maps[0, 2, 4:, 4:] = -100.0  # ... negative evidence does not count
    # target 3: no positive attribution at all -> 0
    maps[0, 3] = -1.0
    scores = localisation_scores(maps, g)
    torch.testing.assert_close(scores, torch.tensor([[1.0, 0.25, 0.75, 0.0]]))
    channels = torch.stack([maps, torch.zeros_like(maps)], dim=2)  # [B, T, C, H, W] is summed over C
    torch.testing.assert_close(localisation_scores(channels, g), scores)
    fractions = cell_fractions(maps, g)
    torch.testing.assert_close(fractions[0, 2], torch.tensor([0.25, 0.0, 0.75, 0.0]))


def test_smoothing_is_an_odd_same_size_average():
    maps = torch.zeros(1, 1, 5, 5)
    maps[0, 0, 2, 2] = 9.0
    smoothed = smooth_attributions(maps, 3)
    assert smoothed.shape == maps.shape
    torch.testing.assert_close(smoothed[0, 0, 1:4, 1:4], torch.ones(3, 3))
    assert smoothed.sum() == pytest.approx(9.0)
    assert smooth_attributions(maps, 1) is maps
    for bad in (0, 2, -1, 1.5):
        with pytest.raises(ConfigError, match="odd"):
            smooth_attributions(maps, bad)


class _ClassCodedData:
    """Image of class c: a 4x4 image whose pixels are all c + 1 (so an explainer can find it)."""

    def __init__(self, labels: list[int]) -> None:
        self.labels = labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int):
        label = self.labels[index]
        return torch.full((1, 4, 4), float(label + 1)), label


class _OracleExplainer:
    """Attributes each target to the pixels showing its class code (the perfect explanation)."""

    def attribute_selection(self, grids: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        codes = (targets + 1).float()[:, :, None, None, None]
        return (grids[:, None] == codes).float()  # [B, T, 1, H, W]


class _UniformExplainer:
    def attribute_selection(self, grids: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return torch.ones(grids.shape[0], targets.shape[1], 1, *grids.shape[-2:])


def test_evaluate_grids_aligns_targets_and_cells():
    data = _ClassCodedData([c % 6 for c in range(24)])
    ranking = {c: [(i, 1.0, 1.0) for i in range(24) if i % 6 == c] for c in range(6)}
    blocks = grid_blocks(ranking, 2, 0.5, max_grids=5)
    progress = []
    oracle = evaluate_grids(_OracleExplainer(), data, blocks, 2, grids_per_batch=2, on_progress=lambda d, t: progress.append((d, t)))
    assert oracle.shape == (5, 4) and np.allclose(oracle, 1.0)
    assert progress == [(2, 5), (4, 5), (5, 5)]
    uniform = evaluate_grids(_UniformExplainer(), data, blocks, 2, smooth=3)
    assert np.allclose(uniform.mean(), 0.25, atol=0.02)  # the zero padding of the smoothing shifts it a little
    with pytest.raises(InputError, match="same class"):
        evaluate_grids(_OracleExplainer(), data, [[0, 6, 1, 2]], 2)


def test_summary_and_plot():
    scores = np.array([[0.0, 0.5], [1.0, 0.25]])
    summary = LocalisationSummary.from_scores(scores, grid_size=3)
    assert summary.count == 4 and summary.mean == pytest.approx(0.4375) and summary.median == pytest.approx(0.375)
    assert (summary.q25, summary.q75, summary.min, summary.max) == pytest.approx((0.1875, 0.625, 0.0, 1.0))
    assert summary.baseline == pytest.approx(1 / 9)
    assert "mean 0.4375" in summary.format() and set(summary.to_dict()) >= {"mean", "median", "q25", "q75", "count"}
    empty = LocalisationSummary.from_scores(np.zeros((0, 9)), 3)
    assert empty.count == 0 and math.isnan(empty.mean)
    figure = plot_scores(scores, summary, "test")
    assert figure.axes[0].get_title() == "test"


# --------------------------------------------------------------------------------------------
# end to end on a model trained on the digits
# --------------------------------------------------------------------------------------------
def _get_model(model_config):
    return models.BcosResNet(models.BasicBlock, [1, 1, 1], small_inputs=True, **model_config["args"])


def _tiny_digits_config() -> dict:
    return dict(
        data=dict(
            train_transform=CIFAR10ClassificationPresetTrain(is_bcos=True, hflip_prob=0.0, padding=2),
            test_transform=CIFAR10ClassificationPresetTest(is_bcos=True),
            batch_size=32,
            num_workers=0,
            num_classes=10,
        ),
        model=dict(
            is_bcos=True,
            name="tiny_resnet",
            args=dict(num_classes=10, inplanes=8, norm_layer=norms.NoBias(norms.BatchNormUncentered2d)),
        ),
        criterion=BinaryCrossEntropyLoss(),
        test_criterion=BinaryCrossEntropyLoss(),
        optimizer=OptimizerFactory(name="Adam", lr=1e-2),
        lr_scheduler=LRSchedulerFactory(name="cosineannealinglr", epochs=EPOCHS),
        trainer=dict(max_epochs=EPOCHS, num_sanity_val_steps=0, enable_model_summary=False),
    )


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """A run folder of a small B-cos ResNet trained for a few epochs on the digits (through train.py)."""
    from bcos.cli.train import main as train_main

    root = tmp_path_factory.mktemp("localisation")
    configs = {EXPERIMENT: _tiny_digits_config()}
    original = collections_module.get_configs_and_model_factory

    def lookup(dataset, base_network):
        if (dataset, base_network) == ("Digits", COLLECTION):
            return configs, _get_model
        return original(dataset, base_network)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(collections_module, "get_configs_and_model_factory", lookup)
        patch.setattr(experiment_module, "get_configs_and_model_factory", lookup)
        argv = ["--dataset", "Digits", "--base_network", COLLECTION, "--experiment_name", EXPERIMENT]
        assert train_main([*argv, "--base_directory", str(root / "experiments"), "--refresh_rate", "1000"]) == 0
        yield root / "experiments" / "Digits" / COLLECTION / EXPERIMENT


def _analyse(run: Path, *extra: str, grids: int = 2) -> int:
    # a model trained for three epochs is rarely confident (sigmoid > 0.5): no confidence threshold
    argv = ["--save_path", str(run), "--analysis_config", "500_3x3_noconfthresh", "--smooth", "1"]
    return localisation_main([*argv, "--sample_size", str(grids), "--batch_size", "18", "--device", "cpu", *extra])


def _trained_model(run: Path) -> torch.nn.Module:
    state = torch.load(run / "last.ckpt", weights_only=True)["state_dict"]
    model = _get_model(_tiny_digits_config()["model"])
    model.load_state_dict({k.removeprefix("model."): v for k, v in state.items() if k.startswith("model.")})
    return model


def checkpoint_dir(run: Path) -> Path:
    """``<run>/localisation_analysis/epoch_<E>-<weights sha256 prefix>`` of the run's last checkpoint."""
    return run / "localisation_analysis" / f"{EPOCH_DIR}-{weights_identity(_trained_model(run))[:10]}"


def out_dir(run: Path, explainer: str, smooth: int = 1, config: str = "default", grids: int = 2) -> Path:
    analysis = f"500_3x3_noconfthresh+sample_size={grids}"
    return checkpoint_dir(run) / analysis / explainer / f"smooth-{smooth}" / config


def test_localisation_command_end_to_end(trained_run, capsys):
    assert _analyse(trained_run, grids=6) == 0
    output = capsys.readouterr().out
    assert "Calculating confidences" in output
    summary = json.loads((out_dir(trained_run, "Ours", grids=6) / "summary.json").read_text())
    grids = summary["grids"]
    assert 4 <= grids <= 6 and summary["requested_grids"] == 6
    assert f"localisation score over {9 * grids} targets" in output

    epoch_dirs = [p.name for p in (trained_run / "localisation_analysis").iterdir()]
    assert epoch_dirs == [checkpoint_dir(trained_run).name] and epoch_dirs[0].startswith(f"{EPOCH_DIR}-")
    out = out_dir(trained_run, "Ours", grids=6)
    scores = np.loadtxt(out / "localisation_metric.np")
    assert scores.shape == (9 * grids,) and ((0 <= scores) & (scores <= 1)).all()
    assert summary["count"] == 9 * grids
    assert summary["mean"] == pytest.approx(scores.mean()) and summary["baseline"] == pytest.approx(1 / 9)
    # the B-cos explanation points at the right digit far more often than chance
    assert summary["mean"] > 2 * summary["baseline"], summary
    log = (out / "config.log").read_text()
    assert re.search(r"^explainer_name: Ours$", log, re.M) and re.search(r"^grid_size: 3$", log, re.M)
    assert (out / "scores.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    confidences = json.loads((checkpoint_dir(trained_run) / "confidences.json").read_text())
    assert confidences["dataset_size"] == 360 and set(confidences["ranking"]) == {str(c) for c in range(10)}

    # the second run re-uses the cached confidences, and gets the same grids and scores
    assert _analyse(trained_run, grids=6) == 0
    assert "Loading stored confidences" in capsys.readouterr().out
    np.testing.assert_allclose(np.loadtxt(out / "localisation_metric.np"), scores, rtol=1e-5, atol=1e-6)
    assert _analyse(trained_run, "--force_confidence_calculation", grids=1) == 0
    assert "Calculating confidences (forced)" in capsys.readouterr().out


def test_run_localisation_is_a_library_function(trained_run, capsys):
    from bcos.explain.localisation import LocalisationOptions, run_localisation

    lines: list[str] = []
    options = LocalisationOptions(
        save_path=trained_run, analysis_config="500_2x2_noconfthresh", explainer_name="IxG",
        smooth=1, sample_size=2, batch_size=8, device="cpu", log=lines.append,
    )  # fmt: skip
    result = run_localisation(options)
    assert capsys.readouterr().out == ""  # progress goes to the given log, nothing is printed
    assert any(line.startswith("Localisation analysis 500_2x2_noconfthresh") for line in lines)
    expected = checkpoint_dir(trained_run) / "500_2x2_noconfthresh+sample_size=2" / "IxG" / "smooth-1" / "default"
    assert result.output_dir == expected and result.grids == 2 and result.config.grid_size == 2
    assert result.scores.shape == (2, 4)
    assert result.summary.count == 8 and result.summary.mean == pytest.approx(float(result.scores.mean()))
    written = json.loads((expected / "summary.json").read_text())
    assert written["mean"] == pytest.approx(result.summary.mean)
    assert sorted(p.name for p in expected.iterdir()) == ["config.log", "localisation_metric.np", "scores.png", "summary.json"]
    with pytest.raises(ConfigError, match="either --save_path"):
        run_localisation(LocalisationOptions(smooth=1))


def test_localisation_other_explainers_and_options(trained_run):
    assert _analyse(trained_run, "--explainer_name", "GCam", "--smooth", "3") == 0
    gcam = out_dir(trained_run, "GCam", smooth=3)
    assert json.loads((gcam / "summary.json").read_text())["count"] == 18
    assert _analyse(trained_run, "--explainer_name", "RISE", "--explainer_option", "n=32", "--explainer_option", "cache_dir=''") == 0
    rise = out_dir(trained_run, "RISE", config="default+cache_dir=,n=32")
    assert (rise / "localisation_metric.np").is_file()
    assert "explainer_options: {'n': 32, 'cache_dir': ''}" in (rise / "config.log").read_text()


def test_localisation_rescale_config_shrinks_the_images(trained_run):
    argv = ["--save_path", str(trained_run), "--analysis_config", "250_2x2_rescale_noconfthresh", "--smooth", "1"]
    assert localisation_main([*argv, "--sample_size", "2", "--device", "cpu"]) == 0
    out = checkpoint_dir(trained_run) / "250_2x2_rescale_noconfthresh+sample_size=2" / "Ours" / "smooth-1" / "default"
    assert json.loads((out / "summary.json").read_text())["count"] == 8
    assert "do_rescale: True" in (out / "config.log").read_text()


def test_localisation_command_errors(trained_run, tmp_path, capsys):
    from bcos.cli.errors import run_cli

    def run(*argv: str) -> tuple[int, str]:
        status = run_cli(localisation_main, list(argv))
        return status, capsys.readouterr().err

    status, err = run("--save_path", str(trained_run), "--smooth", "1", "--explainer_name", "Gcam")
    assert status == 2 and "did you mean 'GCam'" in err
    status, err = run("--save_path", str(trained_run), "--smooth", "2")
    assert status == 2 and "odd" in err
    status, err = run("--save_path", str(trained_run), "--smooth", "1", "--analysis_config", "500_4x4")
    assert status == 2 and "unknown analysis config" in err
    status, err = run("--smooth", "1")
    assert status == 2 and "--save_path" in err and "--model" in err
    status, err = run("--save_path", str(tmp_path / "nowhere"), "--smooth", "1")
    assert status == 2 and "not a folder" in err
    status, err = run("--model", "resnet18", "--weights", str(tmp_path / "missing.pth"), "--smooth", "1")
    assert status == 2 and "missing.pth" in err


def test_localisation_of_registry_weights_writes_to_the_output_dir(trained_run, tmp_path, monkeypatch):
    """``--model NAME --weights PATH``: a registry architecture with local weights (here stubbed)."""
    import bcos.models.registry as registry

    state = torch.load(trained_run / "last.ckpt", weights_only=True)["state_dict"]
    trained = _get_model(_tiny_digits_config()["model"])
    trained.load_state_dict({k.removeprefix("model."): v for k, v in state.items() if k.startswith("model.")})
    weights = tmp_path / "tiny.pth"
    torch.save(trained.state_dict(), weights)

    def create_model(name, pretrained=False, weights=None, **kwargs):
        built = _get_model(_tiny_digits_config()["model"])
        built.load_state_dict(torch.load(weights, weights_only=True))
        built.pretrained_config = SimpleNamespace(transform=EvalTransformSpec(resize_size=32, crop_size=32))
        return built

    monkeypatch.setattr(registry, "create_model", create_model)
    out_dir = tmp_path / "pretrained_out"
    argv = ["--model", "resnet18", "--weights", str(weights), "--dataset", "Digits", "--output_dir", str(out_dir)]
    argv += ["--analysis_config", "500_3x3_noconfthresh"]
    assert localisation_main([*argv, "--smooth", "1", "--sample_size", "2", "--device", "cpu"]) == 0
    label = f"weights-tiny-{weights_identity(trained)[:10]}"
    summary = out_dir / "localisation_analysis" / label / "500_3x3_noconfthresh+sample_size=2" / "Ours" / "smooth-1" / "default" / "summary.json"
    assert json.loads(summary.read_text())["count"] == 18


def test_submitit_launcher_runs_every_combination(trained_run, tmp_path):
    argv = ["--save_path", str(trained_run), "--smooth", "1", "3", "--analysis_config", "500_2x2_noconfthresh"]
    argv += ["--sample_size", "1", "--device", "cpu", "--timeout_min", "5", "--cluster", "debug"]
    assert submit_main([*argv, "--log_folder", str(tmp_path / "logs")]) == 0
    for smooth in (1, 3):
        out = checkpoint_dir(trained_run) / "500_2x2_noconfthresh+sample_size=1" / "Ours" / f"smooth-{smooth}" / "default"
        assert json.loads((out / "summary.json").read_text())["count"] == 4


# ------------------------------------------------------------------------------------ results never replace others
def test_results_are_keyed_by_weights_sample_size_and_options_and_stay_inside(trained_run, tmp_path, capsys):
    """Other weights of the same epoch, another sample size, or an option value that looks like a path
    never replace a run's results or write outside its folder (issue 13)."""
    run = tmp_path / "experiments" / "Digits" / COLLECTION / EXPERIMENT
    shutil.copytree(trained_run, run, ignore=shutil.ignore_patterns("localisation_analysis"))
    assert _analyse(run, grids=1) == 0
    own = out_dir(run, "Ours", grids=1)
    own_files = {p.name: p.read_bytes() for p in own.iterdir()}
    assert sorted(own_files) == ["config.log", "localisation_metric.np", "scores.png", "summary.json"]

    # a checkpoint of another run at the same epoch: own folder, own confidences, the run's results untouched
    checkpoint = torch.load(run / "last.ckpt", weights_only=True)
    first = next(v for v in checkpoint["state_dict"].values() if v.is_floating_point() and v.numel() > 1)
    first.view(-1)[0] += 1e-3  # other weights, the same predictions
    other = tmp_path / "other" / "last.ckpt"
    other.parent.mkdir()
    torch.save(checkpoint, other)
    capsys.readouterr()
    assert _analyse(run, "--weights", str(other), grids=1) == 0
    assert "Calculating confidences" in capsys.readouterr().out  # not the run's cached ones
    folders = sorted(p.name for p in (run / "localisation_analysis").iterdir())
    assert len(folders) == 2 and all(name.startswith(f"{EPOCH_DIR}-") for name in folders)
    other_dir = next(run / "localisation_analysis" / name for name in folders if name != checkpoint_dir(run).name)
    cached = json.loads((other_dir / "confidences.json").read_text())
    assert cached["weights_sha256"] != json.loads((checkpoint_dir(run) / "confidences.json").read_text())["weights_sha256"]
    assert {p.name: p.read_bytes() for p in own.iterdir()} == own_files

    # a smaller sample size gets its own folder
    assert _analyse(run, grids=2) == 0
    assert out_dir(run, "Ours", grids=2).is_dir() and {p.name: p.read_bytes() for p in own.iterdir()} == own_files

    # an option value with '/' and '..' is reduced to one safe folder name inside the run folder
    outside = tmp_path / "outside"
    value = f"/../../..{outside}"
    assert _analyse(run, "--explainer_name", "RISE", "--explainer_option", "n=8", "--explainer_option", f"cache_dir={value}", grids=1) == 0
    assert not any(p.name in own_files for p in outside.rglob("*"))  # RISE may cache its masks there, nothing else
    (written,) = [p.parent for p in run.rglob("summary.json") if "RISE" in p.parts]
    assert written.parents[3] == checkpoint_dir(run)
    assert written.name.startswith("default+cache_dir=_.._.._.._") and "/" not in written.name


def test_a_failed_write_leaves_the_results_marked_incomplete(trained_run, tmp_path, monkeypatch, capsys):
    """Disk full while writing the results (a failing writer): one line, exit 2, INCOMPLETE marker, no temporaries."""
    import errno

    import bcos.atomic_io as atomic_io
    from bcos.cli.errors import run_cli

    run = tmp_path / "experiments" / "Digits" / COLLECTION / EXPERIMENT
    shutil.copytree(trained_run, run, ignore=shutil.ignore_patterns("localisation_analysis"))
    real_fsync = os.fsync

    def disk_full_for_results(fd: int) -> None:
        if os.readlink(f"/proc/self/fd/{fd}").endswith(".tmp") and "summary.json" in os.readlink(f"/proc/self/fd/{fd}"):
            raise OSError(errno.ENOSPC, "No space left on device")
        real_fsync(fd)

    monkeypatch.setattr(atomic_io.os, "fsync", disk_full_for_results)
    argv = ["--save_path", str(run), "--analysis_config", "500_3x3_noconfthresh", "--smooth", "1", "--sample_size", "1", "--device", "cpu"]
    assert run_cli(localisation_main, argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: cannot write") and "no space left on device" in err and len(err.splitlines()) == 1
    out = out_dir(run, "Ours", grids=1)
    assert (out / "INCOMPLETE").is_file() and not (out / "summary.json").exists()
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]
    monkeypatch.setattr(atomic_io.os, "fsync", real_fsync)
    assert run_cli(localisation_main, argv) == 0  # the next run completes the folder and removes the marker
    assert sorted(p.name for p in out.iterdir()) == ["config.log", "localisation_metric.np", "scores.png", "summary.json"]
