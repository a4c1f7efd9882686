"""Training with several processes: process counts, launchers, exact DDP resume, SIGTERM, sync batch norm.

The end-to-end tests run the real ``train.py`` command line (``tests/helpers_ddp_train.py`` adds a
small Digits config) as 2 gloo processes on the CPU: once under ``torchrun`` without interruption,
once with ``--devices 2`` stopped by SIGTERM in its second epoch and resumed. With ``--debug`` the
resumed run must end bit-identical to the uninterrupted one.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bcos.errors import ConfigError
from bcos.training.processes import ProcessLayout, global_rank_from_env, launcher_layout
from bcos.training.run import TrainOptions, _trainer_config

sys.path.insert(0, str(Path(__file__).parent))
from helpers_ddp_train import EPOCHS, STEPS_PER_EPOCH  # noqa: E402

HELPER = Path(__file__).resolve().parent / "helpers_ddp_train.py"
REPO = Path(__file__).resolve().parents[1]
RUN_TIMEOUT_S = 240


def _options(**kwargs) -> TrainOptions:
    return TrainOptions(dataset="d", base_network="b", experiment_name="e", **kwargs)


# ---------------------------------------------------------------------------------- process counts
def test_launcher_layouts_from_the_environment():
    assert launcher_layout({}) is None
    # a copy that Lightning started for --devices 2 is no launcher's
    assert launcher_layout({"LOCAL_RANK": "1", "WORLD_SIZE": "2", "NODE_RANK": "0"}) is None
    torchrun = {"WORLD_SIZE": "8", "LOCAL_WORLD_SIZE": "4", "TORCHELASTIC_RUN_ID": "x", "RANK": "5"}
    assert launcher_layout(torchrun) == ProcessLayout("torchrun", 4, 2)
    submitit = {"WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "2", "SUBMITIT_LOCAL_JOB_ID": "1"}
    assert launcher_layout(submitit) == ProcessLayout("submitit", 2, 1)
    srun = {"SLURM_NTASKS": "8", "SLURM_NNODES": "2", "SLURM_STEP_ID": "0", "SLURM_JOB_NAME": "train"}
    assert launcher_layout(srun) == ProcessLayout("srun", 4, 2)
    assert launcher_layout({**srun, "SLURM_JOB_NAME": "interactive"}) is None  # salloc shell: not srun's tasks
    assert launcher_layout({k: v for k, v in srun.items() if k != "SLURM_STEP_ID"}) is None  # the batch script
    with pytest.raises(ConfigError, match="same number on each"):
        launcher_layout({**srun, "SLURM_NTASKS": "5"})
    with pytest.raises(ConfigError, match="not a process count"):
        launcher_layout({"WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "zero", "TORCHELASTIC_RUN_ID": "x"})
    assert global_rank_from_env({"RANK": "3", "LOCAL_RANK": "1"}) == 3
    assert global_rank_from_env({"LOCAL_RANK": "1"}) == 1
    assert global_rank_from_env({}) == 0


def test_devices_and_launchers_choose_ddp():
    config = {"trainer": {"max_epochs": 1}}
    single, _ = _trainer_config(_options(), config)
    assert (single["accelerator"], single["devices"], single["num_nodes"]) == ("auto", "auto", 1)
    assert "strategy" not in single
    two, _ = _trainer_config(_options(devices=2, accelerator="cpu"), config)
    assert (two["accelerator"], two["devices"], two["strategy"]) == ("cpu", 2, "ddp")
    forced, _ = _trainer_config(_options(distributed=True), config)
    assert forced["strategy"] == "ddp" and forced["devices"] == "auto"
    from_config, _ = _trainer_config(_options(), {"trainer": {"devices": 4, "accelerator": "gpu"}})
    assert (from_config["devices"], from_config["accelerator"], from_config["strategy"]) == (4, "gpu", "ddp")

    torchrun = ProcessLayout("torchrun", 2, 1)
    launched, _ = _trainer_config(_options(), {"trainer": {"devices": 1}}, torchrun)  # the launcher's count wins
    assert (launched["devices"], launched["num_nodes"], launched["strategy"]) == (2, 1, "ddp")
    with pytest.raises(ConfigError, match="--devices 3 disagrees with torchrun"):
        _trainer_config(_options(devices=3), config, torchrun)
    with pytest.raises(ConfigError, match="--nodes 2 disagrees with srun"):
        _trainer_config(_options(nodes=2), config, ProcessLayout("srun", 4, 1))
    one_task, _ = _trainer_config(_options(), config, ProcessLayout("submitit", 1, 1))
    assert "strategy" not in one_task  # one process needs no DDP

    synced, _ = _trainer_config(_options(sync_batchnorm=True, devices=2), config)
    assert synced["sync_batchnorm"] is True  # run_training hands it to bcos's plugin, never Lightning's


def test_devices_option_is_checked_by_the_parser(capsys):
    from bcos.cli.train import get_parser

    argv = ["--dataset", "Digits", "--base_network", "bcos_demo", "--experiment_name", "resnet_8_bnu-linear"]
    args = get_parser().parse_args([*argv, "--devices", "2", "--accelerator", "cpu", "--sync_batchnorm"])
    assert (args.devices, args.accelerator, args.sync_batchnorm) == (2, "cpu", True)
    with pytest.raises(SystemExit):
        get_parser().parse_args([*argv, "--devices", "0"])
    assert "expected a number of processes" in capsys.readouterr().err


# ------------------------------------------------------------------------------- random state
def test_random_state_holds_every_rank_and_reads_older_checkpoints():
    from bcos.training.callbacks.random_state import RandomStateCheckpoint, capture_random_state

    callback = RandomStateCheckpoint()
    torch.manual_seed(1)
    saved = callback.state_dict()
    assert len(saved["ranks"]) == 1  # one process without a process group
    expected = torch.rand(3)
    torch.manual_seed(2)
    callback.load_state_dict(saved)
    assert torch.equal(torch.rand(3), expected)
    torch.manual_seed(1)
    older = capture_random_state()  # checkpoints before per-rank states held one state
    torch.manual_seed(2)
    callback.load_state_dict(older)
    assert torch.equal(torch.rand(3), expected)


# ------------------------------------------------------------------------------- sync batch norm
def _sync_worker(rank: int, port: int, results) -> None:
    import torch.distributed as dist

    from bcos.modules.norms import AllNormUncentered2d, BatchNormUncentered2d, NoBias
    from bcos.training.sync_norms import SyncBatchNormPlugin

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    torch.manual_seed(0)
    x, grad = torch.randn(8, 3, 5, 5) * 3 + 1, torch.randn(8, 3, 5, 5)
    mine = slice(4 * rank, 4 * rank + 4)
    checks = {}
    for make in (NoBias(BatchNormUncentered2d), AllNormUncentered2d):
        layer = make(3)
        with torch.no_grad():
            layer.weight.uniform_(0.5, 2.0)
        whole = make(3)
        whole.load_state_dict(layer.state_dict())
        model = SyncBatchNormPlugin().apply(torch.nn.Sequential(torch.nn.BatchNorm2d(3), layer))
        part = x[mine].clone().requires_grad_()
        (model[1](part) * grad[mine]).sum().backward()
        full = x.clone().requires_grad_()
        (whole(full) * grad).sum().backward()
        weight_grad = layer.weight.grad.clone()
        dist.all_reduce(weight_grad)  # DDP sums (averages) the processes' gradients
        checks[type(whole).__name__] = [
            type(layer).__name__.startswith("Sync"),
            type(model[0]) is torch.nn.SyncBatchNorm,
            torch.allclose(model[1](part.detach()), whole(x)[mine], atol=1e-5),
            torch.allclose(part.grad, full.grad[mine], atol=1e-5),
            torch.allclose(weight_grad, whole.weight.grad, atol=1e-4),
            torch.allclose(layer.running_var, whole.running_var, atol=1e-6),
            list(layer.state_dict()) == list(whole.state_dict()),
        ]
        SyncBatchNormPlugin().revert(model)
        checks[type(whole).__name__].append(type(layer) is type(whole))
    results[rank] = checks
    dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow  # two processes that import torch
def test_sync_batchnorm_gives_the_whole_batch_statistics_to_the_uncentred_norms():
    import torch.multiprocessing as mp

    with mp.Manager() as manager:
        results = manager.dict()
        mp.spawn(_sync_worker, args=(_free_port(), results), nprocs=2)
        results = dict(results)
    for rank in (0, 1):
        for name, checks in results[rank].items():
            assert all(checks), f"rank {rank}, {name}: {checks}"


def test_sync_batchnorm_refuses_a_norm_it_cannot_synchronise():
    from bcos.modules.norms import AllNorm2d, BatchNormUncentered2d
    from bcos.training.sync_norms import check_syncable

    check_syncable(torch.nn.Sequential(BatchNormUncentered2d(3), torch.nn.BatchNorm2d(3)))
    with pytest.raises(ConfigError, match="cannot synchronise 1 .AllNorm2d"):
        check_syncable(torch.nn.Sequential(BatchNormUncentered2d(3), AllNorm2d(3)))


# ---------------------------------------------------------------------- two processes, end to end
def _environment() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "SUBMITIT_", "BCOS_TEST_"))}
    for key in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "NODE_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    env.update(OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="", PYTHONHASHSEED="0")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


def _train(command: list[str], base: Path, *extra: str, **env: str) -> subprocess.CompletedProcess:
    options = ["--dataset", "Digits", "--base_network", "ddp_test", "--experiment_name", "tiny"]
    options += ["--base_directory", str(base), "--accelerator", "cpu", "--debug", "--refresh_rate", "1000"]
    return subprocess.run(
        [*command, str(HELPER), *options, *extra],
        env={**_environment(), **env},
        cwd=base.parent,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
    )


def _snapshot(folder: Path) -> dict:
    from bcos.experiments.utils.metrics import read_metric_file

    checkpoint = torch.load(folder / "last.ckpt", map_location="cpu", weights_only=True)
    return {
        "state_dict": checkpoint["state_dict"],
        "optimizer": checkpoint["optimizer_states"][0]["state"],
        "position": (checkpoint["epoch"], checkpoint["global_step"]),
        "metrics": {p.name: torch.from_numpy(read_metric_file(p)) for p in (folder / "metrics").glob("*.gz")},
        "random_states": checkpoint["callbacks"]["RandomStateCheckpoint"]["ranks"],
    }


def _assert_identical(actual: dict, expected: dict) -> None:
    assert actual["position"] == expected["position"]
    assert actual["state_dict"].keys() == expected["state_dict"].keys()
    for key, value in expected["state_dict"].items():
        assert torch.equal(actual["state_dict"][key], value), f"weights {key} differ"
    for index, state in expected["optimizer"].items():
        for name, value in state.items():
            assert torch.equal(actual["optimizer"][index][name], value), f"optimizer {index}/{name} differs"
    assert actual["metrics"].keys() == expected["metrics"].keys()
    for name, values in expected["metrics"].items():
        assert torch.equal(actual["metrics"][name], values), f"metrics {name} differ"


def _processes_in_config(folder: Path) -> str:
    text = (folder / "config.txt").read_text()
    return text[text.index("processes:") : text.index("versions:")]


@pytest.mark.slow  # three 2-process trainings of a few seconds each
def test_two_processes_stopped_by_sigterm_resume_bit_identical(tmp_path):
    folder = Path("Digits", "ddp_test", "tiny")
    # uninterrupted: torchrun starts the 2 processes (the count comes from its environment)
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    plain = _train(torchrun, tmp_path / "plain")
    assert plain.returncode == 0, plain.stderr[-3000:]
    processes = _processes_in_config(tmp_path / "plain" / folder)
    assert "world_size: 2" in processes and "started_by: 'torchrun'" in processes
    expected = _snapshot(tmp_path / "plain" / folder)
    assert expected["position"] == (EPOCHS - 1, EPOCHS * STEPS_PER_EPOCH)
    ranks = expected["random_states"]
    assert len(ranks) == 2  # every rank's generators, restored on its own rank

    # --devices 2: train.py starts the second process; SIGTERM in epoch 1, then resume
    base = tmp_path / "resumed"
    stopped = _train([sys.executable], base, "--devices", "2", BCOS_TEST_SIGTERM_AT_STEP=str(STEPS_PER_EPOCH + 3))
    run = base / folder
    assert stopped.returncode == 143, stopped.stderr[-3000:]
    assert "error: training stopped by SIGTERM at epoch 1" in stopped.stderr
    assert "last.ckpt is the resume point" in stopped.stderr
    assert torch.load(run / "last.ckpt", weights_only=True)["epoch"] == 0  # epoch 0's checkpoint is kept
    processes = _processes_in_config(run)
    assert "world_size: 2" in processes and "started_by: 'train.py'" in processes

    resumed = _train([sys.executable], base, "--devices", "2")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "Resuming from" in resumed.stdout + resumed.stderr
    _assert_identical(_snapshot(run), expected)
