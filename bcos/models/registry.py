"""The model registry: every published model by name, with how to build it and its weights.

Each entry (:class:`PretrainedConfig`) records the architecture builder and the keyword arguments
its source experiment config gives it (kept here because models sit below ``bcos.experiments``;
a test checks that both agree), the evaluation transform, the weights file (URL and SHA-256
prefix), the reported ImageNet top-1/top-5 accuracy and the parameter count.

    >>> import bcos
    >>> bcos.list_models("convnext*")
    ['convnext_base', 'convnext_base_bnu', 'convnext_tiny', 'convnext_tiny_bnu']
    >>> model = bcos.create_model("resnet18", pretrained=True)            # doctest: +SKIP
    >>> model = bcos.create_model("resnet50", pretrained=True, num_classes=10)  # fine-tuning: fresh classifier
"""

from __future__ import annotations

import fnmatch
import importlib
import math
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Literal

import torch
from torch import nn

from bcos.errors import CheckpointError, ConfigError, unknown_name
from bcos.models.base import BcosSequential
from bcos.models.weights import (
    WEIGHTS_BASE_URL,
    WeightsFile,
    fetch_weights_file,
    load_state_dict_file,
    verify_sha256_prefix,
)
from bcos.modules import BcosConv2d, BcosLinear, LogitLayer
from bcos.modules.norms import BatchNormUncentered2d, DetachableGNLayerNorm2d, DetachableLayerNorm, NoBias

__all__ = [
    "SourceConfig",
    "EvalTransformSpec",
    "PretrainedConfig",
    "register_model",
    "get_pretrained_config",
    "list_models",
    "create_model",
    "load_weights_into",
]

ModelKind = Literal["bcos_cnn", "bcos_vit", "standard_vit"]


@dataclass(frozen=True)
class SourceConfig:
    """The experiment config a model was trained with: ``bcos/experiments/<dataset>/<collection>``."""

    dataset: str
    collection: str
    experiment: str

    def __str__(self) -> str:
        return f"{self.dataset}/{self.collection}/{self.experiment}"


@dataclass(frozen=True)
class EvalTransformSpec:
    """The evaluation preprocessing: resize, center crop, then AddInverse (B-cos) or mean/std normalisation."""

    resize_size: int = 256
    crop_size: int = 224
    is_bcos: bool = True

    def build(self) -> Any:
        """The :class:`bcos.data.presets.ImageNetClassificationPresetEval` for this spec."""
        # imported on use: the presets live on the data floor, above the models
        from bcos.data.presets import ImageNetClassificationPresetEval

        return ImageNetClassificationPresetEval(
            crop_size=self.crop_size, resize_size=self.resize_size, is_bcos=self.is_bcos
        )


