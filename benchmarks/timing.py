"""Side-by-side timing: warm-up, interleaved rounds (A/B/A/B), medians."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping


def interleaved(
    fns: Mapping[str, Callable[[], object]],
    rounds: int,
    warmup: int = 1,
    sync: Callable[[], None] | None = None,
) -> dict[str, list[float]]:
    """Seconds per call of every function, measured in alternating order.

    Each function runs ``warmup`` times first; then every round calls each function once, in
    alternating order (A, B, then B, A, ...) so that slow phases of a shared machine hit both
    sides alike. ``sync`` (e.g. ``torch.cuda.synchronize``) is called around every timed call.
    """
    sync = sync or (lambda: None)
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    sync()
    names = list(fns)
    times: dict[str, list[float]] = {name: [] for name in names}
    for index in range(rounds):
        order = names if index % 2 == 0 else names[::-1]
        for name in order:
            sync()
            start = time.perf_counter()
            fns[name]()
            sync()
            times[name].append(time.perf_counter() - start)
    return times


def median(values: list[float]) -> float:
    """The median of ``values``."""
    return statistics.median(values)
