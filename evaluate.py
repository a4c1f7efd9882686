#!/usr/bin/env python3
"""Evaluate a trained model's top-1 / top-5 accuracy (see ``python evaluate.py --help``)."""

import sys

from bcos.cli.errors import run_cli
from bcos.cli.evaluate import main

if __name__ == "__main__":
    sys.exit(run_cli(main))
