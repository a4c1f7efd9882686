"""The standard models bcosify starts from, by name: torchvision's and timm's classifiers.

``load_source_model("resnet50")`` builds torchvision's ResNet-50 with its published weights
(downloaded once into the torch hub cache when the machine is online); ``"timm/vit_small_patch16_224"``
(or any name only timm has) builds the timm model with its published weights (Hugging Face hub).
``weights=FILE`` loads a local state dict instead and needs no network; a download that is needed
but impossible ends in one line naming ``--weights FILE``. timm is an optional extra
(``pip install "bcos[timm]"``).
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any

from torch import nn

from bcos.checkpoint_io import load_state_dict_file, load_state_dict_into
from bcos.errors import BcosError, ConfigError, DataNotFoundError, unknown_name
from bcos.models.weights import hub_checkpoint_dir, is_unwritable, unwritable_cache_error

__all__ = ["TIMM_PREFIX", "TORCHVISION_PREFIX", "resolve_source", "load_source_model", "replace_classifier"]

TIMM_PREFIX = "timm/"
TORCHVISION_PREFIX = "torchvision/"


def _torchvision_names() -> list[str]:
    import torchvision.models

    return torchvision.models.list_models(module=torchvision.models)


def _timm_available() -> bool:
    return importlib.util.find_spec("timm") is not None


def _timm_names() -> list[str]:
    import timm

    return timm.list_models()


def _need_timm(name: str) -> None:
    if not _timm_available():
        raise ConfigError(f"{name!r} is a timm model and timm is not installed; install the extra: pip install 'bcos[timm]'")


def resolve_source(name: str) -> tuple[str, str]:
    """``(library, architecture)`` of a source model name: ``"torchvision"`` or ``"timm"``.

    ``timm/NAME`` and ``torchvision/NAME`` choose the library; a bare name is torchvision's when
    torchvision has it (``resnet18``), else timm's.
    """
    if name.startswith(TIMM_PREFIX):
        arch = name[len(TIMM_PREFIX):]
        _need_timm(name)
        if arch not in _timm_names():
            raise unknown_name("timm model", arch, _timm_names())
        return "timm", arch
    if name.startswith(TORCHVISION_PREFIX):
        arch = name[len(TORCHVISION_PREFIX):]
        if arch not in _torchvision_names():
            raise unknown_name("torchvision classification model", arch, _torchvision_names())
        return "torchvision", arch
    if name in _torchvision_names():
        return "torchvision", name
    if _timm_available() and name in _timm_names():
        return "timm", name
    choices = _torchvision_names() + ([f"{TIMM_PREFIX}{n}" for n in _timm_names()] if _timm_available() else [])
    hint = "" if _timm_available() else " (timm models need: pip install 'bcos[timm]')"
    raise unknown_name("torchvision or timm model", name, choices, hint=hint.strip())


def _is_download_failure(error: BaseException) -> bool:
    """Whether ``error`` comes from fetching the published weights, not from building the model.

    Building errors (bad builder arguments: ``TypeError``, ``ValueError``, ``AssertionError``, a
    ``RuntimeError`` of a mismatched state dict) pass through as they are.
    """
    if isinstance(error, OSError):  # URLError, ConnectionError, timeouts, huggingface_hub's errors, a full or read-only cache
        return True
    if isinstance(error, RuntimeError) and str(error).startswith("invalid hash value"):  # torch.hub's check of a download
        return True
    return type(error).__module__.partition(".")[0] in ("httpx", "httpx2")  # huggingface_hub's transport errors


def _hf_hub_cache() -> Path | None:
    try:
        from huggingface_hub import constants
    except ImportError:
        return None
    return Path(constants.HF_HUB_CACHE)


def _download_error(name: str, error: BaseException) -> BcosError:
    instead = f"pass --weights FILE (a state dict of {name})"
    if is_unwritable(error):
        what = f"the published weights of {name}"
        hf_cache = _hf_hub_cache() if name.startswith(TIMM_PREFIX) else None
        failed = Path(error.filename) if isinstance(error.filename, (str, os.PathLike)) else None
        if hf_cache is not None and failed is not None and (hf_cache in failed.parents or failed in (hf_cache, *hf_cache.parents)):
            # timm fetches most weights through the Hugging Face hub, whose cache HF_HOME moves
            return unwritable_cache_error(what, hf_cache, error, instead, cache="the Hugging Face hub cache", setting="HF_HOME")
        return unwritable_cache_error(what, hub_checkpoint_dir(), error, instead)
    reason = str(error).splitlines()[0] if str(error) else type(error).__name__
    return DataNotFoundError(
        f"the published weights of {name} could not be downloaded ({type(error).__name__}: {reason[:160]}); "
        f"without a network pass --weights FILE (a state dict of {name}) or --no-pretrained"
    )


def _build(library: str, arch: str, pretrained: bool, kwargs: dict[str, Any]) -> nn.Module:
    name = f"{library}/{arch}"
    try:
        if library == "timm":
            import timm

            return timm.create_model(arch, pretrained=pretrained, **kwargs)
        import torchvision.models

        return torchvision.models.get_model(arch, weights="DEFAULT" if pretrained else None, **kwargs)
    except Exception as error:
        if not pretrained or not _is_download_failure(error):
            raise
        raise _download_error(name, error) from error


def replace_classifier(model: nn.Module, num_classes: int) -> nn.Module:
    """Give ``model`` a new, freshly initialised classifier for ``num_classes`` classes (in place).

    timm models use their ``reset_classifier``; for torchvision models the last ``nn.Linear`` of
    the model (its classifier in every torchvision classification architecture) is replaced.
    """
    if num_classes < 1:
        raise ConfigError(f"num_classes must be at least 1, got {num_classes}")
    if callable(getattr(model, "reset_classifier", None)):
        model.reset_classifier(num_classes)
        return model
    linears = [(path, m) for path, m in model.named_modules() if type(m) is nn.Linear]
    if not linears:
        raise ConfigError(f"{type(model).__name__} has no nn.Linear classifier to replace; build it with num_classes={num_classes}")
    path, last = linears[-1]
    new = nn.Linear(last.in_features, num_classes, bias=last.bias is not None, device=last.weight.device, dtype=last.weight.dtype)
    parent, _, child = path.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, new)
    return model


def load_source_model(
    name: str,
    *,
    pretrained: bool = True,
    weights: str | os.PathLike | None = None,
    num_classes: int | None = None,
    **kwargs: Any,
) -> nn.Module:
    """The standard model ``name`` (see :func:`resolve_source`) in eval mode.

    Weights: a local state dict ``weights`` (of the model as built, i.e. with its original
    classifier), else the published ones when ``pretrained``, else random. ``num_classes``
    replaces the classifier afterwards (:func:`replace_classifier`). ``kwargs`` go to the model's
    builder (e.g. ``img_size=64`` for a timm ViT).
    """
    library, arch = resolve_source(name)
    model = _build(library, arch, pretrained and weights is None, dict(kwargs))
    if weights is not None:
        load_state_dict_into(model, load_state_dict_file(weights), source=weights)
    if num_classes is not None and num_classes != _num_outputs(model):
        replace_classifier(model, num_classes)
    return model.eval()


def _num_outputs(model: nn.Module) -> int | None:
    count = getattr(model, "num_classes", None)
    if isinstance(count, int):
        return count
    linears = [m for m in model.modules() if type(m) is nn.Linear]
    return linears[-1].out_features if linears else None
