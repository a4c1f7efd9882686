"""Lightning callbacks of the training framework: metrics files and explanation logging.

Checkpointing uses Lightning's ``ModelCheckpoint`` (configured in :mod:`bcos.training.run`) with
the atomic checkpoint IO of :mod:`bcos.training.atomic`.
"""

from .explanation_logger import ExplanationsLogger
from .metrics_tracker import MetricsTracker

__all__ = ["ExplanationsLogger", "MetricsTracker"]
