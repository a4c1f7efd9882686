"""Command line of the localisation analysis (grid pointing game) and its SLURM launcher.

A training run::

    python -m interpretability.analyses.localisation --save_path experiments/CIFAR10/norm_ablations_final/resnet_20_bnu-linear-nomaxout \\
        --reload last --analysis_config 500_3x3 --explainer_name Ours --smooth 1 --batch_size 64

Published or downloaded weights (the registry's names, as for torch.hub)::

    python -m interpretability.analyses.localisation --model resnet18 --analysis_config 250_2x2 --smooth 15
    python -m interpretability.analyses.localisation --model resnet18 --weights resnet18.pth --dataset ImageNet ...

Results go to ``<run>/localisation_analysis/<checkpoint>/<config>/<explainer>/smooth-<s>/<explainer_config>/``
(``<checkpoint>`` is ``epoch_<E>``, ``epoch_<E>_ema``, ``pretrained`` or ``weights-<file stem>``;
for ``--model`` the run folder is ``--output_dir``, default ``experiments/pretrained/<name>``):
``localisation_metric.np`` (every score, ``np.savetxt``), ``summary.json``, ``config.log`` and
``scores.png``. The confidence ranking is cached per checkpoint as
``<run>/localisation_analysis/<checkpoint>/confidences.json``.
"""

from __future__ import annotations

import argparse
import ast
import itertools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bcos.errors import ConfigError, InputError

__all__ = [
    "get_parser",
    "get_submit_parser",
    "LoadedSubject",
    "load_subject",
    "run_analysis",
    "main",
    "submit_main",
    "run_localisation_job",
]

CONFIDENCES_FILENAME = "confidences.json"
DEFAULT_PRETRAINED_DIR = Path("experiments") / "pretrained"


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


# ------------------------------------------------------------------------------------ model and data
@dataclass
class LoadedSubject:
    """The model under analysis, where its results go, and how to build its evaluation data."""

    model: torch.nn.Module
    base_dir: Path
    checkpoint_label: str
    dataset: str
    data_config: dict[str, Any]
    description: str


def _checkpoint_label_of_file(path: Path, ema: bool) -> str:
    from bcos.experiments.utils.loading import load_checkpoint_file

    epoch = load_checkpoint_file(path).get("epoch")
    if isinstance(epoch, int):
        return f"epoch_{epoch + 1}" + ("_ema" if ema else "")
    return f"weights-{path.stem}"


def load_subject(args: argparse.Namespace) -> LoadedSubject:
    """Load the model the arguments name (a run folder, or a registry model) and its data config."""
    if (args.save_path is None) == (args.model is None):
        raise ConfigError("pass either --save_path RUN_FOLDER or --model NAME")
    if args.model is not None:
        return _load_registry_model(args)

    from bcos.experiments.utils.experiment import Experiment

    if not Path(args.save_path).is_dir():
        raise ConfigError(f"--save_path '{args.save_path}' is not a folder; pass a run folder <base>/<dataset>/<base_network>/<experiment_name>")
    experiment = Experiment(args.save_path)
    if args.weights is not None:
        model = experiment.load_model_from_weights(args.weights, ema=args.ema)
        label = _checkpoint_label_of_file(args.weights, args.ema)
        description = f"{experiment!r} with weights '{args.weights}'"
    else:
        loaded = experiment.load_trained_model(
            reload=args.reload, ema=args.ema, verbose=True, return_training_ckpt_if_possible=True
        )
        model, checkpoint = loaded["model"], loaded["ckpt"]
        if checkpoint is not None and isinstance(checkpoint.get("epoch"), int):
            label = f"epoch_{checkpoint['epoch'] + 1}" + ("_ema" if args.ema else "")
        else:
            label = "pretrained"
        description = f"{experiment!r} reload={args.reload} ema={args.ema}"
    return LoadedSubject(
        model=model,
        base_dir=Path(args.save_path),
        checkpoint_label=label,
        dataset=experiment.dataset,
        data_config=dict(experiment.config["data"]),
        description=description,
    )


