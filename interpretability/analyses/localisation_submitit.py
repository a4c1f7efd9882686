"""``python -m interpretability.analyses.localisation_submitit``: many localisation analyses as a SLURM array."""

import sys

from bcos.cli.errors import run_cli
from bcos.cli.localisation import submit_main

if __name__ == "__main__":
    sys.exit(run_cli(submit_main))
