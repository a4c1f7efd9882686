"""Unit tests of the training building blocks: EMA, AGC, atomic writes, the run lock, options."""

from __future__ import annotations

import argparse
import enum
import os

import numpy as np
import pytest
import torch
from torch import nn

from bcos.cli.errors import EXIT_USER_ERROR, run_cli
from bcos.errors import CheckpointError, ConfigError, UnknownNameError
from bcos.experiments.utils.run_folder import RunFolder
from bcos.training.agc import adaptive_clip_grad_, unitwise_norm
from bcos.training.atomic import AtomicCheckpointIO, atomic_open, atomic_write_text
from bcos.training.ema import ExponentialMovingAverage, adjusted_ema_decay
from bcos.training.run import TrainOptions, resolve_precision
from bcos.training.run_lock import RunFolderLock
from bcos.training.trainer import plain_data


# ------------------------------------------------------------------------------------------ EMA
def _small_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))


def test_ema_first_update_copies_then_averages():
    model = _small_model()
    ema = ExponentialMovingAverage(model, decay=0.9)
    with torch.no_grad():
        model[0].weight.fill_(1.0)
    ema.update_parameters(model)  # n_averaged == 0: plain copy
    assert torch.equal(ema.module[0].weight, model[0].weight)
    assert int(ema.n_averaged) == 1

    with torch.no_grad():
        model[0].weight.fill_(3.0)
        model[1].num_batches_tracked.fill_(7)
    ema.update_parameters(model)
    torch.testing.assert_close(ema.module[0].weight, torch.full((4, 3), 0.9 * 1.0 + 0.1 * 3.0))
    assert int(ema.module[1].num_batches_tracked) == 7  # integer buffers are copied
    assert not any(p.requires_grad for p in ema.parameters())
    assert "n_averaged" in ema.state_dict() and "module.0.weight" in ema.state_dict()


def test_ema_rejects_bad_decay_and_other_architecture():
    with pytest.raises(ConfigError):
        ExponentialMovingAverage(_small_model(), decay=1.5)
    ema = ExponentialMovingAverage(_small_model(), decay=0.5)
    with pytest.raises(ValueError):
        ema.update_parameters(nn.Linear(3, 4))


def test_adjusted_ema_decay_matches_torchvision_rule():
    # bcos_final_long: decay 0.99998, 32 steps, 128 per GPU on 8 GPUs, 600 epochs -> about 0.99891
    decay = adjusted_ema_decay(0.99998, steps=32, batch_size=128, world_size=8, max_epochs=600)
    assert decay == pytest.approx(1 - (1 - 0.99998) * 8 * 128 * 32 / 600)
    assert decay == pytest.approx(0.99891, abs=1e-5)
    assert adjusted_ema_decay(0.5, steps=100, batch_size=100, max_epochs=1) == 0.0  # alpha clamped to 1


# ------------------------------------------------------------------------------------------ AGC
def test_unitwise_norm_shapes():
    assert unitwise_norm(torch.ones(5)).shape == ()
    assert unitwise_norm(torch.ones(4, 3)).shape == (4, 1)
    conv = unitwise_norm(torch.ones(8, 2, 3, 3))
    assert conv.shape == (8, 1, 1, 1)
    torch.testing.assert_close(conv, torch.full((8, 1, 1, 1), 18**0.5))


def test_agc_clips_rows_relative_to_weight_norm():
    weight = nn.Parameter(torch.tensor([[3.0, 4.0], [1.0, 0.0]]))  # row norms 5 and 1
    weight.grad = torch.tensor([[0.01, 0.0], [10.0, 0.0]])  # row 0 small, row 1 too large
    adaptive_clip_grad_([weight], clip_factor=0.01)
    torch.testing.assert_close(weight.grad[0], torch.tensor([0.01, 0.0]))  # 0.01 < 0.05: kept
    torch.testing.assert_close(weight.grad[1], torch.tensor([0.01, 0.0]))  # rescaled to 0.01 * 1


def test_agc_uses_eps_for_zero_weights_and_skips_missing_grads():
    bias = nn.Parameter(torch.zeros(3))
    bias.grad = torch.tensor([1.0, 0.0, 0.0])
    untouched = nn.Parameter(torch.ones(2))
    adaptive_clip_grad_([bias, untouched], clip_factor=0.1, eps=1e-3)
    assert float(bias.grad.norm()) == pytest.approx(1e-4)
    assert untouched.grad is None


# ---------------------------------------------------------------------------- atomic writes, IO
def test_atomic_open_keeps_old_file_on_failure(tmp_path):
    target = tmp_path / "file.txt"
    atomic_write_text(target, "old")
    with pytest.raises(RuntimeError):
        with atomic_open(target, "wb") as handle:
            handle.write(b"partial")
            raise RuntimeError("crash while writing")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file.txt"]  # no temporary left


