"""A tiny registered B-cos model for command-line and fine-tuning tests.

:func:`register_tiny_model` adds ``tiny_test_resnet`` (the ResNet-18 layout with stem width 4,
32x32 inputs, 1000 classes, no published weights) to the model registry through ``monkeypatch``,
so the entry disappears after the test; :func:`save_tiny_weights` writes a state dict for it,
standing in for downloaded weights.
"""

from __future__ import annotations

from pathlib import Path

import torch

from bcos.models import registry

TINY_NAME = "tiny_test_resnet"


def register_tiny_model(monkeypatch) -> registry.PretrainedConfig:
    """Register ``tiny_test_resnet`` for the duration of one test; returns its entry."""
    config = registry.PretrainedConfig(
        name=TINY_NAME,
        architecture="resnet18",
        source=registry.SourceConfig("ImageNet", "bcos_final", "resnet_18"),
        transform=registry.EvalTransformSpec(resize_size=36, crop_size=32),
        weights=None,
        top1=None,
        top5=None,
        num_params=0,
        description="tiny B-cos ResNet for tests",
        args={"inplanes": 4},
    )
    monkeypatch.setitem(registry._REGISTRY, TINY_NAME, config)
    return config


def save_tiny_weights(path: str | Path, seed: int = 0) -> Path:
    """Save a seeded state dict of ``tiny_test_resnet`` (1000 classes) at ``path``."""
    torch.manual_seed(seed)
    model = registry.create_model(TINY_NAME)
    path = Path(path)
    torch.save(model.state_dict(), path)
    return path
