"""Command line of the localisation analysis (grid pointing game) and its SLURM launcher.

The analysis itself is :func:`bcos.explain.localisation.run_localisation`; this module parses the
arguments into its :class:`~bcos.explain.localisation.LocalisationOptions` and prints the result.

A training run::

    python -m interpretability.analyses.localisation --save_path experiments/CIFAR10/norm_ablations_final/resnet_20_bnu-linear-nomaxout \\
        --reload last --analysis_config 500_3x3 --explainer_name Ours --smooth 1 --batch_size 64

Published or downloaded weights (the registry's names, as for torch.hub)::

    python -m interpretability.analyses.localisation --model resnet18 --analysis_config 250_2x2 --smooth 15
    python -m interpretability.analyses.localisation --model resnet18 --weights resnet18.pth --dataset ImageNet ...

Results go to ``<run>/localisation_analysis/<checkpoint>/<config>/<explainer>/smooth-<s>/<explainer_config>/``
(``<checkpoint>`` is ``epoch_<E>``, ``epoch_<E>_ema``, ``pretrained`` or ``weights-<file stem>``,
followed by ``-<sha256 prefix of the weights>``; ``<config>`` gets ``+sample_size=<N>`` for a
sample size other than the config's; option values become safe names; for ``--model`` the run
folder is ``--output_dir``, default ``experiments/pretrained/<name>``): ``localisation_metric.np``
(every score, ``np.savetxt``), ``summary.json``, ``config.log`` and ``scores.png``. The confidence
ranking is cached per set of weights as ``<run>/localisation_analysis/<checkpoint>/confidences.json``.
"""

from __future__ import annotations

import argparse
import ast
import itertools
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bcos.errors import ConfigError
from bcos.experiments.utils.datasets import DATAMODULE_HELP

if TYPE_CHECKING:
    from bcos.explain.localisation import LocalisationOptions

__all__ = [
    "get_parser",
    "get_submit_parser",
    "options_from_args",
    "run_parsed",
    "main",
    "submit_main",
    "run_localisation_job",
]


# ------------------------------------------------------------------------------------ arguments
def get_parser(add_help: bool = True, multiple: bool = False) -> argparse.ArgumentParser:
    """The options of ``python -m interpretability.analyses.localisation``.

    ``multiple=True`` (the launcher) lets ``--save_path``, ``--smooth``, ``--analysis_config``,
    ``--explainer_name`` and ``--explainer_config`` take several values.
    """
    nargs = "+" if multiple else None
    parser = argparse.ArgumentParser(
        description="Localisation analysis (grid pointing game) of a trained or pretrained model.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        add_help=add_help,
    )
    source = parser.add_argument_group("model (one of --save_path and --model)")
    source.add_argument("--save_path", nargs=nargs, default=None, help="Training run folder <base>/<dataset>/<base_network>/<experiment_name>.")
    source.add_argument("--reload", default="last", help="Checkpoint of the run: last, best, best_any or epoch_<N>.")
    source.add_argument("--ema", action="store_true", help="Use the EMA weights of the run.")
    source.add_argument("--model", default=None, help="A registered model name (see bcos.list_models()), e.g. resnet18.")
    source.add_argument("--weights", type=Path, default=None, help="A weights file to load instead (with --model or --save_path).")
    source.add_argument("--dataset", default=None, help="Data set for --model (default: the one its weights were trained on).")
    source.add_argument("--datamodule", default=None, metavar="MODULE:CLASS", help=DATAMODULE_HELP)
    source.add_argument("--output_dir", type=Path, default=None, help="Folder for --model results (default: experiments/pretrained/<name>).")

    analysis = parser.add_argument_group("analysis")
    analysis.add_argument("--analysis_config", nargs=nargs, default="500_3x3", help="Grid set-up, e.g. 500_3x3, 250_2x2_rescale.")
    analysis.add_argument("--explainer_name", nargs=nargs, default="Ours", help="Explanation method (Ours, GCam, IntGrad, IxG, Occlusion, RISE, LIME, ...).")
    analysis.add_argument("--explainer_config", nargs=nargs, default="default", help="Named configuration of the explainer (e.g. Occ5).")
    analysis.add_argument(
        "--explainer_option", action="append", default=[], metavar="KEY=VALUE",
        help="Override one explainer option (repeatable), e.g. n=2000 for RISE.",
    )  # fmt: skip
    analysis.add_argument("--smooth", nargs=nargs, type=int, required=True, help="Odd smoothing window (1: none).")
    analysis.add_argument("--batch_size", type=int, default=64, help="Images per forward pass (data and explainer batches).")
    analysis.add_argument("--sample_size", type=int, default=None, help="Number of grids (default: the analysis config's).")
    analysis.add_argument("--force_confidence_calculation", action="store_true", help="Recompute the cached confidences.")
    analysis.add_argument("--num_workers", type=int, default=None, help="Data loader workers (default: the config's).")
    analysis.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... (default: cuda when available).")
    analysis.add_argument("--debug", action="store_true", help="Show full tracebacks on errors.")
    return parser


def _parse_options(items: Sequence[str]) -> dict[str, Any]:
    options: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--explainer_option takes KEY=VALUE, got {item!r}")
        try:
            options[key] = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            options[key] = text
    return options


