"""``bcos.cpu_allocator.keep_freed_memory``: freed tensors are reused without new page faults."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from bcos import cpu_allocator

_REALLOCATE = """
import json, resource, sys, torch
from bcos.cpu_allocator import keep_freed_memory
applied = keep_freed_memory() if sys.argv[1] == "keep" else False
faults = []
for _ in range(6):  # like a training step: the same activations allocated and freed again
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    blocks = [torch.empty(1 << 18).fill_(1.0) for _ in range(100)]  # 100 x 1 MiB, pages touched
    del blocks
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(json.dumps({"applied": applied, "faults": faults}))
"""


def _faults(mode: str) -> dict:
    """Page faults of each round in a fresh process; ``mode`` "keep" applies the setting first."""
    done = subprocess.run(
        [sys.executable, "-c", _REALLOCATE, mode], capture_output=True, text=True, check=True
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc tuning (Linux)")
def test_freed_memory_is_reused_without_page_faults():
    # (glibc's default often, not always, returns the freed heap and faults it in every round)
    kept = _faults("keep")
    assert kept["applied"]
    pages = 100 * (1 << 20) // 4096
    assert kept["faults"][0] > pages // 2  # the first round faults its pages in
    assert max(kept["faults"][-3:]) < pages // 20, kept  # later rounds reuse them


def test_the_environment_variable_leaves_the_allocator_alone(monkeypatch):
    monkeypatch.setenv(cpu_allocator.ENVIRONMENT_VARIABLE, "0")
    assert cpu_allocator.keep_freed_memory() is False
