"""The ``bcos`` command: one entry point for training, evaluation, explanations and the zoo.

``bcos <command> --help`` shows every option and examples. The commands call the same code as
the spec's scripts and take the same options: ``bcos train`` = ``train.py`` (plus fine-tuning),
``bcos evaluate`` = ``evaluate.py``, ``bcos localise`` = ``python -m
interpretability.analyses.localisation``. Errors you can fix end as one ``error: ...`` line with
exit status 2 (``--debug`` shows the traceback).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bcos.cli.errors import run_cli

__all__ = ["build_parser", "main", "EXAMPLES"]

EXAMPLES = """examples:
  bcos models                                           the model zoo: accuracy, parameters, local weights
  bcos explain cat.jpg --model resnet50                 explain your image; open explanations/report.html
  bcos configs list                                     the experiment config collections
  bcos train --dataset CIFAR10 --base_network norm_ablations_final --experiment_name resnet_20_bnu-linear-nomaxout
  bcos train --finetune resnet18 --data-dir my_images/ --epochs 5
  bcos evaluate --dataset CIFAR10 --base_network norm_ablations_final --experiment_name resnet_20_bnu-linear-nomaxout --reload best
  bcos localise --save_path experiments/CIFAR10/norm_ablations_final/resnet_20_bnu-linear-nomaxout --analysis_config 500_3x3
  bcos export --model resnet50 --output resnet50.onnx   deploy: ONNX (or .pt2), any batch size

