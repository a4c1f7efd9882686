"""Deploying B-cos models: ``torch.export`` programs and ONNX files with a dynamic batch size.

B-cos models export like any PyTorch model: ``torch.export.export(model.eval(), (x,),
dynamic_shapes=...)`` works as it is, and the fused operators of :mod:`bcos.ops` appear in the
program as single operators with symbolic shapes (a program that uses them needs ``import bcos``
to run). The helpers here add what deployment usually wants:

* :func:`export_program` exports with a dynamic batch dimension and, by default, replaces the
  fused operators by their plain formulation (standard ATen operators only), so the program runs
  and loads (``torch.export.load``) without bcos;
* :func:`save_program` and :func:`export_onnx` write ``.pt2`` and ``.onnx`` files atomically and
  never replace an existing file unless asked to.

ONNX export runs PyTorch's dynamo exporter (``torch.onnx.export(..., dynamo=True)``) on the
portable program; it needs the ``export`` extra (``pip install "bcos[export]"``: onnx,
onnxscript, onnxruntime).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import Tensor, nn

from bcos import ops
from bcos.atomic_io import atomic_open
from bcos.errors import InputError

__all__ = ["export_program", "save_program", "export_onnx"]


def export_program(
    model: nn.Module,
    example: Tensor,
    *,
    dynamic_batch: bool = True,
    portable: bool = True,
) -> torch.export.ExportedProgram:
    """``torch.export`` the eval-mode ``model`` for inputs shaped like ``example`` [N, C, H, W].

    ``dynamic_batch``: any batch size >= 1 (the other dimensions stay those of ``example``).
    ``portable``: decompose the fused bcos operators into standard ATen operators.
    """
    if not isinstance(model, nn.Module):
        raise InputError(f"export_program expects a torch.nn.Module, got {type(model).__name__}")
    if model.training:
        raise InputError("export the model in eval mode: call model.eval() first")
    if not isinstance(example, Tensor):
        raise InputError(f"example must be one input tensor [N, C, H, W], got {type(example).__name__}")
    dynamic_shapes = ({0: torch.export.Dim("batch", min=1)},) if dynamic_batch else None
    program = torch.export.export(model, (example,), dynamic_shapes=dynamic_shapes)
    if portable:
        program = program.run_decompositions(ops.DECOMPOSITIONS)
    return program


def save_program(program: torch.export.ExportedProgram, path: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Write ``program`` to ``path`` (``.pt2``, loadable with ``torch.export.load``) atomically."""
    path = _writable(path, overwrite)
    with atomic_open(path, "wb") as file:
        torch.export.save(program, file)
    return path


def export_onnx(
    model: nn.Module,
    example: Tensor,
    path: str | os.PathLike,
    *,
    dynamic_batch: bool = True,
    overwrite: bool = False,
) -> Path:
    """Export the eval-mode ``model`` to the ONNX file ``path`` (written atomically); returns it.

    The ONNX graph takes inputs shaped like ``example`` with any batch size (``dynamic_batch``)
    and contains standard ONNX operators only (onnxruntime runs it).
    """
    path = _writable(path, overwrite)
    try:
        import onnxscript  # noqa: F401 (the exporter's dependency; checked first for a clear error)
    except ImportError:
        raise InputError('ONNX export needs onnx and onnxscript: pip install "bcos[export]"') from None
    program = export_program(model, example, dynamic_batch=dynamic_batch, portable=True)
    onnx_program = torch.onnx.export(program, (example,), dynamo=True, verbose=False)
    with atomic_open(path, "wb") as file:
        file.write(onnx_program.model_proto.SerializeToString())
    return path


def _writable(path: str | os.PathLike, overwrite: bool) -> Path:
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{path} is a folder; give the file to write, e.g. {path / 'model.onnx'}")
    if path.exists() and not overwrite:
        raise InputError(f"{path} exists; choose another file name or pass overwrite=True (bcos export --overwrite)")
    if not path.parent.is_dir():
        raise InputError(f"the folder {path.parent} does not exist; create it first")
    return path
