"""Transform presets: the image pipelines of the reference configs, as small printable objects.

Every preset takes keyword arguments only, records them in ``args``, and supports
``repr(preset)``, ``preset.__to_config__()`` (plain data for the run's config file) and
``preset.with_args(**changes)`` (a new preset with some arguments changed). ``is_bcos=True``
keeps images in [0, 1] and appends :class:`~bcos.data.transforms.AddInverse` (6 channels);
otherwise the images are normalised with ``mean``/``std`` (3 channels).

The evaluation presets (:class:`ImageNetClassificationPresetEval`,
:class:`CIFAR10ClassificationPresetTest`) also offer ``resize``/``center_crop`` (the scaling
steps), ``no_scale(img)``, ``transform_with_options(img, center_crop=..., resize=...)``,
``output_size`` and ``rescaled(divisor)`` (the same pipeline producing images ``divisor`` times
smaller, used by the localisation analysis to fit a grid of images into one input).

This module does not import Lightning.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torchvision.transforms import InterpolationMode, autoaugment
from torchvision.transforms import transforms as T

from bcos.data.transforms import AddInverse
from bcos.errors import ConfigError, unknown_name

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "CIFAR10_MEAN",
    "CIFAR10_STD",
    "ClassificationPreset",
    "EvalPreset",
    "ImageNetClassificationPresetTrain",
    "ImageNetClassificationPresetEval",
    "CIFAR10ClassificationPresetTrain",
    "CIFAR10ClassificationPresetTest",
    "eval_transform",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CIFAR10_MEAN = (0.49139968, 0.48215841, 0.44653091)
CIFAR10_STD = (0.24703223, 0.24348513, 0.26158784)

CIFAR10_IMAGE_SIZE = 32

# "ra", "ta_wide", "augmix", plus torchvision's AutoAugment policies
AUTO_AUGMENT_POLICIES = ("ra", "ta_wide", "augmix", *(p.value for p in autoaugment.AutoAugmentPolicy))


def _interpolation(value: InterpolationMode | str) -> InterpolationMode:
    if isinstance(value, InterpolationMode):
        return value
    names = {m.value: m for m in InterpolationMode}
    key = str(value).lower().removeprefix("interpolationmode.")
    if key not in names:
        raise unknown_name("interpolation", str(value), names)
    return names[key]


def _size(name: str, value: Any, optional: bool = False) -> int | tuple[int, int] | None:
    if value is None and optional:
        return None
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    if (
        isinstance(value, Sequence)
        and len(value) == 2
        and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value)
    ):
        return (int(value[0]), int(value[1]))
    raise ConfigError(f"{name} must be a positive int or a (height, width) pair, got {value!r}")


def _triple(name: str, value: Any) -> tuple[float, float, float]:
    try:
        result = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        result = ()
    if len(result) != 3:
        raise ConfigError(f"{name} must hold 3 numbers (one per RGB channel), got {value!r}")
    return result  # type: ignore[return-value]


def _probability(name: str, value: Any) -> float:
    if not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise ConfigError(f"{name} must be a probability in [0, 1], got {value!r}")
    return float(value)


def _final_steps(is_bcos: bool, mean: tuple, std: tuple) -> list:
    return [AddInverse()] if is_bcos else [T.Normalize(mean=mean, std=std)]


class ClassificationPreset:
    """Base of all presets: the keyword arguments, and the ``Compose`` of steps they describe.

    The steps are built on first use, so that copying configs that hold presets stays cheap.
    """

    def __init__(self, args: dict[str, Any]) -> None:
        self.args = args
        self._compose: T.Compose | None = None

    def _steps(self) -> list:
        """The transform steps, in order."""
        raise NotImplementedError

    @property
    def transforms(self) -> T.Compose:
        """The steps as a torchvision ``Compose``."""
        if self._compose is None:
            self._compose = T.Compose(self._steps())
        return self._compose

    def __call__(self, img: Any) -> torch.Tensor:
        return self.transforms(img)

    def with_args(self, **changes: Any) -> ClassificationPreset:
        """A new preset of the same class with ``changes`` applied to the recorded arguments."""
        unknown = set(changes) - set(self.args)
        if unknown:
            raise unknown_name(f"{type(self).__name__} argument", sorted(unknown)[0], self.args)
        return type(self)(**{**self.args, **changes})

    def __getstate__(self) -> dict[str, Any]:
        # copies and pickles carry only the arguments; the steps are rebuilt on use
        return {**self.__dict__, "_compose": None}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.transforms.transforms!r})"

    def __rich_repr__(self):  # rich's pretty printer
        yield "transforms", self.transforms.transforms

    def __to_config__(self) -> dict[str, Any]:
        """Plain data describing the preset, for the run's written config."""
        result: dict[str, Any] = {"transform": repr(self)}
        for key, value in self.args.items():
            result[key] = str(value) if isinstance(value, InterpolationMode) else value
        return result

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and self.args == other.args  # type: ignore[attr-defined]

    __hash__ = None  # type: ignore[assignment]


