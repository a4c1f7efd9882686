"""``make demo``: train a B-cos ResNet on the CPU, evaluate it, explain it, and optionally localise.

The steps use the same machinery as real experiments:

1. training through ``train.py`` (:func:`bcos.cli.train.main`) with the data set's demo config,
   into ``experiments/<Dataset>/<collection>/<name>/`` (a finished run is reused; ``--retrain``
   starts over): ``Digits/bcos_demo/resnet_8_bnu-linear`` (scikit-learn's bundled digits, about a
   minute) or ``FashionMNIST/bcos_fast/resnet_8_bnu-linear`` (``--dataset FashionMNIST``: the
   Debian package's or ``DATA_ROOT``'s Fashion-MNIST, about 20 minutes);
2. evaluation of the trained weights on the test split (top-1 / top-5 accuracy);
3. explanations of one test image per class with ``model.explain`` (one batched call), saved as
   ``demo_output/explanations.png`` (inputs above explanations) and one PNG per image;
4. with ``--localise``: the grid pointing game (``250_3x3``: 250 grids of 3x3 test images) for the
   model's own explanation and the post-hoc methods, through the localisation module (results in
   the run folder's ``localisation_analysis/``).

Run ``python -m bcos.demo --help`` for the options.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bcos.atomic_io import atomic_open

__all__ = ["main", "DemoRecipe", "DEMO_RECIPES", "LOCALISATION_EXPLAINERS", "DEMO_DATASET", "DEMO_COLLECTION", "DEMO_EXPERIMENT"]


@dataclass(frozen=True)
class DemoRecipe:
    """What the demo trains for one data set and the accuracy it should reach."""

    dataset: str
    collection: str
    experiment: str
    target_accuracy: float
    image_noun: str  # for the titles and file names of the explanation pictures
    threads: int  # PyTorch CPU threads by default: digits' tiny steps run fastest on one


DEMO_RECIPES: dict[str, DemoRecipe] = {
    "Digits": DemoRecipe("Digits", "bcos_demo", "resnet_8_bnu-linear", 0.95, "digit", threads=1),
    "FashionMNIST": DemoRecipe("FashionMNIST", "bcos_fast", "resnet_8_bnu-linear", 0.90, "image", threads=2),
}
DEMO_DATASET = "Digits"
DEMO_COLLECTION = DEMO_RECIPES[DEMO_DATASET].collection
DEMO_EXPERIMENT = DEMO_RECIPES[DEMO_DATASET].experiment

#: the explainers of ``--localise``: the model's own explanation first, then post-hoc methods
LOCALISATION_EXPLAINERS = ("Ours", "GCam", "IxG", "IntGrad", "Grad", "GB", "DeepLIFT")
#: IntGrad with 5 instead of 50 path points: these networks (B-cos layers, bias-free uncentred batch
#: norm, average pooling) are positively homogeneous, so the gradient is the same at every point of
#: the path from the zero baseline and any number of points gives Input x Gradient exactly
#: (docs/localisation.md); 50 points would cost 10 times as long for the same numbers.
LOCALISATION_OPTIONS: dict[str, dict[str, int]] = {"IntGrad": {"n_steps": 5}}
LOCALISATION_CONFIG = "250_3x3"
LOCALISATION_SMOOTH = 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Train, evaluate and explain a B-cos network on the CPU.")
    parser.add_argument("--dataset", default=DEMO_DATASET, choices=list(DEMO_RECIPES), help="Data set (default: Digits).")
    parser.add_argument("--experiment_name", default=None, help="A config of the data set's demo collection.")
    parser.add_argument("--base_directory", default="./experiments", help="Where the run folder goes.")
    parser.add_argument("--output", default="demo_output", help="Folder for the explanation images.")
    parser.add_argument("--retrain", action="store_true", help="Train from scratch even if a run exists.")
    parser.add_argument(
        "--localise",
        action="store_true",
        help=f"Also play the grid pointing game ({LOCALISATION_CONFIG}) for {', '.join(LOCALISATION_EXPLAINERS)}.",
    )
    parser.add_argument(
        "--grids",
        type=int,
        default=None,
        help="Number of grids of the pointing game (default: the 250 of the 250_3x3 configuration).",
    )
    parser.add_argument(
        "--smooth",
        type=int,
        default=LOCALISATION_SMOOTH,
        help=f"Smoothing window of the pointing game (odd; default {LOCALISATION_SMOOTH}: none).",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="CPU threads for PyTorch (default: 1 for Digits, whose small operations run fastest on one "
        "thread, 2 for Fashion-MNIST; several threads slow down badly on a busy machine).",
    )
    parser.add_argument("--debug", action="store_true", help="Full tracebacks on errors.")
    return parser


def _train(recipe: DemoRecipe, experiment_name: str, args: argparse.Namespace) -> None:
    from bcos.cli.train import main as train_main
    from bcos.errors import BcosError

    argv = [
        "--dataset", recipe.dataset,
        "--base_network", recipe.collection,
        "--experiment_name", experiment_name,
        "--base_directory", args.base_directory,
        "--refresh_rate", "10",
    ]  # fmt: skip
    if args.retrain:
        argv.append("--force-no-resume")
    if args.debug:
        argv.append("--debug")
    status = train_main(argv)
    if status != 0:
        raise BcosError(f"training failed (train.py exit status {status}); see the messages above")


def _save_explanations(model, dataset, output: Path, noun: str = "digit", categories: Sequence[str] | None = None) -> Path:
    """Explain one test image per class in one batched call; write the grid and per-image PNGs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch
    from PIL import Image

    from bcos.explain.visualize import plot_image_grid

    first_of_class: dict[int, int] = {}
    for index in range(len(dataset)):
        label = int(dataset.targets[index]) if hasattr(dataset, "targets") else int(dataset[index][1])
        first_of_class.setdefault(label, index)
        if len(first_of_class) == 10:
            break
    indices = [first_of_class[c] for c in sorted(first_of_class)]
    images = torch.stack([dataset[i][0] for i in indices])
    labels = [int(dataset[i][1]) for i in indices]
    name = (lambda c: str(categories[c])) if categories else (lambda c: f"{noun} {c}")

    model.eval()
    explanation = model.explain(images, smooth=3)
    predictions = explanation.prediction.tolist()

    output.mkdir(parents=True, exist_ok=True)
    rgb = [image[:3].permute(1, 2, 0).numpy() for image in images]
    titles = [name(label) for label in labels] + [
        f"pred {p} {'ok' if p == label else 'WRONG'}" for p, label in zip(predictions, labels)
    ]
    fig, _ = plot_image_grid(rgb + list(explanation.explanation), titles=titles, ncols=len(indices), cell_size=1.6)
    grid_path = output / "explanations.png"
    with atomic_open(grid_path, "wb") as handle:
        fig.savefig(handle, format="png", dpi=120, bbox_inches="tight")
    plt.close(fig)
    for label, rgba in zip(labels, explanation.explanation):
        big = (rgba * 255 + 0.5).clip(0, 255).astype("uint8").repeat(4, axis=0).repeat(4, axis=1)
        # named by class only, so a rerun replaces its own pictures (predictions are in the grid's titles)
        with atomic_open(output / f"{noun}_{label}.png", "wb") as handle:
            Image.fromarray(big).save(handle, format="png")
    return grid_path


