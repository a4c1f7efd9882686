"""The published ImageNet models as functions, named as in the B-cos-v2 reference.

``bcos.models.pretrained.resnet18(pretrained=True)`` is the reference's call and equals
``bcos.create_model("resnet18", pretrained=True)``; the keyword arguments are the same as
:func:`bcos.models.registry.create_model`'s (e.g. ``num_classes=10`` for a fresh classifier).
The returned model has ``pretrained_config`` (its registry entry).

Nothing here is written by hand: one function is generated per model that the architecture
files declare (``@register_architecture(Published(...))`` beside each builder), with its facts in
its docstring. ``hubconf.py`` exposes these functions to ``torch.hub``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from bcos.models.registry import PretrainedConfig, create_model, get_pretrained_config, list_models

__all__ = ["list_available"]

EntryPoint = Callable[..., nn.Module]


def list_available() -> list[str]:
    """Names of all entry points (the reference's function; see also :func:`bcos.list_models`)."""
    return list(_ENTRY_POINTS)


def _docstring(config: PretrainedConfig) -> str:
    """The entry point's docstring: the model, its registry facts and the arguments."""
    transform = config.transform
    facts = [f"Trained with the experiment config ``{config.source}``."]
    if config.weights is not None:
        facts.append(f"Weights: ``{config.weights.file_name}``.")
    if config.top1 is not None:
        facts.append(f"ImageNet accuracy: top-1 {config.top1:.3f}%, top-5 {config.top5:.3f}%.")
    facts.append(f"Parameters: {config.num_params:,} ({config.num_params / 1e6:.2f}M).")
    inputs = "AddInverse, 6 channels" if transform.is_bcos else "ImageNet mean/std, 3 channels"
    facts.append(
        f"Evaluation transform: resize {transform.resize_size}, center crop {transform.crop_size}, {inputs}."
    )
    return (
        f"{config.description}.\n\n"
        + "\n".join(f"    {line}" for line in facts)
        + "\n\n    Args:\n        pretrained: load the published weights (cached, else downloaded)."
        "\n        progress: show a progress bar while downloading."
        "\n        **kwargs: see :func:`bcos.models.registry.create_model` "
        "(``num_classes``, ``weights``, builder overrides).\n"
    )


def _entry_point(name: str) -> EntryPoint:
    """``name(pretrained=False, progress=True, **kwargs)``: :func:`create_model` of ``name``."""

    def entry_point(pretrained: bool = False, progress: bool = True, **kwargs: Any) -> nn.Module:
        return create_model(name, pretrained, progress=progress, **kwargs)

    entry_point.__name__ = entry_point.__qualname__ = name
    entry_point.__module__ = __name__
    entry_point.__doc__ = _docstring(get_pretrained_config(name))
    return entry_point


# the published models (bcos.models imports every architecture file before this module)
_ENTRY_POINTS = {name: _entry_point(name) for name in list_models(pretrained=True)}
globals().update(_ENTRY_POINTS)
__all__ += list(_ENTRY_POINTS)
