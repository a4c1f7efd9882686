"""``bcos explain``: predict and explain your own images, as PNGs and one HTML report.

Examples::

    bcos explain cat.jpg --model resnet50                     # published weights (downloaded once)
    bcos explain photos/ --model resnet18 --top-k 3           # a folder: one PNG per image + report.html
    bcos explain cat.jpg --model resnet18 --weights resnet_18-68b4160fff.pth
    bcos explain digit.png --run experiments/Digits/bcos_demo/resnet_8_bnu-linear   # the `make demo` model
    bcos explain photos/ --run experiments/ImageFolder/finetune/resnet18-pets       # a fine-tuned model

For every image it writes ``<output>/<image name>.png`` (input | explanation | contribution map,
one row per explained class), and for all of them ``<output>/report.html`` (a single file with
every picture embedded) and ``<output>/predictions.json``. Images are resized and center-cropped
with the model's evaluation transform, and batched.

Outputs never replace inputs or files that ``bcos explain`` did not write itself (the command
stops before loading the model and names the file); every file is written atomically, and the
output folder holds an ``INCOMPLETE`` marker until all of them are written.
"""

from __future__ import annotations

import argparse
import errno
import json
import re
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from bcos.atomic_io import atomic_write_text, results_folder
from bcos.data.image_files import as_rgb
from bcos.errors import ConfigError, DataNotFoundError, InputError, OutputError, unknown_name

__all__ = ["get_parser", "add_model_arguments", "collect_images", "load_for_explanation", "run_explain", "main", "EXAMPLES", "IMAGE_SUFFIXES"]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")
DEFAULT_OUTPUT = "explanations"
REPORT_FILENAME = "report.html"
PREDICTIONS_FILENAME = "predictions.json"

EXAMPLES = """examples:
  bcos explain cat.jpg --model resnet50                  published ImageNet weights (downloaded once, then cached)
  bcos explain photos/ --model resnet18 --top-k 3        a folder: PNG per image, report.html, predictions.json
  bcos explain cat.jpg --model resnet18 --weights FILE   local weights for a registered model
  bcos explain cat.jpg --model resnet18 --target 281     explain class 281 ('tabby') instead of the prediction
  bcos explain digit.png --run experiments/Digits/bcos_demo/resnet_8_bnu-linear
                                                         a trained run, e.g. the `make demo` model
  bcos explain photos/ --run experiments/ImageFolder/finetune/resnet18-pets
                                                         a model fine-tuned with bcos train --finetune

Then open explanations/report.html in a browser.
"""


