"""Command line of ``run_with_submitit.py``: run a training as a SLURM job through submitit.

It takes every ``train.py`` option plus the job's resources: ``--gpus N`` processes per node (one
per GPU; with ``--accelerator cpu``, N CPU processes) on ``--nodes`` nodes. When SLURM preempts the
job or its time runs out, submitit calls :meth:`RunExperiment.checkpoint`, which requeues the same
training with ``resume=True``; the new job continues from ``last.ckpt`` (written at every epoch end).

The executor is said, never guessed silently: SLURM by default (an error when there is no SLURM
here), ``--cluster local`` (the job's tasks as child processes of this one node; this command waits
for them, names their logs and exits with the job's status) or ``--cluster debug`` (one task in this
process). Every launcher failure ends with one ``error:`` line.
"""

from __future__ import annotations

import argparse
import copy
import os
import secrets
import shutil
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

__all__ = [
    "DEFAULT_TIMEOUT_HOURS",
    "RunExperiment",
    "executor_kind",
    "get_parser",
    "job_parameters",
    "main",
    "submit",
    "wait_for",
]

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
    job.add_argument(
        "--gpus",
        type=int,
        default=4,
        help="Processes per node, one per GPU (with --accelerator cpu: CPU processes; 0 runs one CPU task).",
    )
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
        help="Executor: slurm (the default; needs SLURM), local (this machine's processes; waits for them) "
        "or debug (one task in this process).",
    )
    return parser


def executor_kind(args: argparse.Namespace) -> str:
    """``slurm``, ``local`` or ``debug``: ``--cluster``, checked against this machine and the job's size."""
    kind = args.cluster or "slurm"
    if kind == "slurm" and shutil.which("sbatch") is None:
        hint = "" if args.cluster else " (the default)"
        raise ConfigError(
            f"--cluster slurm{hint} needs SLURM, but there is no sbatch on the PATH; submit from the "
            "cluster's login node, or pass --cluster local to run the job on this machine"
        )
    if kind in ("local", "debug") and args.nodes != 1:
        raise ConfigError(f"--cluster {kind} runs on this machine only: use --nodes 1 (got --nodes {args.nodes})")
    if kind == "debug" and args.gpus > 1:
        raise ConfigError(
            f"--cluster debug runs one task in this process; use --cluster local for --gpus {args.gpus}"
        )
    return kind


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
    gpus = 0 if getattr(args, "accelerator", None) == "cpu" else args.gpus
    parameters: dict[str, Any] = {
        "name": args.job_name or args.experiment_name,
        "nodes": args.nodes,
        "tasks_per_node": tasks,
        "gpus_per_node": gpus,
        "timeout_min": _timeout_minutes(args),
        "slurm_signal_delay_s": SIGNAL_DELAY_MINUTES * 60,
    }
    if args.cluster in (None, "slurm"):
        parameters.update(cpus_per_task=CPUS_PER_TASK, mem_gb=MEM_GB_PER_GPU * tasks)
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
    if getattr(args, "devices", None) is not None:
        raise ConfigError("run_with_submitit.py sets the processes with --gpus (per node) and --nodes; drop --devices")
    args.nodes = int(args.nodes)
    parameters = job_parameters(args)  # the job's size first: it decides which executor can run it
    kind = executor_kind(args)
    if args.gpus > 1 or args.nodes > 1:
        args.distributed = True  # several processes: DDP
    if args.wandb_logger and not args.wandb_id:
        args.wandb_id = os.getenv("WANDB_RUN_ID") or _new_wandb_id()
        print(f"W&B run id: {args.wandb_id}")

    run_folder = RunFolder.of(args.dataset, args.base_network, args.experiment_name, args.base_directory)
    log_folder = Path(run_folder.slurm_logs_dir, "%j")
    try:
        executor = submitit.AutoExecutor(folder=log_folder, cluster=kind, slurm_max_num_timeout=MAX_REQUEUES)
        executor.update_parameters(**parameters)
        job = executor.submit(RunExperiment(args))
    except (ValueError, RuntimeError, OSError) as error:  # submitit's and the scheduler's refusals
        message = " ".join(str(error).split()) or type(error).__name__
        raise ConfigError(f"the {kind} executor refused the job: {message}") from error
    tasks = parameters["nodes"] * parameters["tasks_per_node"]
    logs = str(log_folder).replace("%j", str(job.job_id))
    print(f"Submitted job {job.job_id} to the {kind} executor: {tasks} task(s); logs in {logs}")
    return job


def _failure(job: Any) -> tuple[int, str] | None:
    """The first failed task of a finished job and the last line of its error, or None."""
    from submitit.core.utils import UncompletedJobError

    for task_id in range(job.num_tasks):
        task = job.task(task_id)
        try:
            error = task.exception()
        except UncompletedJobError as uncompleted:
            error = uncompleted
        if error is None:
            continue
        lines = [line.strip() for line in str(error).splitlines() if line.strip()]
        cause = next((line for line in reversed(lines) if "Error" in line or line.startswith("error:")), None)
        return task_id, cause or (lines[0] if lines else type(error).__name__)
    return None


def wait_for(job: Any) -> int:
    """Wait for a local job's tasks; print the result or the failed task's error and log; the exit status."""
    from submitit.core.utils import FailedJobError, UncompletedJobError

    print(f"Waiting for job {job.job_id}; rank 0's log: {job.paths.stdout}", flush=True)
    try:
        results = job.results()
    except (FailedJobError, UncompletedJobError):
        failed = _failure(job)
        task_id, cause = failed if failed is not None else (0, "no result")
        task = job.task(task_id)
        print(f"error: job {job.job_id} failed in task {task_id}: {cause} (full log: {task.paths.stderr})",
              file=sys.stderr)  # fmt: skip
        return 1
    accuracy = (results[0] or {}).get("val_acc1")
    print(f"Job {job.job_id} finished ({len(results)} task(s))" + (f"; val_acc1 {accuracy:.4f}" if accuracy is not None else ""))
    return 0


def _main(argv: Sequence[str] | None) -> int:
    args = get_parser().parse_args(argv)
    job = submit(args)
    if executor_kind(args) in ("local", "debug"):
        return wait_for(job)  # no scheduler owns the job: it lives as long as this command
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``run_with_submitit.py``; returns the exit status."""
    return run_cli(_main, argv)
