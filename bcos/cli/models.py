"""``bcos models``: the model zoo with accuracy, size, input and whether the weights are local.

Examples::

    bcos models                          # every registered model, as a table
    bcos models list 'resnet*' --local   # only ResNets whose weights are already downloaded
    bcos models list --format markdown   # the table of docs/model-zoo.md
    bcos models show convnext_tiny       # everything known about one model

Weights count as local when their file is in ``$BCOS_WEIGHTS_DIR`` or torch.hub's cache
(``~/.cache/torch/hub/checkpoints``); ``bcos.create_model(name, pretrained=True)`` downloads them
otherwise.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from typing import Any

from bcos.errors import UnknownNameError

__all__ = ["get_parser", "model_rows", "format_rows", "describe_model", "run", "main", "EXAMPLES"]

EXAMPLES = """examples:
  bcos models                              list the zoo (accuracy, parameters, weights)
  bcos models list 'convnext*' --local     ConvNeXts whose weights are already downloaded
  bcos models list --format markdown       a Markdown table (as in docs/model-zoo.md)
  bcos models show resnet50                one model: source config, transform, weights URL and hash
"""

FORMATS = ("table", "markdown", "json", "names")


def get_parser(add_help: bool = True) -> argparse.ArgumentParser:
    """The ``bcos models`` argument parser (sub-commands ``list`` and ``show``)."""
    parser = argparse.ArgumentParser(
        prog="bcos models",
        description="List the registered models (the B-cos-v2 zoo) or show one.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        add_help=add_help,
    )
    add_arguments(parser)
    return parser


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``list`` / ``show`` sub-commands to ``parser`` (``list`` is the default)."""
    parser.add_argument("--debug", action="store_true", help="Show full tracebacks on errors.")
    actions = parser.add_subparsers(dest="models_action", metavar="{list,show}")
    listing = actions.add_parser(
        "list",
        help="List models (default).",
        description="List registered models with top-1/top-5 ImageNet accuracy, parameters and weights.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_list_arguments(listing)
    show = actions.add_parser(
        "show",
        help="Show one model.",
        description="Show everything the registry knows about one model.",
        epilog="example:\n  bcos models show resnet50\n",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    show.add_argument("name", help="A model name, e.g. resnet50 (see 'bcos models list').")
    show.add_argument("--debug", action="store_true", help="Show full tracebacks on errors.")
    parser.set_defaults(models_action=None, patterns=["*"], pretrained_only=False, local_only=False, format="table")


def _add_list_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("patterns", nargs="*", default=["*"], metavar="PATTERN", help="Name patterns, e.g. 'resnet*' (default: all).")
    parser.add_argument("--pretrained", dest="pretrained_only", action="store_true", help="Only models with published weights.")
    parser.add_argument("--local", dest="local_only", action="store_true", help="Only models whose weights are downloaded.")
    parser.add_argument("--format", choices=FORMATS, default="table", help="Output format (default: table).")
    parser.add_argument("--debug", action="store_true", help="Show full tracebacks on errors.")


def _local_path(config: Any) -> str | None:
    from bcos.models.weights import find_local_file

    if config.weights is None:
        return None
    found = find_local_file(config.weights.file_name)
    return None if found is None else str(found)


def model_rows(patterns: Sequence[str] = ("*",), pretrained_only: bool = False, local_only: bool = False) -> list[dict[str, Any]]:
    """One plain dict per matching model: name, accuracy, parameters, input, weights, source.

    Raises :class:`UnknownNameError` (with the closest name) when a pattern without wildcards
    matches nothing.
    """
    from bcos.models.registry import get_pretrained_config, list_models

    names = list_models(list(patterns), pretrained=True if pretrained_only else None)
    if not names:
        for pattern in patterns:
            if not any(ch in pattern for ch in "*?["):
                get_pretrained_config(pattern)  # raises with a suggestion
        raise UnknownNameError(f"no model matches {' '.join(patterns)}; list them all with: bcos models")
    rows = []
    for name in names:
        config = get_pretrained_config(name)
        local = _local_path(config)
        if local_only and local is None:
            continue
        rows.append(
            {
                "name": name,
                "description": config.description,
                "bcos": config.is_bcos,
                "top1": config.top1,
                "top5": config.top5,
                "params": config.num_params,
                "resize": config.transform.resize_size,
                "crop": config.transform.crop_size,
                "weights": "local" if local else ("download" if config.weights is not None else "none"),
                "weights_file": config.weights.file_name if config.weights is not None else None,
                "weights_url": config.weights.url if config.weights is not None else None,
                "local_path": local,
                "source": str(config.source),
            }
        )
    return rows


def _accuracy(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def format_rows(rows: Sequence[dict[str, Any]], fmt: str = "table") -> str:
    """``rows`` of :func:`model_rows` as a text table, a Markdown table, JSON or bare names."""
    if fmt == "json":
        return json.dumps(list(rows), indent=2)
    if fmt == "names":
        return "\n".join(row["name"] for row in rows)
    header = ["model", "top-1 %", "top-5 %", "params (M)", "input", "B-cos", "weights", "trained with"]
    lines = [
        [
            row["name"],
            _accuracy(row["top1"]),
            _accuracy(row["top5"]),
            f"{row['params'] / 1e6:.1f}",
            f"{row['crop']} (resize {row['resize']})",
            "yes" if row["bcos"] else "no",
            row["weights"],
            row["source"],
        ]
        for row in rows
    ]
    if fmt == "markdown":
        # for documentation: whether weights are published, not whether this machine has them
        for row, cells in zip(rows, lines):
            cells[0] = f"`{cells[0]}`"
            cells[6] = f"[{row['weights_file']}]({row['weights_url']})" if row["weights_file"] else "none"
        header[6] = "weights file"
        out = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * 3 + ["---"] * 4) + "|"]
        out += ["| " + " | ".join(cells) + " |" for cells in lines]
        return "\n".join(out)
    if fmt != "table":
        raise UnknownNameError(f"unknown format {fmt!r} (choices: {', '.join(FORMATS)})")
    widths = [max(len(str(c)) for c in column) for column in zip(header, *lines)]
    numeric = {1, 2, 3}
    def render(cells: Sequence[str]) -> str:
        return "  ".join(str(c).rjust(w) if i in numeric else str(c).ljust(w) for i, (c, w) in enumerate(zip(cells, widths))).rstrip()
    return "\n".join([render(header), render(["-" * w for w in widths]), *map(render, lines)])


def describe_model(name: str) -> str:
    """Several lines on one model: what it is, how it was trained, its input, weights and accuracy."""
    from bcos.models.registry import get_pretrained_config

    config = get_pretrained_config(name)
    transform = config.transform
    inputs = "AddInverse: 6 channels [r, g, b, 1-r, 1-g, 1-b]" if transform.is_bcos else "ImageNet mean/std: 3 channels"
    local = _local_path(config)
    lines = [
        f"{config.name}: {config.description}",
        f"  architecture     bcos.models.{config.module}.{config.architecture} ({config.kind})",
        (
            f"  trained with     bcos/experiments/{config.source} (train.py --dataset {config.source.dataset} "
            f"--base_network {config.source.collection} --experiment_name {config.source.experiment})"
        ),
        f"  parameters       {config.num_params:,} ({config.num_params / 1e6:.2f}M)",
        f"  classes          {config.num_classes}",
        f"  ImageNet val     top-1 {_accuracy(config.top1)}%, top-5 {_accuracy(config.top5)}%",
        f"  input            resize {transform.resize_size}, center crop {transform.crop_size}, {inputs}",
        f"  explanations     {'model.explain(x) (B-cos)' if config.is_bcos else 'none (not a B-cos network)'}",
    ]
    if config.weights is None:
        lines.append("  weights          none published")
    else:
        lines += [
            f"  weights URL      {config.weights.url}",
            f"  weights sha256   {config.weights.sha256_prefix}... (checked on load)",
            f"  weights local    {local or 'no (downloaded on first use)'}",
        ]
    lines.append(f"  use              bcos.create_model({config.name!r}, pretrained=True)")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Run ``bcos models`` with parsed ``args``."""
    if args.models_action == "show":
        print(describe_model(args.name))
        return 0
    rows = model_rows(args.patterns, args.pretrained_only, args.local_only)
    if not rows:
        print("no model matches (weights are downloaded on first use; drop --local to see all)")
        return 0
    print(format_rows(rows, args.format))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``bcos models`` on its own (the ``bcos`` command calls :func:`run`)."""
    from bcos.cli.errors import run_cli

    return run_cli(lambda a: run(get_parser().parse_args(a)), argv)