def get_parser(add_help: bool = True) -> argparse.ArgumentParser:
    """The ``bcos explain`` argument parser."""
    parser = argparse.ArgumentParser(
        prog="bcos explain",
        description="Predict and explain images with a B-cos model: one PNG per image (input | explanation | "
        "contribution map) and a self-contained HTML report.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        add_help=add_help,
    )
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="Image files and/or folders (searched recursively).")
    add_model_arguments(parser)
    what = parser.add_argument_group("explanations")
    what.add_argument("--top-k", type=int, default=1, dest="top_k", metavar="K", help="List and explain the K most likely classes (default: 1).")
    what.add_argument("--target", default=None, metavar="CLASS", help="Explain this class (index or name) for every image instead.")
    what.add_argument("--smooth", type=int, default=15, metavar="PIXELS", help="Smoothing of the explanation's opacity, 0 for none (default: 15).")
    out = parser.add_argument_group("output")
    out.add_argument("--output", "-o", type=Path, default=Path(DEFAULT_OUTPUT), metavar="DIR", help=f"Output folder (default: ./{DEFAULT_OUTPUT}).")
    out.add_argument("--no-report", dest="report", action="store_false", help="Do not write report.html.")
    out.add_argument("--title", default=None, help="Title of the report (default: names the model).")
    run = parser.add_argument_group("running")
    run.add_argument("--batch-size", type=int, default=16, dest="batch_size", metavar="N", help="Images per forward/backward pass (default: 16).")
    run.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, ... (default: cuda if available).")
    run.add_argument("--no-progress", dest="progress", action="store_false", help="Hide the progress bar.")
    run.add_argument("--debug", action="store_true", help="Show full tracebacks on errors.")
    return parser


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """``--model``/``--run`` with ``--weights``, ``--reload`` and ``--ema``: the options that
    :func:`load_for_explanation` reads (shared by ``bcos explain`` and ``bcos export``)."""
    model = parser.add_argument_group("model (--model NAME or --run RUN_DIR)")
    model.add_argument("--model", metavar="NAME", help="A registered B-cos model, e.g. resnet50 (see 'bcos models').")
    model.add_argument("--run", type=Path, metavar="RUN_DIR", help="A training run folder <base>/<dataset>/<base_network>/<experiment_name>.")
    model.add_argument("--weights", type=Path, metavar="PATH", help="A weights file to load instead of the published weights / the run's checkpoint.")
    model.add_argument("--reload", default=None, metavar="WHICH", help="Checkpoint of --run: last, best, best_any or epoch_<N> (default: best).")
    model.add_argument("--ema", action="store_true", help="Use the EMA weights of --run.")
    model.add_argument(
        "--datamodule", metavar="MODULE:CLASS",
        help="For --run: import the run's datamodule defined outside bcos, e.g. mypkg.data:FlowersDataModule.",
    )  # fmt: skip


# ----------------------------------------------------------------------------------------- images
def collect_images(paths: Sequence[str | Path]) -> list[tuple[Path, str]]:
    """``(file, display name)`` of every image in ``paths`` (folders searched recursively, sorted)."""
    found: list[tuple[Path, str]] = []
    for raw in paths:
        path = Path(raw).expanduser()
        if path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            if not files:
                raise DataNotFoundError(f"folder {str(path)!r} holds no images ({', '.join(IMAGE_SUFFIXES)})")
            found += [(p, str(Path(path.name) / p.relative_to(path))) for p in files]
        elif path.is_file():
            if path.suffix.lower() not in IMAGE_SUFFIXES:
                raise InputError(f"{str(path)!r} is not an image file this command reads ({', '.join(IMAGE_SUFFIXES)})")
            found.append((path, str(raw)))
        else:
            raise DataNotFoundError(f"no image or folder at {str(path)!r}; check the path")
    return found


def _output_names(names: Sequence[str]) -> list[str]:
    """A unique, flat PNG file name per image (``photos/a.jpg`` -> ``photos__a.png``)."""
    taken: set[str] = set()
    result = []
    for name in names:
        path = Path(name)
        if path.is_absolute() or ".." in path.parts:  # files given by a path outside: their name only
            path = Path(path.name)
        stem = re.sub(r"[^A-Za-z0-9_.=-]+", "_", "__".join(path.with_suffix("").parts))
        stem = stem.strip("._") or "image"
        candidate, n = f"{stem}.png", 1
        while candidate in taken:
            n += 1
            candidate = f"{stem}-{n}.png"
        taken.add(candidate)
        result.append(candidate)
    return result


def _is_our_predictions_file(path: Path) -> bool:
    try:
        records = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    return isinstance(records, list) and all(isinstance(r, dict) and {"image", "png"} <= r.keys() for r in records)