def _load_registry_model(args: argparse.Namespace) -> LoadedSubject:
    from bcos.data.presets import eval_transform
    from bcos.models.registry import create_model, get_pretrained_config

    config = get_pretrained_config(args.model)
    if args.ema:
        raise ConfigError("--ema applies to training runs (--save_path); drop it for --model")
    model = create_model(args.model, pretrained=args.weights is None, weights=args.weights)
    dataset = args.dataset or config.source.dataset
    label = "pretrained" if args.weights is None else _checkpoint_label_of_file(args.weights, False)
    return LoadedSubject(
        model=model,
        base_dir=args.output_dir or DEFAULT_PRETRAINED_DIR / args.model,
        checkpoint_label=label,
        dataset=dataset,
        data_config={"test_transform": eval_transform(model), "batch_size": args.batch_size, "num_workers": 0},
        description=f"registry model {args.model!r}" + (f" with weights '{args.weights}'" if args.weights else ""),
    )


def _eval_dataset(subject: LoadedSubject, args: argparse.Namespace, rescale_by: int | None):
    from bcos.data.datamodules import get_datamodule_class

    config = dict(subject.data_config)
    config["batch_size"] = args.batch_size
    if args.num_workers is not None:
        config["num_workers"] = args.num_workers
    if rescale_by is not None:
        transform = config.get("test_transform")
        if not callable(getattr(transform, "rescaled", None)):
            raise ConfigError(
                f"the _rescale analysis configs need a test transform with rescaled(); {type(transform).__name__} has none "
                "(use an evaluation preset from bcos.data.presets or a config without _rescale)"
            )
        config["test_transform"] = transform.rescaled(rescale_by)
    datamodule = get_datamodule_class(subject.dataset)(config)
    datamodule.setup("test")
    return datamodule


# ------------------------------------------------------------------------------------ confidences
def _load_or_rank(subject: LoadedSubject, datamodule, device: torch.device, force: bool) -> dict:
    from bcos.explain.localisation import rank_by_confidence, ranking_from_plain, ranking_to_plain

    path = subject.base_dir / "localisation_analysis" / subject.checkpoint_label / CONFIDENCES_FILENAME
    dataset_size = len(datamodule.eval_dataset)
    if path.is_file() and not force:
        try:
            content = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            content = None
        if isinstance(content, dict) and content.get("dataset_size") == dataset_size and content.get("num_classes") == datamodule.num_classes:
            print(f"Loading stored confidences from '{path}'", flush=True)
            return ranking_from_plain(content["ranking"])
        print(f"Stored confidences in '{path}' do not match the data; recalculating", flush=True)
    else:
        print("Calculating confidences" + (" (forced)" if force and path.is_file() else ""), flush=True)
    ranking = rank_by_confidence(subject.model, datamodule.test_dataloader(), datamodule.num_classes, device=device)
    content = {
        "dataset": subject.dataset,
        "dataset_size": dataset_size,
        "num_classes": datamodule.num_classes,
        "checkpoint": subject.checkpoint_label,
        "ranking": ranking_to_plain(ranking),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, suffix=".tmp", delete=False) as handle:
        json.dump(content, handle)
    os.replace(handle.name, path)
    return ranking


# ------------------------------------------------------------------------------------ running
def _git_commit() -> str | None:
    if shutil.which("git") is None:
        return None
    try:
        output = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True, cwd=Path(__file__).parent
        )
    except (subprocess.CalledProcessError, OSError):
        return None
    return output.stdout.strip() or None


def _device(name: str | None) -> torch.device:
    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"unknown --device {name!r}; use cpu, cuda or cuda:<index>") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda was asked for but CUDA is not available; use --device cpu")
    return device


def _folder_name_of_config(config_name: str, options: dict[str, Any]) -> str:
    if not options:
        return config_name
    return config_name + "+" + ",".join(f"{k}={options[k]}" for k in sorted(options))


