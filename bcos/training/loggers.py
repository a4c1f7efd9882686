"""Lightning loggers whose files in the run folder are written atomically.

Lightning's CSV logger appends to ``metrics.csv`` and rewrites it in place when a new metric
appears, and writes ``hparams.yaml`` in place: a kill or a full disk in the middle leaves a
truncated file, or an empty one in place of the earlier complete version. :class:`AtomicCSVLogger`
writes both through :mod:`bcos.atomic_io` (a temporary sibling renamed over the file), so each is
always its previous or its new complete version, and a write that fails is one ``OutputError``
line. :class:`AtomicTensorBoardLogger` does the same for its ``hparams.yaml``; its event files are
TensorBoard's append-only record streams (each record has a checksum, a cut-off last record is
ignored by readers), which cannot be renamed into place without giving up streaming.
Non-local paths (``s3://``, ...) keep Lightning's own writers.
"""

from __future__ import annotations

import csv
import io
import os
import tempfile
from pathlib import Path
from typing import Any

from lightning.fabric.loggers.logger import rank_zero_experiment
from lightning.pytorch.core.saving import save_hparams_to_yaml
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.utilities import rank_zero_only

from bcos.atomic_io import atomic_write_bytes, atomic_write_text

__all__ = ["AtomicCSVLogger", "AtomicExperimentWriter", "AtomicTensorBoardLogger", "atomic_save_hparams_to_yaml"]


def _is_local(path: str | os.PathLike) -> bool:
    return "://" not in str(path) or str(path).startswith("file://")


def atomic_save_hparams_to_yaml(path: str | os.PathLike, hparams: Any) -> None:
    """Lightning's ``save_hparams_to_yaml`` (the same YAML), with the file written atomically."""
    if not _is_local(path):
        save_hparams_to_yaml(path, hparams)
        return
    path = Path(str(path).removeprefix("file://"))
    # Lightning's function writes to a path it opens itself: let it write a private scratch
    # file, then put the text in place with one atomic write
    with tempfile.TemporaryDirectory(prefix="bcos-hparams-") as scratch:
        draft = Path(scratch) / path.name
        save_hparams_to_yaml(draft, hparams)
        atomic_write_bytes(path, draft.read_bytes())


class AtomicExperimentWriter(ExperimentWriter):
    """The CSV logger's writer with ``metrics.csv`` and ``hparams.yaml`` replaced atomically.

    Every save writes the whole file anew (the same columns and rows Lightning's writer
    produces); the rows written so far are kept in memory, so nothing is read back.
    """

    def __init__(self, log_dir: str) -> None:
        super().__init__(log_dir)
        self._rows: list[dict[str, Any]] | None = None

    def log_hparams(self, params: dict[str, Any]) -> None:
        """Record hparams and write ``hparams.yaml`` atomically."""
        self.hparams.update(params)
        atomic_save_hparams_to_yaml(os.path.join(self.log_dir, self.NAME_HPARAMS_FILE), self.hparams)

    def save(self) -> None:
        """Write every row recorded so far to ``metrics.csv`` (a temporary file renamed over it)."""
        if not _is_local(self.metrics_file_path):
            super().save()
            return
        if not self.metrics:
            return
        if self._rows is None:
            self._rows = self._read_existing_rows()
        self._record_new_keys()
        rows = self._rows + self.metrics
        text = io.StringIO()
        writer = csv.DictWriter(text, fieldnames=self.metrics_keys)
        writer.writeheader()
        writer.writerows(rows)
        atomic_write_text(self.metrics_file_path, text.getvalue())
        self._rows = rows  # only once written: a failed save keeps its rows for the next one
        self.metrics = []

    def _read_existing_rows(self) -> list[dict[str, Any]]:
        path = Path(self.metrics_file_path)
        if not path.is_file():
            return []
        with path.open(newline="") as file:
            reader = csv.DictReader(file)
            rows = list(reader)
            for key in reader.fieldnames or []:
                if key not in self.metrics_keys:
                    self.metrics_keys.append(key)
        return rows


class AtomicCSVLogger(CSVLogger):
    """Lightning's :class:`~lightning.pytorch.loggers.CSVLogger` writing through :class:`AtomicExperimentWriter`."""

    @property
    @rank_zero_experiment
    def experiment(self) -> AtomicExperimentWriter:
        """The writer (created on first use, in ``log_dir``)."""
        if self._experiment is not None:
            return self._experiment
        self._fs.makedirs(self.root_dir, exist_ok=True)
        self._experiment = AtomicExperimentWriter(log_dir=self.log_dir)
        return self._experiment


class AtomicTensorBoardLogger(TensorBoardLogger):
    """Lightning's :class:`~lightning.pytorch.loggers.TensorBoardLogger` with ``hparams.yaml`` written atomically."""

    @rank_zero_only
    def save(self) -> None:
        """Flush the event file and write ``hparams.yaml`` once (atomically) when it is missing."""
        self.experiment.flush()  # the event stream, as Lightning's save does
        hparams_file = os.path.join(self.log_dir, self.NAME_HPARAMS_FILE)
        if self._fs.isdir(self.log_dir) and not self._fs.isfile(hparams_file):
            atomic_save_hparams_to_yaml(hparams_file, self.hparams)
