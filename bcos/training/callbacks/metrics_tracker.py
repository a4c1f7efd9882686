"""``MetricsTracker``: per-epoch values of every torchmetrics metric, written to ``metrics/<name>.gz``.

After each validation run (sanity checks excluded) it records ``(epoch, value)`` for every
``torchmetrics.Metric`` attribute of the LightningModule that saw data (``train_acc1``,
``eval_acc1``, ``eval_acc1_ema``, ...). Whenever a checkpoint is saved, rank 0 rewrites the files in
the reference's format (``numpy.savetxt``, two columns), each one atomically. The recorded values
travel in the checkpoint as plain lists, so a resumed run continues the same files.
"""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
import torchmetrics
from lightning.pytorch.callbacks import Callback

from bcos.experiments.utils.metrics import write_metric_file
from bcos.experiments.utils.run_folder import RunFolder

__all__ = ["MetricsTracker"]


class MetricsTracker(Callback):
    """Records metric values per epoch and writes them next to the checkpoints."""

    def __init__(self) -> None:
        # metric attribute name -> [[epoch, value], ...]
        self.data: dict[str, list[list[float]]] = {}

    @staticmethod
    def _metrics(pl_module: pl.LightningModule) -> dict[str, torchmetrics.Metric]:
        return {
            name: child for name, child in pl_module.named_children() if isinstance(child, torchmetrics.Metric)
        }

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Compute every metric that saw data this epoch (on all ranks: computing synchronises)."""
        if trainer.sanity_checking:
            return
        epoch = int(trainer.current_epoch)
        for name, metric in self._metrics(pl_module).items():
            if not metric.update_called:
                continue
            value = float(metric.compute())
            rows = [row for row in self.data.get(name, []) if int(row[0]) != epoch]
            rows.append([epoch, value])
            self.data[name] = rows

    def on_save_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        """Rewrite ``<run folder>/metrics/<name>.gz`` for every recorded metric (rank 0 only)."""
        if not trainer.is_global_zero:
            return
        run_folder = RunFolder(trainer.default_root_dir)
        for name, rows in self.data.items():
            write_metric_file(run_folder.metrics_file(name), [(row[0], row[1]) for row in rows])

    def state_dict(self) -> dict[str, Any]:
        """The recorded values (plain lists, safe for ``torch.load(weights_only=True)``)."""
        return {name: [[int(e), float(v)] for e, v in rows] for name, rows in self.data.items()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Continue from the values stored in a checkpoint."""
        self.data = {name: [[int(e), float(v)] for e, v in rows] for name, rows in state_dict.items()}
