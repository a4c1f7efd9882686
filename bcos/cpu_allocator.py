"""Keep freed CPU memory in the process for the next training step (glibc malloc tuning).

PyTorch allocates CPU tensors with the C library's ``malloc``. By default glibc hands memory at the
top of its heap back to the operating system as soon as more than a (self-adjusting, a few MiB)
threshold is free there, and serves blocks above another threshold with fresh ``mmap`` calls.
A training loop frees and re-allocates the same activations every step, so that memory is
page-faulted back in, page by page, on every step: measured on the 2-core CI VM, a B-cos CIFAR
ResNet-20 step (batch 64) took ~15,000 page faults and ~45 ms of kernel time, a standard
ResNet-20 step almost none; which network crosses the threshold depends on the order of its
allocations, not on how much it allocates. :func:`keep_freed_memory` raises both thresholds
once, so freed memory is reused instead (PyTorch's CPU performance guide recommends jemalloc or
tcmalloc for the same reason; this needs no preloaded library).

The cost: the process keeps its peak heap instead of shrinking after a step, as GPU caching
allocators do. It changes the whole process, so nothing in bcos applies it unasked: call
:func:`keep_freed_memory` in your own script, or set ``BCOS_KEEP_FREED_MEMORY=1`` for a training
run (``train.py`` / ``bcos train`` then apply it, :func:`keep_freed_memory_if_requested`). The CPU
benchmarks apply it to both sides (``--system-allocator`` measures without it); ``make demo``
opts in.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import sys

from bcos.environment import environment_flag

__all__ = ["keep_freed_memory", "keep_freed_memory_if_requested", "ENVIRONMENT_VARIABLE"]

ENVIRONMENT_VARIABLE = "BCOS_KEEP_FREED_MEMORY"

_M_TRIM_THRESHOLD = -1  # glibc's mallopt parameter numbers (malloc.h)
_M_MMAP_THRESHOLD = -3
_MAX_MMAP_THRESHOLD = 32 << 20  # glibc refuses larger values on 64-bit systems
_TRIM_THRESHOLD = 1 << 30

_logger = logging.getLogger(__name__)


def keep_freed_memory() -> bool:
    """Make glibc keep freed memory for reuse (blocks up to 32 MiB from the heap, trimming only
    above 1 GiB of free heap top). Returns whether the setting was applied: False off Linux/glibc."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (e.g. musl without mallopt)
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    applied = mallopt(_M_MMAP_THRESHOLD, _MAX_MMAP_THRESHOLD) == 1
    applied = mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD) == 1 and applied
    _logger.debug("glibc malloc thresholds raised: %s", applied)
    return applied


def keep_freed_memory_if_requested() -> bool:
    """:func:`keep_freed_memory` when ``BCOS_KEEP_FREED_MEMORY=1`` is set (the opt-in of training
    runs); returns whether the setting was applied."""
    return environment_flag(ENVIRONMENT_VARIABLE, False) and keep_freed_memory()
