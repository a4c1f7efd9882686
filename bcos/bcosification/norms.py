"""Normalisation layers of a B-cosified model, built from the original ones with their statistics.

* batch norm, bias kept: :class:`bcos.modules.norms.BatchNorm2d` (the same centred, affine layer; in
  eval mode it is a fixed affine map, so nothing needs detaching);
* batch norm, bias removed: :class:`bcos.modules.norms.BatchNormUncentered2d` without bias
  (``x / sqrt(running_var + eps) · w``, the "bnu-linear" norm of the B-cos CNNs): no mean is
  subtracted and nothing is added, so the layer is linear;
* layer norm: :class:`bcos.modules.norms.DetachableLayerNorm` (the variance is detached in
  explanation mode; subtracting the mean is linear), with or without its bias;
  :class:`DetachableLayerNorm2d` for the channels-first layer norms of ConvNeXt.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from bcos.modules.norms import BatchNorm2d, BatchNormUncentered2d, DetachableLayerNorm

__all__ = ["DetachableLayerNorm2d", "convert_batch_norm", "convert_layer_norm"]


class DetachableLayerNorm2d(DetachableLayerNorm):
    """Layer norm over the channels of [N, C, H, W] at each position (torchvision's/timm's ``LayerNorm2d``)."""

    def forward(self, input: Tensor) -> Tensor:
        return super().forward(input.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


def _copy_state(source: nn.Module, target: nn.Module) -> nn.Module:
    with torch.no_grad():
        for name, tensor in [*source.named_parameters(recurse=False), *source.named_buffers(recurse=False)]:
            own = getattr(target, name, None)
            if isinstance(own, Tensor) and tensor is not None:
                own.copy_(tensor)
    target.train(source.training)
    return target.to(device=_device_of(source))


def _device_of(module: nn.Module) -> torch.device:
    for tensor in [*module.parameters(recurse=False), *module.buffers(recurse=False)]:
        return tensor.device
    return torch.device("cpu")


def convert_batch_norm(norm: nn.BatchNorm2d, keep_bias: bool) -> nn.Module:
    """The B-cosified counterpart of ``norm`` (see the module docstring), with its weights and statistics."""
    layer_class = BatchNorm2d if keep_bias else BatchNormUncentered2d
    layer = layer_class(norm.num_features, norm.eps, norm.momentum, norm.affine, norm.track_running_stats)
    layer = _copy_state(norm, layer)
    if not keep_bias and layer.bias is not None:
        layer.bias = None
    return layer


def convert_layer_norm(norm: nn.LayerNorm, keep_bias: bool, channels_first: bool = False) -> nn.Module:
    """A :class:`DetachableLayerNorm` (or :class:`DetachableLayerNorm2d`) with the weights of ``norm``."""
    layer_class = DetachableLayerNorm2d if channels_first else DetachableLayerNorm
    affine = norm.weight is not None
    layer = layer_class(norm.normalized_shape, eps=norm.eps, elementwise_affine=affine, bias=norm.bias is not None)
    layer = _copy_state(norm, layer)
    if not keep_bias and layer.bias is not None:
        layer.bias = None
    return layer