@dataclass(frozen=True)
class PretrainedConfig:
    """One registered model: how to build it, how to preprocess its inputs, where its weights are.

    Attributes:
        name: the registry / entry-point name (``resnet18``, ``standard_vitc_b_patch1_14``, ...).
        architecture: the builder in ``bcos.models.<module>`` (``resnet18``, ``convnext_tiny``, ...).
        kind: ``bcos_cnn`` (B-cos CNN with its own LogitLayer), ``bcos_vit`` (SimpleViT wrapped as
            ``BcosSequential(vit, LogitLayer)``) or ``standard_vit`` (a plain SimpleViT, not B-cos).
        source: the experiment config the weights come from.
        args: plain-data builder arguments beyond the collection defaults (e.g. stochastic depth).
        transform: the evaluation transform spec.
        weights: the published weights file, or None for an architecture without weights.
        top1, top5: reported ImageNet validation accuracy in percent (None if unknown).
        num_params: the exact number of parameters (measured on the reference model).
        description: a one-line human description.
    """

    name: str
    architecture: str
    kind: ModelKind
    source: SourceConfig
    transform: EvalTransformSpec
    weights: WeightsFile | None
    top1: float | None
    top5: float | None
    num_params: int
    description: str
    args: Mapping[str, Any] = field(default_factory=dict)
    num_classes: int = 1000
    bcos_args: Mapping[str, Any] = field(default_factory=lambda: {"b": 2, "max_out": 1})

    @property
    def is_bcos(self) -> bool:
        """Whether the model is a B-cos network (has ``explain``)."""
        return self.kind != "standard_vit"

    @property
    def module(self) -> str:
        """The module of ``bcos.models`` holding the architecture builder."""
        for prefix, module in _ARCHITECTURE_MODULES:
            if self.architecture.startswith(prefix):
                return module
        raise ConfigError(f"no model module for architecture {self.architecture!r}")

    def builder_kwargs(self, num_classes: int | None = None, **overrides: Any) -> dict[str, Any]:
        """The keyword arguments of the architecture builder, as the source config sets them.

        ``overrides`` replace single arguments (``bcos_args`` is merged into the B-cos layer
        arguments; ``logit_bias`` of a B-cos ViT goes to its LogitLayer, see :meth:`build`).
        A B-cos CNN's ``logit_bias`` defaults to ``-log(num_classes - 1)``.
        """
        num_classes = self.num_classes if num_classes is None else int(num_classes)
        if num_classes < 1:
            raise ConfigError(f"num_classes must be at least 1, got {num_classes}")
        bcos_args = {**self.bcos_args, **overrides.pop("bcos_args", {})}
        kwargs = _collection_kwargs(self.kind, num_classes, bcos_args)
        kwargs.update(self.args)
        kwargs.update(overrides)
        return kwargs

    def build(self, num_classes: int | None = None, **overrides: Any) -> nn.Module:
        """Build the (untrained) model; see :meth:`builder_kwargs` for the arguments."""
        overrides = dict(overrides)
        logit_bias = overrides.pop("logit_bias", None) if self.kind == "bcos_vit" else None
        kwargs = self.builder_kwargs(num_classes, **overrides)
        builder = getattr(importlib.import_module(f"bcos.models.{self.module}"), self.architecture)
        model = builder(**kwargs)
        if self.kind == "bcos_vit":
            if logit_bias is None:
                logit_bias = _vit_logit_bias(kwargs["num_classes"])
            model = BcosSequential(model, LogitLayer(logit_bias=logit_bias))
        return model

    def summary(self) -> str:
        """One line: name, accuracy, size and source."""
        accuracy = f"top-1 {self.top1:.3f}%, top-5 {self.top5:.3f}%" if self.top1 is not None else "no accuracy"
        return f"{self.name}: {self.description} ({accuracy}, {self.num_params / 1e6:.2f}M params; {self.source})"


# builder prefix -> module of bcos.models (checked in order)
_ARCHITECTURE_MODULES = (
    ("resne", "resnet"),
    ("wide_resnet", "resnet"),
    ("densenet", "densenet"),
    ("vgg", "vgg"),
    ("convnext", "convnext"),
    ("simple_vit", "vit"),
    ("vitc", "vit"),
)


def _cnn_logit_bias(num_classes: int) -> float:
    # bcos_final(_long): -log(NUM_CLASSES - 1); a single class has no prior to encode
    return -math.log(num_classes - 1) if num_classes > 1 else 0.0


def _vit_logit_bias(num_classes: int) -> float:
    # vit_final writes it as log(1 / (NUM_CLASSES - 1)); kept verbatim for bit-identical logits
    return math.log(1 / (num_classes - 1)) if num_classes > 1 else 0.0


def _collection_kwargs(kind: ModelKind, num_classes: int, bcos_args: Mapping[str, Any]) -> dict[str, Any]:
    """The builder arguments every model of a collection gets (ImageNet bcos_final(_long), vit_final)."""
    if kind == "bcos_cnn":
        return dict(
            num_classes=num_classes,
            norm_layer=NoBias(BatchNormUncentered2d),
            logit_bias=_cnn_logit_bias(num_classes),
            conv_layer=partial(BcosConv2d, **bcos_args),
        )
    if kind == "bcos_vit":
        return dict(
            num_classes=num_classes,
            norm_layer=NoBias(DetachableLayerNorm),
            act_layer=nn.Identity,
            channels=6,
            norm2d_layer=NoBias(DetachableGNLayerNorm2d),
            linear_layer=partial(BcosLinear, **bcos_args),
            conv2d_layer=partial(BcosConv2d, **bcos_args),
        )
    return dict(
        num_classes=num_classes,
        norm_layer=nn.LayerNorm,
        norm2d_layer=DetachableGNLayerNorm2d,
        act_layer=nn.GELU,
        channels=3,
        linear_layer=nn.Linear,
        conv2d_layer=nn.Conv2d,
    )


# --------------------------------------------------------------------------------------------
# The published models (B-cos-v2 release v0.0.1-weights)
# --------------------------------------------------------------------------------------------
_REGISTRY: dict[str, PretrainedConfig] = {}