class EvalPreset(ClassificationPreset):
    """An evaluation preset: optional Resize(``resize_size``) and CenterCrop(``crop_size``) first."""

    def _other_steps(self) -> list:
        """The steps after resizing and cropping."""
        raise NotImplementedError

    def _steps(self) -> list:
        steps: list = []
        if self.args["resize_size"] is not None:
            steps.append(T.Resize(self.args["resize_size"], interpolation=self.args["interpolation"]))
        if self.args["crop_size"] is not None:
            steps.append(T.CenterCrop(self.args["crop_size"]))
        return steps + self._other_steps()

    def _num_scaling_steps(self) -> int:
        return (self.args["resize_size"] is not None) + (self.args["crop_size"] is not None)

    @property
    def resize(self) -> T.Resize | None:
        """The resize step (None when the preset does not resize)."""
        return self.transforms.transforms[0] if self.args["resize_size"] is not None else None

    @property
    def center_crop(self) -> T.CenterCrop | None:
        """The center-crop step (None when the preset does not crop)."""
        if self.args["crop_size"] is None:
            return None
        return self.transforms.transforms[self._num_scaling_steps() - 1]

    @property
    def output_size(self) -> int | tuple[int, int]:
        """The spatial size of the images this preset produces (for inputs of the expected size)."""
        raise NotImplementedError

    def no_scale(self, img: Any) -> torch.Tensor:
        """Apply every step except the resize and center crop."""
        x = img
        for step in self.transforms.transforms[self._num_scaling_steps() :]:
            x = step(x)
        return x

    def transform_with_options(self, img: Any, center_crop: bool = True, resize: bool = True) -> torch.Tensor:
        """Apply the preset, optionally skipping the resize and/or the center crop."""
        x = img
        if resize and self.resize is not None:
            x = self.resize(x)
        if center_crop and self.center_crop is not None:
            x = self.center_crop(x)
        return self.no_scale(x)

    def rescaled(self, divisor: int) -> EvalPreset:
        """The same pipeline producing images ``divisor`` times smaller (sizes floor-divided)."""
        raise NotImplementedError


