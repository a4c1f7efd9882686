"""How many training processes there are, and who starts them.

A training runs as one process or as several (DDP, one process per device). The processes are
started either by ``train.py`` itself (``--devices N``: Lightning starts N - 1 copies of the
command) or by a launcher that starts every process and describes the layout in the environment:

=================== ======================================================================
launcher            what it sets (read here)
=================== ======================================================================
``torchrun``        ``WORLD_SIZE``, ``LOCAL_WORLD_SIZE``, ``TORCHELASTIC_RUN_ID``
submitit            ``WORLD_SIZE``, ``LOCAL_WORLD_SIZE`` (exported by the job, see
                    :mod:`bcos.cli.submitit_launcher`), ``SUBMITIT_*``
SLURM ``srun``      ``SLURM_NTASKS``, ``SLURM_NNODES`` (``SLURM_NTASKS_PER_NODE``)
=================== ======================================================================

:func:`launcher_layout` reads that description, so ``torchrun ... train.py`` and ``srun python
train.py`` work unchanged, with the process count taken from the launcher.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping

from bcos.errors import ConfigError

__all__ = ["ProcessLayout", "launcher_layout", "global_rank_from_env"]


@dataclasses.dataclass(frozen=True)
class ProcessLayout:
    """The processes of a training that a launcher started: per node, nodes, and the launcher's name."""

    launcher: str
    processes_per_node: int
    nodes: int

    @property
    def world_size(self) -> int:
        """All processes of the training."""
        return self.processes_per_node * self.nodes


def _positive(environ: Mapping[str, str], key: str, launcher: str) -> int:
    value = environ.get(key, "")
    if not value.isdigit() or int(value) < 1:
        raise ConfigError(f"{launcher} set {key}={value!r}, which is not a process count; check the launch command")
    return int(value)


def _slurm_tasks_per_node(environ: Mapping[str, str]) -> int:
    # SLURM_NTASKS_PER_NODE exists only when the job asked for it; the tasks are spread evenly otherwise
    if environ.get("SLURM_NTASKS_PER_NODE", "").isdigit():
        return int(environ["SLURM_NTASKS_PER_NODE"])
    tasks = _positive(environ, "SLURM_NTASKS", "SLURM")
    nodes = _positive(environ, "SLURM_NNODES", "SLURM") if "SLURM_NNODES" in environ else 1
    if tasks % nodes:
        raise ConfigError(
            f"SLURM runs {tasks} tasks on {nodes} nodes, not the same number on each; "
            "use --ntasks-per-node (one task per GPU)"
        )
    return tasks // nodes


def launcher_layout(environ: Mapping[str, str] | None = None) -> ProcessLayout | None:
    """The layout a launcher (torchrun, submitit, SLURM ``srun``) gave this process, or None.

    None means nobody started this process as part of a group: ``train.py`` was run directly and
    starts any further processes itself. A copy started by Lightning for ``--devices N`` is not
    launcher-started either (Lightning sets ``WORLD_SIZE`` for it, never ``LOCAL_WORLD_SIZE``).
    """
    environ = os.environ if environ is None else environ
    if "LOCAL_WORLD_SIZE" in environ and "WORLD_SIZE" in environ:
        if "TORCHELASTIC_RUN_ID" in environ:
            launcher = "torchrun"
        elif any(key.startswith("SUBMITIT_") for key in environ):
            launcher = "submitit"
        else:
            launcher = "the launcher"
        per_node = _positive(environ, "LOCAL_WORLD_SIZE", launcher)
        world = _positive(environ, "WORLD_SIZE", launcher)
        if world % per_node:
            raise ConfigError(
                f"{launcher} started {world} processes with {per_node} per node, not the same number on each node"
            )
        return ProcessLayout(launcher, per_node, world // per_node)
    interactive = environ.get("SLURM_JOB_NAME") in ("bash", "interactive")
    if "SLURM_NTASKS" in environ and "SLURM_STEP_ID" in environ and not interactive:
        nodes = _positive(environ, "SLURM_NNODES", "SLURM") if "SLURM_NNODES" in environ else 1
        return ProcessLayout("srun", _slurm_tasks_per_node(environ), nodes)
    return None


def global_rank_from_env(environ: Mapping[str, str] | None = None) -> int:
    """This process's global rank before Lightning starts (0 when not launched distributed)."""
    environ = os.environ if environ is None else environ
    for key in ("RANK", "SLURM_PROCID"):
        if environ.get(key, "").isdigit():
            return int(environ[key])
    # a copy started by Lightning for --devices N: zero only for the first process of the first node
    return int(environ.get("NODE_RANK", "0") or 0) + int(environ.get("LOCAL_RANK", "0") or 0)