def _check_outputs(output: Path, images: Sequence[tuple[Path, str]], targets: Sequence[Path]) -> None:
    """Refuse (before anything is loaded) outputs that would replace an input or a file we did not write."""
    from bcos.explain.report import written_by_report

    inputs = {path.resolve(): path for path, _ in images}
    # outputs of bcos versions before the PNG/HTML markers are known by the predictions.json listing them
    listed: set[str] = set()
    if _is_our_predictions_file(output / PREDICTIONS_FILENAME):
        listed = {str(r["png"]) for r in json.loads((output / PREDICTIONS_FILENAME).read_text())} | {REPORT_FILENAME}
    for target in targets:
        if target.resolve() in inputs:
            raise OutputError(
                f"the output '{target}' would replace the input image '{inputs[target.resolve()]}'; pass another --output DIR",
                errno.EEXIST,
            )
        if not target.exists() and not target.is_symlink():
            continue
        if target.name == PREDICTIONS_FILENAME:
            ours = _is_our_predictions_file(target)
        else:
            ours = target.name in listed or written_by_report(target)
        if not ours or not target.is_file():
            raise OutputError(
                f"'{target}' exists and was not written by bcos explain; move it away or pass another --output DIR",
                errno.EEXIST,
            )


# ----------------------------------------------------------------------------------------- model
@dataclass
class LoadedModel:
    """A model ready to explain, with its preprocessing, class names and a description."""

    model: nn.Module
    transform: Callable[[Any], torch.Tensor]
    categories: list[str] | None
    details: dict[str, str] = field(default_factory=dict)


def _fixed_size(transform: Any) -> Any:
    """Prepend resize + center crop to evaluation presets that do not resize (CIFAR-style inputs)."""
    from torchvision.transforms import transforms as T

    from bcos.data.presets import EvalPreset

    if isinstance(transform, EvalPreset) and transform.resize is None and transform.center_crop is None:
        size = transform.output_size
        return T.Compose([T.Resize(size), T.CenterCrop(size), transform])
    return transform


def _from_registry(args: argparse.Namespace) -> LoadedModel:
    from bcos.data.categories import IMAGENET_CATEGORIES
    from bcos.data.presets import eval_transform
    from bcos.models.registry import create_model, get_pretrained_config

    config = get_pretrained_config(args.model)
    if not config.is_bcos:
        raise ConfigError(f"{args.model} is a standard (non-B-cos) model without explanations; pick a B-cos model (bcos models)")
    model = create_model(args.model, pretrained=args.weights is None, weights=args.weights)
    weights = str(args.weights) if args.weights is not None else f"published ({config.weights.file_name})"
    categories = list(IMAGENET_CATEGORIES) if config.num_classes == len(IMAGENET_CATEGORIES) else None
    details = {"model": f"{args.model}: {config.description}", "weights": weights, "trained with": str(config.source)}
    return LoadedModel(model, eval_transform(model), categories, details)


def _from_run(args: argparse.Namespace) -> LoadedModel:
    from bcos.experiments.utils import Experiment

    run = args.run
    if not run.is_dir():
        raise DataNotFoundError(f"run folder {str(run)!r} does not exist; pass <base>/<dataset>/<base_network>/<experiment_name>")
    if getattr(args, "datamodule", None) is not None:
        from bcos.data.datamodule_sources import import_datamodule

        import_datamodule(args.datamodule)
    experiment = Experiment(run)
    if args.weights is not None:
        model = experiment.load_model_from_weights(args.weights, ema=args.ema)
        weights = str(args.weights)
    else:
        reload = args.reload or "best"
        model = experiment.load_trained_model(reload=reload, ema=args.ema)
        weights = f"{run} (reload={reload}{', EMA' if args.ema else ''})"
    categories = getattr(model, "categories", None)  # e.g. a fine-tuned model's classes
    if categories is None:
        from bcos.experiments.utils.datasets import resolve_datamodule

        known = resolve_datamodule(experiment.dataset, experiment.base_network).CATEGORIES
        categories = list(known) if known else None
    transform = _fixed_size(experiment.config["data"]["test_transform"])
    details = {
        "model": f"{experiment.dataset}/{experiment.base_network}/{experiment.experiment_name}",
        "weights": weights,
    }
    return LoadedModel(model, transform, categories, details)


