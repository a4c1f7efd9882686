"""End-to-end training through ``train.py``'s ``main`` on a tiny CIFAR-10 in the real format.

A tiny test-only config collection ``CIFAR10/tiny_test`` (a 2-layer B-cos CNN) is patched into the
collection lookup, so each run takes seconds: files of a run, resume, ``--force-no-resume``, the
explanation logger, EMA, the NaN stop and the run-folder lock.
"""

from __future__ import annotations

import copy
import math
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))
from helpers_data import make_tiny_cifar10  # noqa: E402

import bcos.experiments.utils.collections as collections_module  # noqa: E402
import bcos.experiments.utils.experiment as experiment_module  # noqa: E402
from bcos.cli.train import main as train_main  # noqa: E402
from bcos.data.presets import CIFAR10ClassificationPresetTest, CIFAR10ClassificationPresetTrain  # noqa: E402
from bcos.experiments.utils.metrics import read_metric_file  # noqa: E402
from bcos.models.base import BcosUtilMixin  # noqa: E402
from bcos.modules import BcosConv2d, BinaryCrossEntropyLoss, LogitLayer  # noqa: E402
from bcos.optim import LRSchedulerFactory, OptimizerFactory  # noqa: E402
from bcos.training.run_lock import RunFolderLock  # noqa: E402

COLLECTION = "tiny_test"


