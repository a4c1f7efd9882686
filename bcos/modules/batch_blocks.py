"""Cache-sized slices of a batch, for chains of element-wise operations on the CPU.

A chain of eager element-wise operations over a large activation reads and writes the whole
tensor once per operation, and every temporary is a fresh allocation (on a Linux VM, each fresh
page costs a fault). Running the chain on a few batch items at a time keeps the temporaries small
and the data in the cache between operations. On other devices one kernel per operation is what
counts, so the whole batch is one block there.
"""

from __future__ import annotations

from torch import Tensor

__all__ = ["batch_blocks", "BLOCK_ELEMENTS", "WHOLE_BATCH"]

# elements per block and tensor: 4 MiB of float32, so the two to four tensors a chain touches stay
# within the last-level cache; smaller blocks measured no faster, and each block costs every
# operation of the chain another dispatch
BLOCK_ELEMENTS = 1 << 20

WHOLE_BATCH = slice(None)


def batch_blocks(t: Tensor, block_elements: int = BLOCK_ELEMENTS) -> list[slice]:
    """Slices of ``t``'s first (batch) dimension, each covering about ``block_elements`` elements.

    :data:`WHOLE_BATCH` alone off the CPU, for an empty tensor, or when the batch fits.
    """
    n = t.shape[0] if t.dim() else 0
    if t.device.type != "cpu" or n <= 1 or t.numel() <= 2 * block_elements:
        return [WHOLE_BATCH]
    per_item = t.numel() // n
    items = max(1, block_elements // max(1, per_item))
    return [slice(start, min(start + items, n)) for start in range(0, n, items)]

