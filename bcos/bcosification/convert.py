"""``bcosify(model)``: turn a torchvision or timm model into a B-cos model that inherits its weights.

The conversion walks the module tree once (on a copy; the given model is not changed):

* ``nn.Conv2d`` / ``nn.Linear`` -> :class:`BcosifiedConv2d` / :class:`BcosifiedLinear` with the
  same weights (the B-cos scale ``|cos|^(B-1)`` on top of the original response);
* the input layer (the first ``nn.Conv2d``, the stem or the patch embedding) is widened to the
  ``[x, 1 - x]`` encoding of images in [0, 1], with the input normalisation folded in exactly:
  ``w·(x - m)/s = (w(1-m)/s)·x + (-w·m/s)·(1 - x)``, so the widened layer computes on ``[x, 1-x]``
  what the original computed on the normalised image, zero padding included (a padded pixel is 0
  in both);
* batch and layer norms -> their B-cos counterparts (:mod:`bcos.bcosification.norms`);
* GELU / SiLU / Hardswish and squeeze-and-excitation gates -> the same function whose gate is
  detached in explanation mode (:mod:`bcos.bcosification.gates`); ReLU, max and average pooling,
  dropout and stochastic depth are kept (piecewise linear or linear);
* timm attention -> the B-cos ViT's: the queries and keys are detached in explanation mode;
* containers of the known architectures are walked into; anything else is refused with one line
  naming the module's path and type (pass ``trusted=(MyBlock,)`` for your own containers whose
  forward only combines their children linearly).

Biases (``bias=``): ``"keep"`` keeps every additive term (layer biases, the batch norms' shift and
centring, the classifier bias): with ``b=1`` the converted model computes exactly the original's
logits, but the explanations' contributions do not sum to the logit (the biases contribute too).
``"remove"`` drops them all (batch norms become uncentred and bias-free, the classifier bias is
replaced by one logit bias, their mean): the model is then exactly dynamic linear, so
``contributions + logit bias == logit`` (completeness), as in the B-cosification paper's models.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import nn

from bcos.bcosification.gates import (
    DetachableGELU,
    DetachableHardswish,
    DetachableSiLU,
    DetachedGateSqueezeExcitation,
    DetachInExplanation,
)
from bcos.bcosification.layers import BcosifiedConv2d, BcosifiedLinear, check_b
from bcos.bcosification.model import BcosifiedModel
from bcos.bcosification.norms import convert_batch_norm, convert_layer_norm
from bcos.bcosification.report import BcosifyReport, Change
from bcos.errors import ConfigError, unknown_name

__all__ = ["bcosify", "IMAGENET_NORMALIZATION", "BIAS_CHOICES", "MAX_POOL_CHOICES", "UnsupportedModuleError"]

#: torchvision's ImageNet input normalisation (mean, std)
IMAGENET_NORMALIZATION = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
BIAS_CHOICES = ("keep", "remove")
MAX_POOL_CHOICES = ("keep", "avg")

Normalization = tuple[Sequence[float], Sequence[float]]


class UnsupportedModuleError(ConfigError):
    """A module that bcosify does not know how to convert (the message names its path and type)."""


def _qualname(module_or_type: Any) -> str:
    t = module_or_type if isinstance(module_or_type, type) else type(module_or_type)
    return f"{t.__module__}.{t.__qualname__}"


#: containers whose forward only combines their children with linear operations (sums,
#: concatenation, reshaping, constant or learned scales), ReLU and pooling
TRUSTED_CONTAINERS = frozenset({
    "torch.nn.modules.container.Sequential",
    "torch.nn.modules.container.ModuleList",
    "torch.nn.modules.container.ModuleDict",
    "torchvision.models.resnet.ResNet",
    "torchvision.models.resnet.BasicBlock",
    "torchvision.models.resnet.Bottleneck",
    "torchvision.models.densenet.DenseNet",
    "torchvision.models.densenet._DenseBlock",
    "torchvision.models.densenet._DenseLayer",
    "torchvision.models.densenet._Transition",
    "torchvision.models.vgg.VGG",
    "torchvision.models.convnext.ConvNeXt",
    "torchvision.models.convnext.CNBlock",
    "torchvision.ops.misc.Conv2dNormActivation",
    "torchvision.models.efficientnet.EfficientNet",
    "torchvision.models.efficientnet.MBConv",
    "torchvision.models.efficientnet.FusedMBConv",
    "torchvision.models.mobilenetv3.MobileNetV3",
    "torchvision.models.mobilenetv3.InvertedResidual",
    "torchvision.models.mobilenetv2.MobileNetV2",
    "torchvision.models.mobilenetv2.InvertedResidual",
    "timm.models.resnet.ResNet",
    "timm.models.resnet.BasicBlock",
    "timm.models.resnet.Bottleneck",
    "timm.models.convnext.ConvNeXt",
    "timm.models.convnext.ConvNeXtStage",
    "timm.models.convnext.ConvNeXtBlock",
    "timm.layers.classifier.NormMlpClassifierHead",
    "timm.layers.classifier.ClassifierHead",
    "timm.layers.adaptive_avgmax_pool.SelectAdaptivePool2d",
    "timm.models.vision_transformer.VisionTransformer",
    "timm.models.vision_transformer.Block",
    "timm.layers.patch_embed.PatchEmbed",
    "timm.layers.mlp.Mlp",
})  # fmt: skip

#: leaves kept as they are, with the reason shown in the report
KEPT_LEAVES = {
    "torch.nn.modules.activation.ReLU": "piecewise linear",
    "torch.nn.modules.pooling.MaxPool2d": "piecewise linear (selects one input)",
    "torch.nn.modules.pooling.AvgPool2d": "linear",
    "torch.nn.modules.pooling.AdaptiveAvgPool2d": "linear",
    "torch.nn.modules.linear.Identity": "",
    "torch.nn.modules.flatten.Flatten": "",
    "torch.nn.modules.dropout.Dropout": "identity in eval mode",
    "torchvision.ops.misc.Permute": "",
    "torchvision.ops.stochastic_depth.StochasticDepth": "identity in eval mode",
    "timm.layers.drop.DropPath": "identity in eval mode",
    "timm.layers.layer_scale.LayerScale": "constant scale",
    "timm.layers.layer_scale.LayerScale2d": "constant scale",
}

_GELUS = {"torch.nn.modules.activation.GELU", "timm.layers.activations.GELU"}
_LAYER_NORMS = {"torch.nn.modules.normalization.LayerNorm", "timm.layers.norm.LayerNorm"}
_LAYER_NORMS_2D = {"torchvision.models.convnext.LayerNorm2d", "timm.layers.norm.LayerNorm2d"}
_SQUEEZE_EXCITATIONS = {"torchvision.ops.misc.SqueezeExcitation"}
_ATTENTIONS = {"timm.layers.attention.Attention", "timm.models.vision_transformer.Attention"}
#: parameters of trusted containers that add an input-independent term (noted in the report)
_ADDITIVE_PARAMETERS = {"cls_token", "pos_embed", "reg_token", "dist_token"}


class _Walk:
    """The state of one conversion: options, the report's entries, the layers made."""

    def __init__(self, b: float, keep_bias: bool, max_pool: str, trusted: set[str]) -> None:
        self.b = b
        self.keep_bias = keep_bias
        self.max_pool = max_pool
        self.trusted = trusted
        self.changes: list[Change] = []
        self.last_affine: tuple[str, nn.Module, Any] | None = None  # (path, new layer, original bias)

    def record(self, path: str, original: nn.Module, result: nn.Module, note: str = "") -> nn.Module:
        self.changes.append(Change(path, type(original).__name__, type(result).__name__, note, result is not original))
        return result

    def children(self, parent: nn.Module, prefix: str, in_gate: bool = False) -> None:
        for name, child in list(parent.named_children()):
            path = f"{prefix}.{name}" if prefix else name
            new = self.module(child, path, in_gate)
            if new is not child:
                setattr(parent, name, new)

    def module(self, module: nn.Module, path: str, in_gate: bool) -> nn.Module:
        kind = _qualname(module)
        if type(module) is nn.Conv2d:
            bias = None if module.bias is None else module.bias.detach().clone()
            layer = BcosifiedConv2d(module, self.b, self.keep_bias)
            self.last_affine = (path, layer, bias)
            return self.record(path, module, layer, f"B={self.b:g}" + ("" if self.keep_bias else ", bias removed"))
        if type(module) is nn.Linear:
            bias = None if module.bias is None else module.bias.detach().clone()
            layer = BcosifiedLinear(module, self.b, self.keep_bias)
            self.last_affine = (path, layer, bias)
            return self.record(path, module, layer, f"B={self.b:g}" + ("" if self.keep_bias else ", bias removed"))
        if type(module) is nn.BatchNorm2d:
            note = "centred, affine" if self.keep_bias else "uncentred, no bias"
            return self.record(path, module, convert_batch_norm(module, self.keep_bias), note)
        if kind in _LAYER_NORMS or kind in _LAYER_NORMS_2D:
            layer = convert_layer_norm(module, self.keep_bias, channels_first=kind in _LAYER_NORMS_2D)
            return self.record(path, module, layer, "variance detached in explanation mode")
        if kind in _SQUEEZE_EXCITATIONS:
            layer = DetachedGateSqueezeExcitation(module)
            self.record(path, module, layer, "gate detached in explanation mode")
            self.children(module, f"{path}.block", in_gate=True)
            return layer
        if kind in _ATTENTIONS:
            return self.attention(module, path)
        if in_gate and kind in {"torch.nn.modules.activation.Sigmoid", "torch.nn.modules.activation.Hardsigmoid",
                                "torch.nn.modules.activation.SiLU", "torch.nn.modules.activation.Hardswish", *_GELUS}:
            return self.record(path, module, module, "inside a detached gate")  # fmt: skip
        if kind in _GELUS:
            approximate = getattr(module, "approximate", "none")
            return self.record(path, module, DetachableGELU(approximate), "x·Φ(x), Φ detached in explanation mode")
        if kind == "torch.nn.modules.activation.SiLU":
            return self.record(path, module, DetachableSiLU(), "x·σ(x), σ detached in explanation mode")
        if kind == "torch.nn.modules.activation.Hardswish":
            return self.record(path, module, DetachableHardswish(), "x·hardsigmoid(x), gate detached in explanation mode")
        if kind == "torch.nn.modules.pooling.MaxPool2d" and self.max_pool == "avg":
            pool = nn.AvgPool2d(module.kernel_size, module.stride, module.padding, module.ceil_mode)
            return self.record(path, module, pool, "max_pool='avg' (as in the B-cosification paper)")
        if kind in KEPT_LEAVES:
            return self.record(path, module, module, KEPT_LEAVES[kind])
        if kind in self.trusted:
            additive = sorted(n for n, p in module.named_parameters(recurse=False) if n in _ADDITIVE_PARAMETERS and p is not None)
            if additive:
                self.record(path or "<model>", module, module, f"{', '.join(additive)}: additive, input-independent")
            self.children(module, path, in_gate)
            return module
        raise UnsupportedModuleError(
            f"bcosify cannot convert {path or '<model>'} ({kind}); supported: convolutions, linear layers, batch/layer "
            "norms, ReLU/GELU/SiLU/Hardswish, pooling, timm attention and the containers of torchvision's and timm's "
            "CNNs and ViTs (pass trusted=(YourBlock,) for a container whose forward combines its children linearly)"
        )

    def attention(self, module: nn.Module, path: str) -> nn.Module:
        if getattr(module, "gate", None) is not None:
            raise UnsupportedModuleError(
                f"bcosify cannot convert {path} ({_qualname(module)}) with a gated output; use an attention without gate=True"
            )
        for name in ("q_norm", "k_norm"):
            inner = getattr(module, name)
            setattr(module, name, DetachInExplanation(inner))
            self.record(f"{path}.{name}", inner, getattr(module, name), "queries/keys detached in explanation mode (B-cos ViT attention)")
        self.changes.append(Change(path, type(module).__name__, type(module).__name__, "attention matrix constant in explanation mode", False))
        for name, child in list(module.named_children()):
            child_path = f"{path}.{name}"
            if isinstance(child, DetachInExplanation):  # its output is detached: the activations inside stay
                self.children(child, child_path, in_gate=True)
                continue
            new = self.module(child, child_path, in_gate=False)
            if new is not child:
                setattr(module, name, new)
        return module


