"""``bcos configs``: list, show and find the experiment configs of the collections.

Examples::

    bcos configs list                                   # datasets, collections, config counts
    bcos configs list CIFAR10 norm_ablations_final 'resnet_20_bnu*'
    bcos configs show ImageNet bcos_final resnet_50     # or ImageNet/bcos_final/resnet_50
    bcos configs find 'convnext*'                       # search every collection

A config's name is what ``train.py --experiment_name`` takes; ``show`` prints the resolved config
as the run folder's ``config.txt`` records it.
"""

from __future__ import annotations

import argparse
import fnmatch
from collections.abc import Sequence

from bcos.errors import ConfigError, UnknownNameError, unknown_name

__all__ = ["get_parser", "add_arguments", "find_configs", "collection_counts", "run", "main", "EXAMPLES"]

EXAMPLES = """examples:
  bcos configs list                                     datasets, collections and how many configs each has
  bcos configs list CIFAR10 norm_ablations_final        the config names of one collection
  bcos configs list ImageNet bcos_final 'resnet*'       only names matching a pattern
  bcos configs show ImageNet bcos_final resnet_50       one config, fully resolved
  bcos configs find 'convnext*'                         search every collection (prints dataset/collection/name)
"""


def get_parser(add_help: bool = True) -> argparse.ArgumentParser:
    """The ``bcos configs`` argument parser (sub-commands ``list``, ``show``, ``find``)."""
    parser = argparse.ArgumentParser(
        prog="bcos configs",
        description="Inspect the experiment configs (bcos/experiments/<dataset>/<collection>).",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        add_help=add_help,
    )
    add_arguments(parser)
    return parser


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``list`` / ``show`` / ``find`` sub-commands to ``parser`` (``list`` is the default)."""
    parser.add_argument("--debug", action="store_true", help="Show full tracebacks on errors.")
    actions = parser.add_subparsers(dest="configs_action", metavar="{list,show,find}")
    raw = argparse.RawDescriptionHelpFormatter

    listing = actions.add_parser(
        "list", help="List collections, or the configs of one (default).", epilog=EXAMPLES, formatter_class=raw,
        description="Without arguments: every dataset and collection with its number of configs. "
        "With DATASET: its collections. With DATASET BASE_NETWORK: the config names.",
    )
    listing.add_argument("dataset", nargs="?", help="A dataset, e.g. CIFAR10 (or DATASET/BASE_NETWORK).")
    listing.add_argument("base_network", nargs="?", help="A collection of the dataset, e.g. norm_ablations_final.")
    listing.add_argument("pattern", nargs="?", default="*", help="Only names matching this pattern (default: all).")
    listing.add_argument("--debug", action="store_true", help="Show full tracebacks on errors.")

    show = actions.add_parser(
        "show", help="Print one config.", formatter_class=raw,
        description="Print one experiment config as readable text (as written to a run's config.txt).",
        epilog="examples:\n  bcos configs show ImageNet bcos_final resnet_50\n"
        "  bcos configs show CIFAR10/norm_ablations_final/resnet_20_bnu-linear-nomaxout\n",
    )
    show.add_argument("names", nargs="+", metavar="NAME", help="DATASET BASE_NETWORK EXPERIMENT, or DATASET/BASE_NETWORK/EXPERIMENT.")
    show.add_argument("--debug", action="store_true", help="Show full tracebacks on errors.")

    find = actions.add_parser(
        "find", help="Search config names in every collection.", formatter_class=raw,
        description="Print dataset/collection/name of every config whose name matches PATTERN "
        "(a shell pattern such as 'resnet_50*', or a plain substring).",
        epilog="examples:\n  bcos configs find 'convnext*'\n  bcos configs find vit --dataset ImageNet\n",
    )
    find.add_argument("pattern", help="Shell pattern or substring of the experiment name.")
    find.add_argument("--dataset", default=None, help="Search only this dataset.")
    find.add_argument("--debug", action="store_true", help="Show full tracebacks on errors.")
    parser.set_defaults(configs_action=None, dataset=None, base_network=None, pattern="*")


def _configs(dataset: str, base_network: str) -> dict:
    from bcos.experiments.utils import get_configs_and_model_factory

    return get_configs_and_model_factory(dataset, base_network)[0]


def collection_counts(dataset: str | None = None) -> list[tuple[str, str, int]]:
    """``(dataset, collection, number of configs)`` for every collection (of ``dataset``)."""
    from bcos.experiments.utils import list_collections

    return [
        (name, collection, len(_configs(name, collection)))
        for name, collections in list_collections(dataset).items()
        for collection in collections
    ]


def _matches(name: str, pattern: str) -> bool:
    if any(ch in pattern for ch in "*?["):
        return fnmatch.fnmatchcase(name.lower(), pattern.lower())
    return pattern.lower() in name.lower()


def find_configs(pattern: str, dataset: str | None = None) -> list[str]:
    """``dataset/collection/name`` of every config whose name matches ``pattern`` (sorted).

    Raises :class:`UnknownNameError` with the closest name when nothing matches.
    """
    found, everything = [], []
    for data, collection, _ in collection_counts(dataset):
        for name in _configs(data, collection):
            everything.append(name)
            if _matches(name, pattern):
                found.append(f"{data}/{collection}/{name}")
    if not found:
        raise unknown_name("experiment config", pattern, everything, hint="list them with: bcos configs list DATASET BASE_NETWORK")
    return sorted(found)


def _split_names(names: Sequence[str]) -> list[str]:
    parts = [part for name in names for part in name.strip("/").split("/") if part]
    if len(parts) != 3:
        raise ConfigError(
            f"'bcos configs show' takes DATASET BASE_NETWORK EXPERIMENT (or one DATASET/BASE_NETWORK/EXPERIMENT), got {' '.join(names)!r}"
        )
    return parts


def run(args: argparse.Namespace) -> int:
    """Run ``bcos configs`` with parsed ``args``."""
    from bcos.experiments.utils import config_to_text, get_config

    action = args.configs_action or "list"
    if action == "show":
        dataset, base_network, name = _split_names(args.names)
        print(f"# {dataset}/{base_network}/{name}")
        print(config_to_text(get_config(dataset, base_network, name)), end="")
        return 0
    if action == "find":
        print("\n".join(find_configs(args.pattern, args.dataset)))
        return 0

    dataset, base_network, pattern = args.dataset, args.base_network, args.pattern
    if dataset and "/" in dataset:  # DATASET/BASE_NETWORK in one argument
        if base_network is not None:
            pattern = base_network
        dataset, _, base_network = dataset.strip("/").partition("/")
    if base_network is None:
        rows = collection_counts(dataset)
        width = max(len(f"{d}/{c}") for d, c, _ in rows)
        print(f"{'DATASET/COLLECTION'.ljust(width)}  CONFIGS")
        for data, collection, count in rows:
            print(f"{f'{data}/{collection}'.ljust(width)}  {count:7d}")
        print("\nlist the names of one: bcos configs list DATASET COLLECTION")
        return 0
    names = [name for name in _configs(dataset, base_network) if _matches(name, pattern)]
    if not names and pattern != "*":
        raise UnknownNameError(f"no config of {dataset}/{base_network} matches {pattern!r}; drop the pattern to list all")
    print("\n".join(names) if names else f"{dataset}/{base_network} has no configs yet")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``bcos configs`` on its own (the ``bcos`` command calls :func:`run`)."""
    from bcos.cli.errors import run_cli

    return run_cli(lambda a: run(get_parser().parse_args(a)), argv)
