#!/usr/bin/env python3
"""Strip a training checkpoint down to a release weights file ``<name>-<sha256[:10]>.pth``.

Example: ``python scripts/strip_checkpoints.py -c experiments/ImageNet/bcos_final/resnet_18/last.ckpt --ema``
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bcos.cli.errors import run_cli  # noqa: E402
from bcos.experiments.utils.checkpoint_stripping import strip_checkpoint  # noqa: E402


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Strip a training checkpoint to its model weights.")
    parser.add_argument(
        "-c", "--ckpt", "--checkpoint", dest="checkpoint", metavar="PATH", required=True, type=Path,
        help="The training checkpoint (e.g. last.ckpt) to strip.",
    )
    parser.add_argument(
        "-o", "--out", "--output", dest="output", metavar="PATH", type=Path,
        help="Output file or folder (default: <experiment name>-<hash>.pth in the working directory).",
    )
    parser.add_argument("--ema", action="store_true", help="Keep the EMA weights instead of the plain ones.")
    parser.add_argument("--debug", action="store_true", help="Show tracebacks on errors.")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = get_parser().parse_args(argv)
    result = strip_checkpoint(args.checkpoint, args.output, ema=args.ema)
    print(f"Loaded {'EMA ' if result.ema else ''}weights from '{args.checkpoint}' (epoch={result.epoch})")
    print(f"Saved to '{result.path}'")
    print(f"SHA256 hash={result.sha256}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