def load_for_explanation(args: argparse.Namespace) -> LoadedModel:
    """The model that ``--model``/``--run`` (and ``--weights``) name, in eval mode."""
    if (args.model is None) == (args.run is None):
        raise ConfigError("pass --model NAME (a registered model) or --run RUN_DIR (a training run), not both or neither")
    if args.model is not None and (args.reload is not None or args.ema or getattr(args, "datamodule", None)):
        raise ConfigError("--reload, --ema and --datamodule apply to --run RUN_DIR; drop them with --model")
    loaded = _from_registry(args) if args.model is not None else _from_run(args)
    loaded.model.eval()
    return loaded


def _resolve_target(target: str | None, categories: Sequence[str] | None, num_classes: int) -> int | None:
    if target is None:
        return None
    if target.lstrip("-").isdigit():
        index = int(target)
        if not 0 <= index < num_classes:
            raise InputError(f"--target {index} is out of range; the model has classes 0..{num_classes - 1}")
        return index
    if not categories:
        raise InputError(f"--target {target!r}: this model has no class names; pass a class index")
    lowered = [c.lower() for c in categories]
    if target.lower() in lowered:
        return lowered.index(target.lower())
    raise unknown_name("class", target, categories, hint="pass a class index instead")


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as error:
        raise ConfigError(f"--device {name!r} is not a device ({error}); use cpu, cuda or cuda:<index>") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda, but CUDA is not available here; use --device cpu")
    return device


def _progress(total: int, enabled: bool):
    try:
        from tqdm.auto import tqdm
    except ImportError:  # tqdm comes with the training extra
        tqdm = None
    if tqdm is None or not enabled:
        class _Silent:
            def update(self, n: int = 1) -> None:
                pass

            def close(self) -> None:
                pass

        return _Silent()
    return tqdm(total=total, unit="image", desc="explaining")


# ----------------------------------------------------------------------------------------- main
_as_rgb = as_rgb  # the name the tests and earlier code use


def _batches(images: Sequence[tuple[Path, str]], transform: Callable, batch_size: int):
    """Yield (tensors [B, C, H, W], names, skipped) batches of equally sized inputs."""
    from PIL import Image, UnidentifiedImageError

    pending: list[tuple[torch.Tensor, str]] = []
    for path, name in images:
        try:
            with Image.open(path) as image:
                tensor = transform(_as_rgb(image))
        except (UnidentifiedImageError, Image.DecompressionBombError, OSError) as error:
            warnings.warn(f"skipping {path}: not a readable image ({error})", stacklevel=2)
            yield None, [name]
            continue
        if pending and (len(pending) == batch_size or pending[0][0].shape != tensor.shape):
            yield torch.stack([t for t, _ in pending]), [n for _, n in pending]
            pending = []
        pending.append((tensor, name))
    if pending:
        yield torch.stack([t for t, _ in pending]), [n for _, n in pending]


def run_explain(args: argparse.Namespace) -> dict[str, Any]:
    """Explain the images ``args`` names; returns ``{"report", "pngs", "predictions", "skipped"}``."""
    if args.top_k < 1:
        raise ConfigError(f"--top-k must be at least 1, got {args.top_k}")
    if args.batch_size < 1:
        raise ConfigError(f"--batch-size must be at least 1, got {args.batch_size}")
    if args.smooth < 0:
        raise ConfigError(f"--smooth must be >= 0, got {args.smooth}")
    images = collect_images(args.images)
    file_names = dict(zip([name for _, name in images], _output_names([name for _, name in images])))
    output: Path = args.output
    targets = [output / name for name in file_names.values()] + [output / PREDICTIONS_FILENAME]
    _check_outputs(output, images, targets + ([output / REPORT_FILENAME] if args.report else []))
    device = _device(args.device)
    loaded = load_for_explanation(args)
    model = loaded.model.to(device)

    try:
        output.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ConfigError(f"cannot create the output folder '{output}' ({error.strerror or error}); pass a writable --output DIR") from None
    with results_folder(output):
        return _explain_into(args, output, images, file_names, loaded, model, device)


