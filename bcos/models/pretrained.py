"""The 34 published ImageNet models as functions, named as in the B-cos-v2 reference.

``bcos.models.pretrained.resnet18(pretrained=True)`` is the reference's call and equals
``bcos.create_model("resnet18", pretrained=True)``; the keyword arguments are the same as
:func:`bcos.models.registry.create_model`'s (e.g. ``num_classes=10`` for a fresh classifier).
The returned model has ``transform`` (its evaluation preprocessing) and ``pretrained_config``.
``hubconf.py`` exposes these functions to ``torch.hub``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from bcos.models.registry import create_model, get_pretrained_config, list_models

__all__ = ["list_available"]

EntryPoint = Callable[..., nn.Module]


def _entrypoint(function: EntryPoint) -> EntryPoint:
    """Register ``function`` in ``__all__`` and append its registry facts to its docstring."""
    config = get_pretrained_config(function.__name__)
    transform = config.transform
    facts = [f"Trained with the experiment config ``{config.source}``."]
    if config.weights is not None:
        facts.append(f"Weights: ``{config.weights.file_name}``.")
    if config.top1 is not None:
        facts.append(f"ImageNet accuracy: top-1 {config.top1:.3f}%, top-5 {config.top5:.3f}%.")
    facts.append(f"Parameters: {config.num_params:,} ({config.num_params / 1e6:.2f}M).")
    inputs = "AddInverse, 6 channels" if transform.is_bcos else "ImageNet mean/std, 3 channels"
    facts.append(
        f"Evaluation transform: resize {transform.resize_size}, center crop {transform.crop_size}, {inputs}."
    )
    function.__doc__ = (
        f"{function.__doc__}\n\n"
        + "\n".join(f"    {line}" for line in facts)
        + "\n\n    Args:\n        pretrained: load the published weights (cached, else downloaded)."
        "\n        progress: show a progress bar while downloading."
        "\n        **kwargs: see :func:`bcos.models.registry.create_model` "
        "(``num_classes``, ``weights``, builder overrides).\n"
    )
    __all__.append(function.__name__)
    return function


def list_available() -> list[str]:
    """Names of all entry points (the reference's function; see also :func:`bcos.list_models`)."""
    return list_models()


@_entrypoint
def resnet18(pretrained: bool = False, progress: bool = True, **kwargs: Any) -> nn.Module:
    """B-cos ResNet-18."""
    return create_model("resnet18", pretrained, progress=progress, **kwargs)


@_entrypoint
def resnet34(pretrained: bool = False, progress: bool = True, **kwargs: Any) -> nn.Module:
    """B-cos ResNet-34."""
    return create_model("resnet34", pretrained, progress=progress, **kwargs)


@_entrypoint
def resnet50(pretrained: bool = False, progress: bool = True, **kwargs: Any) -> nn.Module:
    """B-cos ResNet-50."""
    return create_model("resnet50", pretrained, progress=progress, **kwargs)


@_entrypoint
def resnet101(pretrained: bool = False, progress: bool = True, **kwargs: Any) -> nn.Module:
    """B-cos ResNet-101."""
    return create_model("resnet101", pretrained, progress=progress, **kwargs)


@_entrypoint
def resnet152(pretrained: bool = False, progress: bool = True, **kwargs: Any) -> nn.Module:
    """B-cos ResNet-152."""
    return create_model("resnet152", pretrained, progress=progress, **kwargs)


@_entrypoint
def resnext50_32x4d(pretrained: bool = False, progress: bool = True, **kwargs: Any) -> nn.Module:
    """B-cos ResNeXt-50 32x4d."""
    return create_model("resnext50_32x4d", pretrained, progress=progress, **kwargs)


@_entrypoint
def densenet121(pretrained: bool = False, progress: bool = True, **kwargs: Any) -> nn.Module:
    """B-cos DenseNet-121."""
    return create_model("densenet121", pretrained, progress=progress, **kwargs)


@_entrypoint
def densenet161(pretrained: bool = False, progress: bool = True, **kwargs: Any) -> nn.Module:
    """B-cos DenseNet-161."""
    return create_model("densenet161", pretrained, progress=progress, **kwargs)


@_entrypoint
def densenet169(pretrained: bool = False, progress: bool = True, **kwargs: Any) -> nn.Module:
    """B-cos DenseNet-169."""
    return create_model("densenet169", pretrained, progress=progress, **kwargs)


@_entrypoint
def densenet201(pretrained: bool = False, progress: bool = True, **kwargs: Any) -> nn.Module:
    """B-cos DenseNet-201."""
    return create_model("densenet201", pretrained, progress=progress, **kwargs)


@_entrypoint
def vgg11_bnu(pretrained: bool = False, progress: bool = True, **kwargs: Any) -> nn.Module:
    """B-cos VGG-11 with uncentered batch norm (BNU)."""
    return create_model("vgg11_bnu", pretrained, progress=progress, **kwargs)


@_entrypoint
def convnext_tiny(pretrained: bool = False, progress: bool = True, **kwargs: Any) -> nn.Module:
    """B-cos ConvNeXt-T with position norm; epoch 596 (EMA) of 600, trained with AMP."""
    return create_model("convnext_tiny", pretrained, progress=progress, **kwargs)


@_entrypoint
def convnext_base(pretrained: bool = False, progress: bool = True, **kwargs: Any) -> nn.Module:
    """B-cos ConvNeXt-B with position norm; epoch 581 (non-EMA) of 600, trained with AMP."""
    return create_model("convnext_base", pretrained, progress=progress, **kwargs)


@_entrypoint
def convnext_tiny_bnu(pretrained: bool = False, progress: bool = True, **kwargs: Any) -> nn.Module:
    """B-cos ConvNeXt-T with uncentered batch norm; epoch 456 (EMA), trained with AMP."""
    return create_model("convnext_tiny_bnu", pretrained, progress=progress, **kwargs)


@_entrypoint
def convnext_base_bnu(pretrained: bool = False, progress: bool = True, **kwargs: Any) -> nn.Module:
    """B-cos ConvNeXt-B with uncentered batch norm; epoch 541 (EMA), trained with AMP."""
    return create_model("convnext_base_bnu", pretrained, progress=progress, **kwargs)


@_entrypoint
def densenet121_long(pretrained: bool = False, progress: bool = True, **kwargs: Any) -> nn.Module:
    """B-cos DenseNet-121 trained 600 epochs; epoch 596 (non-EMA), AMP."""
    return create_model("densenet121_long", pretrained, progress=progress, **kwargs)


@_entrypoint
def resnet50_long(pretrained: bool = False, progress: bool = True, **kwargs: Any) -> nn.Module:
    """B-cos ResNet-50 trained 600 epochs; epoch 580 (non-EMA), AMP."""
    return create_model("resnet50_long", pretrained, progress=progress, **kwargs)


@_entrypoint
def resnet152_long(pretrained: bool = False, progress: bool = True, **kwargs: Any) -> nn.Module:
    """B-cos ResNet-152 trained 600 epochs; epoch 433 (non-EMA), AMP."""
    return create_model("resnet152_long", pretrained, progress=progress, **kwargs)


@_entrypoint
def simple_vit_ti_patch16_224(
    pretrained: bool = False, progress: bool = True, **kwargs: Any
) -> nn.Module:
    """B-cos Simple ViT-Ti with 16x16 patches at 224x224."""
    return create_model("simple_vit_ti_patch16_224", pretrained, progress=progress, **kwargs)


@_entrypoint
def simple_vit_s_patch16_224(
    pretrained: bool = False, progress: bool = True, **kwargs: Any
) -> nn.Module:
    """B-cos Simple ViT-S with 16x16 patches at 224x224."""
    return create_model("simple_vit_s_patch16_224", pretrained, progress=progress, **kwargs)


@_entrypoint
def simple_vit_b_patch16_224(
    pretrained: bool = False, progress: bool = True, **kwargs: Any
) -> nn.Module:
    """B-cos Simple ViT-B with 16x16 patches at 224x224."""
    return create_model("simple_vit_b_patch16_224", pretrained, progress=progress, **kwargs)


@_entrypoint
def simple_vit_l_patch16_224(
    pretrained: bool = False, progress: bool = True, **kwargs: Any
) -> nn.Module:
    """B-cos Simple ViT-L with 16x16 patches at 224x224."""
    return create_model("simple_vit_l_patch16_224", pretrained, progress=progress, **kwargs)


@_entrypoint
def vitc_ti_patch1_14(pretrained: bool = False, progress: bool = True, **kwargs: Any) -> nn.Module:
    """B-cos Simple ViT-Ti with a conv stem (224x224 to 14x14 tokens)."""
    return create_model("vitc_ti_patch1_14", pretrained, progress=progress, **kwargs)


@_entrypoint
def vitc_s_patch1_14(pretrained: bool = False, progress: bool = True, **kwargs: Any) -> nn.Module:
    """B-cos Simple ViT-S with a conv stem (224x224 to 14x14 tokens)."""
    return create_model("vitc_s_patch1_14", pretrained, progress=progress, **kwargs)


@_entrypoint
def vitc_b_patch1_14(pretrained: bool = False, progress: bool = True, **kwargs: Any) -> nn.Module:
    """B-cos Simple ViT-B with a conv stem (224x224 to 14x14 tokens)."""
    return create_model("vitc_b_patch1_14", pretrained, progress=progress, **kwargs)


@_entrypoint
def vitc_l_patch1_14(pretrained: bool = False, progress: bool = True, **kwargs: Any) -> nn.Module:
    """B-cos Simple ViT-L with a conv stem (224x224 to 14x14 tokens)."""
    return create_model("vitc_l_patch1_14", pretrained, progress=progress, **kwargs)


@_entrypoint
def standard_simple_vit_ti_patch16_224(
    pretrained: bool = False, progress: bool = True, **kwargs: Any
) -> nn.Module:
    """Standard (not B-cos) Simple ViT-Ti with 16x16 patches at 224x224."""
    return create_model("standard_simple_vit_ti_patch16_224", pretrained, progress=progress, **kwargs)


@_entrypoint
def standard_simple_vit_s_patch16_224(
    pretrained: bool = False, progress: bool = True, **kwargs: Any
) -> nn.Module:
    """Standard (not B-cos) Simple ViT-S with 16x16 patches at 224x224."""
    return create_model("standard_simple_vit_s_patch16_224", pretrained, progress=progress, **kwargs)


@_entrypoint
def standard_simple_vit_b_patch16_224(
    pretrained: bool = False, progress: bool = True, **kwargs: Any
) -> nn.Module:
    """Standard (not B-cos) Simple ViT-B with 16x16 patches at 224x224."""
    return create_model("standard_simple_vit_b_patch16_224", pretrained, progress=progress, **kwargs)


@_entrypoint
def standard_simple_vit_l_patch16_224(
    pretrained: bool = False, progress: bool = True, **kwargs: Any
) -> nn.Module:
    """Standard (not B-cos) Simple ViT-L with 16x16 patches at 224x224."""
    return create_model("standard_simple_vit_l_patch16_224", pretrained, progress=progress, **kwargs)


@_entrypoint
def standard_vitc_ti_patch1_14(
    pretrained: bool = False, progress: bool = True, **kwargs: Any
) -> nn.Module:
    """Standard (not B-cos) Simple ViT-Ti with a conv stem (224x224 to 14x14 tokens)."""
    return create_model("standard_vitc_ti_patch1_14", pretrained, progress=progress, **kwargs)


@_entrypoint
def standard_vitc_s_patch1_14(
    pretrained: bool = False, progress: bool = True, **kwargs: Any
) -> nn.Module:
    """Standard (not B-cos) Simple ViT-S with a conv stem (224x224 to 14x14 tokens)."""
    return create_model("standard_vitc_s_patch1_14", pretrained, progress=progress, **kwargs)


@_entrypoint
def standard_vitc_b_patch1_14(
    pretrained: bool = False, progress: bool = True, **kwargs: Any
) -> nn.Module:
    """Standard (not B-cos) Simple ViT-B with a conv stem (224x224 to 14x14 tokens)."""
    return create_model("standard_vitc_b_patch1_14", pretrained, progress=progress, **kwargs)


@_entrypoint
def standard_vitc_l_patch1_14(
    pretrained: bool = False, progress: bool = True, **kwargs: Any
) -> nn.Module:
    """Standard (not B-cos) Simple ViT-L with a conv stem (224x224 to 14x14 tokens)."""
    return create_model("standard_vitc_l_patch1_14", pretrained, progress=progress, **kwargs)
