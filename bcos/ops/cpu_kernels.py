"""The C++ CPU kernels of the fused operators, compiled once on first use.

Eager PyTorch runs the element-wise work of a B-cos convolution (the channel sums of ``x²``, the
output scaling ``r·|r|·inv``, its backward and the filter-gradient projection) and of the
uncentered batch norm as chains of operations that each read and write a whole activation; on the
CPU those passes, not the arithmetic, are what B-cos layers add to a standard network.
``csrc/cpu_kernels.cpp`` does each chain in one pass and registers the kernels as
``torch.ops.bcos_cpu.*``. Only the operators of :mod:`bcos.ops` call them, on real CPU tensors.

The first call of :func:`available` builds the kernels with PyTorch's C++ extension tooling (a C++
compiler and ``ninja``; about 20 seconds, announced on stderr) into the torch extensions cache
(``TORCH_EXTENSIONS_DIR``, by default ``~/.cache/torch_extensions``); later processes load the
cached build. The build is
specific to the source, the PyTorch version and the instruction set PyTorch uses on this machine
(AVX2, AVX-512), so a shared cache serves mixed machines safely. Where no build is possible the
operators run eager PyTorch operations instead (same results, slower) after one warning; set
``BCOS_CPU_KERNELS=0`` to skip the build altogether.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import sys
import threading
import warnings
from pathlib import Path

import torch
from torch import Tensor

from bcos.environment import environment_flag

__all__ = ["available", "usable", "ENVIRONMENT_VARIABLE"]

ENVIRONMENT_VARIABLE = "BCOS_CPU_KERNELS"

_SOURCE = Path(__file__).with_name("csrc") / "cpu_kernels.cpp"
_ARCHITECTURE_FLAGS = {
    "AVX2": ["-mavx2", "-mfma"],
    "AVX512": ["-mavx2", "-mfma", "-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq"],
}
_FLOATS = (torch.float32, torch.float64)

_lock = threading.Lock()
_loaded: bool | None = None


def available() -> bool:
    """Whether the fused kernels are loaded; the first call builds or loads them."""
    global _loaded
    if _loaded is None:
        with _lock:
            if _loaded is None:
                _loaded = _load()
    return _loaded


def usable(*tensors: Tensor) -> bool:
    """Whether the kernels can take these tensors: CPU, float32/float64 of one dtype, contiguous
    (NCHW), and the kernels are built."""
    dtype = tensors[0].dtype
    if dtype not in _FLOATS:
        return False
    for t in tensors:  # a plain loop: this runs several times per layer call
        if not t.is_cpu or t.dtype != dtype or not t.is_contiguous():
            return False
    return available()


def _load() -> bool:
    if not environment_flag(ENVIRONMENT_VARIABLE, True):
        return False
    capability = torch.backends.cpu.get_cpu_capability()
    key = _SOURCE.read_bytes() + f"{torch.__version__} {capability}".encode()
    name = f"bcos_cpu_kernels_{hashlib.sha256(key).hexdigest()[:16]}"
    flags = ["-O3", "-fno-math-errno", "-fopenmp", *_ARCHITECTURE_FLAGS.get(capability, [])]
    root = os.environ.get("TORCH_EXTENSIONS_DIR") or Path.home() / ".cache" / "torch_extensions"
    build_directory = Path(root) / "bcos" / name
    library = build_directory / f"{name}.so"
    if library.is_file():  # built before: skip the (slow to import) build tooling
        try:
            torch.ops.load_library(str(library))
            return True
        except (OSError, RuntimeError):
            pass  # e.g. an interrupted build: build again below
    # importing the tooling logs a CUDA-toolkit notice irrelevant to a CPU-only build
    tooling_logger = logging.getLogger("torch.utils.cpp_extension")
    level = tooling_logger.level
    tooling_logger.setLevel(logging.ERROR)
    path = os.environ.get("PATH", "")
    try:
        from torch.utils.cpp_extension import load

        # visible without any logging set-up: the first layer call otherwise pauses silently
        print(f"bcos: building the fused CPU kernels once (about 20 s) into {build_directory}", file=sys.stderr)
        build_directory.mkdir(parents=True, exist_ok=True)
        os.environ["PATH"] = _with_ninja(path)
        load(
            name=name,
            build_directory=str(build_directory),
            sources=[str(_SOURCE)],
            extra_cflags=flags,
            extra_ldflags=["-fopenmp"],
            is_python_module=False,
            with_cuda=False,
        )
    except Exception as error:  # no compiler, no ninja, read-only cache: eager operations still work
        lines = [line.strip() for line in str(error).splitlines() if line.strip()]
        # a compiler's own diagnosis says more than the build tool's command line
        message = next((line for line in lines if "error:" in line), lines[0] if lines else type(error).__name__)
        warnings.warn(
            f"bcos: the fused CPU kernels could not be built ({message}); the fused operators use "
            f"eager PyTorch operations (same results, slower). Install a C++ compiler and ninja, or set "
            f"{ENVIRONMENT_VARIABLE}=0 to silence this",
            RuntimeWarning,
            stacklevel=3,
        )
        return False
    finally:
        tooling_logger.setLevel(level)
        os.environ["PATH"] = path
    return True


def _with_ninja(path: str) -> str:
    """``path`` with the ``ninja`` of the pip package in front when none is on it (PyTorch's
    tooling runs ``ninja`` by name; a virtual environment's scripts need not be on ``PATH``)."""
    if shutil.which("ninja", path=path):
        return path
    try:
        import ninja
    except ImportError:
        return path
    return os.pathsep.join(filter(None, [ninja.BIN_DIR, path]))