def _find_input_layer(model: nn.Module, name: str | None, in_channels: int) -> tuple[str, nn.Conv2d]:
    if name is not None:
        try:
            layer = model.get_submodule(name)
        except AttributeError:
            raise unknown_name("input layer", name, [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]) from None
        if type(layer) is not nn.Conv2d:
            raise ConfigError(f"input_layer {name!r} is a {type(layer).__name__}; name the nn.Conv2d that reads the image")
        return name, layer
    for path, layer in model.named_modules():
        if type(layer) is nn.Conv2d:
            if layer.in_channels != in_channels:
                raise ConfigError(
                    f"the first convolution {path} reads {layer.in_channels} channels, not {in_channels}; "
                    "pass in_channels= or input_layer= (the convolution that reads the image)"
                )
            return path, layer
    raise ConfigError(f"{type(model).__name__} has no nn.Conv2d to read the image; bcosify needs a convolutional stem or patch embedding")


def _widen_input_layer(conv: nn.Conv2d, normalization: Normalization | None) -> nn.Conv2d:
    """The ``[x, 1 - x]`` version of ``conv`` (see the module docstring)."""
    if conv.groups != 1:
        raise ConfigError(f"the input convolution has groups={conv.groups}; bcosify widens only a one-group input layer")
    weight = conv.weight.detach()
    channels = conv.in_channels
    if normalization is None:
        on_x, on_inverse = weight, torch.zeros_like(weight)
    else:
        mean, std = (torch.as_tensor(v, dtype=torch.float64).reshape(-1) for v in normalization)
        if mean.numel() not in (1, channels) or std.numel() not in (1, channels) or bool((std <= 0).any()):
            raise ConfigError(
                f"normalization needs {channels} means and {channels} positive standard deviations, got {normalization!r}"
            )
        mean = mean.expand(channels).view(1, -1, 1, 1)
        std = std.expand(channels).view(1, -1, 1, 1)
        wide = weight.double()
        on_x = (wide * (1 - mean) / std).to(weight.dtype)
        on_inverse = (-wide * mean / std).to(weight.dtype)
    widened = nn.Conv2d(
        2 * channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, conv.dilation,
        1, conv.bias is not None, conv.padding_mode, device=weight.device, dtype=weight.dtype,
    )  # fmt: skip
    with torch.no_grad():
        widened.weight.copy_(torch.cat([on_x, on_inverse], dim=1))
        if conv.bias is not None:
            widened.bias.copy_(conv.bias)
    widened.train(conv.training)
    return widened


