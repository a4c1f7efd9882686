"""The fast backend of the B-cos layers: fused operators registered with ``torch.library``.

The layers of :mod:`bcos.modules` are written once, in plain PyTorch. Where a layer has a fused
operator here (the B = 2 convolution, the uncentered batch norm in training), it decides *when it is
built* whether to use it, from one switch::

    bcos.ops.use_fused_ops()          # True unless switched off
    bcos.ops.set_fused_ops(False)     # layers built from now on use the plain implementation
    BCOS_FUSED_OPS=0 python train.py ...   # the same for a whole process

Both paths compute the same values; the fused operators save memory and passes (and use C++
kernels on the CPU, :mod:`bcos.ops.cpu_kernels`). They have fake (meta) implementations, so
``torch.compile`` and ``torch.export`` trace them as single operators with symbolic shapes;
:data:`DECOMPOSITIONS` maps each to its plain formulation for programs that must not depend on
bcos (``ExportedProgram.run_decompositions``, ONNX; see :mod:`bcos.deploy`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from bcos.environment import environment_flag
from bcos.ops.bcos_conv2d import conv2d_b2, conv2d_b2_reference
from bcos.ops.uncentered_batch_norm import uncentered_batch_norm, uncentered_batch_norm_reference

__all__ = [
    "ENVIRONMENT_VARIABLE",
    "use_fused_ops",
    "set_fused_ops",
    "conv2d_b2",
    "uncentered_batch_norm",
    "DECOMPOSITIONS",
]

ENVIRONMENT_VARIABLE = "BCOS_FUSED_OPS"

_use_fused: bool | None = None  # set by set_fused_ops; None: the environment variable decides


def use_fused_ops() -> bool:
    """Whether layers built now use the fused operators (default True; ``BCOS_FUSED_OPS=0`` or
    :func:`set_fused_ops` switch them off)."""
    return environment_flag(ENVIRONMENT_VARIABLE, True) if _use_fused is None else _use_fused


def set_fused_ops(enable: bool) -> None:
    """Switch the fused operators on or off for layers built from now on (existing layers keep
    what they chose); this wins over ``BCOS_FUSED_OPS``."""
    global _use_fused
    _use_fused = bool(enable)


#: operator -> its plain formulation, for ``ExportedProgram.run_decompositions``
DECOMPOSITIONS: dict[torch._ops.OpOverload, Callable[..., object]] = {
    torch.ops.bcos.conv2d_b2.default: conv2d_b2_reference,
    torch.ops.bcos.uncentered_batch_norm.default: uncentered_batch_norm_reference,
}