def _localise(save_dir: Path, smooth: int, sample_size: int | None) -> str:
    """Play the grid pointing game for every explainer (results in the run folder); returns the summary line."""
    from bcos.explain.localisation import LocalisationOptions, get_localisation_config, run_localisation

    config = get_localisation_config(LOCALISATION_CONFIG)
    means, grids = [], 0
    for step, name in enumerate(LOCALISATION_EXPLAINERS, start=1):
        started = time.perf_counter()
        options = LocalisationOptions(
            smooth=smooth, save_path=save_dir, analysis_config=LOCALISATION_CONFIG, explainer_name=name,
            batch_size=64, num_workers=0, device="cpu", sample_size=sample_size, log=lambda line: None,
            explainer_options=LOCALISATION_OPTIONS.get(name, {}),
        )  # fmt: skip
        result = run_localisation(options)
        grids = result.grids
        means.append(f"{name} {result.summary.mean:.3f}")
        print(f"      {step}/{len(LOCALISATION_EXPLAINERS)} {name}: {result.summary.mean:.3f} "
              f"({time.perf_counter() - started:.0f} s)", flush=True)  # fmt: skip
    smoothing = "" if smooth == 1 else f", smoothing {smooth}x{smooth}"
    line = (
        f"Localisation ({grids} grids of {config.grid_size}x{config.grid_size}, baseline {config.baseline:.3f}"
        f"{smoothing}): {', '.join(means)}"
    )
    return line


