"""The last layer of B-cos models: an optional temperature and an optional constant logit bias."""

from __future__ import annotations

import numbers

from torch import Tensor, nn

from bcos.errors import ConfigError

__all__ = ["LogitLayer"]


class LogitLayer(nn.Module):
    """``x / logit_temperature + logit_bias``; either part is skipped when it is None.

    No parameters and no state-dict entries. A bias of ``0.0`` is kept as ``0.0`` (not None).
    B-cos CNNs use ``logit_bias = -log(num_classes - 1)`` so that an all-zero input has the
    sigmoid probability ``1 / num_classes`` for every class.
    """

    def __init__(self, logit_temperature: float | None = None, logit_bias: float | None = None) -> None:
        super().__init__()
        if logit_temperature is not None and (
            not isinstance(logit_temperature, numbers.Real) or not logit_temperature > 0
        ):
            raise ConfigError(
                f"logit_temperature must be a positive number or None, got {logit_temperature!r}"
            )
        if logit_bias is not None and not isinstance(logit_bias, numbers.Real):
            raise ConfigError(f"logit_bias must be a number or None, got {logit_bias!r}")
        self.logit_temperature = None if logit_temperature is None else float(logit_temperature)
        self.logit_bias = None if logit_bias is None else float(logit_bias)

    def forward(self, input: Tensor) -> Tensor:
        """Scale and shift the logits."""
        if self.logit_temperature is not None:
            input = input / self.logit_temperature
        if self.logit_bias is not None:
            input = input + self.logit_bias
        return input

    def extra_repr(self) -> str:
        parts = []
        if self.logit_temperature is not None:
            parts.append(f"logit_temperature={self.logit_temperature}")
        if self.logit_bias is not None:
            parts.append(f"logit_bias={self.logit_bias}")
        return ", ".join(parts)
