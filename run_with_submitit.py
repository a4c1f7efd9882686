"""Submit a training to SLURM (or run it through submitit locally) with automatic requeueing.

``python run_with_submitit.py <train.py options> --gpus 4 --nodes 1 --timeout 24``; all logic lives
in :mod:`bcos.cli.submitit_launcher`.
"""

from bcos.cli.submitit_launcher import get_parser, main

__all__ = ["get_parser", "main"]

if __name__ == "__main__":
    raise SystemExit(main())