def run_analysis(args: argparse.Namespace) -> dict[str, Any]:
    """Run one analysis from parsed (single-valued) arguments; returns the summary and the output folder."""
    from bcos.explain.localisation import (
        LocalisationSummary,
        evaluate_grids,
        get_localisation_config,
        grid_blocks,
        plot_scores,
        smooth_attributions,
    )
    from bcos.explain.methods import explainer_options, get_explainer, get_explainer_config

    config = get_localisation_config(args.analysis_config)
    smooth_attributions(torch.zeros(1, 1), args.smooth)  # validates --smooth before anything is loaded
    if args.batch_size < 1:
        raise ConfigError(f"--batch_size must be at least 1, got {args.batch_size}")
    sample_size = config.sample_size if args.sample_size is None else args.sample_size
    if sample_size < 1:
        raise ConfigError(f"--sample_size must be at least 1, got {sample_size}")
    options = _parse_options(args.explainer_option)
    get_explainer_config(args.explainer_name, args.explainer_config)  # unknown names fail before loading anything
    device = _device(args.device)

    started = time.perf_counter()
    subject = load_subject(args)
    model = subject.model.eval().to(device)
    print(f"Localisation analysis {config.name} of {subject.description} with {args.explainer_name} ({args.explainer_config})", flush=True)

    overrides = dict(options)
    if "batch_size" in explainer_options(args.explainer_name):
        overrides.setdefault("batch_size", args.batch_size)  # as the reference: the CLI batch size wins
    explainer = get_explainer(model, args.explainer_name, args.explainer_config, **overrides)

    # confidences always come from the images at their own size (as in the reference)
    datamodule = _eval_dataset(subject, args, None)
    ranking = _load_or_rank(subject, datamodule, device, args.force_confidence_calculation)
    blocks = grid_blocks(ranking, config.grid_size, config.conf_thresh, max_grids=sample_size)
    if len(blocks) < sample_size:
        print(
            f"Only {len(blocks)} grids of {config.n_imgs} distinct, confidently and correctly classified classes "
            f"are available (asked for {sample_size})",
            flush=True,
        )
    if not blocks:
        raise InputError(
            f"no {config.grid_size}x{config.grid_size} grid can be built: fewer than {config.n_imgs} classes have correctly "
            f"classified images with confidence > {config.conf_thresh}; try a _noconfthresh or 2x2 config"
        )
    if config.do_rescale:
        datamodule = _eval_dataset(subject, args, config.grid_size)
    grids_per_batch = max(1, args.batch_size // config.n_imgs)

    def report(done: int, total: int) -> None:
        if done == total or done % max(1, total // 10) < grids_per_batch:
            print(f"  grids {done}/{total}", flush=True)

    scores = evaluate_grids(
        explainer,
        datamodule.eval_dataset,
        blocks,
        config.grid_size,
        smooth=args.smooth,
        device=device,
        grids_per_batch=grids_per_batch,
        on_progress=report,
    )
    summary = LocalisationSummary.from_scores(scores, config.grid_size)

    out = (
        subject.base_dir
        / "localisation_analysis"
        / subject.checkpoint_label
        / config.name
        / args.explainer_name
        / f"smooth-{args.smooth}"
        / _folder_name_of_config(args.explainer_config, options)
    )
    out.mkdir(parents=True, exist_ok=True)
    np.savetxt(out / "localisation_metric.np", scores.reshape(-1))
    record = {
        "analysis_config": config.name,
        "explainer_name": args.explainer_name,
        "explainer_config": args.explainer_config,
        "explainer_options": {k: repr(v) for k, v in options.items()},
        "smooth": args.smooth,
        "checkpoint": subject.checkpoint_label,
        "grids": len(blocks),
        "requested_grids": sample_size,
        **summary.to_dict(),
    }
    (out / "summary.json").write_text(json.dumps(record, indent=2) + "\n")
    lines = {
        "model": subject.description,
        "dataset": subject.dataset,
        **{k: v for k, v in config.to_dict().items() if k != "name"},
        "analysis_config": config.name,
        "sample_size": sample_size,
        "explainer_name": args.explainer_name,
        "explainer_config": args.explainer_config,
        "explainer": repr(explainer),
        "explainer_options": options,
        "smooth": args.smooth,
        "batch_size": args.batch_size,
        "checkpoint": subject.checkpoint_label,
        "device": str(device),
        "grids": len(blocks),
        "git_commit": _git_commit(),
        "seconds": round(time.perf_counter() - started, 1),
    }
    (out / "config.log").write_text("".join(f"{k}: {v}\n" for k, v in lines.items()))
    figure = plot_scores(scores, summary, title=f"{args.explainer_name} on {subject.dataset} {config.name} (smooth {args.smooth})")
    figure.savefig(out / "scores.png", dpi=100)

    print(summary.format(), flush=True)
    print(f"Saved results to '{out}'", flush=True)
    return {"summary": summary, "output_dir": out, "scores": scores}


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` and run the analysis (errors are mapped by :func:`bcos.cli.errors.run_cli`)."""
    args = get_parser().parse_args(argv)
    run_analysis(args)
    return 0


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
    for flag, value in (("--weights", args.weights), ("--sample_size", args.sample_size), ("--num_workers", args.num_workers), ("--device", args.device)):
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
