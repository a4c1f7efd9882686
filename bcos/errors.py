"""User-facing errors of the bcos package.

Every error a user can cause by bad input derives from :class:`BcosError`. Its message is one line
that says what was wrong and how to fix it; the command-line entry points print that line and exit
with code 2 instead of showing a traceback (unless ``--debug`` is given).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

__all__ = [
    "BcosError",
    "UnknownNameError",
    "ConfigError",
    "DataNotFoundError",
    "CheckpointError",
    "InputError",
    "UnknownArgumentError",
    "OutputError",
    "closest_match",
    "unknown_name",
]


class BcosError(Exception):
    """Base class of all errors caused by user input; the message names the fix.

    Raised in a data-loader worker, the error reaches the main process re-created by torch with
    ``"Caught <class> in DataLoader worker process N. Original Traceback ..."`` as its message;
    the message is then cut back to the original one line.
    """

    def __init__(self, *args: object) -> None:
        if len(args) == 1 and isinstance(args[0], str):
            args = (_original_message(args[0]),)
        super().__init__(*args)


class UnknownNameError(BcosError, ValueError):
    """A name (dataset, collection, experiment, model, explainer, ...) that does not exist."""


class ConfigError(BcosError, ValueError):
    """An invalid configuration value or combination of options."""


class DataNotFoundError(BcosError, FileNotFoundError):
    """A data set, folder or file that should exist on disk but does not (or is corrupt)."""


class CheckpointError(BcosError, RuntimeError):
    """A checkpoint or weights file that is missing, unsafe, corrupt or does not fit the model."""


class InputError(BcosError, ValueError):
    """A tensor or image argument with the wrong shape, dtype, size or values."""


class UnknownArgumentError(BcosError, TypeError):
    """A keyword argument a builder or layer does not take (a ``TypeError``, as Python raises)."""


class OutputError(BcosError, OSError):
    """A file could not be written (disk full, read-only or unwritable folder) or would replace a user's file."""

    def __init__(self, message: str, errno: int | None = None) -> None:
        super().__init__(message)  # one argument: str() is the message alone, without "[Errno N]"
        self.errno = errno


def _original_message(message: str) -> str:
    # torch.utils.data's ExceptionWrapper: "Caught X in ...\nOriginal Traceback ...\nmodule.X: message\n"
    if not (message.startswith("Caught ") and "\nOriginal Traceback" in message):
        return message
    last = message.rstrip().splitlines()[-1]
    _, separator, original = last.partition(": ")
    return original if separator else message


# typos that look alike: O/0, l/1, I/1, and - / _ / space
_LOOKALIKES = str.maketrans({"o": "0", "l": "1", "i": "1", "-": "_", " ": "_"})


def closest_match(name: str, choices: Iterable[str]) -> str | None:
    """The choice most similar to ``name`` (case-insensitive), or None when nothing is close.

    A name that equals exactly one choice up to look-alike characters (``resnet_2O`` for
    ``resnet_20``, ``norm-ablations`` for ``norm_ablations``) is matched first.
    """
    choices = list(choices)
    lowered = {c.lower(): c for c in choices}
    if name.lower() in lowered:
        return lowered[name.lower()]
    lookalikes = [c for c in choices if c.lower().translate(_LOOKALIKES) == name.lower().translate(_LOOKALIKES)]
    if len(lookalikes) == 1:
        return lookalikes[0]
    matches = difflib.get_close_matches(name.lower(), list(lowered), n=1, cutoff=0.5)
    return lowered[matches[0]] if matches else None


def unknown_name(kind: str, name: str, choices: Iterable[str], hint: str = "") -> UnknownNameError:
    """Build an :class:`UnknownNameError` for ``name`` that suggests the closest of ``choices``.

    Example message: ``unknown dataset 'CIFAR1O'; did you mean 'CIFAR10'? (choices: CIFAR10, ImageNet)``.
    """
    choices = sorted(set(choices))
    suggestion = closest_match(name, choices)
    message = f"unknown {kind} {name!r}"
    if suggestion is not None:
        message += f"; did you mean {suggestion!r}?"
    if len(choices) <= 12:
        message += f" (choices: {', '.join(choices)})"
    else:
        message += f" ({len(choices)} choices; {hint or 'see the list command'})"
    return UnknownNameError(message)
