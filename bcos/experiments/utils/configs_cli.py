"""The command line of a config collection.

Every ``experiment_parameters.py`` ends with ``configs_cli(CONFIGS, ...)`` so that

    python -m bcos.experiments.<dataset>.<base_network>.experiment_parameters [-f NAME | -a | -s]

prints the number of configs (default), one config (``-f``), every name (``-a``) or writes a
``run_exps.sh`` with one training command per config (``-s``).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from bcos.atomic_io import atomic_write_text
from bcos.errors import closest_match

from .config_utils import config_to_text

__all__ = ["configs_cli", "SCRIPT_COMMAND_TEMPLATE"]

SCRIPT_COMMAND_TEMPLATE = (
    "python run_with_submitit.py --gpus $NUMGPUS --nodes $NUMNODES --timeout 4 "
    "--dataset {dataset} --base_network {base_network} --distributed --csv_logger "
    "--wandb_logger --wandb_project $WANDPROJ --experiment_name {experiment_name} "
    "--amp --cache_dataset shm"
)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Inspect a config collection. By default prints the number of configs."
    )
    action = parser.add_mutually_exclusive_group()
    action.add_argument("-f", "--find", metavar="NAME", help="print the config named NAME")
    action.add_argument(
        "-a", "--print-all", action="store_true", help="print the names of all configs"
    )
    action.add_argument(
        "-s",
        "--to_script",
        action="store_true",
        help="write run_exps.sh with one run_with_submitit.py command per config",
    )
    parser.add_argument(
        "-o",
        "--output",
        default="run_exps.sh",
        help="file written by --to_script (default: run_exps.sh)",
    )
    return parser


def configs_cli(
    configs: Mapping[str, Mapping[str, Any]],
    argv: Sequence[str] | None = None,
    *,
    dataset: str | None = None,
    base_network: str | None = None,
) -> None:
    """Run the collection command line on ``configs`` (``argv`` defaults to ``sys.argv[1:]``).

    ``dataset`` and ``base_network`` fill the ``--to_script`` commands (shell variables
    ``$DATASET`` / ``$BASENET`` when not given). An unknown ``--find`` name prints the closest
    match to stderr and exits with code 2.
    """
    args = _parser().parse_args(argv)

    if args.to_script:
        command = SCRIPT_COMMAND_TEMPLATE.format(
            dataset=dataset or "$DATASET",
            base_network=base_network or "$BASENET",
            experiment_name="{experiment_name}",
        )
        lines = [command.format(experiment_name=name) for name in configs]
        atomic_write_text(args.output, "\n".join(lines) + ("\n" if lines else ""))
        print(f"wrote {len(lines)} commands to {args.output}")
    elif args.find is not None:
        if args.find not in configs:
            message = f"error: no config named {args.find!r}"
            suggestion = closest_match(args.find, configs)
            if suggestion is not None:
                message += f"; did you mean {suggestion!r}?"
            print(message, file=sys.stderr)
            raise SystemExit(2)
        print(f"Found {args.find!r}")
        print(config_to_text(configs[args.find]), end="")
    elif args.print_all:
        for name in configs:
            print(name)
    else:
        print(f"There are a total of {len(configs)} configs.")