def register_model(config: PretrainedConfig, *, overwrite: bool = False) -> PretrainedConfig:
    """Add ``config`` to the registry (e.g. your own fine-tuned weights); returns it."""
    if config.name in _REGISTRY and not overwrite:
        raise ConfigError(f"model {config.name!r} is already registered; pass overwrite=True to replace it")
    _REGISTRY[config.name] = config
    return config


def _published(
    name: str,
    architecture: str,
    collection: str,
    experiment: str,
    file_name: str,
    top1: float,
    top5: float,
    num_params: int,
    description: str,
    kind: ModelKind = "bcos_cnn",
    resize_size: int = 256,
    **args: Any,
) -> None:
    register_model(
        PretrainedConfig(
            name=name,
            architecture=architecture,
            kind=kind,
            source=SourceConfig("ImageNet", collection, experiment),
            transform=EvalTransformSpec(resize_size=resize_size, crop_size=224, is_bcos=kind != "standard_vit"),
            weights=WeightsFile(f"{WEIGHTS_BASE_URL}/{file_name}"),
            top1=top1,
            top5=top5,
            num_params=num_params,
            description=description,
            args=args,
        )
    )


# ImageNet/bcos_final: 90 epochs, eval resize 256
_published("resnet18", "resnet18", "bcos_final", "resnet_18", "resnet_18-68b4160fff.pth", 68.736, 87.430, 11_693_120, "B-cos ResNet-18")
_published("resnet34", "resnet34", "bcos_final", "resnet_34", "resnet_34-a63425a03e.pth", 72.284, 90.052, 21_797_568, "B-cos ResNet-34")
# the reference docstring says top-5 92.064%; the README table (used here) says 92.528%
_published("resnet50", "resnet50", "bcos_final", "resnet_50", "resnet_50-ead259efe4.pth", 75.882, 92.528, 25_538_880, "B-cos ResNet-50")
_published("resnet101", "resnet101", "bcos_final", "resnet_101", "resnet_101-84c3658278.pth", 76.532, 92.538, 44_504_896, "B-cos ResNet-101")
_published("resnet152", "resnet152", "bcos_final", "resnet_152", "resnet_152-42051a77c1.pth", 76.484, 92.398, 60_125_504, "B-cos ResNet-152")
_published("resnext50_32x4d", "resnext50_32x4d", "bcos_final", "resnext_50_32x4d", "resnext_50_32x4d-57af241ab9.pth", 75.820, 91.810, 25_003_200, "B-cos ResNeXt-50 32x4d")
_published("densenet121", "densenet121", "bcos_final", "densenet_121", "densenet_121-b8daf96afb.pth", 73.612, 91.106, 7_945_440, "B-cos DenseNet-121")
_published("densenet161", "densenet161", "bcos_final", "densenet_161", "densenet_161-9e9ea51353.pth", 76.622, 92.554, 28_584_144, "B-cos DenseNet-161")
_published("densenet169", "densenet169", "bcos_final", "densenet_169", "densenet_169-7037ee0604.pth", 75.186, 91.786, 14_078_688, "B-cos DenseNet-169")
_published("densenet201", "densenet201", "bcos_final", "densenet_201", "densenet_201-00ac87066f.pth", 75.480, 91.992, 19_907_808, "B-cos DenseNet-201")
_published("vgg11_bnu", "vgg11_bnu", "bcos_final", "vgg_11_bnu", "vgg_11_bnu-34036029f0.pth", 69.310, 88.388, 132_855_872, "B-cos VGG-11 with uncentered batch norm")

