"""What :func:`bcos.bcosification.bcosify` did to each module: the replacement report."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

__all__ = ["Change", "BcosifyReport"]


@dataclass(frozen=True)
class Change:
    """One module of the original model: its path, its type, what it became and why."""

    path: str
    original: str
    result: str
    note: str = ""
    #: whether the module was replaced (False: kept as it is, or changed in place)
    replaced: bool = True


@dataclass
class BcosifyReport:
    """Every change :func:`~bcos.bcosification.bcosify` made (and every module it kept, with the reason).

    ``str(report)`` is a readable table; ``report.replacements`` only the replaced modules.
    """

    b: float
    bias: str
    normalization: tuple[tuple[float, ...], tuple[float, ...]] | None
    input_layer: str
    logit_bias: float | None
    changes: list[Change] = field(default_factory=list)

    @property
    def replacements(self) -> list[Change]:
        """The replaced modules, in the order of the model."""
        return [c for c in self.changes if c.replaced]

    @property
    def kept(self) -> list[Change]:
        """The modules kept as they were (activations, pooling, containers with their reason)."""
        return [c for c in self.changes if not c.replaced]

    def counts(self) -> dict[str, int]:
        """``"<original> -> <result>"`` -> how many times."""
        counts: dict[str, int] = {}
        for change in self.replacements:
            key = f"{change.original} -> {change.result}"
            counts[key] = counts.get(key, 0) + 1
        return counts

    def to_dict(self) -> dict:
        """The report as plain JSON-able data."""
        return dataclasses.asdict(self)

    def __str__(self) -> str:
        norm = "none (inputs in [0, 1])" if self.normalization is None else (
            f"mean={list(self.normalization[0])}, std={list(self.normalization[1])} (folded into {self.input_layer})"
        )
        lines = [
            f"bcosify: B={self.b:g}, bias={self.bias}, input normalisation {norm}, "
            f"logit bias {self.logit_bias if self.logit_bias is not None else 'none'}",
            f"{len(self.replacements)} modules replaced, {len(self.kept)} kept:",
        ]
        width = max((len(c.path) for c in self.changes), default=0)
        for change in self.changes:
            arrow = f"{change.original} -> {change.result}" if change.replaced else f"{change.original} (kept)"
            note = f"  [{change.note}]" if change.note else ""
            lines.append(f"  {change.path:<{width}}  {arrow}{note}")
        return "\n".join(lines)