def options_from_args(args: argparse.Namespace) -> LocalisationOptions:
    """The :class:`bcos.explain.localisation.LocalisationOptions` of parsed (single-valued) arguments."""
    from bcos.explain.localisation import LocalisationOptions

    return LocalisationOptions(
        smooth=args.smooth,
        save_path=args.save_path,
        reload=args.reload,
        ema=args.ema,
        model=args.model,
        weights=args.weights,
        dataset=args.dataset,
        datamodule=args.datamodule,
        output_dir=args.output_dir,
        analysis_config=args.analysis_config,
        explainer_name=args.explainer_name,
        explainer_config=args.explainer_config,
        explainer_options=_parse_options(args.explainer_option),
        batch_size=args.batch_size,
        sample_size=args.sample_size,
        force_confidence_calculation=args.force_confidence_calculation,
        num_workers=args.num_workers,
        device=args.device,
    )


def run_parsed(args: argparse.Namespace) -> int:
    """Run the analysis that parsed arguments describe and print its summary and output folder."""
    from bcos.explain.localisation import run_localisation

    result = run_localisation(options_from_args(args))
    print(result.summary.format(), flush=True)
    print(f"Saved results to '{result.output_dir}'", flush=True)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` and run the analysis (errors are mapped by :func:`bcos.cli.errors.run_cli`)."""
    return run_parsed(get_parser().parse_args(argv))


# ------------------------------------------------------------------------------------ SLURM launcher
def get_submit_parser() -> argparse.ArgumentParser:
    """The analysis options (several values allowed) plus the job's resources."""
    parser = argparse.ArgumentParser(
        description="Submit localisation analyses as a SLURM array (one job per combination).",
        parents=[get_parser(add_help=False, multiple=True)],
    )
    job = parser.add_argument_group("job")
    job.add_argument("--timeout_min", type=int, required=True, help="Job length in minutes.")
    job.add_argument("--job_name", default=None, help="Job name.")
    job.add_argument("--log_folder", default="slurm_logs/localisation/%j", help="Folder for SLURM logs and submission files.")
    job.add_argument("--partition", default=None, help="SLURM partition(s), comma separated (default: the cluster's).")
    job.add_argument("--gpus", type=int, default=1, help="GPUs per job.")
    job.add_argument("--cpus_per_task", type=int, default=16, help="CPUs per job.")
    job.add_argument("--mem_gb", type=int, default=32, help="Memory per job in GB.")
    job.add_argument(
        "--cluster", default=None, choices=["slurm", "local", "debug"],
        help="Executor: slurm, local (child processes) or debug (this process); default: slurm if available.",
    )  # fmt: skip
    return parser


def _job_argvs(args: argparse.Namespace) -> list[list[str]]:
    """One ``main`` argument list per combination of the multi-valued options."""
    if args.model is not None:
        raise ConfigError("the launcher runs training runs (--save_path); run --model analyses directly")
    if args.save_path is None:
        raise ConfigError("pass --save_path with one or more run folders")
    shared = ["--reload", args.reload, "--batch_size", str(args.batch_size)]
    for flag, value in (("--weights", args.weights), ("--datamodule", args.datamodule), ("--sample_size", args.sample_size), ("--num_workers", args.num_workers), ("--device", args.device)):
        if value is not None:
            shared += [flag, str(value)]
    for flag, enabled in (("--ema", args.ema), ("--force_confidence_calculation", args.force_confidence_calculation)):
        if enabled:
            shared.append(flag)
    for option in args.explainer_option:
        shared += ["--explainer_option", option]

    def values(value: Any) -> list:
        return list(value) if isinstance(value, list) else [value]

    combinations = itertools.product(
        values(args.save_path), values(args.smooth), values(args.analysis_config),
        values(args.explainer_name), values(args.explainer_config),
    )  # fmt: skip
    return [
        [
            "--save_path", str(path), "--smooth", str(smooth), "--analysis_config", config,
            "--explainer_name", name, "--explainer_config", explainer_config, *shared,
        ]  # fmt: skip
        for path, smooth, config, name, explainer_config in combinations
    ]


def run_localisation_job(argv: list[str]) -> int:
    """One array job: run the analysis for ``argv`` (module level so submitit can pickle it)."""
    from bcos.cli.errors import run_cli

    status = run_cli(main, argv)
    if status:
        raise RuntimeError(f"localisation analysis failed with exit status {status}: {' '.join(argv)}")
    return status


def submit_main(argv: Sequence[str] | None = None) -> int:
    """Parse the launcher's options and submit the array of analyses."""
    import submitit

    args = get_submit_parser().parse_args(argv)
    if args.timeout_min < 1 or args.gpus < 0 or args.cpus_per_task < 1 or args.mem_gb < 1:
        raise ConfigError("--timeout_min, --cpus_per_task and --mem_gb must be positive and --gpus >= 0")
    argvs = _job_argvs(args)
    executor = submitit.AutoExecutor(folder=args.log_folder, cluster=args.cluster)
    parameters: dict[str, Any] = {
        "timeout_min": args.timeout_min,
        "nodes": 1,
        "tasks_per_node": 1,
        "cpus_per_task": args.cpus_per_task,
        "mem_gb": args.mem_gb,
    }
    if args.gpus:
        parameters["gpus_per_node"] = args.gpus
    if args.partition:
        parameters["slurm_partition"] = args.partition
    if args.job_name:
        parameters["name"] = args.job_name
    executor.update_parameters(**parameters)
    jobs = executor.map_array(run_localisation_job, argvs)
    print(f"Number of submitted jobs: {len(jobs)}", flush=True)
    if args.cluster in ("local", "debug"):
        for job in jobs:
            job.result()
    return 0


if __name__ == "__main__":
    from bcos.cli.errors import run_cli

    sys.exit(run_cli(main))
