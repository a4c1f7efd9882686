"""Which datamodule a ``--dataset`` name means, for every command.

A data set's datamodule can be defined in four places, and all of them are known before the name
is checked:

1. bcos itself (:mod:`bcos.data.datamodules`);
2. a config collection, at the top of ``bcos/experiments/<Name>/<collection>/experiment_parameters.py``
   (the collection named by ``base_network``, else every collection of ``<Name>`` is imported);
3. a module the user names with ``--datamodule mypkg.data:FlowersDataModule``;
4. an installed package's entry point in the group ``bcos.datamodules``.

:func:`resolve_datamodule` imports what it takes and returns the class; the commands (train,
evaluate, localise, explain) and :meth:`Experiment.get_datamodule` call it.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

from bcos.errors import ConfigError

from .collections import _configs_module_name, list_collections

if TYPE_CHECKING:
    from bcos.data.datamodules import ClassificationDataModule

__all__ = ["DATAMODULE_HELP", "resolve_datamodule", "dataset_of_datamodule"]

#: the help text of every command's ``--datamodule`` option
DATAMODULE_HELP = (
    "Import a datamodule defined outside bcos before --dataset is checked: MODULE:CLASS, e.g. "
    "mypkg.data:FlowersDataModule (registered as Flowers; --dataset defaults to it), or MODULE."
)


def dataset_of_datamodule(dataset: str | None, datamodule: str | None) -> str | None:
    """Import ``--datamodule`` (when given) and return the data-set name to use.

    ``--dataset`` defaults to the name the datamodule is registered under; a ``--dataset`` that
    names another data set than ``--datamodule MODULE:CLASS`` is an error.
    """
    if datamodule is None:
        return dataset
    from bcos.data.datamodule_sources import import_datamodule

    cls = import_datamodule(datamodule)
    if cls is None:
        if dataset is None:
            raise ConfigError(f"--datamodule {datamodule} defines several datamodules; pass --dataset NAME or MODULE:CLASS")
        return dataset
    if dataset is not None and dataset != cls.dataset_name():
        raise ConfigError(
            f"--datamodule {datamodule} is registered as {cls.dataset_name()!r}, but --dataset is {dataset!r}; "
            f"drop --dataset or pass --dataset {cls.dataset_name()}"
        )
    return cls.dataset_name()


def _import_collections(dataset: str, base_network: str | None) -> None:
    collections = list_collections().get(dataset, [])
    chosen = [base_network] if base_network in collections else collections
    for name in chosen:
        import_module(_configs_module_name(dataset, name))


def resolve_datamodule(
    dataset: str, base_network: str | None = None, datamodule: str | None = None
) -> type[ClassificationDataModule]:
    """The datamodule class of ``dataset``, wherever it is defined (see the module docstring).

    Args:
        dataset: the data-set name (``--dataset``).
        base_network: the config collection in use, imported first (its module may define the
            datamodule); without it every collection of ``dataset`` is imported when the name is
            not registered yet.
        datamodule: ``--datamodule MODULE:CLASS`` (or ``MODULE``), imported first.

    Raises :class:`~bcos.errors.UnknownNameError` naming every known data set (registered, entry
    points, collection folders) and the closest match; :class:`~bcos.errors.ConfigError` for a bad
    ``--datamodule``.
    """
    from bcos.data.datamodule_sources import find_datamodule_class
    from bcos.data.datamodules import registry

    dataset = dataset_of_datamodule(dataset, datamodule) or ""
    if dataset in registry():
        return registry()[dataset]
    _import_collections(dataset, base_network)
    collections = list_collections()
    if dataset in collections and dataset not in registry():
        from bcos.data.datamodule_sources import entry_point_names

        if dataset not in entry_point_names():
            raise ConfigError(
                f"bcos/experiments/{dataset}/ has configs but nothing defines {dataset}DataModule; define it at the top "
                f"of a collection's experiment_parameters.py or in a module passed as --datamodule MODULE:CLASS"
            )
    return find_datamodule_class(dataset, more_choices=tuple(collections))
