"""Training-step memory of one model, measured in a fresh process.

``python -m benchmarks.memory MODEL --batch B --size S`` prints one JSON line with

* ``rss_growth``: peak resident memory during one training step minus the resident memory just
  before it (Linux: the peak counter is reset through ``/proc/self/clear_refs``; None elsewhere);
* ``saved_bytes``: bytes of the distinct tensors autograd keeps for backward in that step
  (parameters and the input batch excluded), independent of the allocator.

MODEL is one of ``bcos_resnet18``, ``standard_resnet18``, ``bcos_cifar_resnet20``,
``standard_cifar_resnet20``. A fresh process per model keeps one measurement's freed memory
from hiding the next one's growth.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import os
import sys

import torch

from benchmarks import cases, standard_models

MODELS = {
    "bcos_resnet18": (lambda: cases.bcos_imagenet_resnet(18), True, 1000),
    "standard_resnet18": (lambda: cases.standard_imagenet_resnet(18), False, 1000),
    "bcos_cifar_resnet20": (cases.bcos_cifar_resnet20, True, 10),
    "standard_cifar_resnet20": (standard_models.cifar10_resnet20, False, 10),
}


def _status_kib(field: str) -> int | None:
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as refs:
            refs.write("5")
        return True
    except OSError:
        return False


def _release_freed_memory() -> None:
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def measure(name: str, batch: int, size: int) -> dict[str, object]:
    """Measure one model (see the module docstring)."""
    build, is_bcos, num_classes = MODELS[name]
    torch.manual_seed(0)
    model = build()
    images = torch.rand(batch, 3, size, size)
    inputs = cases.bcos_inputs(images) if is_bcos else images
    targets = torch.randint(0, num_classes, (batch,))
    step = cases.train_step(model, inputs, targets, is_bcos)
    step()  # creates the optimizer state and gradients, which are not part of the growth

    storages: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return t

    _release_freed_memory()
    before = _status_kib("VmRSS")
    reset = _reset_peak()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        step()
    peak = _status_kib("VmHWM")
    excluded = {p.untyped_storage().data_ptr() for p in model.parameters()}
    excluded.add(inputs.untyped_storage().data_ptr())
    saved = sum(n for ptr, n in storages.items() if ptr not in excluded)
    growth = (peak - before) * 1024 if reset and peak is not None and before is not None else None
    return {"model": name, "rss_growth": growth, "saved_bytes": saved}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", choices=sorted(MODELS))
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(json.dumps(measure(args.model, args.batch, args.size)))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    sys.exit(main())
