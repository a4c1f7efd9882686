"""``run_with_submitit.py`` end to end with submitit's local executor: a job of 2 tasks (2 gloo processes).

The job trains the real ``Digits/bcos_demo`` ResNet config for one batch per process
(``--fast_dev_run``): submission, the job environment of each task, DDP across the tasks,
``run_training`` in the children, waiting for all tasks and the returned metrics are all exercised.
"""

from __future__ import annotations

import pytest

import bcos.cli.submitit_launcher as launcher

DIGITS = ["--dataset", "Digits", "--base_network", "bcos_demo", "--experiment_name", "resnet_8_bnu-linear"]


@pytest.mark.slow  # a controller and two tasks that import torch and Lightning
def test_local_submitit_job_with_two_tasks_trains_and_reports(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # two processes share the machine's cores
    for key in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(key, raising=False)
    argv = [
        *DIGITS,
        "--base_directory", str(tmp_path / "experiments"),
        "--fast_dev_run",
        "--gpus", "2",
        "--accelerator", "cpu",
        "--timeout_min", "10",
        "--cluster", "local",
    ]  # fmt: skip
    assert launcher.main(argv) == 0
    out = capsys.readouterr().out
    assert "to the local executor: 2 task(s)" in out and "finished (2 task(s)); val_acc1" in out
    run_folder = tmp_path / "experiments" / "Digits" / "bcos_demo" / "resnet_8_bnu-linear"
    logs = [p for p in (run_folder / "slurm_logs").iterdir() if p.name.isdigit()]
    assert len(logs) == 1
    assert sorted(p.name.split("_", 1)[1] for p in logs[0].glob("*_result.pkl")) == ["0_result.pkl", "1_result.pkl"]
    config = (run_folder / "config.txt").read_text()
    assert "world_size: 2" in config and "started_by: 'submitit'" in config


class _Task:
    def __init__(self, job_id: str, task_id: int, error: Exception | None) -> None:
        self.error = error
        self.paths = type("Paths", (), {"stderr": f"/logs/{job_id}_{task_id}_log.err", "stdout": ""})()

    def exception(self):
        return self.error


class _FailedJob:
    """A finished 2-task job whose task 1 failed (what submitit's local job reports)."""

    job_id = "123"
    num_tasks = 2
    paths = type("Paths", (), {"stdout": "/logs/123_0_log.out"})()

    def __init__(self) -> None:
        from submitit.core.utils import FailedJobError

        failure = FailedJobError("Traceback ...\nbcos.errors.DataNotFoundError: DATA_ROOT is not set\n----")
        self.tasks = [_Task(self.job_id, 0, None), _Task(self.job_id, 1, failure)]

    def task(self, task_id: int) -> _Task:
        return self.tasks[task_id]

    def results(self):
        raise self.tasks[1].error


def test_failed_local_job_names_the_failed_task_and_its_log(monkeypatch, capsys):
    monkeypatch.setattr(launcher, "submit", lambda args: _FailedJob())
    assert launcher.main([*DIGITS, "--cluster", "local", "--gpus", "2"]) == 1
    err = capsys.readouterr().err.strip()
    assert err == (
        "error: job 123 failed in task 1: bcos.errors.DataNotFoundError: DATA_ROOT is not set "
        "(full log: /logs/123_1_log.err)"
    )


def test_without_slurm_the_default_executor_is_an_error_line(monkeypatch, capsys):
    monkeypatch.setattr(launcher.shutil, "which", lambda name: None)
    assert launcher.main(DIGITS) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --cluster slurm (the default) needs SLURM")