class ImageNetClassificationPresetTrain(ClassificationPreset):
    """RandomResizedCrop → hflip → optional auto-augment policy → float tensor → normalise or
    AddInverse, with optional RandomErasing (before AddInverse, after normalisation)."""

    def __init__(
        self,
        *,
        crop_size: int | tuple[int, int],
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        interpolation: InterpolationMode | str = InterpolationMode.BILINEAR,
        hflip_prob: float = 0.5,
        auto_augment_policy: str | None = None,
        ra_magnitude: int = 9,
        augmix_severity: int = 3,
        random_erase_prob: float = 0.0,
        is_bcos: bool = False,
    ) -> None:
        if auto_augment_policy is not None and auto_augment_policy not in AUTO_AUGMENT_POLICIES:
            raise unknown_name("auto_augment_policy", str(auto_augment_policy), AUTO_AUGMENT_POLICIES)
        super().__init__(
            dict(
                crop_size=_size("crop_size", crop_size),
                mean=_triple("mean", mean),
                std=_triple("std", std),
                interpolation=_interpolation(interpolation),
                hflip_prob=_probability("hflip_prob", hflip_prob),
                auto_augment_policy=auto_augment_policy,
                ra_magnitude=ra_magnitude,
                augmix_severity=augmix_severity,
                random_erase_prob=_probability("random_erase_prob", random_erase_prob),
                is_bcos=bool(is_bcos),
            )
        )

    def _steps(self) -> list:
        a = self.args
        steps: list = [T.RandomResizedCrop(a["crop_size"], interpolation=a["interpolation"])]
        if a["hflip_prob"] > 0:
            steps.append(T.RandomHorizontalFlip(a["hflip_prob"]))
        if a["auto_augment_policy"] is not None:
            steps.append(self._policy())
        steps += [T.PILToTensor(), T.ConvertImageDtype(torch.float)]
        if not a["is_bcos"]:
            steps.append(T.Normalize(mean=a["mean"], std=a["std"]))
        if a["random_erase_prob"] > 0:
            steps.append(T.RandomErasing(p=a["random_erase_prob"]))
        if a["is_bcos"]:
            steps.append(AddInverse())
        return steps

    def _policy(self) -> torch.nn.Module:
        name, interpolation = self.args["auto_augment_policy"], self.args["interpolation"]
        if name == "ra":
            return autoaugment.RandAugment(interpolation=interpolation, magnitude=self.args["ra_magnitude"])
        if name == "ta_wide":
            return autoaugment.TrivialAugmentWide(interpolation=interpolation)
        if name == "augmix":
            return autoaugment.AugMix(interpolation=interpolation, severity=self.args["augmix_severity"])
        return autoaugment.AutoAugment(autoaugment.AutoAugmentPolicy(name), interpolation=interpolation)


class ImageNetClassificationPresetEval(EvalPreset):
    """Resize(``resize_size``) → CenterCrop(``crop_size``) → float tensor → AddInverse or normalise."""

    def __init__(
        self,
        *,
        crop_size: int | tuple[int, int],
        resize_size: int | tuple[int, int] = 256,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        interpolation: InterpolationMode | str = InterpolationMode.BILINEAR,
        is_bcos: bool = False,
    ) -> None:
        super().__init__(
            dict(
                crop_size=_size("crop_size", crop_size),
                resize_size=_size("resize_size", resize_size),
                mean=_triple("mean", mean),
                std=_triple("std", std),
                interpolation=_interpolation(interpolation),
                is_bcos=bool(is_bcos),
            )
        )

    def _other_steps(self) -> list:
        a = self.args
        to_float = [T.PILToTensor(), T.ConvertImageDtype(torch.float)]
        return to_float + _final_steps(a["is_bcos"], a["mean"], a["std"])

    @property
    def output_size(self) -> int | tuple[int, int]:
        return self.args["crop_size"]

    def rescaled(self, divisor: int) -> ImageNetClassificationPresetEval:
        return self.with_args(
            crop_size=_divide(self.args["crop_size"], divisor),
            resize_size=_divide(self.args["resize_size"], divisor),
        )