class TinyBcosNet(BcosUtilMixin, nn.Module):
    """Two B-cos convolutions, a 1x1 B-cos classifier and global average pooling."""

    def __init__(self, num_classes: int = 10, width: int = 8) -> None:
        super().__init__()
        self.features = nn.Sequential(
            BcosConv2d(6, width, kernel_size=3, padding=1, stride=2),
            BcosConv2d(width, width, kernel_size=3, padding=1, stride=2),
        )
        self.classifier = BcosConv2d(width, num_classes, kernel_size=1)
        self.logit_layer = LogitLayer(logit_bias=-math.log(num_classes - 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logit_layer(self.classifier(self.features(x)).mean(dim=(2, 3)))


def get_model(model_config):
    return TinyBcosNet(**model_config.get("args", {}))


class NaNAfter(nn.Module):
    """BCE loss that turns NaN after ``ok_calls`` calls (simulates a diverging run)."""

    def __init__(self, ok_calls: int) -> None:
        super().__init__()
        self.ok_calls = ok_calls
        self.calls = 0
        self.loss = BinaryCrossEntropyLoss()

    def forward(self, outputs, targets):
        self.calls += 1
        loss = self.loss(outputs, targets)
        return loss * float("nan") if self.calls > self.ok_calls else loss


def tiny_config(epochs: int = 1, **extra) -> dict:
    config = dict(
        data=dict(
            train_transform=CIFAR10ClassificationPresetTrain(is_bcos=True),
            test_transform=CIFAR10ClassificationPresetTest(is_bcos=True),
            batch_size=32,
            num_workers=0,
            num_classes=10,
        ),
        model=dict(is_bcos=True, name="tiny", args=dict(num_classes=10)),
        criterion=BinaryCrossEntropyLoss(),
        test_criterion=BinaryCrossEntropyLoss(),
        optimizer=OptimizerFactory(name="Adam", lr=1e-2),
        lr_scheduler=LRSchedulerFactory(name="cosineannealinglr", epochs=4),
        trainer=dict(max_epochs=epochs, num_sanity_val_steps=0, enable_model_summary=False, log_every_n_steps=1),
    )
    config.update(extra)
    return config


@pytest.fixture(autouse=True)
def single_thread():
    """Tiny models run fastest on one thread (and several threads crawl on a busy machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def tiny_collection(monkeypatch, tmp_path):
    """Patch ``CIFAR10/tiny_test`` into the collection lookup; DATA_ROOT -> a tiny CIFAR-10."""
    configs = {
        "tiny": tiny_config(),
        "tiny_ema": tiny_config(ema=dict(steps=1, decay=0.9)),
        "tiny_nan": tiny_config(epochs=2, criterion=NaNAfter(ok_calls=2)),
    }
    original = collections_module.get_configs_and_model_factory

    def lookup(dataset, base_network):
        if (dataset, base_network) == ("CIFAR10", COLLECTION):
            return configs, get_model
        return original(dataset, base_network)

    monkeypatch.setattr(collections_module, "get_configs_and_model_factory", lookup)
    monkeypatch.setattr(experiment_module, "get_configs_and_model_factory", lookup)
    original_run_folder_config = collections_module.get_run_folder_config_function
    monkeypatch.setattr(
        collections_module, "get_run_folder_config_function",
        lambda dataset, base_network: None if base_network == COLLECTION else original_run_folder_config(dataset, base_network),
    )  # fmt: skip
    monkeypatch.setenv("DATA_ROOT", str(make_tiny_cifar10(tmp_path / "data", n_train=64, n_test=32)))
    monkeypatch.chdir(tmp_path)
    return configs


def train(tmp_path: Path, name: str, *extra: str) -> int:
    argv = ["--dataset", "CIFAR10", "--base_network", COLLECTION, "--experiment_name", name]
    return train_main([*argv, "--base_directory", str(tmp_path / "experiments"), "--refresh_rate", "100", *extra])


def run_folder(tmp_path: Path, name: str) -> Path:
    return tmp_path / "experiments" / "CIFAR10" / COLLECTION / name


def test_training_run_writes_checkpoints_metrics_config_and_explanations(tiny_collection, tmp_path):
    assert train(tmp_path, "tiny", "--csv_logger", "--explanation_logging") == 0
    folder = run_folder(tmp_path, "tiny")

    best = [p.name for p in folder.glob("epoch=*.ckpt")]
    assert len(best) == 1 and re.fullmatch(r"epoch=0-val_acc1=\d\.\d{4}\.ckpt", best[0])
    checkpoint = torch.load(folder / "last.ckpt", weights_only=True)  # plain data only
    assert checkpoint["epoch"] == 0 and checkpoint["global_step"] == 2
    assert any(key.startswith("model.features.0") for key in checkpoint["state_dict"])
    assert checkpoint["hyper_parameters"]["experiment_name"] == "tiny"
    assert "OptimizerFactory" in str(checkpoint["hyper_parameters"]["optimizer"]) or isinstance(
        checkpoint["hyper_parameters"]["optimizer"], dict
    )

    for name in ("eval_acc1", "eval_acc5", "train_acc1", "train_acc5"):
        rows = read_metric_file(folder / "metrics" / f"{name}.gz")
        assert rows.shape == (1, 2) and rows[0, 0] == 0 and 0.0 <= rows[0, 1] <= 1.0
    # the best checkpoint's name carries the same accuracy as the metrics file
    accuracy = float(best[0].split("val_acc1=")[1].removesuffix(".ckpt"))
    assert accuracy == pytest.approx(read_metric_file(folder / "metrics" / "eval_acc1.gz")[0, 1], abs=1e-4)

    from bcos.training.trainer import ClassificationLitModel

    reloaded = ClassificationLitModel.load_from_checkpoint(folder / "last.ckpt", map_location="cpu")
    key = next(k for k in checkpoint["state_dict"] if k.startswith("model."))
    assert torch.equal(reloaded.state_dict()[key], checkpoint["state_dict"][key])

    config_text = (folder / "config.txt").read_text()
    assert "experiment_name: 'tiny'" in config_text and "max_epochs: 1" in config_text
    assert (folder / "csv_logs" / "version_0" / "metrics.csv").exists()
    png = folder / "explanations" / "epoch_0.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_resume_continues_and_force_no_resume_starts_over(tiny_collection, tmp_path):
    folder = run_folder(tmp_path, "tiny")
    assert train(tmp_path, "tiny") == 0
    first_weights = torch.load(folder / "last.ckpt", weights_only=True)["state_dict"]

    tiny_collection["tiny"]["trainer"]["max_epochs"] = 2
    assert train(tmp_path, "tiny") == 0  # resumes from last.ckpt: only epoch 1 is trained
    resumed = torch.load(folder / "last.ckpt", weights_only=True)
    assert resumed["epoch"] == 1 and resumed["global_step"] == 4
    epochs = read_metric_file(folder / "metrics" / "eval_acc1.gz")[:, 0]
    np.testing.assert_array_equal(epochs, [0, 1])
    assert f"resumed_from: '{folder / 'last.ckpt'}'" in (folder / "config.txt").read_text()
    assert any(not torch.equal(first_weights[k], resumed["state_dict"][k]) for k in first_weights)

    assert train(tmp_path, "tiny", "--force-no-resume") == 0  # starts at epoch 0 again
    restarted = torch.load(folder / "last.ckpt", weights_only=True)
    assert restarted["epoch"] == 1 and restarted["global_step"] == 4
    archives = list((folder / "archived_runs").iterdir())
    assert len(archives) == 1 and (archives[0] / "last.ckpt").exists() and (archives[0] / "metrics").is_dir()
    np.testing.assert_array_equal(read_metric_file(folder / "metrics" / "eval_acc1.gz")[:, 0], [0, 1])


def test_last_checkpoint_is_rewritten_every_epoch_even_without_improvement(tiny_collection, tmp_path):
    # lr 0: the validation accuracy never improves, so after the first three epochs no best
    # checkpoint is written; last.ckpt must follow every epoch all the same
    tiny_collection["frozen"] = tiny_config(epochs=5, optimizer=OptimizerFactory(name="SGD", lr=0.0))
    assert train(tmp_path, "frozen") == 0
    folder = run_folder(tmp_path, "frozen")
    assert torch.load(folder / "last.ckpt", weights_only=True)["epoch"] == 4
    assert sorted(p.name.split("-")[0] for p in folder.glob("epoch=*.ckpt")) == ["epoch=0", "epoch=1", "epoch=2"]


def test_ema_run_saves_ema_weights_metrics_and_best_checkpoint(tiny_collection, tmp_path):
    assert train(tmp_path, "tiny_ema") == 0
    folder = run_folder(tmp_path, "tiny_ema")
    state = torch.load(folder / "last.ckpt", weights_only=True)["state_dict"]
    assert int(state["ema.n_averaged"]) == 2  # one update per optimizer step (steps=1)
    ema_keys = [k for k in state if k.startswith("ema.module.")]
    assert len(ema_keys) == len([k for k in state if k.startswith("model.")])
    assert read_metric_file(folder / "metrics" / "eval_acc1_ema.gz").shape == (1, 2)
    assert len(list(folder.glob("epoch=0-val_acc1_ema=*.ckpt"))) == 1


def test_nan_loss_stops_with_a_clear_error_and_keeps_the_last_good_checkpoint(tiny_collection, tmp_path, capsys):
    assert train(tmp_path, "tiny_nan") == 2
    err = capsys.readouterr().err
    assert "error: training stopped: the loss became nan at epoch 1" in err
    checkpoint = torch.load(run_folder(tmp_path, "tiny_nan") / "last.ckpt", weights_only=True)
    assert checkpoint["epoch"] == 0  # epoch 0 finished before the loss diverged
    assert all(torch.isfinite(v).all() for v in checkpoint["state_dict"].values() if v.is_floating_point())


def test_a_locked_run_folder_is_refused(tiny_collection, tmp_path, capsys):
    from bcos.experiments.utils.run_folder import RunFolder

    with RunFolderLock(RunFolder(run_folder(tmp_path, "tiny"))):
        assert train(tmp_path, "tiny") == 2
    assert "in use by another training" in capsys.readouterr().err
    assert not (run_folder(tmp_path, "tiny") / "last.ckpt").exists()


def test_unknown_names_are_user_errors(tiny_collection, tmp_path, capsys):
    assert train(tmp_path, "tinny") == 2
    assert "did you mean 'tiny'" in capsys.readouterr().err
    argv = ["--dataset", "CIFAR1O", "--base_network", COLLECTION, "--experiment_name", "tiny"]
    assert train_main(argv) == 2
    assert "did you mean 'CIFAR10'" in capsys.readouterr().err


def test_config_is_not_changed_by_training(tiny_collection, tmp_path):
    before = copy.deepcopy(tiny_collection["tiny"]["trainer"])
    assert train(tmp_path, "tiny", "--fast_dev_run") == 0
    assert tiny_collection["tiny"]["trainer"] == before
    assert not (run_folder(tmp_path, "tiny") / "last.ckpt").exists()  # fast_dev_run saves nothing


def test_precision_memory_format_and_logging_options(tiny_collection, tmp_path):
    options = ("--amp", "bf16", "--channels_last", "--track_grad_norm", "--csv_logger", "--tensorboard_logger")
    assert train(tmp_path, "tiny", *options) == 0
    folder = run_folder(tmp_path, "tiny")
    header = (folder / "csv_logs" / "version_0" / "metrics.csv").read_text().splitlines()[0]
    assert "gradients/total_norm_step" in header and "train_loss" in header and "val_acc1" in header
    assert list((folder / "tb_logs").rglob("events.out.tfevents.*"))  # absolute base dir: in the run folder
    assert "precision: 'bf16-mixed'" in (folder / "config.txt").read_text()


def test_demo_explanations_are_written(tmp_path):
    from bcos.data.digits import DigitsDataset
    from bcos.data.presets import CIFAR10ClassificationPresetTest
    from bcos.demo import _save_explanations

    dataset = DigitsDataset(train=False, transform=CIFAR10ClassificationPresetTest(is_bcos=True))
    grid = _save_explanations(TinyBcosNet(), dataset, tmp_path / "demo_output")
    assert grid.exists() and grid.read_bytes()[:4] == b"\x89PNG"
    singles = sorted(p.name for p in grid.parent.glob("digit_*.png"))
    assert singles == [f"digit_{label}.png" for label in range(10)]


# ------------------------------------------------------------------------------------ resume honesty (issue 13)
def test_resume_refuses_a_changed_schedule_or_another_architecture_in_one_line(tiny_collection, tmp_path, capsys):
    folder = run_folder(tmp_path, "tiny")
    assert train(tmp_path, "tiny") == 0
    saved = (folder / "last.ckpt").read_bytes()
    capsys.readouterr()

    # more epochs with the schedule stretched to match: the restored cosine schedule would hide it
    tiny_collection["tiny"]["trainer"]["max_epochs"] = 2
    tiny_collection["tiny"]["lr_scheduler"] = LRSchedulerFactory(name="cosineannealinglr", epochs=8)
    assert train(tmp_path, "tiny") == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: cannot resume from '{folder / 'last.ckpt'}': the config's lr_scheduler changed")
    assert "--force-no-resume" in err and len(err.splitlines()) == 1

    # more epochs than the unchanged cosine schedule has: its learning rate would climb back up
    tiny_collection["tiny"]["lr_scheduler"] = LRSchedulerFactory(name="cosineannealinglr", epochs=4)
    tiny_collection["tiny"]["trainer"]["max_epochs"] = 6
    assert train(tmp_path, "tiny") == 2
    err = capsys.readouterr().err.strip()
    assert "max_epochs is now 6, past the end of the cosine schedule's 4 epochs" in err and "--force-no-resume" in err

    tiny_collection["tiny"]["trainer"]["max_epochs"] = 2
    tiny_collection["tiny"]["model"] = dict(is_bcos=True, name="tiny", args=dict(num_classes=10, width=16))
    assert train(tmp_path, "tiny") == 2
    err = capsys.readouterr().err.strip()
    assert "holds another architecture" in err and "--force-no-resume" in err and len(err.splitlines()) == 1
    assert (folder / "last.ckpt").read_bytes() == saved  # nothing was touched

    assert train(tmp_path, "tiny", "--force-no-resume") == 0  # the named way out works


def test_fast_dev_run_never_touches_a_finished_runs_records(tiny_collection, tmp_path):
    folder = run_folder(tmp_path, "tiny")
    assert train(tmp_path, "tiny", "--explanation_logging") == 0
    records = {p.relative_to(folder): p.read_bytes() for p in folder.rglob("*") if p.is_file() and p.name != ".lock"}
    assert train(tmp_path, "tiny", "--fast_dev_run", "--explanation_logging") == 0
    after = {p.relative_to(folder): p.read_bytes() for p in folder.rglob("*") if p.is_file() and p.name != ".lock"}
    assert after == records


def test_disk_full_while_training_is_one_line_and_keeps_the_last_checkpoint(tiny_collection, tmp_path, monkeypatch, capsys):
    """A failing writer (os.fsync -> ENOSPC for checkpoints) stands in for a full disk: no traceback."""
    import errno
    import os

    import bcos.atomic_io as atomic_io

    folder = run_folder(tmp_path, "tiny")
    assert train(tmp_path, "tiny") == 0
    saved = (folder / "last.ckpt").read_bytes()
    tiny_collection["tiny"]["trainer"]["max_epochs"] = 2
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        if ".ckpt." in os.readlink(f"/proc/self/fd/{fd}"):
            raise OSError(errno.ENOSPC, "No space left on device")
        real_fsync(fd)

    monkeypatch.setattr(atomic_io.os, "fsync", fsync)
    capsys.readouterr()
    assert train(tmp_path, "tiny") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: cannot write '") and "no space left on device; free disk space" in err[-1]
    assert not any(line.startswith("Traceback") for line in err)
    assert (folder / "last.ckpt").read_bytes() == saved
    assert not [p for p in folder.iterdir() if p.name.endswith(".tmp")]
