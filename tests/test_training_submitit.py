"""``run_with_submitit.py`` end to end with submitit's local executor (a child process).

The job trains the real ``CIFAR10/norm_ablations_final`` ResNet-20 config for one batch
(``--fast_dev_run``) on a tiny CIFAR-10 copy: submission, the job environment, ``run_training``
in the child and the returned metrics are all exercised.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from helpers_data import make_tiny_cifar10  # noqa: E402

import pytest  # noqa: E402

from bcos.cli.submitit_launcher import main as submit_main  # noqa: E402


@pytest.mark.slow  # a child process that imports torch and Lightning
def test_local_submitit_job_trains_and_reports(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DATA_ROOT", str(make_tiny_cifar10(tmp_path / "data", n_train=20, n_test=10)))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the child's small model runs fastest on one thread
    argv = [
        "--dataset", "CIFAR10",
        "--base_network", "norm_ablations_final",
        "--experiment_name", "resnet_20_bnu-linear-nomaxout",
        "--base_directory", str(tmp_path / "experiments"),
        "--fast_dev_run",
        "--gpus", "0",
        "--timeout_min", "10",
        "--cluster", "local",
    ]  # fmt: skip
    assert submit_main(argv) == 0
    out = capsys.readouterr().out
    assert "Submitted job" in out and "finished; val_acc1" in out
    run_folder = tmp_path / "experiments" / "CIFAR10" / "norm_ablations_final" / "resnet_20_bnu-linear-nomaxout"
    logs = [p for p in (run_folder / "slurm_logs").iterdir() if p.name.isdigit()]
    assert len(logs) == 1 and any(p.name.endswith("_result.pkl") for p in logs[0].iterdir())
    assert (run_folder / "config.txt").exists()


def test_failed_local_job_is_reported(monkeypatch, capsys):
    from submitit.core.utils import FailedJobError

    import bcos.cli.submitit_launcher as launcher

    class FailedJob:
        job_id = "123"

        class paths:  # noqa: N801 - mimics submitit's JobPaths attribute
            stderr = "/logs/123_0_log.err"

        def result(self):
            raise FailedJobError("Traceback ...\nbcos.errors.DataNotFoundError: DATA_ROOT is not set")

    monkeypatch.setattr(launcher, "submit", lambda args: FailedJob())
    argv = ["--dataset", "CIFAR10", "--base_network", "norm_ablations_final", "--experiment_name", "resnet_20"]
    assert launcher.main([*argv, "--cluster", "local"]) == 1
    err = capsys.readouterr().err
    assert "error: job 123 failed: bcos.errors.DataNotFoundError: DATA_ROOT is not set" in err
    assert "/logs/123_0_log.err" in err
