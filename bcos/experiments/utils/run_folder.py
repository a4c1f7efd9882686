"""The layout of a training run folder, in one place.

A run folder is ``<base_directory>/<dataset>/<base_network>/<experiment_name>/`` and holds::

    last.ckpt                          the latest training checkpoint (resume point)
    epoch=<E>-val_acc1=<A>.ckpt        the best checkpoints by validation top-1 accuracy
    epoch=<E>-val_acc1_ema=<A>.ckpt    the same for the EMA weights (EMA runs only)
    metrics/<name>.gz                  per-epoch metrics, two columns: epoch, value
    config.txt                         the resolved config as readable text
    .lock                              present while a training process owns the folder
    csv_logs/ slurm_logs/ wandb/       logger and cluster output
    localisation_analysis/             results of the grid pointing game

Everything that needs one of these names (training, loading, evaluation, localisation) asks this
module, so the layout can change in one place.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from bcos.experiments.utils.structure_constants import BASE_EXPERIMENTS_DIRECTORY, CHECKPOINT_LAST_FILENAME

__all__ = [
    "BASE_EXPERIMENTS_DIRECTORY",
    "LAST_CHECKPOINT_FILENAME",
    "CHECKPOINT_SUFFIX",
    "METRICS_DIRNAME",
    "CONFIG_FILENAME",
    "LOCK_FILENAME",
    "LOCALISATION_DIRNAME",
    "VALIDATION_METRIC",
    "EMA_VALIDATION_METRIC",
    "RunFolder",
    "CheckpointName",
    "best_checkpoint_filename",
    "best_checkpoint_filename_template",
    "parse_checkpoint_filename",
]

LAST_CHECKPOINT_FILENAME = CHECKPOINT_LAST_FILENAME
CHECKPOINT_SUFFIX = ".ckpt"
METRICS_DIRNAME = "metrics"
METRICS_SUFFIX = ".gz"
CONFIG_FILENAME = "config.txt"
LOCK_FILENAME = ".lock"
LOCALISATION_DIRNAME = "localisation_analysis"
CSV_LOGS_DIRNAME = "csv_logs"
SLURM_LOGS_DIRNAME = "slurm_logs"

# Names as logged by the LightningModule (and therefore as they appear in checkpoint file names).
VALIDATION_METRIC = "val_acc1"
EMA_VALIDATION_METRIC = "val_acc1_ema"

# Lightning names duplicate files "<stem>-v1.ckpt", "<stem>-v2.ckpt", ...; keep those parseable.
_CHECKPOINT_NAME = re.compile(
    r"^epoch=(?P<epoch>\d+)-(?P<metric>[A-Za-z0-9_]+)=(?P<value>[-+0-9.eE]+?)(?:-v(?P<version>\d+))?\.ckpt$"
)


@dataclass(frozen=True)
class CheckpointName:
    """What a best-checkpoint file name says: its epoch, the monitored metric and its value."""

    epoch: int
    metric: str
    value: float

    @property
    def is_ema(self) -> bool:
        """Whether the checkpoint was chosen by the EMA model's accuracy."""
        return self.metric.endswith("_ema")


def best_checkpoint_filename(epoch: int, accuracy: float, ema: bool = False) -> str:
    """The file name of a best checkpoint, e.g. ``epoch=12-val_acc1=0.9132.ckpt``."""
    metric = EMA_VALIDATION_METRIC if ema else VALIDATION_METRIC
    return f"epoch={epoch}-{metric}={accuracy:.4f}{CHECKPOINT_SUFFIX}"


def best_checkpoint_filename_template(ema: bool = False) -> str:
    """The ``filename`` argument for Lightning's ``ModelCheckpoint`` that yields
    :func:`best_checkpoint_filename` names (Lightning adds the suffix)."""
    metric = EMA_VALIDATION_METRIC if ema else VALIDATION_METRIC
    return "{epoch}-{" + metric + ":.4f}"


def parse_checkpoint_filename(name: str) -> CheckpointName | None:
    """Parse ``epoch=<E>-<metric>=<value>.ckpt`` (optionally ``-v<N>``); None for other names."""
    match = _CHECKPOINT_NAME.match(name)
    if match is None:
        return None
    try:
        value = float(match["value"])
    except ValueError:
        return None
    return CheckpointName(epoch=int(match["epoch"]), metric=match["metric"], value=value)


@dataclass(frozen=True)
class RunFolder:
    """The run folder of one experiment and the paths inside it (nothing is created on access)."""

    path: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))

    @classmethod
    def of(
        cls,
        dataset: str,
        base_network: str,
        experiment_name: str,
        base_directory: str | Path = BASE_EXPERIMENTS_DIRECTORY,
    ) -> RunFolder:
        """The run folder ``<base_directory>/<dataset>/<base_network>/<experiment_name>``."""
        return cls(Path(base_directory, dataset, base_network, experiment_name))

    @property
    def last_checkpoint(self) -> Path:
        return self.path / LAST_CHECKPOINT_FILENAME

    @property
    def metrics_dir(self) -> Path:
        return self.path / METRICS_DIRNAME

    def metrics_file(self, metric_name: str) -> Path:
        """The file holding the per-epoch values of ``metric_name``."""
        return self.metrics_dir / f"{metric_name}{METRICS_SUFFIX}"

    @property
    def config_file(self) -> Path:
        return self.path / CONFIG_FILENAME

    @property
    def lock_file(self) -> Path:
        return self.path / LOCK_FILENAME

    @property
    def localisation_dir(self) -> Path:
        return self.path / LOCALISATION_DIRNAME

    @property
    def csv_logs_dir(self) -> Path:
        return self.path / CSV_LOGS_DIRNAME

    @property
    def slurm_logs_dir(self) -> Path:
        return self.path / SLURM_LOGS_DIRNAME

    def best_checkpoint(self, epoch: int, accuracy: float, ema: bool = False) -> Path:
        """The path a best checkpoint of ``epoch`` with ``accuracy`` gets."""
        return self.path / best_checkpoint_filename(epoch, accuracy, ema)

    def checkpoints(self) -> list[Path]:
        """Every ``*.ckpt`` file in the folder, sorted by name (empty if the folder is missing)."""
        if not self.path.is_dir():
            return []
        return sorted(p for p in self.path.iterdir() if p.suffix == CHECKPOINT_SUFFIX and p.is_file())

    def epoch_checkpoints(self) -> dict[int, list[Path]]:
        """The best checkpoints by epoch (``last.ckpt`` and unparseable names are left out)."""
        result: dict[int, list[Path]] = {}
        for path in self.checkpoints():
            parsed = parse_checkpoint_filename(path.name)
            if parsed is not None:
                result.setdefault(parsed.epoch, []).append(path)
        return dict(sorted(result.items()))

    def available_epochs(self) -> list[int]:
        """Sorted epochs that have a checkpoint file of their own."""
        return list(self.epoch_checkpoints())
