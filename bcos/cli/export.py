"""``bcos export``: a published or trained B-cos model as an ONNX file or a ``torch.export`` program.

The model is loaded as ``bcos explain`` loads it (``--model NAME`` or ``--run RUN_DIR``, with
``--weights``, ``--reload``, ``--ema``); the input shape is what its evaluation transform makes of
an image (e.g. ``[N, 6, 224, 224]``), with any batch size ``N``. The work is
:mod:`bcos.deploy`'s; this module parses and prints.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from bcos.cli.errors import run_cli
from bcos.cli.explain import add_model_arguments
from bcos.errors import ConfigError

__all__ = ["EXAMPLES", "FORMATS", "get_parser", "run_export", "main"]

#: file suffix -> what is written
FORMATS = {".onnx": "ONNX (onnxruntime, TensorRT, ...)", ".pt2": "torch.export program (torch.export.load)"}

EXAMPLES = """examples:
  bcos export --model resnet50 --output resnet50.onnx
  bcos export --run experiments/Digits/bcos_demo/resnet_8_bnu-linear --output digits.pt2
  python -c "import onnxruntime as ort; s = ort.InferenceSession('resnet50.onnx'); print(s.get_inputs()[0].shape)"

See docs/deploying.md.
"""


def get_parser(add_help: bool = True) -> argparse.ArgumentParser:
    """The ``bcos export`` argument parser."""
    parser = argparse.ArgumentParser(
        prog="bcos export",
        description="Export a B-cos model with a dynamic batch size: ONNX (.onnx) or a torch.export program (.pt2).",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        add_help=add_help,
    )
    add_model_arguments(parser)
    out = parser.add_argument_group("output")
    out.add_argument("--output", "-o", type=Path, required=True, metavar="FILE", help="The file to write: NAME.onnx or NAME.pt2.")
    out.add_argument("--overwrite", action="store_true", help="Replace FILE if it exists (default: refuse).")
    parser.add_argument("--debug", action="store_true", help="Show full tracebacks on errors.")
    return parser


def run_export(args: argparse.Namespace) -> Path:
    """Load the model ``args`` name, export it to ``args.output`` and return the path."""
    from PIL import Image

    from bcos import deploy
    from bcos.cli.explain import load_for_explanation  # the same loading as bcos explain

    suffix = args.output.suffix.lower()
    if suffix not in FORMATS:
        raise ConfigError(f"--output must end in {' or '.join(FORMATS)} (got {str(args.output)!r})")
    loaded = load_for_explanation(args)  # eval mode
    # the input shape the model takes: what its evaluation transform makes of an image
    example = loaded.transform(Image.new("RGB", (256, 256))).unsqueeze(0).repeat(2, 1, 1, 1)
    if suffix == ".onnx":
        path = deploy.export_onnx(loaded.model, example, args.output, overwrite=args.overwrite)
    else:
        path = deploy.save_program(deploy.export_program(loaded.model, example), args.output, overwrite=args.overwrite)
    shape = ", ".join(["N", *map(str, example.shape[1:])])
    print(f"Exported {loaded.details.get('model', 'the model')} to {path} ({FORMATS[suffix]}; input [{shape}])")
    return path


def _main(argv: Sequence[str] | None) -> int:
    run_export(get_parser().parse_args(argv))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``bcos export``; returns the exit status."""
    return run_cli(_main, argv)
