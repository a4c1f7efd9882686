"""``evaluate.py``: top-1 / top-5 accuracy of a trained, published or hub model on a test set.

Examples::

    python evaluate.py --dataset CIFAR10 --base_network norm_ablations_final \\
        --experiment_name resnet_20_bnu-linear-nomaxout --reload best
    python evaluate.py --dataset CIFAR10 --base_network norm_ablations_final \\
        --experiment_name resnet_20_bnu-linear-nomaxout --weights resnet_20-0123456789.pth
    python evaluate.py --hubconf resnet18 --batch_size 64

The test loader is the datamodule's (ImageNet val, CIFAR-10 test, ...). Results are printed as
``Acc@1 xx.xxx% Acc@5 yy.yyy%``.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from bcos.errors import ConfigError
from bcos.experiments.utils.datasets import DATAMODULE_HELP, dataset_of_datamodule, resolve_datamodule

__all__ = ["get_parser", "main", "run_evaluation", "load_model_and_config"]

DEFAULT_DATASET = "ImageNet"


def get_parser(add_help: bool = True) -> argparse.ArgumentParser:
    """The argument parser of ``evaluate.py``."""
    parser = argparse.ArgumentParser(description="Evaluate a trained model (top-1/top-5 accuracy).", add_help=add_help)
    parser.add_argument("--hubconf", metavar="NAME", help="Evaluate NAME(pretrained=True) from bcos's hubconf.py.")
    parser.add_argument(
        "--trust-local-hubconf",
        dest="trust_local_hubconf",
        action="store_true",
        help="Let --hubconf import (run) the hubconf.py of the working directory instead of bcos's own.",
    )
    parser.add_argument("--base_directory", default="./experiments", help="Where run folders live (default: ./experiments).")
    parser.add_argument(
        "--dataset",
        help="Any registered datamodule, e.g. ImageNet or CIFAR10 (default: ImageNet, or a hub model's own data set).",
    )
    parser.add_argument("--datamodule", metavar="MODULE:CLASS", help=DATAMODULE_HELP)
    parser.add_argument("--base_network", help="The config collection, e.g. norm_ablations_final.")
    parser.add_argument("--experiment_name", help="The experiment (config) name in the collection.")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--reload", help="Which checkpoint of the run folder: last, best, best_any or epoch_<N>.")
    source.add_argument("--weights", metavar="PATH", type=Path, help="A weights file (state dict) to evaluate instead.")
    parser.add_argument("--ema", action="store_true", help="Use the EMA weights (not with --reload best_any).")
    parser.add_argument("--batch_size", type=int, default=1, help="Batch size (default: 1).")
    parser.add_argument("--num_workers", type=int, default=None, help="Data loader workers (default: the config's).")
    parser.add_argument("--no-cuda", dest="no_cuda", action="store_true", help="Run on the CPU even if CUDA is available.")
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="Hide the progress bar.")
    parser.add_argument("--debug", action="store_true", help="Show full tracebacks on errors.")
    return parser


REPOSITORY_HUBCONF = Path(__file__).resolve().parents[2] / "hubconf.py"


def _import_local_hubconf(trust_local: bool = False):
    """The ``hubconf.py`` of the working directory, else of the repository root, imported from its path.

    Importing a file runs its code: one in the working directory that is not bcos's own is imported
    only with ``trust_local`` (``--trust-local-hubconf``), and then with a warning naming it.
    """
    local = Path.cwd() / "hubconf.py"
    if local.is_file() and local.resolve() != REPOSITORY_HUBCONF:
        if not trust_local:
            raise ConfigError(
                f"--hubconf would import and run '{local.resolve()}' from the working directory; pass "
                "--trust-local-hubconf if you trust that file, or run from another folder to use bcos's own hubconf.py"
            )
        print(f"warning: --hubconf imports and runs '{local.resolve()}' (--trust-local-hubconf)", file=sys.stderr)
    for folder in (Path.cwd(), REPOSITORY_HUBCONF.parent):
        path = folder / "hubconf.py"
        if path.is_file():
            if str(folder) not in sys.path:
                sys.path.insert(0, str(folder))  # hubconf may import its neighbours
            spec = importlib.util.spec_from_file_location("hubconf", path)
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            return module
    raise ConfigError("no hubconf.py found; run from the repository root or drop --hubconf")


def _hub_model_and_config(name: str, trust_local: bool = False) -> tuple[torch.nn.Module, dict[str, Any], Any]:
    """``NAME(pretrained=True)`` from hubconf, its config and (for registry models) its Experiment."""
    from bcos.errors import unknown_name

    hubconf = _import_local_hubconf(trust_local)
    entry_points = getattr(hubconf, "__all__", None) or [
        n for n in dir(hubconf) if not n.startswith("_") and callable(getattr(hubconf, n))
    ]
    if name not in entry_points:
        raise unknown_name("hub entry point", name, entry_points, hint="see bcos.list_models()")
    model = getattr(hubconf, name)(pretrained=True)
    config = getattr(model, "config", None)
    if isinstance(config, dict) and "data" in config:  # reference-style hub models carry their config
        return model, config, None
    source = _pretrained_source(model)
    if source is None:
        raise ConfigError(f"hub model {name!r} carries no config to build its test data from; evaluate it by experiment instead")
    from bcos.experiments.utils.experiment import Experiment

    experiment = Experiment(*source)
    return model, experiment.config, experiment


def _pretrained_source(model: torch.nn.Module) -> tuple[str, str, str] | None:
    """(dataset, base_network, experiment_name) of a registry model (``model.pretrained_config.source``)."""
    source = getattr(getattr(model, "pretrained_config", None), "source", None)
    if source is None:
        return None
    return source.dataset, source.collection, source.experiment


def load_model_and_config(args: argparse.Namespace) -> tuple[torch.nn.Module, dict[str, Any], Any]:
    """The model to evaluate, its experiment config and its Experiment (None for reference-style hub models)."""
    args.dataset = dataset_of_datamodule(args.dataset, getattr(args, "datamodule", None))
    if args.hubconf is not None:
        if args.reload is not None or args.weights is not None or args.ema:
            raise ConfigError("--hubconf loads the published weights; drop --reload/--weights/--ema")
        model, config, experiment = _hub_model_and_config(args.hubconf, getattr(args, "trust_local_hubconf", False))
        args.dataset = args.dataset or (experiment.dataset if experiment is not None else DEFAULT_DATASET)
        return model, config, experiment

    args.dataset = args.dataset or DEFAULT_DATASET
    if not args.base_network or not args.experiment_name:
        raise ConfigError("pass --base_network and --experiment_name (or --hubconf NAME)")
    if args.reload is None and args.weights is None:
        raise ConfigError("pass --reload {last,best,best_any,epoch_<N>} or --weights PATH (or --hubconf NAME)")

    from bcos.experiments.utils.experiment import Experiment

    resolve_datamodule(args.dataset, args.base_network)  # the data set is checked before any weights are read
    experiment = Experiment(args.dataset, args.base_network, args.experiment_name, base_directory=args.base_directory)
    if args.weights is not None:
        model = experiment.load_model_from_weights(args.weights, ema=args.ema)
        print(f"Loaded weights from '{args.weights}'")
    else:
        model = experiment.load_trained_model(reload=args.reload, ema=args.ema, verbose=True)
    return model, experiment.config, experiment


def _test_loader(args: argparse.Namespace, config: dict[str, Any], experiment):
    overrides: dict[str, Any] = {"batch_size": args.batch_size}
    if args.num_workers is not None:
        overrides["num_workers"] = args.num_workers
    if experiment is not None and experiment.dataset == args.dataset:
        datamodule = experiment.get_datamodule(**overrides)
    else:
        datamodule = resolve_datamodule(args.dataset)({**config["data"], **overrides})
    datamodule.setup("test")
    return datamodule.test_dataloader()


def run_evaluation(args: argparse.Namespace) -> dict[str, Any]:
    """Load the model and data the arguments name, evaluate and print the accuracies."""
    from bcos.experiments.utils.evaluation import evaluate_model, format_accuracy

    if args.batch_size < 1:
        raise ConfigError(f"--batch_size must be at least 1, got {args.batch_size}")
    use_cuda = torch.cuda.is_available() and not args.no_cuda
    device = torch.device("cuda" if use_cuda else "cpu")

    model, config, experiment = load_model_and_config(args)
    loader = _test_loader(args, config, experiment)

    previous = (torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.benchmark)
    if use_cuda:
        # cuBLAS needs a fixed workspace for deterministic results; set before the first matmul.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.backends.cudnn.benchmark = False
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        result = evaluate_model(model, loader, device, progress=args.progress)
    finally:
        torch.use_deterministic_algorithms(previous[0])
        torch.backends.cudnn.benchmark = previous[1]

    print(
        f"Out of a total of {result['samples']}, got total_correct_top1={result['correct_top1']} "
        f"and total_correct_top5={result['correct_top5']}"
    )
    print()
    print("--------------------------------------------")
    print(format_accuracy(result))
    print("--------------------------------------------")
    print()
    return result


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` and run the evaluation (errors are mapped by :func:`bcos.cli.errors.run_cli`)."""
    args = get_parser().parse_args(argv)
    run_evaluation(args)
    return 0


if __name__ == "__main__":
    from bcos.cli.errors import run_cli

    sys.exit(run_cli(main))