def test_atomic_checkpoint_io_round_trip_and_safe_load(tmp_path):
    io = AtomicCheckpointIO()
    path = tmp_path / "sub" / "last.ckpt"
    io.save_checkpoint({"state_dict": {"w": torch.ones(2)}, "epoch": 3}, path)
    loaded = io.load_checkpoint(path)
    assert loaded["epoch"] == 3 and torch.equal(loaded["state_dict"]["w"], torch.ones(2))

    unsafe = tmp_path / "unsafe.ckpt"
    torch.save({"object": _Unpicklable()}, unsafe)
    with pytest.raises(Exception, match="(?i)weights_only|unpickl"):
        io.load_checkpoint(unsafe)  # safe loading by default


class _Unpicklable:
    """A class that weights_only loading must refuse."""


# ------------------------------------------------------------------------------------- the lock
def test_run_folder_lock_refuses_a_second_holder(tmp_path):
    folder = RunFolder(tmp_path / "run")
    with RunFolderLock(folder) as first:
        assert first.held and folder.lock_file.exists()
        with pytest.raises(ConfigError, match="in use by another training"):
            RunFolderLock(folder).acquire()
    second = RunFolderLock(folder)
    second.acquire()  # released by the first: free again
    assert second.held
    second.release()


# ----------------------------------------------------------------------------------- options
def test_resolve_precision():
    assert resolve_precision(None) is None
    assert resolve_precision("auto", cuda=False) == "bf16-mixed"
    assert resolve_precision("auto", cuda=True) == "16-mixed"
    assert resolve_precision("bf16", cuda=True) == "bf16-mixed"
    with pytest.raises(ConfigError, match="bf16"):
        resolve_precision("fp16", cuda=False)
    with pytest.raises(UnknownNameError):
        resolve_precision("fp8", cuda=True)


def test_train_options_from_namespace_ignores_extra_attributes():
    args = argparse.Namespace(dataset="CIFAR10", base_network="b", experiment_name="e", gpus=4, amp="bf16")
    options = TrainOptions.from_namespace(args)
    assert options.amp == "bf16" and options.resume is True and options.nodes is None


class _Color(enum.IntEnum):
    RED = 1


def test_plain_data_keeps_only_builtin_types():
    value = plain_data({"a": np.float64(0.5), "b": _Color.RED, "c": (1, [2, object()]), 3: None})
    assert value["a"] == 0.5 and type(value["a"]) is float
    assert value["b"] == 1 and type(value["b"]) is int
    assert value["c"][0] == 1 and isinstance(value["c"][1][1], str)
    assert value["3"] is None


# ----------------------------------------------------------------------------------- CLI errors
def test_run_cli_maps_user_errors_to_exit_code_2(capsys):
    def failing(argv):
        raise CheckpointError("broken checkpoint; delete it")

    assert run_cli(failing, []) == EXIT_USER_ERROR
    err = capsys.readouterr().err
    assert err.strip() == "error: broken checkpoint; delete it"

    assert run_cli(failing, ["--debug"]) == EXIT_USER_ERROR
    assert "Traceback" in capsys.readouterr().err
    assert run_cli(lambda argv: None, []) == 0
    with pytest.raises(ZeroDivisionError):  # bugs keep their traceback
        run_cli(lambda argv: 1 / 0, [])


def test_a_training_stopped_by_sigterm_exits_143(capsys):
    from bcos.training.run import TrainingTerminated

    def stopped(argv):
        raise TrainingTerminated("training stopped by SIGTERM at epoch 3; last.ckpt is the resume point")

    assert run_cli(stopped, []) == 143
    assert capsys.readouterr().err.strip().startswith("error: training stopped by SIGTERM")


# ----------------------------------------------------------------------------- submitit launcher
def _launcher_args(*extra: str) -> argparse.Namespace:
    from bcos.cli.submitit_launcher import get_parser

    base = ["--dataset", "CIFAR10", "--base_network", "norm_ablations_final", "--experiment_name", "resnet_20"]
    return get_parser().parse_args([*base, *extra])


