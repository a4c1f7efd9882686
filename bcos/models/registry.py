"""The model registry: every architecture by name, and every published model with its weights.

Each architecture file declares its builders and, beside each builder, the models published for it
(like torchvision's ``@register_model`` with its weights enums and timm's ``default_cfgs``)::

    @register_architecture(
        Published("resnet18", "bcos_final/resnet_18", "resnet_18-68b4160fff.pth",
                  top1=68.736, top5=87.430, num_params=11_693_120, description="B-cos ResNet-18"),
    )
    def resnet18(pretrained=False, progress=True, **kwargs): ...

That declaration is the only one: :func:`create_model`, :func:`list_models`, the entry points of
:mod:`bcos.models.pretrained`, ``hubconf.py`` and ``bcos models`` are generated from it, and the
ImageNet collections build their models with :func:`build_architecture`, the same builders and
layer wiring (a :class:`Family`) the published models use.

    >>> import bcos
    >>> bcos.list_models("convnext*")
    ['convnext_base', 'convnext_base_bnu', 'convnext_tiny', 'convnext_tiny_bnu']
    >>> model = bcos.create_model("resnet18", pretrained=True)            # doctest: +SKIP
    >>> model = bcos.create_model("resnet50", pretrained=True, num_classes=10)  # fine-tuning: fresh classifier

A model's evaluation preprocessing is declared as plain data (:class:`EvalTransformSpec`, in
``model.pretrained_config.transform``) and built as ``model.transform`` (a preset of
:mod:`bcos.data.presets`, which sits below the models like torchvision's transforms).
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Literal

from torch import nn

from bcos.checkpoint_io import load_state_dict_file, load_state_dict_into, verify_sha256_prefix
from bcos.data.presets import ImageNetClassificationPresetEval
from bcos.errors import CheckpointError, ConfigError, unknown_name
from bcos.models._utils import default_logit_bias
from bcos.models.weights import WEIGHTS_BASE_URL, WeightsFile, fetch_weights_file
from bcos.modules import BcosConv2d
from bcos.modules.norms import BatchNormUncentered2d, NoBias

__all__ = [
    "SourceConfig",
    "EvalTransformSpec",
    "PretrainedConfig",
    "Family",
    "BCOS_CNN",
    "Architecture",
    "Published",
    "register_architecture",
    "get_architecture",
    "list_architectures",
    "build_architecture",
    "register_model",
    "get_pretrained_config",
    "list_models",
    "create_model",
]

ModelKind = Literal["bcos_cnn", "bcos_vit", "standard_vit"]
Builder = Callable[..., nn.Module]


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
    """The evaluation preprocessing, as plain data: resize, center crop, then AddInverse (B-cos)
    or mean/std normalisation (the arguments of :class:`ImageNetClassificationPresetEval`)."""

    resize_size: int = 256
    crop_size: int = 224
    is_bcos: bool = True

    def build(self) -> ImageNetClassificationPresetEval:
        """The transform: a PIL image in, the model's input tensor out."""
        return ImageNetClassificationPresetEval(
            crop_size=self.crop_size, resize_size=self.resize_size, is_bcos=self.is_bcos
        )


# --------------------------------------------------------------------------------------------
# Architectures and their families
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Family:
    """A kind of architecture and how the ImageNet collections wire its layers.

    Attributes:
        name: shown in messages (``"B-cos CNN"``, ``"ViT"``).
        recipe: ``(is_bcos, num_classes, bcos_args) -> builder arguments`` of the published models
            (the layer factories, norms and logit bias their collection config gives them).
        assemble: ``(builder, is_bcos, bcos_args, args) -> model``: fills in the layer factories
            that ``args`` leaves out (made from ``bcos_args``), calls the builder and adds what the
            collection adds around it (a B-cos ViT's ``LogitLayer``).
    """

    name: str
    recipe: Callable[[bool, int, Mapping[str, Any]], dict[str, Any]]
    assemble: Callable[[Builder, bool, Mapping[str, Any], dict[str, Any]], nn.Module]


def _bcos_cnn_recipe(is_bcos: bool, num_classes: int, bcos_args: Mapping[str, Any]) -> dict[str, Any]:
    # ImageNet bcos_final(_long): uncentered batch norm without bias, logit bias -log(C - 1)
    return dict(
        num_classes=num_classes,
        norm_layer=NoBias(BatchNormUncentered2d),
        logit_bias=default_logit_bias(num_classes),
        conv_layer=partial(BcosConv2d, **bcos_args),
    )


