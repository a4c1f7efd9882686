"""Optimizer and learning-rate scheduler factories used by the configs."""

from .lr_scheduler_factory import LRSchedulerFactory
from .optimizer_factory import OptimizerFactory

__all__ = ["OptimizerFactory", "LRSchedulerFactory"]
