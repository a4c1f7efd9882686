"""A small, printable description of an optimizer that builds it for a model later.

Configs hold an :class:`OptimizerFactory` instead of an optimizer because the model does not exist
yet when the config is written; the training code calls :meth:`OptimizerFactory.create`.
"""

from __future__ import annotations

import math

import warnings
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from bcos.errors import ConfigError, unknown_name

__all__ = ["OptimizerFactory"]

# lower-case name -> (torch class, defaults that differ from torch's own)
_OPTIMIZERS: dict[str, tuple[type[torch.optim.Optimizer], dict[str, Any]]] = {
    "adam": (torch.optim.Adam, {}),
    "adamw": (torch.optim.AdamW, {}),
    "sgd": (torch.optim.SGD, {}),
    # the torchvision classification recipe's RMSprop settings
    "rmsprop": (torch.optim.RMSprop, {"eps": 0.0316, "alpha": 0.9}),
}


def _norm_classes() -> tuple[type[nn.Module], ...]:
    """Normalisation layer classes: torch's and every norm of ``bcos.modules.norms``."""
    classes: list[type[nn.Module]] = [
        nn.modules.batchnorm._BatchNorm,
        nn.LayerNorm,
        nn.GroupNorm,
        nn.modules.instancenorm._InstanceNorm,
        nn.LocalResponseNorm,
    ]
    try:
        from bcos.modules import norms
    except ImportError:  # the norms are optional for plain torch models
        return tuple(classes)
    for name in getattr(norms, "__all__", []):
        obj = getattr(norms, name, None)
        if isinstance(obj, type) and issubclass(obj, nn.Module):
            classes.append(obj)
    return tuple(classes)


class OptimizerFactory:
    """Builds a ``torch.optim`` optimizer (Adam, AdamW, SGD or RMSprop) for a model.

    Args:
        name: optimizer name, case-insensitive: ``"Adam"``, ``"AdamW"``, ``"SGD"``, ``"RMSprop"``.
        lr: learning rate.
        **kwargs: keyword arguments of the torch optimizer (``weight_decay``, ``momentum``, ...),
            plus two options of the factory: ``norm_weight_decay`` and ``bias_weight_decay``. When
            given, parameters of normalisation layers (torch's and B-cos's, centred or not) or
            parameters named ``bias`` get that weight decay instead of ``weight_decay`` (pass 0.0
            to exclude them). By default every parameter gets the same decay, as in the reference.

    Example:
        >>> OptimizerFactory("AdamW", lr=1e-3, weight_decay=1e-4, norm_weight_decay=0.0)
        OptimizerFactory(optimizer='AdamW', lr=0.001, weight_decay=0.0001, norm_weight_decay=0.0)
    """

    def __init__(self, name: str, lr: float, **kwargs: Any) -> None:
        if not isinstance(name, str) or name.lower() not in _OPTIMIZERS:
            raise unknown_name("optimizer", str(name), ["Adam", "AdamW", "SGD", "RMSprop"])
        if not isinstance(lr, (int, float)) or isinstance(lr, bool) or not math.isfinite(lr) or lr < 0:
            raise ConfigError(f"optimizer lr must be a non-negative number, got {lr!r}")
        for key, value in kwargs.items():  # a NaN weight decay or momentum poisons every weight as surely
            if isinstance(value, float) and not math.isfinite(value):
                raise ConfigError(f"optimizer {key} must be a finite number, got {value!r}")
        self.name = name
        self.args: dict[str, Any] = dict(lr=lr, **kwargs)

    @property
    def lr(self) -> float:
        """The learning rate."""
        return self.args["lr"]

    def create(self, model: nn.Module | Iterable[nn.Parameter]) -> torch.optim.Optimizer:
        """Build the optimizer for ``model`` (a module, or an iterable of parameters)."""
        name = self.name.lower()
        optimizer_class, defaults = _OPTIMIZERS[name]
        args = {**defaults, **self.args}
        norm_wd = args.pop("norm_weight_decay", None)
        bias_wd = args.pop("bias_weight_decay", None)

        if name == "adam" and args.get("weight_decay", 0) != 0:
            warnings.warn(
                "Adam with weight_decay couples the decay with the adaptive step; use AdamW for "
                "decoupled weight decay",
                stacklevel=2,
            )

        if norm_wd is None and bias_wd is None:
            params: Any = model.parameters() if isinstance(model, nn.Module) else model
        elif not isinstance(model, nn.Module):
            raise ConfigError(
                "norm_weight_decay / bias_weight_decay need the model (an nn.Module), "
                "not a list of parameters"
            )
        else:
            params = self._parameter_groups(model, norm_wd, bias_wd)
        return optimizer_class(params, **args)

    @staticmethod
    def _parameter_groups(
        model: nn.Module, norm_wd: float | None, bias_wd: float | None
    ) -> list[dict[str, Any]]:
        """Split trainable parameters into (other, norm, bias) groups; the last two get their
        own weight decay. A group without its own decay inherits the optimizer default."""
        norm_classes = _norm_classes()
        groups: dict[str, list[nn.Parameter]] = {"other": [], "norm": [], "bias": []}
        seen: set[int] = set()
        for module in model.modules():
            is_norm = isinstance(module, norm_classes)
            for param_name, param in module.named_parameters(recurse=False):
                if not param.requires_grad or id(param) in seen:
                    continue
                seen.add(id(param))
                if is_norm and norm_wd is not None:
                    groups["norm"].append(param)
                elif param_name == "bias" and bias_wd is not None:
                    groups["bias"].append(param)
                else:
                    groups["other"].append(param)
        decays = {"norm": norm_wd, "bias": bias_wd}
        result = []
        for key, params in groups.items():
            if not params:
                continue
            group: dict[str, Any] = {"params": params}
            if decays.get(key) is not None:
                group["weight_decay"] = decays[key]
            result.append(group)
        return result

    def with_name(self, name: str) -> OptimizerFactory:
        """A copy with another optimizer name and the same arguments."""
        args = dict(self.args)
        lr = args.pop("lr")
        return type(self)(name, lr=lr, **args)

    def with_lr(self, lr: float) -> OptimizerFactory:
        """A copy with another learning rate and the same other arguments."""
        args = dict(self.args)
        args.pop("lr")
        return type(self)(self.name, lr=lr, **args)

    def with_args(self, **kwargs: Any) -> OptimizerFactory:
        """A copy with ``kwargs`` added to (or replacing) the existing arguments; the others stay."""
        if "lr" in kwargs or "name" in kwargs:
            raise ConfigError("with_args cannot change lr or name: use with_lr or with_name")
        args = {**self.args, **kwargs}
        lr = args.pop("lr")
        return type(self)(self.name, lr=lr, **args)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, OptimizerFactory):
            return NotImplemented
        return self.name.lower() == other.name.lower() and self.args == other.args

    def __repr__(self) -> str:
        args = "".join(f", {k}={v!r}" for k, v in self.args.items())
        return f"{type(self).__name__}(optimizer={self.name!r}{args})"

    def __to_config__(self) -> dict[str, Any]:
        """Plain-data description (see ``bcos.experiments.utils.sanitize_config``)."""
        return dict(name=self.name.lower(), **self.args)