def _explain_into(
    args: argparse.Namespace,
    output: Path,
    images: Sequence[tuple[Path, str]],
    file_names: dict[str, str],
    loaded: LoadedModel,
    model: nn.Module,
    device: torch.device,
) -> dict[str, Any]:
    from bcos.explain.report import explain_images, render_png, write_html_report

    items, pngs, records, skipped = [], [], [], []
    target_index = None
    bar = _progress(len(images), args.progress and len(images) > 1)
    try:
        for batch, names in _batches(images, loaded.transform, args.batch_size):
            if batch is None:
                skipped += names
                bar.update(len(names))
                continue
            if batch.shape[1] != 6:
                raise ConfigError(
                    f"the model's transform gives {batch.shape[1]}-channel inputs; explanations need a B-cos model "
                    "with the 6-channel [x, 1-x] input"
                )
            if target_index is None and args.target is not None:
                with torch.no_grad():
                    num_classes = model(batch[:1].to(device)).shape[1]
                target_index = _resolve_target(args.target, loaded.categories, num_classes)
            explained = explain_images(
                model, batch.to(device), names, loaded.categories, top_k=args.top_k, target=target_index, smooth=args.smooth
            )
            for item in explained:
                png_name = file_names[item.name]
                png = render_png(item, output / png_name)
                pngs.append(png)
                records.append(_record(item, png_name))
                items.append(item.without_pixels())
            bar.update(len(names))
    finally:
        bar.close()
    if not items:
        raise DataNotFoundError("none of the images could be read; check the files")

    atomic_write_text(output / PREDICTIONS_FILENAME, json.dumps(records, indent=2) + "\n")
    report = None
    if args.report:
        details = dict(loaded.details)
        details.update({"device": str(device), "explained": f"class {args.target}" if args.target else f"top-{args.top_k}"})
        if skipped:
            details["skipped (unreadable)"] = ", ".join(skipped)
        title = args.title or f"B-cos explanations: {details['model'].split(':')[0]}"
        report = write_html_report(items, output / REPORT_FILENAME, title=title, details=details, pngs=pngs)
    _print_summary(records, output, report, skipped)
    return {"report": report, "pngs": [output / r["png"] for r in records], "predictions": records, "skipped": skipped}


def _record(item: Any, png_name: str) -> dict[str, Any]:
    return {
        "image": item.name,
        "png": png_name,
        "predictions": [vars(p) for p in item.predictions],
        "explained": [
            {
                "class_index": e.class_index,
                "class_name": e.class_name,
                "logit": e.logit,
                "contribution_sum": e.contribution_sum,
                "logit_bias": e.logit_bias,
            }
            for e in item.explanations
        ],
    }


def _print_summary(records: Sequence[dict[str, Any]], output: Path, report: Path | None, skipped: Sequence[str]) -> None:
    shown = records if len(records) <= 20 else records[:10]
    for record in shown:
        top = record["predictions"][0]
        print(f"{record['image']}: {top['class_name']} ({top['probability']:.1%}) -> {output / record['png']}")
    if len(records) > len(shown):
        print(f"... and {len(records) - len(shown)} more (see {output / PREDICTIONS_FILENAME})")
    if skipped:
        print(f"skipped {len(skipped)} unreadable file(s): {', '.join(skipped[:5])}")
    if report is not None:
        print(f"Report: {report}  (open {report.resolve().as_uri()} in a browser)")


def main(argv: Sequence[str] | None = None) -> int:
    """``bcos explain`` on its own (the ``bcos`` command calls :func:`run_explain`)."""
    from bcos.cli.errors import run_cli

    def _main(a: Sequence[str] | None) -> int:
        run_explain(get_parser().parse_args(a))
        return 0

    return run_cli(_main, argv)