'bcos COMMAND --help' shows the options of a command.
"""

TRAIN_EXAMPLES = """examples:
  train an experiment config (as train.py):
    bcos train --dataset CIFAR10 --base_network norm_ablations_final \\
        --experiment_name resnet_20_bnu-linear-nomaxout --csv_logger
  fine-tune a published model on your images (my_images/<class>/*.jpg, or my_images/{train,val}/<class>/*.jpg):
    bcos train --finetune resnet18 --data-dir my_images/ --epochs 5
    bcos train --finetune resnet50 --data-dir my_images/ --freeze-backbone --batch-size 16
  then explain with the fine-tuned model:
    bcos explain my_images/ --run experiments/ImageFolder/finetune/resnet18-my_images
  B-cosify a standard torchvision/timm model and fine-tune it (published weights, or --weights FILE offline):
    bcos train --bcosify resnet18 --data-dir my_images/ --epochs 5
    bcos train --bcosify timm/convnext_atto --weights convnext_atto.pth --data-dir my_images/ --b-start 1 --b-warmup-epochs 2

Runs resume from last.ckpt; --force-no-resume starts over.
"""

EVALUATE_EXAMPLES = """examples:
  bcos evaluate --dataset CIFAR10 --base_network norm_ablations_final \\
      --experiment_name resnet_20_bnu-linear-nomaxout --reload best
  bcos evaluate --hubconf resnet18 --batch_size 64        published weights on ImageNet val (IMAGENET_PATH)
  bcos evaluate --dataset ImageFolder --base_network finetune --experiment_name resnet18-my_images --reload best
"""

LOCALISE_EXAMPLES = """examples:
  bcos localise --save_path experiments/CIFAR10/norm_ablations_final/resnet_20_bnu-linear-nomaxout \\
      --reload last --analysis_config 500_3x3 --explainer_name Ours --smooth 1 --batch_size 64
  bcos localise --model resnet18 --analysis_config 250_2x2 --explainer_name Ours --smooth 15

See docs/localisation.md for the analysis and its outputs.
"""

# the fine-tuning options of `bcos train` (dest -> shown name), checked against --finetune
_FINETUNE_OPTIONS = {
    "data_dir": "--data-dir",
    "freeze_backbone": "--freeze-backbone",
    "epochs": "--epochs",
    "ft_batch_size": "--batch-size",
    "lr": "--lr",
    "weight_decay": "--weight-decay",
    "image_size": "--image-size",
    "num_workers": "--num-workers",
    "seed": "--seed",
    "weights": "--weights",
    "no_pretrained": "--no-pretrained",
    "name": "--name",
    "val_fraction": "--val-fraction",
}
_EXPERIMENT_OPTIONS = ("dataset", "base_network", "experiment_name")
# the options of `bcos train --bcosify` only (dest -> shown name)
_BCOSIFY_OPTIONS = {
    "b": "--b",
    "b_start": "--b-start",
    "b_warmup_epochs": "--b-warmup-epochs",
    "bias": "--bias",
    "max_pool": "--max-pool",
}

# command -> one-line help (the full parser of a command is only built when it runs)
_HELP = {
    "train": "Train an experiment config, fine-tune a published model, or B-cosify a torchvision/timm model.",
    "evaluate": "Top-1/top-5 accuracy of a trained, fine-tuned or published model.",
    "explain": "Explain your images: PNGs and an HTML report.",
    "localise": "Localisation analysis (grid pointing game) of a model's explanations.",
    "configs": "List, show and find experiment configs.",
    "models": "The model zoo: accuracy, parameters, weights.",
    "export": "Export a model for deployment: ONNX or a torch.export program.",
}
_ALIASES = {"localise": ["localize"]}


def _raw(**kwargs) -> dict:
    return dict(formatter_class=argparse.RawDescriptionHelpFormatter, **kwargs)


def _add_train(commands: argparse._SubParsersAction) -> None:
    from bcos.cli.train import get_parser as train_parser

    base = train_parser(add_help=False)
    for action in base._actions:  # fine-tuning names the experiment itself
        if action.dest in _EXPERIMENT_OPTIONS:
            action.required = False
    parser = commands.add_parser(
        "train",
        parents=[base],
        help=_HELP["train"],
        description="Train a model from a config collection (the options of train.py), or fine-tune a "
        "published B-cos model on an ImageFolder data set with --finetune MODEL --data-dir FOLDER.",
        epilog=TRAIN_EXAMPLES,
        **_raw(),
    )
    ft = parser.add_argument_group("fine-tuning (replaces --dataset/--base_network/--experiment_name)")
    ft.add_argument("--finetune", metavar="MODEL", help="A registered model to start from, e.g. resnet18 (see 'bcos models').")
    ft.add_argument("--data-dir", dest="data_dir", type=Path, metavar="FOLDER", help="FOLDER/<class>/<images> (split 80/20 automatically) or FOLDER/{train,val}/<class>/<images>.")
    ft.add_argument("--freeze-backbone", dest="freeze_backbone", action="store_true", help="Train only the new classifier.")
    ft.add_argument("--epochs", type=int, metavar="N", help="Training epochs (default: 10).")
    ft.add_argument("--batch-size", dest="ft_batch_size", type=int, metavar="N", help="Batch size per device (default: 32).")
    ft.add_argument("--lr", type=float, help="Learning rate (default: 1e-3 with --freeze-backbone, else 1e-4).")
    ft.add_argument("--weight-decay", dest="weight_decay", type=float, metavar="WD", help="Weight decay (default: 0; > 0 uses AdamW).")
    ft.add_argument("--image-size", dest="image_size", type=int, metavar="PIXELS", help="Crop size for training and evaluation (default: the model's, 224).")
    ft.add_argument("--num-workers", dest="num_workers", type=int, metavar="N", help="Data loader workers (default: min(4, CPUs)).")
    ft.add_argument("--seed", type=int, help="Seed of the run and of the train/val split (default: 42).")
    ft.add_argument("--weights", type=Path, metavar="PATH", help="Start from this local state dict instead of the published weights.")
    ft.add_argument("--no-pretrained", dest="no_pretrained", action="store_true", help="Start from random weights (not recommended).")
    ft.add_argument("--name", help="Run name (default: <model>-<data folder>[-frozen]).")
    ft.add_argument("--val-fraction", dest="val_fraction", type=float, metavar="F", help="Validation share when FOLDER is not split (default: 0.2).")
    bf = parser.add_argument_group("B-cosification (with --bcosify NAME; the fine-tuning options above apply too)")
    bf.add_argument("--bcosify", metavar="NAME", help="A torchvision or timm model to B-cosify and fine-tune, e.g. resnet18 or timm/convnext_atto (docs/bcosify.md).")
    bf.add_argument("--b", type=float, help="Target B of the B-cos layers (default: 2).")
    bf.add_argument("--b-start", dest="b_start", type=float, metavar="B", help="Raise B linearly from this value (e.g. 1) to --b (default: --b from the start).")
    bf.add_argument("--b-warmup-epochs", dest="b_warmup_epochs", type=int, metavar="N", help="Epochs over which B grows from --b-start to --b.")
    bf.add_argument("--bias", choices=["remove", "keep"], help="remove (default): complete explanations; keep: every bias stays.")
    bf.add_argument("--max-pool", dest="max_pool", choices=["keep", "avg"], help="Keep max pooling (default) or use average pooling.")
    parser.set_defaults(handler=_run_train, command_parser=parser)


def _run_train(args: argparse.Namespace) -> int:
    from bcos.cli.train import validate_args

    parser: argparse.ArgumentParser = args.command_parser
    if args.bcosify is None:
        given = [flag for dest, flag in _BCOSIFY_OPTIONS.items() if getattr(args, dest) is not None]
        if given:
            parser.error(f"{', '.join(given)} only apply with --bcosify NAME")
    elif args.finetune is not None:
        parser.error("--finetune (a published B-cos model) and --bcosify (a standard model) exclude each other; pick one")
    else:
        return _run_bcosify(args, parser)
    if args.finetune is None:
        given = [flag for dest, flag in _FINETUNE_OPTIONS.items() if getattr(args, dest) not in (None, False)]
        if given:
            parser.error(f"{', '.join(given)} only apply with --finetune MODEL or --bcosify NAME")
        missing = [f"--{d}" for d in _EXPERIMENT_OPTIONS if not getattr(args, d)]
        if args.datamodule is not None and "--dataset" in missing:  # --dataset defaults to the datamodule's name
            missing.remove("--dataset")
        if missing:
            parser.error(
                f"the following arguments are required: {', '.join(missing)} "
                "(or fine-tune with --finetune MODEL --data-dir FOLDER)"
            )
        validate_args(args)
        from bcos.training.run import run_training

        run_training(args)
        return 0
    return _run_finetune(args, parser)


def _run_finetune(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from bcos.training.finetune import (
        COLLECTION,
        DATASET,
        finetune,
        make_config,
        make_spec,
    )

    given = [f"--{d}" for d in (*_EXPERIMENT_OPTIONS, "datamodule") if getattr(args, d)]
    if given:
        parser.error(f"--finetune names the experiment itself; drop {', '.join(given)}")
    if args.data_dir is None:
        parser.error("--finetune needs --data-dir FOLDER (FOLDER/<class>/<images>)")
    if args.weights is not None and args.no_pretrained:
        parser.error("--weights and --no-pretrained exclude each other")
    chosen = {
        "name": args.name,
        "freeze_backbone": args.freeze_backbone,
        "epochs": args.epochs,
        "batch_size": args.ft_batch_size,
        "lr": args.lr,
        "weight_decay": args.weight_decay,
        "image_size": args.image_size,
        "num_workers": args.num_workers,
        "seed": args.seed,
        "weights": args.weights,
        "val_fraction": args.val_fraction,
    }
    spec = make_spec(
        args.finetune,
        args.data_dir,
        pretrained=not args.no_pretrained,
        base_directory=args.base_directory,
        replace=not args.resume,
        **{k: v for k, v in chosen.items() if v is not None},
    )
    make_config(spec)  # checks the recipe before anything else
    # the experiment itself is the spec, which the run writes into its folder
    options = _run_options(args, DATASET, COLLECTION, spec.name)
    print(
        f"Fine-tuning {spec.model} on {spec.num_classes} classes ({', '.join(spec.categories[:8])}"
        f"{', ...' if spec.num_classes > 8 else ''}) from {spec.data_dir}"
        f"{' with a frozen backbone' if spec.freeze_backbone else ''}"
    )
    finetune(spec, base_directory=args.base_directory, **options)
    _print_next_steps(args.base_directory, DATASET, COLLECTION, spec.name)
    return 0


def _run_options(args: argparse.Namespace, dataset: str, collection: str, name: str) -> dict[str, Any]:
    """Check ``args`` as train.py's options of the run ``dataset/collection/name``; returns the TrainOptions fields."""
    from bcos.cli.train import validate_options
    from bcos.training.run import TrainOptions

    args.dataset, args.base_network, args.experiment_name = dataset, collection, name
    validate_options(args)
    names = {f.name for f in dataclasses.fields(TrainOptions)} - {*_EXPERIMENT_OPTIONS, "base_directory"}
    return {k: v for k, v in vars(args).items() if k in names}


def _print_next_steps(base_directory: str, dataset: str, collection: str, name: str) -> None:
    run_folder = Path(base_directory) / dataset / collection / name
    print(f"\nRun folder: {run_folder}")
    print(f"Explain images with it:  bcos explain IMAGES... --run {run_folder}")
    print(f"Evaluate it:             bcos evaluate --dataset {dataset} --base_network {collection} "
          f"--experiment_name {name} --reload best --base_directory {base_directory}")


def _run_bcosify(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from bcos.training.bcosify import COLLECTION, DATASET, bcosify_and_finetune, make_bcosify_spec
    from bcos.training.bcosify import make_config as make_bcosify_config

    given = [f"--{d}" for d in (*_EXPERIMENT_OPTIONS, "datamodule") if getattr(args, d)]
    if given:
        parser.error(f"--bcosify names the experiment itself; drop {', '.join(given)}")
    if args.data_dir is None:
        parser.error("--bcosify needs --data-dir FOLDER (FOLDER/<class>/<images> or FOLDER/{train,val}/<class>/<images>)")
    if args.weights is not None and args.no_pretrained:
        parser.error("--weights and --no-pretrained exclude each other")
    if args.freeze_backbone:
        parser.error("--freeze-backbone does not apply to --bcosify: every B-cos layer must learn")
    chosen = {
        "name": args.name, "epochs": args.epochs, "batch_size": args.ft_batch_size, "lr": args.lr,
        "weight_decay": args.weight_decay, "image_size": args.image_size, "num_workers": args.num_workers,
        "seed": args.seed, "weights": args.weights, "val_fraction": args.val_fraction,
        **{dest: getattr(args, dest) for dest in _BCOSIFY_OPTIONS},
    }  # fmt: skip
    spec = make_bcosify_spec(
        args.bcosify,
        args.data_dir,
        pretrained=not args.no_pretrained,
        base_directory=args.base_directory,
        replace=not args.resume,
        **{k: v for k, v in chosen.items() if v is not None},
    )
    make_bcosify_config(spec)
    options = _run_options(args, DATASET, COLLECTION, spec.name)
    start = "random weights" if not spec.pretrained else (spec.weights or "the published weights")
    print(
        f"B-cosifying {spec.model} (B={spec.b:g}{f' from {spec.b_start:g}' if spec.b_start is not None else ''}, "
        f"bias={spec.bias}) from {start} and fine-tuning it on {spec.num_classes} classes from {spec.data_dir}"
    )
    bcosify_and_finetune(spec, base_directory=args.base_directory, **options)
    _print_next_steps(args.base_directory, DATASET, COLLECTION, spec.name)
    return 0


def _add_evaluate(commands: argparse._SubParsersAction) -> None:
    from bcos.cli.evaluate import get_parser as evaluate_parser

    parser = commands.add_parser(
        "evaluate",
        parents=[evaluate_parser(add_help=False)],
        help=_HELP["evaluate"],
        description="Evaluate a model on its data set's test split (the options of evaluate.py).",
        epilog=EVALUATE_EXAMPLES,
        **_raw(),
    )
    parser.set_defaults(handler=_run_evaluate)


def _run_evaluate(args: argparse.Namespace) -> int:
    from bcos.cli.evaluate import run_evaluation

    run_evaluation(args)
    return 0


def _add_explain(commands: argparse._SubParsersAction) -> None:
    from bcos.cli.explain import EXAMPLES as EXPLAIN_EXAMPLES
    from bcos.cli.explain import get_parser as explain_parser

    parser = commands.add_parser(
        "explain",
        parents=[explain_parser(add_help=False)],
        help=_HELP["explain"],
        description="Predict and explain images with a B-cos model: one PNG per image (input | explanation | "
        "contribution map) and a self-contained HTML report.",
        epilog=EXPLAIN_EXAMPLES,
        **_raw(),
    )
    parser.set_defaults(handler=_run_explain)


def _run_explain(args: argparse.Namespace) -> int:
    from bcos.cli.explain import run_explain

    run_explain(args)
    return 0


def _add_localise(commands: argparse._SubParsersAction) -> None:
    from bcos.cli.localisation import get_parser as localisation_parser

    parser = commands.add_parser(
        "localise",
        aliases=["localize"],
        parents=[localisation_parser(add_help=False)],
        help=_HELP["localise"],
        description="The grid pointing game (the options of python -m interpretability.analyses.localisation).",
        epilog=LOCALISE_EXAMPLES,
        **_raw(),
    )
    parser.set_defaults(handler=_run_localise)


def _run_localise(args: argparse.Namespace) -> int:
    from bcos.cli.localisation import run_parsed

    return run_parsed(args)


def _add_export(commands: argparse._SubParsersAction) -> None:
    from bcos.cli.export import EXAMPLES as EXPORT_EXAMPLES
    from bcos.cli.export import get_parser as export_parser

    parser = commands.add_parser(
        "export",
        parents=[export_parser(add_help=False)],
        help=_HELP["export"],
        description="Export a B-cos model with a dynamic batch size: ONNX (.onnx) or a torch.export program (.pt2).",
        epilog=EXPORT_EXAMPLES,
        **_raw(),
    )
    parser.set_defaults(handler=_run_export)


def _run_export(args: argparse.Namespace) -> int:
    from bcos.cli.export import run_export

    run_export(args)
    return 0


def _add_configs(commands: argparse._SubParsersAction) -> None:
    from bcos.cli import configs

    parser = commands.add_parser(
        "configs",
        help=_HELP["configs"],
        description="Inspect the experiment configs (bcos/experiments/<dataset>/<collection>).",
        epilog=configs.EXAMPLES,
        **_raw(),
    )
    configs.add_arguments(parser)
    parser.set_defaults(handler=configs.run)


def _add_models(commands: argparse._SubParsersAction) -> None:
    from bcos.cli import models

    parser = commands.add_parser(
        "models",
        help=_HELP["models"],
        description="List the registered models (the B-cos-v2 zoo) or show one.",
        epilog=models.EXAMPLES,
        **_raw(),
    )
    models.add_arguments(parser)
    parser.set_defaults(handler=models.run)


_ADDERS = {
    "train": _add_train,
    "evaluate": _add_evaluate,
    "explain": _add_explain,
    "localise": _add_localise,
    "export": _add_export,
    "configs": _add_configs,
    "models": _add_models,
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The ``bcos`` argument parser.

    Every sub-command gets its full parser when ``command`` is None; otherwise only ``command``
    does and the others are listed by name (their modules, and torch, are not imported), which
    keeps ``bcos --help`` and ``bcos --version`` instant.
    """
    import bcos

    parser = argparse.ArgumentParser(
        prog="bcos",
        description="B-cos networks: train, evaluate and explain models that are interpretable by design.",
        epilog=EXAMPLES,
        **_raw(),
    )
    parser.add_argument("--version", action="version", version=f"bcos {bcos.__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, add in _ADDERS.items():
        if command is None or command == name:
            add(commands)
        else:
            commands.add_parser(name, aliases=_ALIASES.get(name, []), help=_HELP[name])
    return parser


def _command_of(argv: Sequence[str]) -> str:
    """The sub-command ``argv`` names ("" when none does, e.g. ``bcos --help``)."""
    first = next((a for a in argv if not a.startswith("-")), "")
    for name, aliases in _ALIASES.items():
        if first in aliases:
            return name
    return first if first in _ADDERS else ""


_SUB_ACTIONS = {"models": ("list", "show"), "configs": ("list", "show", "find")}


def _normalise(argv: Sequence[str]) -> list[str]:
    """``bcos models 'resnet*'`` means ``bcos models list 'resnet*'`` (likewise for configs)."""
    argv = list(argv)
    if argv and argv[0] in _SUB_ACTIONS:
        rest = [a for a in argv[1:] if a != "--debug"]
        if rest and rest[0] not in _SUB_ACTIONS[argv[0]] and rest[0] not in ("-h", "--help"):
            return [argv[0], "list", *argv[1:]]
    return argv


def _main(argv: Sequence[str] | None) -> int:
    argv = _normalise(sys.argv[1:] if argv is None else argv)
    args = build_parser(_command_of(argv)).parse_args(argv)
    return args.handler(args)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``bcos`` console script; returns the exit status."""
    try:
        return run_cli(_main, argv)
    except BrokenPipeError:  # output piped into a command that stopped reading (`bcos models | head`)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
