"""The logger files bcos writes (CSV metrics, hparams.yaml) are atomic and the same as Lightning's.

Faults are a failing writer (``os.fsync`` inside ``bcos.atomic_io`` raising ``ENOSPC``) and a real
``SIGKILL`` of a process in the middle of a save.
"""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
from argparse import Namespace
from pathlib import Path

import pytest
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter

import bcos.atomic_io as atomic_io
from bcos.errors import OutputError
from bcos.training.loggers import AtomicCSVLogger, AtomicExperimentWriter, AtomicTensorBoardLogger

REPO = Path(__file__).resolve().parents[1]
HPARAMS = {"dataset": "Digits", "lr": 0.01, "layers": [1, 2], "nested": {"a": None, "b": True}}


def _log(writer, first: int, last: int, new_key_at: int | None = None) -> None:
    for step in range(first, last):
        metrics = {"train_loss": 1.0 / (step + 1), "epoch": step // 4}
        if new_key_at is not None and step >= new_key_at:
            metrics["val_acc1"] = step / 10  # a column that appears later: Lightning rewrites the header
        writer.log_metrics(metrics, step)


def test_the_atomic_writer_writes_the_same_files_as_lightnings(tmp_path):
    ours, theirs = AtomicExperimentWriter(str(tmp_path / "ours")), ExperimentWriter(str(tmp_path / "theirs"))
    for writer in (ours, theirs):
        writer.log_hparams(HPARAMS)
        _log(writer, 0, 3)
        writer.save()
        _log(writer, 3, 9, new_key_at=6)
        writer.save()
        writer.save()  # nothing new: no change
        _log(writer, 9, 11, new_key_at=0)
        writer.save()
    for name in ("metrics.csv", "hparams.yaml"):
        assert (tmp_path / "ours" / name).read_bytes() == (tmp_path / "theirs" / name).read_bytes()
    assert sorted(p.name for p in (tmp_path / "ours").iterdir()) == ["hparams.yaml", "metrics.csv"]


def test_a_failing_metrics_write_is_one_line_and_keeps_the_previous_file(tmp_path, monkeypatch):
    writer = AtomicExperimentWriter(str(tmp_path))
    _log(writer, 0, 4)
    writer.save()
    previous = (tmp_path / "metrics.csv").read_bytes()

    real_fsync = os.fsync

    def disk_full(fd: int) -> None:
        if os.readlink(f"/proc/self/fd/{fd}").endswith(".tmp"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_fsync(fd)

    monkeypatch.setattr(atomic_io.os, "fsync", disk_full)
    _log(writer, 4, 8, new_key_at=4)
    with pytest.raises(OutputError) as caught:
        writer.save()
    message = str(caught.value)
    assert message.startswith(f"cannot write '{tmp_path / 'metrics.csv'}': no space left on device;") and "\n" not in message
    assert (tmp_path / "metrics.csv").read_bytes() == previous
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.csv"]  # no temporary left
    with pytest.raises(OutputError, match="hparams.yaml': no space left on device"):
        writer.log_hparams(HPARAMS)
    assert not (tmp_path / "hparams.yaml").exists()

    monkeypatch.undo()  # disk space freed: the next save writes every row, the failed ones too
    writer.save()
    lines = (tmp_path / "metrics.csv").read_text().splitlines()
    assert lines[0] == "epoch,step,train_loss,val_acc1" and len(lines) == 1 + 8


def test_a_save_killed_mid_write_leaves_the_previous_metrics_file(tmp_path):
    code = (
        "import os, signal, sys\n"
        "import bcos.atomic_io as atomic_io\n"
        "from bcos.training.loggers import AtomicExperimentWriter\n"
        "writer = AtomicExperimentWriter(sys.argv[1])\n"
        "for step in range(100):\n"
        "    writer.log_metrics({'train_loss': 1.0 / (step + 1)}, step)\n"
        "writer.save()\n"
        "for step in range(100, 5000):\n"
        "    writer.log_metrics({'train_loss': 0.5, 'val_acc1': 0.25}, step)\n"
        "# killed after the new file is written in full, before it is renamed into place\n"
        "atomic_io.os.fsync = lambda fd: os.kill(os.getpid(), signal.SIGKILL)\n"
        "writer.save()\n"
    )
    result = subprocess.run([sys.executable, "-c", code, str(tmp_path)], cwd=REPO, timeout=120)
    assert result.returncode == -signal.SIGKILL
    lines = (tmp_path / "metrics.csv").read_text().splitlines()
    assert lines[0] == "step,train_loss" and len(lines) == 101  # the complete earlier version
    (temporary,) = [p for p in tmp_path.iterdir() if p.name != "metrics.csv"]
    assert atomic_io.is_temporary(temporary)
    assert atomic_io.remove_stale_temporaries(tmp_path) == [temporary]


def test_tensorboards_hparams_yaml_is_atomic_and_the_same_as_lightnings(tmp_path):
    ours = AtomicTensorBoardLogger(save_dir=str(tmp_path / "ours"), name="run")
    theirs = TensorBoardLogger(save_dir=str(tmp_path / "theirs"), name="run")
    for logger in (ours, theirs):
        logger.log_hyperparams(Namespace(**HPARAMS))
        logger.log_metrics({"train_loss": 0.5}, step=1)
        logger.save()
        logger.finalize("success")
    ours_yaml = tmp_path / "ours" / "run" / "version_0" / "hparams.yaml"
    assert ours_yaml.read_bytes() == (tmp_path / "theirs" / "run" / "version_0" / "hparams.yaml").read_bytes()
    events = [p.name for p in ours_yaml.parent.iterdir() if p.name.startswith("events.out.tfevents")]
    assert len(events) == 1  # the event stream itself is TensorBoard's own (append-only) file


def test_training_uses_the_atomic_loggers(tmp_path):
    from bcos.experiments.utils.run_folder import RunFolder
    from bcos.training.run import TrainOptions, _loggers

    options = TrainOptions("Digits", "bcos_demo", "x", base_directory=str(tmp_path), csv_logger=True, tensorboard_logger=True)
    loggers = _loggers(options, RunFolder(tmp_path / "Digits" / "bcos_demo" / "x"))
    assert [type(logger) for logger in loggers] == [AtomicCSVLogger, AtomicTensorBoardLogger]
    csv_logger = loggers[0]
    csv_logger.log_hyperparams({"lr": 0.1})
    csv_logger.log_metrics({"train_loss": 0.25}, step=0)
    csv_logger.save()
    assert isinstance(csv_logger.experiment, AtomicExperimentWriter)
    folder = tmp_path / "Digits" / "bcos_demo" / "x" / "csv_logs" / "version_0"
    assert (folder / "metrics.csv").read_text().splitlines() == ["step,train_loss", "0,0.25"]
    assert (folder / "hparams.yaml").read_text() == "lr: 0.1\n"
