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


@pytest.mark.parametrize("value, applied", [(None, False), ("0", False), ("1", True)])
def test_training_opts_in_through_the_environment_variable(monkeypatch, value, applied):
    calls = []
    monkeypatch.setattr(cpu_allocator, "keep_freed_memory", lambda: calls.append(1) or True)
    if value is None:
        monkeypatch.delenv(cpu_allocator.ENVIRONMENT_VARIABLE, raising=False)
    else:
        monkeypatch.setenv(cpu_allocator.ENVIRONMENT_VARIABLE, value)
    assert cpu_allocator.keep_freed_memory_if_requested() is applied
    assert len(calls) == int(applied)


def test_nothing_in_the_package_applies_the_tuning_unasked():
    """Only the opt-in helper calls :func:`keep_freed_memory`: no import, layer or training call
    changes glibc's settings for the whole process on its own."""
    import ast
    from pathlib import Path

    root = Path(cpu_allocator.__file__).parent
    callers = []
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Name | ast.Attribute):
                name = node.id if isinstance(node, ast.Name) else node.attr
                if name == "keep_freed_memory" and path.name != "cpu_allocator.py":
                    callers.append(str(path.relative_to(root)))
    assert callers == []


@pytest.mark.parametrize("value", ["2", "disable", "yes please"])
def test_a_switch_that_is_neither_on_nor_off_is_an_error(monkeypatch, value):
    from bcos.environment import environment_flag
    from bcos.errors import ConfigError

    monkeypatch.setenv(cpu_allocator.ENVIRONMENT_VARIABLE, value)
    with pytest.raises(ConfigError, match=r"BCOS_KEEP_FREED_MEMORY=.* is not a switch: set it to 1 or 0"):
        cpu_allocator.keep_freed_memory_if_requested()
    monkeypatch.setenv("BCOS_FUSED_OPS", " Off ")
    assert environment_flag("BCOS_FUSED_OPS", True) is False
