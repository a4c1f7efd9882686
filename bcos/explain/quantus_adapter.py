"""Our explainers in other toolkits: Quantus's ``explain_func`` and Captum's ``Attribution``.

Quantus metrics call ``explain_func(model=..., inputs=..., targets=..., **explain_func_kwargs)``
with numpy batches and expect numpy attributions back::

    import quantus
    metric = quantus.PointingGame()
    scores = metric(model=model, x_batch=x, y_batch=y, s_batch=masks,
                    explain_func=quantus_explain_func, explain_func_kwargs={"method": "Ours"})

Captum's wrappers (``NoiseTunnel``, ``captum.metrics.infidelity`` / ``sensitivity_max``) take an
attribution object; :class:`CaptumAttribution` turns any explainer into one::

    from captum.attr import NoiseTunnel
    smooth = NoiseTunnel(CaptumAttribution(get_explainer(model, "Ours")))
    attributions = smooth.attribute(x, nt_type="smoothgrad", nt_samples=8, target=y)

Neither Quantus nor Captum is imported by this module until one of them is used.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from bcos.errors import InputError
from bcos.explain.methods.base import Explainer
from bcos.explain.methods.registry import get_explainer

__all__ = ["quantus_explain_func", "CaptumAttribution"]


def _model_device(model: nn.Module) -> torch.device:
    parameter = next(model.parameters(), None)
    return parameter.device if parameter is not None else torch.device("cpu")


def quantus_explain_func(
    model: nn.Module,
    inputs: np.ndarray | Tensor,
    targets: np.ndarray | Tensor | int,
    method: str = "Ours",
    config: str = "default",
    reduce_channels: bool = True,
    device: torch.device | str | None = None,
    **options: Any,
) -> np.ndarray:
    """Attributions of ``inputs`` [N, C, H, W] for ``targets`` with explainer ``method``, as numpy.

    Args:
        model: the torch model Quantus was given (evaluated as it is; call ``model.eval()``).
        inputs: the batch (numpy or tensor, channels first).
        targets: one class per sample (or one int for all).
        method, config: explainer name and its named configuration (see ``list_explainers()``).
        reduce_channels: sum over channels to [N, 1, H, W] (what Quantus's localisation and
            randomisation metrics expect); False keeps [N, C', H, W].
        device: where to compute (default: the model's device).
        **options: explainer options that override the configuration (e.g. ``n=2000`` for RISE).

    Returns:
        float32 array [N, 1, H, W] (or [N, C', H, W]).
    """
    if not isinstance(model, nn.Module):
        raise InputError(f"quantus_explain_func needs a torch model, got {type(model).__name__}")
    device = torch.device(device) if device is not None else _model_device(model)
    x = torch.as_tensor(np.asarray(inputs) if not isinstance(inputs, Tensor) else inputs, dtype=torch.float32).to(device)
    if isinstance(targets, (int, np.integer)):
        y: Any = int(targets)
    else:
        y = torch.as_tensor(np.asarray(targets.cpu() if isinstance(targets, Tensor) else targets)).reshape(-1).long()
    explainer = get_explainer(model, method, config, **options)
    attributions = explainer.attribute(x, y)
    if reduce_channels:
        attributions = attributions.sum(1, keepdim=True)
    return attributions.detach().cpu().float().numpy()


def _import_attribution_base() -> type:
    from captum.attr import Attribution

    return Attribution


class CaptumAttribution:
    """A Captum ``Attribution`` that runs one of our explainers.

    Build it with ``CaptumAttribution(explainer)``; the returned object is an instance of
    ``captum.attr.Attribution`` (the class is created on first use so that Captum stays optional).
    ``attribute(inputs, target=...)`` accepts and ignores Captum's other keyword arguments.
    """

    def __new__(cls, explainer: Explainer) -> Any:
        if not isinstance(explainer, Explainer):
            raise InputError(f"CaptumAttribution wraps a bcos explainer, got {type(explainer).__name__}")
        return _captum_class()(explainer)


@functools.cache
def _captum_class() -> type:
    base = _import_attribution_base()

    class _ExplainerAttribution(base):  # type: ignore[misc, valid-type]
        def __init__(self, explainer: Explainer) -> None:
            super().__init__(explainer.model)
            self.explainer = explainer

        def _attribute(self, inputs: Tensor, target: Any = None, **kwargs: Any) -> Tensor:
            if isinstance(inputs, tuple):
                if len(inputs) != 1:
                    raise InputError("bcos explainers take one input tensor, not a tuple of several")
                return (self.explainer.attribute(inputs[0], target),)  # type: ignore[return-value]
            return self.explainer.attribute(inputs, target)

        # Captum's wrappers (NoiseTunnel) call ``attribute.__wrapped__``, so it must exist
        @functools.wraps(_attribute)
        def attribute(self, inputs: Tensor, target: Any = None, **kwargs: Any) -> Tensor:
            return self._attribute(inputs, target, **kwargs)

        def has_convergence_delta(self) -> bool:
            return False

        @property
        def multiplies_by_inputs(self) -> bool:
            return bool(self.explainer.multiplies_by_inputs)

        def __repr__(self) -> str:
            return f"CaptumAttribution({self.explainer!r})"

    _ExplainerAttribution.__name__ = _ExplainerAttribution.__qualname__ = "CaptumAttribution"
    return _ExplainerAttribution