def _main(argv: Sequence[str] | None) -> int:
    args = _parser().parse_args(argv)
    import torch

    from bcos.errors import ConfigError

    if args.threads is not None and args.threads < 1:
        raise ConfigError(f"--threads must be at least 1, got {args.threads}")
    if args.grids is not None and args.grids < 1:
        raise ConfigError(f"--grids must be at least 1, got {args.grids}")
    if args.smooth < 1 or args.smooth % 2 == 0:
        raise ConfigError(f"--smooth must be a positive odd number (1: no smoothing), got {args.smooth}")
    recipe = DEMO_RECIPES[args.dataset]
    experiment_name = args.experiment_name or recipe.experiment
    torch.set_num_threads(args.threads or recipe.threads)
    steps = 4 if args.localise else 3
    start = time.perf_counter()
    print(f"[1/{steps}] Training {recipe.dataset}/{recipe.collection}/{experiment_name} on the CPU ...", flush=True)
    _train(recipe, experiment_name, args)
    trained = time.perf_counter()

    print(f"[2/{steps}] Evaluating on the test {recipe.image_noun}s ...", flush=True)
    from bcos.experiments.utils import Experiment
    from bcos.experiments.utils.evaluation import evaluate_model

    experiment = Experiment(recipe.dataset, recipe.collection, experiment_name, base_directory=args.base_directory)
    model = experiment.load_trained_model(reload="last")
    datamodule = experiment.get_datamodule(batch_size=200)
    datamodule.setup("test")
    result = evaluate_model(model, datamodule.test_dataloader())

    print(f"[3/{steps}] Explaining one test {recipe.image_noun} per class ...", flush=True)
    categories = getattr(type(datamodule), "CATEGORIES", None) if recipe.dataset != "Digits" else None
    grid = _save_explanations(model, datamodule.eval_dataset, Path(args.output), recipe.image_noun, categories)
    localisation_line = None
    if args.localise:
        print(f"[4/{steps}] Grid pointing game ({LOCALISATION_CONFIG}) for {', '.join(LOCALISATION_EXPLAINERS)} ...", flush=True)
        localisation_line = _localise(experiment.save_dir, args.smooth, args.grids)
    total = time.perf_counter() - start

    accuracy = result["acc1"]
    print()
    print(f"Run folder:    {experiment.save_dir} (checkpoints, metrics/, config.txt"
          f"{', localisation_analysis/' if args.localise else ''})")  # fmt: skip
    print(f"Explanations:  {grid} and {Path(args.output) / (recipe.image_noun + '_*.png')}")
    print(f"Time:          {total:.0f} s (training {trained - start:.0f} s)")
    print(f"Top-5:         {100 * result['acc5']:.2f}%")
    if accuracy < recipe.target_accuracy:
        print(f"warning: accuracy below the expected {100 * recipe.target_accuracy:.0f}%; try --retrain", file=sys.stderr)
    print(f"Test accuracy: {100 * accuracy:.2f}% top-1 ({result['correct_top1']}/{result['samples']})")
    if localisation_line is not None:
        print(localisation_line)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m bcos.demo`` / ``make demo``; returns the exit status."""
    from bcos.cli.errors import run_cli

    return run_cli(_main, argv)


if __name__ == "__main__":
    raise SystemExit(main())