def test_launcher_timeouts_and_resources():
    from bcos.cli.submitit_launcher import DEFAULT_TIMEOUT_HOURS, SIGNAL_DELAY_MINUTES, job_parameters

    default = job_parameters(_launcher_args())
    assert default["timeout_min"] == DEFAULT_TIMEOUT_HOURS * 60 + SIGNAL_DELAY_MINUTES
    assert default["tasks_per_node"] == 4 and default["gpus_per_node"] == 4 and default["name"] == "resnet_20"
    assert "slurm_partition" not in default
    hours = job_parameters(_launcher_args("--timeout", "1.5", "--partition", "gpu", "--job_name", "j"))
    assert hours["timeout_min"] == 90 + SIGNAL_DELAY_MINUTES and hours["slurm_partition"] == "gpu"
    assert hours["name"] == "j"
    cpu = job_parameters(_launcher_args("--gpus", "0", "--timeout_min", "10", "--cluster", "local"))
    assert cpu["tasks_per_node"] == 1 and cpu["timeout_min"] == 10 + SIGNAL_DELAY_MINUTES
    cpu_processes = job_parameters(_launcher_args("--gpus", "2", "--accelerator", "cpu", "--cluster", "local"))
    assert cpu_processes["tasks_per_node"] == 2 and cpu_processes["gpus_per_node"] == 0
    with pytest.raises(ConfigError, match="either"):
        job_parameters(_launcher_args("--timeout", "1", "--timeout_min", "5"))


def test_launcher_names_its_executor_and_refuses_what_it_cannot_run(monkeypatch):
    import bcos.cli.submitit_launcher as launcher

    monkeypatch.setattr(launcher.shutil, "which", lambda name: None)  # no SLURM here
    with pytest.raises(ConfigError, match=r"--cluster slurm \(the default\) needs SLURM.*--cluster local"):
        launcher.executor_kind(_launcher_args())
    with pytest.raises(ConfigError, match="--cluster slurm needs SLURM"):
        launcher.executor_kind(_launcher_args("--cluster", "slurm"))
    assert launcher.executor_kind(_launcher_args("--cluster", "local", "--gpus", "2")) == "local"
    with pytest.raises(ConfigError, match="--cluster local runs on this machine only: use --nodes 1"):
        launcher.executor_kind(_launcher_args("--cluster", "local", "--nodes", "2"))
    with pytest.raises(ConfigError, match="--cluster debug runs one task"):
        launcher.executor_kind(_launcher_args("--cluster", "debug", "--gpus", "2"))
    monkeypatch.setattr(launcher.shutil, "which", lambda name: f"/usr/bin/{name}")
    assert launcher.executor_kind(_launcher_args("--nodes", "2")) == "slurm"
    with pytest.raises(ConfigError, match="drop --devices"):
        launcher.submit(_launcher_args("--cluster", "local", "--devices", "2"))


def test_launcher_checkpoint_requeues_with_resume():
    from bcos.cli.submitit_launcher import RunExperiment

    args = _launcher_args("--force-no-resume")
    assert args.resume is False
    job = RunExperiment(args)
    delayed = job.checkpoint()
    assert isinstance(delayed.function, RunExperiment)
    assert delayed.function.args.resume is True
    assert args.resume is False  # the original is not changed


def test_environment_rank_detection(monkeypatch):
    from bcos.training.processes import global_rank_from_env as _global_rank_from_env

    for key in ("RANK", "SLURM_PROCID", "LOCAL_RANK", "NODE_RANK"):
        monkeypatch.delenv(key, raising=False)
    assert _global_rank_from_env() == 0
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert _global_rank_from_env() == 1
    monkeypatch.setenv("RANK", "0")
    assert _global_rank_from_env() == 0
    assert os.environ["LOCAL_RANK"] == "1"


def test_compile_option_keeps_state_dict_keys():
    from bcos.training.run import _transform_model

    class Holder:
        model = _small_model()

    holder = Holder()
    keys = list(holder.model.state_dict())
    options = TrainOptions(dataset="d", base_network="b", experiment_name="e", compile=True, channels_last=True)
    _transform_model(holder, options)  # compiled lazily: nothing runs until the first forward
    assert list(holder.model.state_dict()) == keys


def test_trainer_config_from_options_and_config():
    from bcos.training.run import _trainer_config

    config = {"trainer": {"max_epochs": 3, "track_grad_norm": 2}}
    options = TrainOptions(
        dataset="d", base_network="b", experiment_name="e", distributed=True, debug=True, amp="bf16", nodes=2
    )
    trainer_config, track = _trainer_config(options, config)
    assert track is True  # the reference's trainer option becomes our own flag
    assert trainer_config == {
        "max_epochs": 3, "accelerator": "auto", "devices": "auto", "strategy": "ddp", "num_nodes": 2,
        "precision": "bf16-mixed", "deterministic": "warn",
    }  # fmt: skip
    assert config["trainer"] == {"max_epochs": 3, "track_grad_norm": 2}  # the config is not changed
    with pytest.raises(UnknownNameError, match="max_epochs"):
        _trainer_config(TrainOptions(dataset="d", base_network="b", experiment_name="e"), {"trainer": {"max_epoch": 3}})
