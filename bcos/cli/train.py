"""Command line of ``train.py``: train one experiment config (see TRAINING.md).

Example::

    python train.py --dataset CIFAR10 --base_network norm_ablations_final \\
        --experiment_name resnet_20_bnu-linear-nomaxout --csv_logger

Training resumes from ``<run folder>/last.ckpt`` when it exists (``--force-no-resume`` starts
over and moves the earlier run's files aside). ``--devices N`` trains with N processes (DDP);
``torchrun``/``srun`` work unchanged and set the count themselves. Errors the user can fix end with
one ``error: ...`` line and exit status 2 (``--debug`` shows the traceback); a training stopped by
SIGTERM exits with 143 and Ctrl-C (SIGINT) with 130, after saying where it resumes.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence

from bcos.cli.errors import run_cli
from bcos.errors import ConfigError
from bcos.experiments.utils.datasets import DATAMODULE_HELP

__all__ = ["get_parser", "validate_args", "main"]


def get_parser(add_help: bool = True) -> argparse.ArgumentParser:
    """The ``train.py`` argument parser (``run_with_submitit.py`` extends it)."""
    parser = argparse.ArgumentParser(
        description="Train a model from a config collection (bcos/experiments/<dataset>/<base_network>).",
        add_help=add_help,
    )
    where = parser.add_argument_group("experiment")
    where.add_argument("--base_directory", default="./experiments", help="Where run folders are created.")
    where.add_argument(
        "--dataset", default=None,
        help="Dataset name (any registered datamodule, e.g. CIFAR10, ImageNet, Digits; default: --datamodule's).",
    )
    where.add_argument("--datamodule", default=None, metavar="MODULE:CLASS", help=DATAMODULE_HELP)
    where.add_argument("--base_network", required=True, help="The config collection in bcos/experiments/<dataset>/.")
    where.add_argument("--experiment_name", required=True, help="A config name from the collection's CONFIGS.")

    run = parser.add_argument_group("training")
    run.add_argument(
        "--force-no-resume",
        dest="resume",
        action="store_false",
        default=True,
        help="Start over instead of resuming from last.ckpt (the earlier run's files are moved aside).",
    )
    run.add_argument(
        "--distributed",
        action="store_true",
        help="Force DDP, even with one process (otherwise chosen automatically: DDP when there are several).",
    )
    run.add_argument(
        "--devices",
        type=_process_count,
        default=None,
        metavar="N",
        help="Processes per node, one per device (default: the launcher's count under torchrun/srun, else "
        "the config's trainer.devices, else all GPUs or 1 CPU process). N > 1 trains with DDP.",
    )
    run.add_argument(
        "--accelerator",
        default=None,
        choices=["auto", "cpu", "gpu"],
        help="Where to train (default: the config's trainer.accelerator, else auto: the GPUs when there are any).",
    )
    run.add_argument(
        "--sync_batchnorm",
        action="store_true",
        help="Under DDP, batch norms (the uncentred ones too) use the statistics of all processes' batches.",
    )
    run.add_argument(
        "--amp",
        nargs="?",
        const="auto",
        default=None,
        choices=["auto", "bf16", "fp16"],
        help="Mixed precision: bf16 or fp16 (bare --amp: fp16 on a GPU, bf16 on the CPU).",
    )
    run.add_argument(
        "--jit", action="store_true",
        help="Not supported (TorchScript cannot compile B-cos layers): use --compile; deploy with bcos.deploy.",
    )
    run.add_argument("--compile", action="store_true", help="Compile the model with torch.compile.")
    run.add_argument("--channels_last", action="store_true", help="Use the channels-last memory format.")
    run.add_argument(
        "--cache_dataset", default=None, choices=["onthefly", "shm"], help="Cache the training set (ImageNet)."
    )
    run.add_argument("--track_grad_norm", action="store_true", help="Log the total gradient 2-norm every step.")
    run.add_argument("--refresh_rate", type=int, default=None, help="Progress bar refresh rate in steps.")

    logging = parser.add_argument_group("logging")
    logging.add_argument("--csv_logger", action="store_true", help="Log to <run folder>/csv_logs.")
    logging.add_argument("--tensorboard_logger", action="store_true", help="Log to TensorBoard (tb_logs/...).")
    logging.add_argument("--wandb_logger", action="store_true", help="Log to Weights & Biases.")
    logging.add_argument(
        "--wandb_project", default=os.getenv("WANDB_PROJECT"), help="W&B project (default: $WANDB_PROJECT)."
    )
    logging.add_argument("--wandb_id", default=os.getenv("WANDB_ID"), help="W&B run id to resume (default: $WANDB_ID).")
    logging.add_argument("--wandb_name", default=None, help="W&B run name (default: the experiment name).")
    logging.add_argument(
        "--explanation_logging", action="store_true", help="Save explanations of validation images during training."
    )
    logging.add_argument(
        "--explanation_logging_every_n_epochs", type=int, default=1, help="Explanation logging interval in epochs."
    )

    debug = parser.add_argument_group("debugging")
    debug.add_argument("--fast_dev_run", action="store_true", help="Run one training and one validation batch only.")
    debug.add_argument("--debug", action="store_true", help="Deterministic algorithms and full tracebacks on errors.")
    return parser


def _process_count(text: str) -> int:
    try:
        count = int(text)
    except ValueError:
        count = 0
    if count < 1:
        raise argparse.ArgumentTypeError(f"expected a number of processes (1, 2, ...), got {text!r}")
    return count


def validate_args(args: argparse.Namespace) -> None:
    """Check names and option combinations before anything starts (raises bcos errors)."""
    from bcos.experiments.utils import get_config
    from bcos.experiments.utils.datasets import resolve_datamodule
    from bcos.experiments.utils.run_folder import RunFolder

    if args.dataset is None and args.datamodule is None:
        raise ConfigError("pass --dataset NAME (or --datamodule MODULE:CLASS)")
    # imports --datamodule and the collection (which may define the datamodule) before checking the name
    args.dataset = resolve_datamodule(args.dataset, args.base_network, args.datamodule).dataset_name()
    run_folder = RunFolder.of(args.dataset, args.base_network, args.experiment_name, args.base_directory)
    get_config(args.dataset, args.base_network, args.experiment_name, run_folder=run_folder.path)
    validate_options(args)


def validate_options(args: argparse.Namespace) -> None:
    """Check the option combinations that do not depend on the experiment (raises bcos errors)."""
    if args.wandb_logger and not args.wandb_project:
        raise ConfigError("--wandb_logger needs --wandb_project NAME (or the WANDB_PROJECT environment variable)")
    if args.jit:
        raise ConfigError(
            "--jit (TorchScript) is not supported for B-cos models: use --compile to speed up training, "
            "and bcos.deploy or torch.export to deploy a trained model (docs/deploying.md)"
        )
    if args.explanation_logging_every_n_epochs < 1:
        raise ConfigError("--explanation_logging_every_n_epochs must be at least 1")
    if args.refresh_rate is not None and args.refresh_rate < 1:
        raise ConfigError("--refresh_rate must be at least 1")


def _main(argv: Sequence[str] | None) -> int:
    args = get_parser().parse_args(argv)
    validate_args(args)
    from bcos.training.run import run_training

    run_training(args)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``train.py``; returns the exit status."""
    return run_cli(_main, argv)
