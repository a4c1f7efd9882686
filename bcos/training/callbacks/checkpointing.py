"""The checkpoint callbacks of a run: ``last.ckpt`` plus the best ``epoch=E-val_acc1=A.ckpt`` files.

File names come from :mod:`bcos.experiments.utils.run_folder`, the one place that knows the
run-folder layout. Version counters are off, so a run always writes ``last.ckpt`` (never
``last-v1.ckpt``) even when the folder was moved or an earlier run left files behind.
"""

from __future__ import annotations

from lightning.pytorch.callbacks import ModelCheckpoint

from bcos.experiments.utils.run_folder import (
    EMA_VALIDATION_METRIC,
    VALIDATION_METRIC,
    RunFolder,
    best_checkpoint_filename_template,
)

__all__ = ["RunCheckpoint", "checkpoint_callbacks", "BEST_CHECKPOINTS_KEPT"]

#: how many best checkpoints (by validation top-1 accuracy) stay in the run folder
BEST_CHECKPOINTS_KEPT = 3


class RunCheckpoint(ModelCheckpoint):
    """``ModelCheckpoint`` that rewrites ``last.ckpt`` after every epoch and nothing in ``fast_dev_run``.

    Lightning 2.x refreshes ``last.ckpt`` only when the epoch also entered the best ``save_top_k``;
    a run killed after a few epochs without improvement would resume from far back. Lightning also
    skips checkpoints in a fast dev run except the final ``last.ckpt`` of ``on_train_end``; that
    file would make the next real training resume after one batch.
    """

    def on_train_end(self, trainer, pl_module) -> None:
        if trainer.fast_dev_run:
            return
        super().on_train_end(trainer, pl_module)

    def on_validation_end(self, trainer, pl_module) -> None:
        super().on_validation_end(trainer, pl_module)
        if not self._should_save_on_train_epoch_end(trainer):
            self._save_last_if_missed(trainer)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        if self._should_save_on_train_epoch_end(trainer):
            self._save_last_if_missed(trainer)

    def _save_last_if_missed(self, trainer) -> None:
        if not self.save_last or self._should_skip_saving_checkpoint(trainer):
            return
        if self._last_global_step_saved != trainer.global_step:
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))


def checkpoint_callbacks(run_folder: RunFolder, ema: bool = False) -> list[RunCheckpoint]:
    """``ModelCheckpoint`` for ``last.ckpt`` and the best three by ``val_acc1``; with ``ema`` a second
    one keeps the best three by ``val_acc1_ema``."""
    callbacks = [
        RunCheckpoint(
            dirpath=run_folder.path,
            filename=best_checkpoint_filename_template(ema=False),
            monitor=VALIDATION_METRIC,
            mode="max",
            save_last=True,
            save_top_k=BEST_CHECKPOINTS_KEPT,
            verbose=True,
            enable_version_counter=False,
        )
    ]
    if ema:
        callbacks.append(
            RunCheckpoint(
                dirpath=run_folder.path,
                filename=best_checkpoint_filename_template(ema=True),
                monitor=EMA_VALIDATION_METRIC,
                mode="max",
                save_top_k=BEST_CHECKPOINTS_KEPT,
                verbose=True,
                enable_version_counter=False,
            )
        )
    return callbacks
