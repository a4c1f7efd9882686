"""``make demo``: train a B-cos ResNet on the bundled digits on the CPU, evaluate it, explain it.

The three steps use the same machinery as real experiments:

1. training through ``train.py`` (:func:`bcos.cli.train.main`) with the config
   ``Digits/bcos_demo/resnet_8_bnu-linear``, into ``experiments/Digits/bcos_demo/<name>/``
   (a finished run is reused; ``--retrain`` starts over);
2. evaluation of the trained weights on the 360 test digits (top-1 / top-5 accuracy);
3. explanations of one test digit per class with ``model.explain`` (one batched call), saved as
   ``demo_output/explanations.png`` (inputs above explanations) and one PNG per digit.

Run ``python -m bcos.demo --help`` for the options.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from bcos.atomic_io import atomic_open

__all__ = ["main", "DEMO_DATASET", "DEMO_COLLECTION", "DEMO_EXPERIMENT"]

DEMO_DATASET = "Digits"
DEMO_COLLECTION = "bcos_demo"
DEMO_EXPERIMENT = "resnet_8_bnu-linear"
TARGET_ACCURACY = 0.95


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Train, evaluate and explain a B-cos network on digits (CPU).")
    parser.add_argument("--experiment_name", default=DEMO_EXPERIMENT, help="A Digits/bcos_demo config.")
    parser.add_argument("--base_directory", default="./experiments", help="Where the run folder goes.")
    parser.add_argument("--output", default="demo_output", help="Folder for the explanation images.")
    parser.add_argument("--retrain", action="store_true", help="Train from scratch even if a run exists.")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="CPU threads for PyTorch (default 1: the demo's small operations run fastest on one "
        "thread, and several threads slow down badly on a busy machine).",
    )
    parser.add_argument("--debug", action="store_true", help="Full tracebacks on errors.")
    return parser


def _train(args: argparse.Namespace) -> None:
    from bcos.cli.train import main as train_main
    from bcos.errors import BcosError

    argv = [
        "--dataset", DEMO_DATASET,
        "--base_network", DEMO_COLLECTION,
        "--experiment_name", args.experiment_name,
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


def _save_explanations(model, dataset, output: Path) -> Path:
    """Explain one test digit per class in one batched call; write the grid and per-digit PNGs."""
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

    model.eval()
    explanation = model.explain(images, smooth=3)
    predictions = explanation.prediction.tolist()

    output.mkdir(parents=True, exist_ok=True)
    rgb = [image[:3].permute(1, 2, 0).numpy() for image in images]
    titles = [f"digit {label}" for label in labels] + [
        f"pred {p} {'ok' if p == label else 'WRONG'}" for p, label in zip(predictions, labels)
    ]
    fig, _ = plot_image_grid(rgb + list(explanation.explanation), titles=titles, ncols=len(indices), cell_size=1.6)
    grid_path = output / "explanations.png"
    with atomic_open(grid_path, "wb") as handle:
        fig.savefig(handle, format="png", dpi=120, bbox_inches="tight")
    plt.close(fig)
    for label, prediction, rgba in zip(labels, predictions, explanation.explanation):
        big = (rgba * 255 + 0.5).clip(0, 255).astype("uint8").repeat(4, axis=0).repeat(4, axis=1)
        with atomic_open(output / f"digit_{label}_pred_{prediction}.png", "wb") as handle:
            Image.fromarray(big).save(handle, format="png")
    return grid_path


def _main(argv: Sequence[str] | None) -> int:
    args = _parser().parse_args(argv)
    import torch

    if args.threads < 1:
        from bcos.errors import ConfigError

        raise ConfigError(f"--threads must be at least 1, got {args.threads}")
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    print(f"[1/3] Training {DEMO_DATASET}/{DEMO_COLLECTION}/{args.experiment_name} on the CPU ...", flush=True)
    _train(args)
    trained = time.perf_counter()

    print("[2/3] Evaluating on the test digits ...", flush=True)
    from bcos.experiments.utils import Experiment
    from bcos.experiments.utils.evaluation import evaluate_model

    experiment = Experiment(DEMO_DATASET, DEMO_COLLECTION, args.experiment_name, base_directory=args.base_directory)
    model = experiment.load_trained_model(reload="last")
    datamodule = experiment.get_datamodule(batch_size=120)
    datamodule.setup("test")
    result = evaluate_model(model, datamodule.test_dataloader())

    print("[3/3] Explaining one test digit per class ...", flush=True)
    grid = _save_explanations(model, datamodule.eval_dataset, Path(args.output))
    total = time.perf_counter() - start

    accuracy = result["acc1"]
    print()
    print(f"Test accuracy: {100 * accuracy:.2f}% top-1 ({result['correct_top1']}/{result['samples']}), "
          f"{100 * result['acc5']:.2f}% top-5")
    print(f"Run folder:    {experiment.save_dir} (checkpoints, metrics/, config.txt)")
    print(f"Explanations:  {grid} and {Path(args.output) / 'digit_*.png'}")
    print(f"Time:          {total:.0f} s (training {trained - start:.0f} s)")
    if accuracy < TARGET_ACCURACY:
        print(f"warning: accuracy below the expected {100 * TARGET_ACCURACY:.0f}%; try --retrain", file=sys.stderr)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m bcos.demo`` / ``make demo``; returns the exit status."""
    from bcos.cli.errors import run_cli

    return run_cli(_main, argv)


if __name__ == "__main__":
    raise SystemExit(main())