# ImageNet/bcos_final_long: 600 epochs (torchvision's new recipe, AMP), eval resize 232
_LONG = dict(collection="bcos_final_long", resize_size=232)
_published("convnext_tiny", "convnext_tiny", experiment="convnext_tiny_pn", file_name="convnext_tiny_pn-539b1bfb37.pth", top1=77.488, top5=93.192, num_params=28_543_392, description="B-cos ConvNeXt-T with position norm (epoch 596, EMA weights)", norm_layer=None, **_LONG)
_published("convnext_base", "convnext_base", experiment="convnext_base_pn", file_name="convnext_base_pn-b0495852c6.pth", top1=79.650, top5=94.614, num_params=88_466_304, description="B-cos ConvNeXt-B with position norm (epoch 581, non-EMA weights)", norm_layer=None, **_LONG)
_published("convnext_tiny_bnu", "convnext_tiny", experiment="convnext_tiny_bnu", file_name="convnext_tiny_bnu-dbd7f5ef9d.pth", top1=76.826, top5=93.090, num_params=28_543_392, description="B-cos ConvNeXt-T with uncentered batch norm (epoch 456, EMA weights)", **_LONG)
_published("convnext_base_bnu", "convnext_base", experiment="convnext_base_bnu", file_name="convnext_base_bnu-7c32a704b3.pth", top1=80.142, top5=94.834, num_params=88_466_304, description="B-cos ConvNeXt-B with uncentered batch norm (epoch 541, EMA weights)", **_LONG)
_published("densenet121_long", "densenet121", experiment="densenet_121", file_name="densenet_121_long-5175461597.pth", top1=77.302, top5=93.234, num_params=7_945_440, description="B-cos DenseNet-121 trained 600 epochs (epoch 596, non-EMA weights)", **_LONG)
_published("resnet50_long", "resnet50", experiment="resnet_50", file_name="resnet_50_long-ef38a88533.pth", top1=79.468, top5=94.452, num_params=25_538_880, description="B-cos ResNet-50 trained 600 epochs (epoch 580, non-EMA weights)", stochastic_depth_prob=0.1, **_LONG)
_published("resnet152_long", "resnet152", experiment="resnet_152", file_name="resnet_152_long-0b4b434939.pth", top1=80.144, top5=94.116, num_params=60_125_504, description="B-cos ResNet-152 trained 600 epochs (epoch 433, non-EMA weights)", stochastic_depth_prob=0.1, **_LONG)

# ImageNet/vit_final: B-cos ViTs (experiment "bcos_<arch>") and standard ones ("<arch>"), eval resize 256
_VITS = (
    # arch, B-cos (hash, top-1, top-5, params), standard (hash, top-1, top-5, params), description
    ("simple_vit_ti_patch16_224", ("4b0824b1c1", 59.960, 81.838, 5_800_128), ("2ae8c65a39", 70.230, 89.380, 5_670_184), "Simple ViT-Ti/16"),
    ("simple_vit_s_patch16_224", ("75e99d1f73", 69.246, 88.096, 22_217_088), ("f2934fcdcf", 74.470, 91.226, 21_956_200), "Simple ViT-S/16"),
    ("simple_vit_b_patch16_224", ("1fc4750806", 74.408, 91.156, 86_901_504), ("87074200ed", 75.300, 91.026, 86_378_728), "Simple ViT-B/16"),
    ("simple_vit_l_patch16_224", ("9613b2ad0a", 75.060, 91.378, 178_787_328), ("62dc536e03", 75.710, 90.050, 178_104_296), "Simple ViT-L/16"),
    ("vitc_ti_patch1_14", ("ddd6193a77", 67.260, 86.774, 5_318_712), ("a5d6bded37", 72.590, 90.788, 5_334_952), "Simple ViT-Ti with a conv stem"),
    ("vitc_s_patch1_14", ("cf55c88f0c", 74.504, 91.288, 20_878_704), ("34ecd7288e", 75.756, 91.994, 20_910_184), "Simple ViT-S with a conv stem"),
    ("vitc_b_patch1_14", ("a13c46397b", 77.152, 92.926, 81_326_016), ("4d374b0220", 76.790, 92.024, 81_388_648), "Simple ViT-B with a conv stem"),
    ("vitc_l_patch1_14", ("8739e18b8d", 77.782, 92.966, 167_444_160), ("560e48f246", 77.866, 92.298, 167_541_352), "Simple ViT-L with a conv stem"),
)
for _arch, (_hash, _top1, _top5, _params), _, _description in _VITS:
    _published(_arch, _arch, "vit_final", f"bcos_{_arch}", f"bcos_{_arch}-{_hash}.pth", _top1, _top5, _params, f"B-cos {_description}", kind="bcos_vit")
for _arch, _, (_hash, _top1, _top5, _params), _description in _VITS:
    _published(f"standard_{_arch}", _arch, "vit_final", _arch, f"standard_{_arch}-{_hash}.pth", _top1, _top5, _params, f"standard (non-B-cos) {_description}", kind="standard_vit")
del _arch, _hash, _top1, _top5, _params, _description