def _assemble_bcos_cnn(builder: Builder, is_bcos: bool, bcos_args: Mapping[str, Any], args: dict[str, Any]) -> nn.Module:
    if not is_bcos:
        raise ConfigError(
            f"{builder.__name__} is a B-cos CNN: set model.is_bcos=True (standard CNNs: the ImageNet/baseline collection)"
        )
    args = dict(args)
    if "conv_layer" not in args:  # a caller may inject its own, as the reference's hubconf overrides did
        args["conv_layer"] = partial(BcosConv2d, **bcos_args)
    return builder(**args)


#: The CNN architectures (ResNet, DenseNet, VGG, ConvNeXt): ``conv_layer`` from ``bcos_args``.
BCOS_CNN = Family("B-cos CNN", recipe=_bcos_cnn_recipe, assemble=_assemble_bcos_cnn)


@dataclass(frozen=True)
class Architecture:
    """A registered architecture builder, e.g. ``resnet50`` of :mod:`bcos.models.resnet`."""

    name: str
    builder: Builder
    family: Family

    @property
    def module(self) -> str:
        """The module of ``bcos.models`` that defines the builder (``resnet``, ``vit``, ...)."""
        return self.builder.__module__.rsplit(".", 1)[-1]


_ARCHITECTURES: dict[str, Architecture] = {}


# --------------------------------------------------------------------------------------------
# Published models
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PretrainedConfig:
    """One registered model: how to build it, how to preprocess its inputs, where its weights are.

    Attributes:
        name: the registry / entry-point name (``resnet18``, ``standard_vitc_b_patch1_14``, ...).
        architecture: a registered architecture builder (``resnet18``, ``convnext_tiny``, ...).
        source: the experiment config the weights come from.
        transform: the evaluation transform spec.
        weights: the published weights file, or None for a model without weights.
        top1, top5: reported ImageNet validation accuracy in percent (None if unknown).
        num_params: the exact number of parameters (measured on the reference model).
        description: a one-line human description.
        args: builder arguments beyond the collection's recipe (e.g. stochastic depth).
        num_classes: the classifier size of the weights.
        bcos_args: arguments of the B-cos layers (``b``, ``max_out``).
        is_bcos: whether the model is a B-cos network (has ``explain``); the standard ViTs are not.
    """

    name: str
    architecture: str
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
    is_bcos: bool = True

    @property
    def family(self) -> Family:
        """The architecture's family (how its layers are wired)."""
        return get_architecture(self.architecture).family

    @property
    def kind(self) -> ModelKind:
        """``bcos_cnn``, ``bcos_vit`` (SimpleViT wrapped as ``BcosSequential(vit, LogitLayer)``) or
        ``standard_vit`` (a plain SimpleViT, not B-cos)."""
        if self.family is BCOS_CNN:
            return "bcos_cnn"
        return "bcos_vit" if self.is_bcos else "standard_vit"

    @property
    def module(self) -> str:
        """The module of ``bcos.models`` holding the architecture builder."""
        return get_architecture(self.architecture).module

    def builder_kwargs(self, num_classes: int | None = None, **overrides: Any) -> dict[str, Any]:
        """The arguments the model is built with, as its source config sets them.

        ``overrides`` replace single arguments (``bcos_args`` is merged into the B-cos layer
        arguments; ``logit_bias`` of a B-cos ViT goes to its LogitLayer). A logit bias defaults to
        ``-log(num_classes - 1)``.
        """
        num_classes = self.num_classes if num_classes is None else int(num_classes)
        if num_classes < 1:
            raise ConfigError(f"num_classes must be at least 1, got {num_classes}")
        bcos_args = {**self.bcos_args, **overrides.pop("bcos_args", {})}
        kwargs = self.family.recipe(self.is_bcos, num_classes, bcos_args)
        kwargs.update(self.args)
        kwargs.update(overrides)
        return kwargs

    def build(self, num_classes: int | None = None, **overrides: Any) -> nn.Module:
        """Build the (untrained) model; see :meth:`builder_kwargs` for the arguments."""
        bcos_args = {**self.bcos_args, **overrides.get("bcos_args", {})}
        kwargs = self.builder_kwargs(num_classes, **overrides)
        return build_architecture(self.architecture, is_bcos=self.is_bcos, bcos_args=bcos_args, **kwargs)

    def summary(self) -> str:
        """One line: name, accuracy, size and source."""
        accuracy = f"top-1 {self.top1:.3f}%, top-5 {self.top5:.3f}%" if self.top1 is not None else "no accuracy"
        return f"{self.name}: {self.description} ({accuracy}, {self.num_params / 1e6:.2f}M params; {self.source})"


# the evaluation resize of each ImageNet collection (its configs' test_transform; a test checks them)
_EVAL_RESIZE = {"bcos_final": 256, "bcos_final_long": 232, "vit_final": 256}


