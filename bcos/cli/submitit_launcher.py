"""Command line of ``run_with_submitit.py``: run a training as a SLURM job through submitit.

It takes every ``train.py`` option plus the job's resources. When SLURM preempts the job or its time
runs out, submitit calls :meth:`RunExperiment.checkpoint`, which requeues the same training with
``resume=True``; the new job continues from ``last.ckpt`` (written at every epoch end). ``--cluster
local`` (a child process) and ``--cluster debug`` (this process) run the job on this machine and
wait for it, which is how the tests exercise the launcher.
"""

from __future__ import annotations

import argparse
import copy
import os
import secrets
import string
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bcos.cli.errors import run_cli
from bcos.cli.train import get_parser as get_train_parser
from bcos.cli.train import validate_args as validate_train_args
from bcos.errors import ConfigError
from bcos.experiments.utils.run_folder import RunFolder

__all__ = ["DEFAULT_TIMEOUT_HOURS", "RunExperiment", "get_parser", "job_parameters", "main", "submit"]

#: job length when neither --timeout nor --timeout_min is given
DEFAULT_TIMEOUT_HOURS = 24.0
#: extra minutes on top of the requested time: the job is signalled this much before it is killed
SIGNAL_DELAY_MINUTES = 4
CPUS_PER_TASK = 16
MEM_GB_PER_GPU = 110
MAX_REQUEUES = 300


def get_parser() -> argparse.ArgumentParser:
    """The ``train.py`` options plus the job options."""
    parser = argparse.ArgumentParser(
        description="Submit a training job with submitit (SLURM, or local for testing).",
        parents=[get_train_parser(add_help=False)],
    )
    job = parser.add_argument_group("job")
    job.add_argument("--gpus", type=int, default=4, help="GPUs per node (one task per GPU; 0 runs one CPU task).")
    job.add_argument("--nodes", type=int, default=1, help="Number of nodes.")
    job.add_argument(
        "--timeout", type=float, default=None, help=f"Job length in hours (default {DEFAULT_TIMEOUT_HOURS:g})."
    )
    job.add_argument("--timeout_min", type=int, default=None, help="Job length in minutes (instead of --timeout).")
    job.add_argument("--job_name", default=None, help="Job name (default: the experiment name).")
    job.add_argument("--partition", default=None, help="SLURM partition(s), comma separated (default: the cluster's).")
    job.add_argument(
        "--cluster",
        default=None,
        choices=["slurm", "local", "debug"],
        help="Executor: slurm, local (child process, waits) or debug (this process); default: slurm if available.",
    )
    return parser


def _timeout_minutes(args: argparse.Namespace) -> int:
    if args.timeout is not None and args.timeout_min is not None:
        raise ConfigError("give either --timeout (hours) or --timeout_min (minutes), not both")
    if args.timeout_min is not None:
        minutes = args.timeout_min
    else:
        minutes = round((DEFAULT_TIMEOUT_HOURS if args.timeout is None else args.timeout) * 60)
    if minutes < 1:
        raise ConfigError(f"the job needs at least one minute, got {minutes}; fix --timeout/--timeout_min")
    return minutes + SIGNAL_DELAY_MINUTES


def job_parameters(args: argparse.Namespace) -> dict[str, Any]:
    """The executor parameters for ``args`` (resources, time, SLURM settings)."""
    if args.gpus < 0 or args.nodes < 1:
        raise ConfigError(f"--gpus must be >= 0 and --nodes >= 1, got --gpus {args.gpus} --nodes {args.nodes}")
    tasks = max(1, args.gpus)
    parameters: dict[str, Any] = {
        "name": args.job_name or args.experiment_name,
        "nodes": args.nodes,
        "tasks_per_node": tasks,
        "gpus_per_node": args.gpus,
        "timeout_min": _timeout_minutes(args),
        "slurm_signal_delay_s": SIGNAL_DELAY_MINUTES * 60,
    }
    if args.cluster in (None, "slurm"):
        parameters.update(cpus_per_task=CPUS_PER_TASK, mem_gb=MEM_GB_PER_GPU * max(1, args.gpus))
        if args.partition:
            parameters["slurm_partition"] = args.partition
    return parameters


class RunExperiment:
    """The submitted callable: runs the training, and requeues itself with resume on preemption."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args

    def __call__(self) -> dict[str, float]:
        import submitit

        from bcos.training.run import run_training

        submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
        trainer = run_training(copy.deepcopy(self.args))
        # the trainer itself is not picklable; hand back the final metrics
        return {key: float(value) for key, value in trainer.callback_metrics.items()}

    def checkpoint(self, *args: Any, **kwargs: Any):
        """Called by submitit on preemption or timeout: the same training again, resuming."""
        import submitit

        resumed = copy.deepcopy(self.args)
        resumed.resume = True
        return submitit.helpers.DelayedSubmission(type(self)(resumed))


def _new_wandb_id() -> str:
    alphabet = string.ascii_lowercase + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(8))


def submit(args: argparse.Namespace):
    """Validate ``args``, create the executor and submit the training; returns the submitit job."""
    import submitit

    validate_train_args(args)
    if args.gpus > 1 or args.nodes > 1:
        args.distributed = True  # several processes: DDP
    args.nodes = int(args.nodes)
    parameters = job_parameters(args)
    if args.wandb_logger and not args.wandb_id:
        args.wandb_id = os.getenv("WANDB_RUN_ID") or _new_wandb_id()
        print(f"W&B run id: {args.wandb_id}")

    run_folder = RunFolder.of(args.dataset, args.base_network, args.experiment_name, args.base_directory)
    log_folder = Path(run_folder.slurm_logs_dir, "%j")
    executor = submitit.AutoExecutor(folder=log_folder, cluster=args.cluster, slurm_max_num_timeout=MAX_REQUEUES)
    executor.update_parameters(**parameters)
    job = executor.submit(RunExperiment(args))
    print(f"Submitted job {job.job_id}; logs in {str(log_folder).replace('%j', str(job.job_id))}")
    return job


def _main(argv: Sequence[str] | None) -> int:
    args = get_parser().parse_args(argv)
    job = submit(args)
    if args.cluster in ("local", "debug"):
        # no scheduler owns the job: wait for it here
        from submitit.core.utils import FailedJobError

        try:
            result = job.result()
        except FailedJobError as error:
            lines = [line for line in str(error).splitlines() if line.strip()]
            cause = next((line for line in reversed(lines) if "Error" in line), lines[-1] if lines else "")
            print(f"error: job {job.job_id} failed: {cause.strip()} (full log: {job.paths.stderr})", file=sys.stderr)
            return 1
        accuracy = result.get("val_acc1")
        print(f"Job {job.job_id} finished" + (f"; val_acc1 {accuracy:.4f}" if accuracy is not None else ""))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``run_with_submitit.py``; returns the exit status."""
    return run_cli(_main, argv)
