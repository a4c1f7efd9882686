"""Run a command-line ``main`` so that user errors end as one line and exit code 2.

Every entry point (``train.py``, ``evaluate.py``, ``run_with_submitit.py``, ...) wraps its work in
:func:`run_cli`. A :class:`bcos.errors.BcosError` (something the user can fix) is printed as
``error: <message>`` on stderr and the process exits with code 2; with ``--debug`` in the arguments
the full traceback is shown instead (an error class may name another status in ``exit_status``,
e.g. 143 / 130 for a training stopped by SIGTERM / Ctrl-C). Any other exception is a bug and keeps
its traceback.
"""

from __future__ import annotations

import sys
import traceback
from collections.abc import Callable, Sequence

from bcos.errors import BcosError

__all__ = ["EXIT_USER_ERROR", "run_cli", "wants_debug"]

#: exit status for errors the user can fix (same as argparse's usage errors)
EXIT_USER_ERROR = 2


def wants_debug(argv: Sequence[str] | None) -> bool:
    """Whether ``--debug`` is among the command-line arguments (``sys.argv[1:]`` when None)."""
    args = sys.argv[1:] if argv is None else argv
    return "--debug" in args


def run_cli(main: Callable[[Sequence[str] | None], object], argv: Sequence[str] | None = None) -> int:
    """Call ``main(argv)`` and return its exit status, mapping user errors to status 2.

    ``main`` may return None (success), an int (the exit status) or raise ``SystemExit``
    (argparse does for ``--help`` and usage errors), which passes through unchanged.
    """
    try:
        result = main(argv)
    except BcosError as error:
        if wants_debug(argv):
            traceback.print_exc()
        print(f"error: {str(error).strip() or type(error).__name__}", file=sys.stderr)
        return int(getattr(error, "exit_status", EXIT_USER_ERROR))
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    return result if isinstance(result, int) else 0