@dataclass(frozen=True)
class Published:
    """A published ImageNet model of an architecture, as declared beside its builder.

    Attributes:
        name: the registry name (``resnet50_long``).
        source: ``"<collection>/<experiment>"`` of ``bcos/experiments/ImageNet`` it was trained with.
        file_name: the weights file of the B-cos-v2 release, ``<stem>-<sha256 prefix>.pth``.
        top1, top5, num_params, description: see :class:`PretrainedConfig`.
        is_bcos: False for the standard (non-B-cos) ViTs.
        args: builder arguments beyond the collection's recipe (``stochastic_depth_prob=0.1``).
    """

    name: str
    source: str
    file_name: str
    top1: float
    top5: float
    num_params: int
    description: str
    is_bcos: bool = True
    args: Mapping[str, Any] = field(default_factory=dict)

    def config(self, architecture: str) -> PretrainedConfig:
        """The registry entry of this model of ``architecture``."""
        collection, experiment = self.source.split("/")
        if collection not in _EVAL_RESIZE:
            raise ConfigError(f"no published collection {collection!r}; known: {', '.join(_EVAL_RESIZE)}")
        return PretrainedConfig(
            name=self.name,
            architecture=architecture,
            source=SourceConfig("ImageNet", collection, experiment),
            transform=EvalTransformSpec(resize_size=_EVAL_RESIZE[collection], crop_size=224, is_bcos=self.is_bcos),
            weights=WeightsFile(f"{WEIGHTS_BASE_URL}/{self.file_name}"),
            top1=self.top1,
            top5=self.top5,
            num_params=self.num_params,
            description=self.description,
            args=dict(self.args),
            is_bcos=self.is_bcos,
        )


_REGISTRY: dict[str, PretrainedConfig] = {}


def register_architecture(*published: Published, family: Family = BCOS_CNN) -> Callable[[Builder], Builder]:
    """Decorator: register a builder under its name, with the models published for it.

    ``family`` says how the collections wire its layers (:data:`BCOS_CNN`, or
    :data:`bcos.models.vit.VIT`). Returns the builder unchanged.
    """

    def register(builder: Builder) -> Builder:
        name = builder.__name__
        if name in _ARCHITECTURES:
            raise ConfigError(f"architecture {name!r} is registered twice")
        _ARCHITECTURES[name] = Architecture(name, builder, family)
        for entry in published:
            register_model(entry.config(name))
        return builder

    return register


def get_architecture(name: str) -> Architecture:
    """The registered architecture ``name``; unknown names raise with the closest match."""
    try:
        return _ARCHITECTURES[name]
    except KeyError:
        raise unknown_name("architecture", name, _ARCHITECTURES, hint="see bcos.models.registry.list_architectures()") from None


def list_architectures(family: Family | None = None) -> list[str]:
    """Sorted names of the registered architectures, optionally of one family only."""
    return sorted(name for name, arch in _ARCHITECTURES.items() if family is None or arch.family is family)


def build_architecture(
    name: str,
    *,
    is_bcos: bool = True,
    bcos_args: Mapping[str, Any] | None = None,
    family: Family | None = None,
    **args: Any,
) -> nn.Module:
    """Build architecture ``name`` as the ImageNet collections do (their ``get_model`` calls this).

    ``args`` go to the builder; the layer factories they leave out are made from ``bcos_args``
    (B-cos) or are the standard layers, see :class:`Family`. ``family`` restricts ``name`` to one
    family (a collection of CNNs cannot build a ViT).
    """
    if family is not None and name not in _ARCHITECTURES:
        raise unknown_name(f"{family.name} architecture", name, list_architectures(family))
    architecture = get_architecture(name)
    if family is not None and architecture.family is not family:
        raise unknown_name(f"{family.name} architecture", name, list_architectures(family))
    return architecture.family.assemble(architecture.builder, is_bcos, bcos_args or {}, args)


def register_model(config: PretrainedConfig, *, overwrite: bool = False) -> PretrainedConfig:
    """Add ``config`` to the registry (e.g. your own fine-tuned weights); returns it.

    Its ``architecture`` must be registered. The published models are registered by the
    :func:`register_architecture` declarations beside their builders.
    """
    get_architecture(config.architecture)  # raises with the closest name
    if config.name in _REGISTRY and not overwrite:
        raise ConfigError(f"model {config.name!r} is already registered; pass overwrite=True to replace it")
    _REGISTRY[config.name] = config
    return config


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

    The model gets ``model.transform`` (its evaluation preprocessing, as in the reference) and
    ``model.pretrained_config`` (this registry entry).
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
        load_state_dict_into(model, load_state_dict_file(path), str(path), new_num_classes)
    model.pretrained_config = config
    model.transform = config.transform.build()
    return model

