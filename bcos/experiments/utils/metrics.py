"""Per-epoch metrics files of a run folder: ``metrics/<name>.gz``.

Each file is a ``numpy.savetxt`` table with two columns, ``epoch`` and ``value``, one row per
validation run (the reference format). :class:`Metrics` reads them into ``[rows, 2]`` tensors;
files with a single row or no rows load with the same 2-D shape (the reference broke on them).
"""

from __future__ import annotations

import gzip
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from bcos.errors import DataNotFoundError, unknown_name
from bcos.atomic_io import atomic_open
from bcos.experiments.utils.run_folder import METRICS_DIRNAME, METRICS_SUFFIX

__all__ = ["Metrics", "MetricsNotFoundError", "read_metric_file", "write_metric_file"]


class MetricsNotFoundError(DataNotFoundError):
    """A run folder without metrics files (or without the metric asked for)."""


def read_metric_file(path: str | Path) -> np.ndarray:
    """Read one metrics file as a float64 array of shape ``[rows, 2]`` (epoch, value)."""
    path = Path(path)
    with warnings.catch_warnings():
        # np.loadtxt warns on an empty file; an empty file just means "no rows yet".
        warnings.simplefilter("ignore", UserWarning)
        try:
            values = np.loadtxt(path, dtype=np.float64, ndmin=2)
        except (ValueError, OSError, EOFError) as error:
            raise DataNotFoundError(
                f"metrics file '{path}' is unreadable ({error}); delete it, it is rewritten at the next checkpoint"
            ) from error
    if values.size == 0:
        return np.zeros((0, 2), dtype=np.float64)
    if values.shape[1] != 2:
        raise DataNotFoundError(
            f"metrics file '{path}' has {values.shape[1]} columns instead of 2 (epoch, value); "
            "delete it, it is rewritten at the next checkpoint"
        )
    return values


def write_metric_file(path: str | Path, rows: Iterable[tuple[float, float]]) -> None:
    """Write ``(epoch, value)`` rows atomically (see :mod:`bcos.atomic_io`)."""
    table = np.asarray(list(rows), dtype=np.float64).reshape(-1, 2)
    # gzip, as np.savetxt does for a ".gz" name (the reference format)
    with atomic_open(path, "wb") as raw, gzip.GzipFile(filename=Path(path).name, mode="wb", fileobj=raw, mtime=0) as packed:
        np.savetxt(packed, table)


class Metrics(dict):
    """Metric name -> tensor ``[rows, 2]`` of (epoch, value), with best-epoch helpers.

    Validation accuracy is looked up as ``eval_acc1`` (the reference's name, from the metric
    attribute) or, failing that, ``val_acc1`` (the logged name); EMA adds the ``_ema`` suffix.
    """

    VALIDATION_KEY = "eval_acc1"
    EMA_VALIDATION_KEY = "eval_acc1_ema"
    _VALIDATION_ALIASES = ("eval_acc1", "val_acc1")

    def __init__(self, other: Mapping[str, object] | None = None):
        super().__init__()
        for name, value in (other or {}).items():
            tensor = torch.as_tensor(np.asarray(value, dtype=np.float64))
            self[name] = tensor.reshape(-1, 2)

    @classmethod
    def from_metrics_dir(cls, metrics_dir: str | Path) -> Metrics:
        """Load every ``*.gz`` file of ``metrics_dir`` (name = file name without ``.gz``)."""
        metrics_dir = Path(metrics_dir)
        if not metrics_dir.is_dir():
            raise MetricsNotFoundError(
                f"no metrics folder at '{metrics_dir}'; it is written during training at every checkpoint"
            )
        # hidden files are temporaries of interrupted writes, never metrics
        files = sorted(p for p in metrics_dir.glob(f"*{METRICS_SUFFIX}") if not p.name.startswith("."))
        return cls({path.name[: -len(METRICS_SUFFIX)]: read_metric_file(path) for path in files})

    @classmethod
    def from_experiment_dir(cls, experiment_dir: str | Path) -> Metrics:
        """Load the metrics of a run folder (``<experiment_dir>/metrics``)."""
        experiment_dir = Path(experiment_dir)
        if not experiment_dir.is_dir():
            raise MetricsNotFoundError(f"run folder '{experiment_dir}' does not exist; train the experiment first")
        return cls.from_metrics_dir(experiment_dir / METRICS_DIRNAME)

    def save(self, metrics_dir: str | Path) -> None:
        """Write every metric to ``metrics_dir/<name>.gz``."""
        for name, values in self.items():
            write_metric_file(Path(metrics_dir) / f"{name}{METRICS_SUFFIX}", values.tolist())

    def validation_key(self, ema: bool = False) -> str | None:
        """The key holding validation top-1 accuracy (EMA or not), or None if there is none."""
        suffix = "_ema" if ema else ""
        for key in self._VALIDATION_ALIASES:
            if key + suffix in self:
                return key + suffix
        return None

    def has_ema(self) -> bool:
        """Whether EMA validation accuracy was recorded."""
        key = self.validation_key(ema=True)
        return key is not None and len(self[key]) > 0

    def get_best_epoch_and_accuracy(self) -> tuple[int, float]:
        """Epoch and value of the best validation top-1 accuracy."""
        key = self.validation_key(ema=False)
        if key is None:
            raise MetricsNotFoundError(
                f"no validation accuracy ({self.VALIDATION_KEY}.gz) among the metrics {sorted(self)}; "
                "it is written after the first validation epoch"
            )
        return self.find_best_epoch_and_metric_value_for(key)

    def get_best_epoch_and_accuracy_ema(self) -> tuple[int, float]:
        """Epoch and value of the best EMA validation top-1 accuracy."""
        key = self.validation_key(ema=True)
        if key is None:
            raise MetricsNotFoundError(
                f"no EMA validation accuracy ({self.EMA_VALIDATION_KEY}.gz) among the metrics {sorted(self)}; "
                "the run was not trained with EMA (drop ema=True / --ema)"
            )
        return self.find_best_epoch_and_metric_value_for(key)

    def find_best_epoch_and_metric_value_for(
        self, metric_key: str, mode: Literal["min", "max"] = "max"
    ) -> tuple[int, float]:
        """The (epoch, value) row with the largest (``mode="max"``) or smallest value of a metric.

        Ties go to the earliest row.
        """
        if metric_key not in self:
            raise unknown_name("metric", metric_key, self.keys())
        if mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max', not {mode!r}")
        table = self[metric_key]
        if len(table) == 0:
            raise MetricsNotFoundError(f"metric {metric_key!r} has no rows yet; wait for the first validation epoch")
        column = table[:, 1]
        index = int(column.argmax() if mode == "max" else column.argmin())
        return int(table[index, 0]), float(table[index, 1])

    def value_at_epoch(self, metric_key: str, epoch: int) -> float | None:
        """The value of ``metric_key`` recorded for ``epoch`` (the last such row), or None."""
        table = self.get(metric_key)
        if table is None:
            return None
        rows = table[table[:, 0] == epoch]
        return float(rows[-1, 1]) if len(rows) else None
