"""SIGTERM stops every training process at the same batch, without a collective in the signal handler.

Lightning's SIGTERM handler broadcasts a tensor from inside the handler. A handler runs wherever the
main thread happens to be, so under DDP the processes post that broadcast at different points
(one inside the backward's gradient all-reduce, another between steps): the collectives no longer
match and the training hangs. :func:`stop_cleanly_on_sigterm` gives the trainer a handler that only
notes the signal and passes it on to the processes Lightning started; Lightning's loops then
broadcast rank 0's note at the start of every training batch, so all processes stop together at
the next batch boundary (a checkpoint being written is finished first), and ``run_training`` turns
the stop into :class:`~bcos.training.run.TrainingTerminated` (exit status 143).
"""

from __future__ import annotations

import logging
from types import FrameType

import lightning.pytorch as pl
from lightning.pytorch.trainer.connectors.signal_connector import _SignalConnector

__all__ = ["stop_cleanly_on_sigterm"]

log = logging.getLogger(__name__)


class _NoteSigterm(_SignalConnector):
    """Lightning's signal connector with a SIGTERM handler that runs no collective operation."""

    def _sigterm_notifier_fn(self, signum: int, _: FrameType | None) -> None:
        log.info(f"[rank {self.trainer.global_rank}] received SIGTERM: stopping at the next batch")
        if not self.received_sigterm:
            launcher = self.trainer.strategy.launcher
            if launcher is not None:
                launcher.kill(signum)  # the processes that `--devices N` started stop too
        self.received_sigterm = True


def stop_cleanly_on_sigterm(trainer: pl.Trainer) -> None:
    """Make ``trainer`` handle SIGTERM as described above (call before ``fit``)."""
    trainer._signal_connector = _NoteSigterm(trainer)
