"""Explanation mode: the switch that turns a B-cos network into an explicit W(x)·x.

In explanation mode every layer detaches the parts of its computation that make it non-linear in
the input (the dynamic scale of B-cos layers, the variance of normalisation layers). The forward
output is unchanged, but the gradient of an output with respect to the input becomes the dynamic
linear weight W(x), so that ``sum(x * grad) == output`` for bias-free networks.

Protocol (duck typing): any module with a ``set_explanation_mode(activate: bool)`` method takes
part; it may expose its state as a boolean ``is_in_explanation_mode``.
"""

from __future__ import annotations

import contextlib
import weakref
from typing import Any

from torch import nn

__all__ = ["DetachableModule", "explanation_mode"]


class DetachableModule(nn.Module):
    """A module that can detach its dynamic (input-dependent, non-linear) parts.

    Subclasses read ``self.detach`` in ``forward``; it is False after construction and is switched by
    :meth:`set_explanation_mode` (normally through :class:`explanation_mode`).
    """

    def __init__(self) -> None:
        super().__init__()
        self.detach = False

    def set_explanation_mode(self, activate: bool = True) -> None:
        """Switch explanation mode on (``activate=True``) or off."""
        self.detach = bool(activate)

    @property
    def is_in_explanation_mode(self) -> bool:
        """Whether the module currently detaches its dynamic parts."""
        return self.detach


# How many explanation_mode contexts currently hold each participant that does not report its own
# state; lets nested contexts restore such modules correctly.
_HELD: weakref.WeakKeyDictionary[nn.Module, int] = weakref.WeakKeyDictionary()


def _participants(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if callable(getattr(m, "set_explanation_mode", None))]


def _current_state(module: nn.Module) -> bool:
    state = getattr(module, "is_in_explanation_mode", None)
    if isinstance(state, bool):
        return state
    return _HELD.get(module, 0) > 0


class explanation_mode(contextlib.ContextDecorator):  # noqa: N801 (reference name, used like a function)
    """Put every participating sub-module of ``model`` into explanation mode.

    Usable as ``with explanation_mode(model): ...`` and as a decorator ``@explanation_mode(model)``.
    The module tree is walked on every entry, so layers added or replaced after the object was
    created take part too. On exit (also when an exception is raised) every participant gets back
    the state it had on entry, so nested and re-entrant uses compose.
    """

    def __init__(self, model: nn.Module) -> None:
        if not isinstance(model, nn.Module):
            from bcos.errors import InputError

            raise InputError(
                f"explanation_mode expects a torch.nn.Module, got {type(model).__name__}; "
                "pass the model itself"
            )
        self.model = model
        self._saved: list[list[tuple[nn.Module, bool]]] = []

    def __enter__(self) -> nn.Module:
        saved: list[tuple[nn.Module, bool]] = []
        try:
            for module in _participants(self.model):
                previous = _current_state(module)
                module.set_explanation_mode(True)
                saved.append((module, previous))
                _HELD[module] = _HELD.get(module, 0) + 1
        except BaseException:
            _restore(saved)
            raise
        self._saved.append(saved)
        return self.model

    def __exit__(self, *exc_info: Any) -> bool:
        _restore(self._saved.pop())
        return False

    def __repr__(self) -> str:
        return f"explanation_mode({type(self.model).__name__})"


def _restore(saved: list[tuple[nn.Module, bool]]) -> None:
    # reverse order so that a module listed twice ends in its oldest saved state
    for module, previous in reversed(saved):
        count = _HELD.get(module, 0) - 1
        if count > 0:
            _HELD[module] = count
        else:
            _HELD.pop(module, None)
        module.set_explanation_mode(previous)
