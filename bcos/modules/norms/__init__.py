"""Normalisation layers of B-cos networks (centered and uncentered) and the NoBias/Unaffine wrappers."""

from bcos.modules.norms.centered import (
    AllNorm2d,
    BatchNorm2d,
    DetachableGNInstanceNorm2d,
    DetachableGNLayerNorm2d,
    DetachableGroupNorm2d,
    DetachableLayerNorm,
    DetachablePositionNorm2d,
)
from bcos.modules.norms.uncentered import (
    AllNormUncentered2d,
    BatchNormUncentered2d,
    GNInstanceNormUncentered2d,
    GNLayerNormUncentered2d,
    GroupNormUncentered2d,
    PositionNormUncentered2d,
    group_norm_uncentered,
)
from bcos.modules.norms.wrappers import NoBias, Unaffine

__all__ = [
    "AllNorm2d",
    "BatchNorm2d",
    "DetachableGroupNorm2d",
    "DetachableGNInstanceNorm2d",
    "DetachableGNLayerNorm2d",
    "DetachableLayerNorm",
    "DetachablePositionNorm2d",
    "AllNormUncentered2d",
    "BatchNormUncentered2d",
    "GroupNormUncentered2d",
    "GNInstanceNormUncentered2d",
    "GNLayerNormUncentered2d",
    "PositionNormUncentered2d",
    "group_norm_uncentered",
    "NoBias",
    "Unaffine",
]