# --------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------
def get_pretrained_config(name: str) -> PretrainedConfig:
    """The registry entry of ``name``; unknown names raise with the closest match."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise unknown_name("model", name, _REGISTRY, hint="see bcos.list_models()") from None


def list_models(pattern: str | Iterable[str] = "*", pretrained: bool | None = None) -> list[str]:
    """Sorted names of registered models matching ``pattern`` (fnmatch, case-insensitive).

    ``pattern`` may be one pattern or several (a name matching any is listed). ``pretrained=True``
    lists only models with published weights, ``False`` only those without, None all.
    """
    patterns = [pattern] if isinstance(pattern, str) else list(pattern)
    names = []
    for name, config in _REGISTRY.items():
        if pretrained is not None and (config.weights is not None) != pretrained:
            continue
        if any(fnmatch.fnmatchcase(name.lower(), p.lower()) for p in patterns):
            names.append(name)
    return sorted(names)


def create_model(
    name: str,
    pretrained: bool = False,
    num_classes: int | None = None,
    weights: str | os.PathLike | None = None,
    *,
    progress: bool = True,
    **kwargs: Any,
) -> nn.Module:
    """Build the registered model ``name``, optionally with its published or local weights.

    Args:
        name: a name from :func:`list_models`.
        pretrained: load the published weights (from the local cache, else downloaded).
        num_classes: classifier size; when it differs from the published model's (1000), the
            backbone still gets the weights and the classifier is freshly initialised
            (for fine-tuning), and a B-cos logit bias defaults to ``-log(num_classes - 1)``.
        weights: path of a local state dict to load instead of the published file (implies
            loading weights; a file named like the published one is verified by its hash).
        progress: show a progress bar while downloading.
        **kwargs: builder arguments that replace the config's (``stochastic_depth_prob``,
            ``norm_layer``, ``logit_bias``, ``bcos_args={"b": 2.5}``, ...).

    The model gets ``model.transform`` (its evaluation preprocessing) and ``model.pretrained_config``
    (this registry entry).
    """
    config = get_pretrained_config(name)
    model = config.build(num_classes, **kwargs)
    if weights is not None or pretrained:
        if weights is not None:
            path = os.fspath(weights)
            if config.weights is not None and os.path.basename(path) == config.weights.file_name:
                verify_sha256_prefix(path, config.weights.sha256_prefix, config.weights.url)
        elif config.weights is None:
            raise CheckpointError(
                f"model {name!r} has no published weights; pass weights=PATH to load a local state dict"
            )
        else:
            path = fetch_weights_file(config.weights, progress=progress)
        new_num_classes = num_classes if num_classes not in (None, config.num_classes) else None
        load_weights_into(model, load_state_dict_file(path), str(path), new_num_classes)
    model.transform = config.transform.build()
    model.pretrained_config = config
    return model


def load_weights_into(
    model: nn.Module,
    state_dict: Mapping[str, torch.Tensor],
    source: str = "state dict",
    new_num_classes: int | None = None,
) -> None:
    """Load ``state_dict`` into ``model`` strictly, or all but a resized classifier.

    With ``new_num_classes`` (fine-tuning), tensors whose shape differs from the model's only
    because their first dimension is the new class count (the classifier's weight and bias) keep
    their fresh initialisation. Any other missing, unexpected or misshaped entry raises
    :class:`CheckpointError`, so a wrong file is never half-loaded silently.
    """
    own = model.state_dict()
    misshaped = [k for k, v in state_dict.items() if k in own and own[k].shape != v.shape]
    resized = [
        k
        for k in misshaped
        if new_num_classes is not None
        and own[k].shape[:1] == (new_num_classes,)
        and own[k].shape[1:] == state_dict[k].shape[1:]
    ]
    wrong = [k for k in misshaped if k not in resized]
    if wrong:
        shapes = ", ".join(f"{k} {tuple(state_dict[k].shape)} vs {tuple(own[k].shape)}" for k in wrong[:3])
        raise CheckpointError(
            f"{source} does not fit the model: {len(wrong)} tensors differ in shape (file vs model: {shapes}); "
            "build the model the weights were trained with"
        )
    # a model built under torch.device("meta") takes the loaded tensors themselves (no init cost)
    on_meta = any(t.is_meta for t in own.values())
    missing, unexpected = model.load_state_dict(
        {k: v for k, v in state_dict.items() if k not in resized}, strict=False, assign=on_meta
    )
    missing = [k for k in missing if k not in resized]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing keys {missing[:3]}{' ...' if len(missing) > 3 else ''}")
        if unexpected:
            parts.append(f"unexpected keys {unexpected[:3]}{' ...' if len(unexpected) > 3 else ''}")
        raise CheckpointError(
            f"{source} does not fit the model ({'; '.join(parts)}); build the model the weights were trained with"
        )
    if on_meta and any(t.is_meta for t in (*model.parameters(), *model.buffers())):
        raise CheckpointError(
            f"{source} left tensors of the model on the meta device (a new classifier?); "
            "build the model on a real device"
        )
