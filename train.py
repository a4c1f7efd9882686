"""Train one experiment config: ``python train.py --dataset ... --base_network ... --experiment_name ...``.

All logic lives in :mod:`bcos.cli.train` and :func:`bcos.training.run.run_training`; see TRAINING.md.
"""

from bcos.cli.train import get_parser, main, validate_args

__all__ = ["get_parser", "main", "validate_args"]

if __name__ == "__main__":
    raise SystemExit(main())