def _default_normalization(model: nn.Module) -> tuple[tuple[float, ...], tuple[float, ...]]:
    config = getattr(model, "pretrained_cfg", None)  # timm models carry their own
    if isinstance(config, dict) and config.get("mean") is not None and config.get("std") is not None:
        return tuple(float(v) for v in config["mean"]), tuple(float(v) for v in config["std"])
    return IMAGENET_NORMALIZATION


def _set_submodule(model: nn.Module, path: str, module: nn.Module) -> None:
    parent, _, name = path.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, name, module)


def bcosify(
    model: nn.Module,
    b: float = 2,
    *,
    bias: str = "keep",
    normalization: Normalization | str | None = "auto",
    logit_bias: float | str | None = "auto",
    max_pool: str = "keep",
    in_channels: int = 3,
    input_layer: str | None = None,
    trusted: Iterable[type[nn.Module]] = (),
    report: bool = False,
) -> BcosifiedModel:
    """Convert a torchvision or timm model into a B-cos model that inherits its weights.

    Args:
        model: the standard model (not changed; a converted copy is returned).
        b: the exponent B of every B-cos layer. With ``b=1`` (and ``bias="keep"``) the result
            computes the original's logits on ``[x, 1 - x]`` images; raise it while fine-tuning
            (:func:`set_b`) or start at the target B.
        bias: ``"keep"`` (every additive term stays: exact at ``b=1``, contributions do not sum to
            the logit) or ``"remove"`` (bias-free and uncentred: completeness holds; the outputs
            change, fine-tuning recovers them). See the module docstring.
        normalization: ``(mean, std)`` the original expects its inputs normalised with, folded
            exactly into the input layer; ``"auto"``: a timm model's ``pretrained_cfg``, else
            torchvision's ImageNet values; None: the original takes images in [0, 1].
        logit_bias: the constant the ``LogitLayer`` adds. ``"auto"``: with ``bias="remove"`` the
            mean of the removed classifier bias, otherwise none.
        max_pool: ``"keep"`` max pooling (exact) or ``"avg"`` (average pooling of the same window,
            as the B-cosification paper's ResNets and DenseNets).
        in_channels: the channels of the original's input (the widened layer reads twice as many).
        input_layer: dotted name of the convolution that reads the image (default: the first
            ``nn.Conv2d`` of the model).
        trusted: your own container classes whose forward combines their children linearly.
        report: print the replacement report (it is always kept as ``result.bcosify_report``).

    Returns:
        a :class:`BcosifiedModel` (``model.explain``, explanation mode, ``get_classifier`` ...),
        in the original's train/eval mode, taking 6-channel ``[x, 1 - x]`` images
        (``bcos.data.transforms.AddInverse``).

    Raises:
        UnsupportedModuleError: a module it cannot convert (one line with its path and type).
        ConfigError: a bad option value.
    """
    if not isinstance(model, nn.Module):
        raise ConfigError(f"bcosify expects a torch.nn.Module, got {type(model).__name__}")
    if isinstance(model, BcosifiedModel):
        raise ConfigError("the model is already B-cosified; change its B with bcos.bcosification.set_b(model, b)")
    b = check_b(b)
    if bias not in BIAS_CHOICES:
        raise unknown_name("bias option", str(bias), BIAS_CHOICES)
    if max_pool not in MAX_POOL_CHOICES:
        raise unknown_name("max_pool option", str(max_pool), MAX_POOL_CHOICES)
    if normalization == "auto":
        normalization = _default_normalization(model)
    elif isinstance(normalization, str):
        raise ConfigError(f"normalization must be 'auto', None or (mean, std), got {normalization!r}")
    trusted_names = set(TRUSTED_CONTAINERS) | {_qualname(t) for t in trusted}

    if type(model) in (nn.Conv2d, nn.Linear):
        raise ConfigError("bcosify converts whole models, not single layers; use BcosifiedConv2d/BcosifiedLinear directly")
    converted = copy.deepcopy(model)
    input_path, stem = _find_input_layer(converted, input_layer, in_channels)
    walk = _Walk(b, bias == "keep", max_pool, trusted_names)
    _set_submodule(converted, input_path, _widen_input_layer(stem, normalization))
    walk.module(converted, "", in_gate=False)  # refuses an unknown model class in one line
    for index, change in enumerate(walk.changes):  # name the input layer's special treatment
        if change.path == input_path:
            note = f"{change.note}, widened to [x, 1-x] ({2 * in_channels} channels)"
            note += ", input normalisation folded in" if normalization is not None else ""
            walk.changes[index] = dataclasses.replace(change, note=note)

    if logit_bias == "auto":
        logit_bias = None
        if bias == "remove" and walk.last_affine is not None and walk.last_affine[2] is not None:
            logit_bias = float(walk.last_affine[2].mean())
    elif logit_bias is not None and not isinstance(logit_bias, int | float):
        raise ConfigError(f"logit_bias must be a number, None or 'auto', got {logit_bias!r}")
    norm_spec = None if normalization is None else (tuple(map(float, normalization[0])), tuple(map(float, normalization[1])))
    summary = BcosifyReport(
        b=b, bias=bias, normalization=norm_spec, input_layer=input_path,
        logit_bias=None if logit_bias is None else float(logit_bias), changes=walk.changes,
    )  # fmt: skip
    result = BcosifiedModel(converted, logit_bias=summary.logit_bias, report=summary, input_layer=input_path)
    result.train(model.training)
    if report:
        print(summary)
    return result
