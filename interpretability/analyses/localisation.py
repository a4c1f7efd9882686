"""``python -m interpretability.analyses.localisation``: the grid pointing game (see ``--help``)."""

import sys

from bcos.cli.errors import run_cli
from bcos.cli.localisation import main

if __name__ == "__main__":
    sys.exit(run_cli(main))
