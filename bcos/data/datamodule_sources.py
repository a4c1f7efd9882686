"""Where datamodules come from besides bcos itself: a module the user names, and entry points.

Two ways make a datamodule that lives outside bcos known under its name (``--dataset <Name>``):

* ``--datamodule mypkg.data:FlowersDataModule`` (or ``mypkg.data``, which registers every
  datamodule the module defines): :func:`import_datamodule` imports the module, looks up the class
  and checks that it is a :class:`~bcos.data.datamodules.ClassificationDataModule`; its class
  statement registered it. The working directory is searched too (as ``python -m`` does), so a
  ``mypkg/`` folder next to where the command runs is found without installing it.
* An installed package declares an entry point in the group ``bcos.datamodules``
  (``[project.entry-points."bcos.datamodules"] Flowers = "mypkg.data:FlowersDataModule"``):
  :func:`find_datamodule_class` loads it the first time its name is looked up.

Datamodules defined by a config collection (at the top of its ``experiment_parameters.py``) are
imported with the collection; :func:`bcos.experiments.utils.datasets.resolve_datamodule` does that
before it asks here.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import inspect
import os
import sys
from types import ModuleType

from bcos.data.datamodules import ClassificationDataModule, registry
from bcos.errors import BcosError, ConfigError, unknown_name

__all__ = ["ENTRY_POINT_GROUP", "import_datamodule", "entry_point_names", "find_datamodule_class"]

#: the entry point group installed packages declare their datamodules in
ENTRY_POINT_GROUP = "bcos.datamodules"


def _import_module(name: str, spec: str) -> ModuleType:
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.append(cwd)  # after the installed packages, so a local folder never shadows one
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as error:
        if error.name is not None and name != error.name and not name.startswith(f"{error.name}."):
            raise ConfigError(f"--datamodule {spec}: importing {name!r} failed: it needs the module {error.name!r} (install it)") from None
        raise ConfigError(
            f"--datamodule {spec}: no module named {name!r}; install its package, run from the folder that holds it, "
            "or add that folder to PYTHONPATH"
        ) from None
    except BcosError:
        raise  # already one line (e.g. a datamodule registered under a name that is taken)
    except Exception as error:  # the module's own code failed: SyntaxError, NameError, RuntimeError, ...
        # chained, so --debug shows where in the module it failed
        raise ConfigError(f"--datamodule {spec}: importing {name} failed ({_reason(error)}); fix the module") from error


def _reason(error: BaseException) -> str:
    """``Type: first line of the message`` of an exception."""
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__


def _check_class(value: object, where: str) -> type[ClassificationDataModule]:
    if not (inspect.isclass(value) and issubclass(value, ClassificationDataModule)):
        kind = value.__name__ if inspect.isclass(value) else type(value).__name__
        raise ConfigError(
            f"{where} is {kind!r}, not a subclass of bcos.data.datamodules.ClassificationDataModule; "
            "name a datamodule class (<Name>DataModule)"
        )
    if registry().get(value.dataset_name()) is not value:
        raise ConfigError(
            f"{where} is not registered (a base class declared with register=False); name a concrete <Name>DataModule"
        )
    return value


def import_datamodule(spec: str) -> type[ClassificationDataModule] | None:
    """Import the datamodule ``spec`` names (``"module:Class"``, or ``"module"``) and return its class.

    ``"module"`` alone imports the module, which registers every datamodule it defines, and returns
    the one it defines when there is exactly one, else None. Errors are one line: no such module,
    no such attribute (with the closest name), not a ``ClassificationDataModule`` subclass.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise ConfigError(f"--datamodule takes MODULE:CLASS, e.g. mypkg.data:FlowersDataModule; got {spec!r}")
    module_name, sep, attribute = spec.strip().partition(":")
    if not module_name or (sep and not attribute) or ":" in attribute:
        raise ConfigError(f"--datamodule takes MODULE:CLASS, e.g. mypkg.data:FlowersDataModule; got {spec!r}")
    module = _import_module(module_name, spec)
    if not attribute:
        defined = [
            cls for cls in registry().values() if cls.__module__ == module.__name__
        ]
        if not defined:
            raise ConfigError(
                f"--datamodule {spec}: the module defines no datamodule (a ClassificationDataModule subclass "
                "named <Name>DataModule); name one as MODULE:CLASS"
            )
        return defined[0] if len(defined) == 1 else None
    value: object = module
    for part in attribute.split("."):
        if not hasattr(value, part):
            names = [n for n in vars(module) if not n.startswith("_")]
            raise unknown_name(f"attribute of {module_name}", attribute, names, hint=f"see dir({module_name})")
        value = getattr(value, part)
    return _check_class(value, f"--datamodule {spec}")


def _entry_points() -> list[importlib.metadata.EntryPoint]:
    return list(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP))


def entry_point_names() -> list[str]:
    """The data-set names that installed packages declare in the ``bcos.datamodules`` group."""
    return sorted({entry_point.name for entry_point in _entry_points()})


def _load_entry_point(entry_point: importlib.metadata.EntryPoint) -> type[ClassificationDataModule]:
    where = f"the entry point {entry_point.name} = {entry_point.value!r} (group {ENTRY_POINT_GROUP})"
    try:
        value = entry_point.load()
    except BcosError:
        raise
    except Exception as error:  # ImportError, AttributeError, or the module's own code failed
        raise ConfigError(f"{where} cannot be loaded ({_reason(error)}); fix or reinstall its package") from error
    cls = _check_class(value, where)
    if cls.dataset_name() != entry_point.name:
        raise ConfigError(
            f"{where} names {cls.__name__}, registered as {cls.dataset_name()!r}; the entry point's name must be "
            f"{cls.dataset_name()!r}"
        )
    return cls


def find_datamodule_class(name: str, more_choices: tuple[str, ...] = ()) -> type[ClassificationDataModule]:
    """The datamodule registered as ``name``, else the one an entry point of that name declares.

    Unknown names raise :class:`~bcos.errors.UnknownNameError` listing the registered names, the
    entry points' and ``more_choices`` (e.g. the data-set folders of the config collections).
    """
    found = registry().get(name)
    if found is not None:
        return found
    for entry_point in _entry_points():
        if entry_point.name == name:
            return _load_entry_point(entry_point)
    choices = {*registry(), *entry_point_names(), *more_choices}
    raise unknown_name(
        "dataset", name, choices,
        hint="define it in a module and pass --datamodule MODULE:CLASS, or see docs/configs.md",
    )  # fmt: skip