class CIFAR10ClassificationPresetTrain(ClassificationPreset):
    """hflip → RandomCrop(``crop_size``, ``padding``) → ToTensor → AddInverse or normalise."""

    def __init__(
        self,
        *,
        mean: Sequence[float] = CIFAR10_MEAN,
        std: Sequence[float] = CIFAR10_STD,
        is_bcos: bool = False,
        crop_size: int | tuple[int, int] = CIFAR10_IMAGE_SIZE,
        padding: int = 4,
        hflip_prob: float = 0.5,
    ) -> None:
        if not isinstance(padding, int) or padding < 0:
            raise ConfigError(f"padding must be an integer >= 0, got {padding!r}")
        super().__init__(
            dict(
                mean=_triple("mean", mean),
                std=_triple("std", std),
                is_bcos=bool(is_bcos),
                crop_size=_size("crop_size", crop_size),
                padding=padding,
                hflip_prob=_probability("hflip_prob", hflip_prob),
            )
        )

    def _steps(self) -> list:
        a = self.args
        steps: list = [T.RandomHorizontalFlip(a["hflip_prob"])] if a["hflip_prob"] > 0 else []
        steps += [T.RandomCrop(a["crop_size"], padding=a["padding"]), T.ToTensor()]
        return steps + _final_steps(a["is_bcos"], a["mean"], a["std"])


class CIFAR10ClassificationPresetTest(EvalPreset):
    """ToTensor → AddInverse or normalise; optionally preceded by Resize and CenterCrop.

    ``resize_size``/``crop_size`` default to None (CIFAR images are used at their 32x32 size);
    :meth:`rescaled` sets both so that localisation grids of CIFAR images fit one input.
    """

    def __init__(
        self,
        *,
        mean: Sequence[float] = CIFAR10_MEAN,
        std: Sequence[float] = CIFAR10_STD,
        is_bcos: bool = False,
        resize_size: int | tuple[int, int] | None = None,
        crop_size: int | tuple[int, int] | None = None,
        interpolation: InterpolationMode | str = InterpolationMode.BILINEAR,
    ) -> None:
        super().__init__(
            dict(
                mean=_triple("mean", mean),
                std=_triple("std", std),
                is_bcos=bool(is_bcos),
                resize_size=_size("resize_size", resize_size, optional=True),
                crop_size=_size("crop_size", crop_size, optional=True),
                interpolation=_interpolation(interpolation),
            )
        )

    def _other_steps(self) -> list:
        a = self.args
        return [T.ToTensor(), *_final_steps(a["is_bcos"], a["mean"], a["std"])]

    @property
    def output_size(self) -> int | tuple[int, int]:
        for key in ("crop_size", "resize_size"):
            if self.args[key] is not None:
                return self.args[key]
        return CIFAR10_IMAGE_SIZE

    def rescaled(self, divisor: int) -> CIFAR10ClassificationPresetTest:
        size = _divide(self.output_size, divisor)
        return self.with_args(resize_size=size, crop_size=size)


def eval_transform(model_or_spec: Any) -> ImageNetClassificationPresetEval:
    """The evaluation preset of a registry model, built from its plain-data spec.

    Takes a model made by ``bcos.create_model`` (its ``pretrained_config.transform``) or the
    :class:`bcos.models.registry.EvalTransformSpec` itself::

        model = bcos.create_model("resnet50", pretrained=True)
        x = eval_transform(model)(image)[None]   # [1, 6, 224, 224]
    """
    spec = getattr(getattr(model_or_spec, "pretrained_config", None), "transform", model_or_spec)
    if not all(hasattr(spec, key) for key in ("resize_size", "crop_size", "is_bcos")):
        raise ConfigError(
            f"eval_transform() takes a model from bcos.create_model or its pretrained_config.transform, "
            f"got {type(model_or_spec).__name__}"
        )
    return ImageNetClassificationPresetEval(crop_size=spec.crop_size, resize_size=spec.resize_size, is_bcos=spec.is_bcos)


def _divide(size: int | tuple[int, int], divisor: int) -> int | tuple[int, int]:
    if not isinstance(divisor, int) or divisor < 1:
        raise ConfigError(f"rescaled() needs a positive integer divisor, got {divisor!r}")
    result = size // divisor if isinstance(size, int) else (size[0] // divisor, size[1] // divisor)
    if min(result if isinstance(result, tuple) else (result,)) < 1:
        raise ConfigError(f"cannot divide image size {size} by {divisor}: the result would be empty")
    return result
