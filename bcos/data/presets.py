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
    except TypeError:
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
    """Base of all presets: a ``Compose`` of steps plus the keyword arguments that built it."""

    def __init__(self, args: dict[str, Any], steps: list) -> None:
        self.args = args
        self.transforms = T.Compose(steps)

    def __call__(self, img: Any) -> torch.Tensor:
        return self.transforms(img)

    def with_args(self, **changes: Any) -> ClassificationPreset:
        """A new preset of the same class with ``changes`` applied to the recorded arguments."""
        unknown = set(changes) - set(self.args)
        if unknown:
            raise unknown_name(f"{type(self).__name__} argument", sorted(unknown)[0], self.args)
        return type(self)(**{**self.args, **changes})

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

    __hash__ = None  # type: ignore[assignment]  # mutable-looking value object


class EvalPreset(ClassificationPreset):
    """An evaluation preset whose first two steps are an optional resize and center crop."""

    def __init__(self, args: dict[str, Any], resize: Any, center_crop: Any, rest: list) -> None:
        self._resize = resize
        self._center_crop = center_crop
        scaling = [step for step in (resize, center_crop) if step is not None]
        self._num_scaling_steps = len(scaling)
        super().__init__(args, scaling + rest)

    @property
    def resize(self) -> T.Resize | None:
        """The resize step (None when the preset does not resize)."""
        return self._resize

    @property
    def center_crop(self) -> T.CenterCrop | None:
        """The center-crop step (None when the preset does not crop)."""
        return self._center_crop

    @property
    def output_size(self) -> int | tuple[int, int]:
        """The spatial size of the images this preset produces."""
        raise NotImplementedError

    def no_scale(self, img: Any) -> torch.Tensor:
        """Apply every step except the resize and center crop."""
        x = img
        for step in self.transforms.transforms[self._num_scaling_steps :]:
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
        crop_size = _size("crop_size", crop_size)
        mean, std = _triple("mean", mean), _triple("std", std)
        interpolation = _interpolation(interpolation)
        hflip_prob = _probability("hflip_prob", hflip_prob)
        random_erase_prob = _probability("random_erase_prob", random_erase_prob)
        args = dict(
            crop_size=crop_size,
            mean=mean,
            std=std,
            interpolation=interpolation,
            hflip_prob=hflip_prob,
            auto_augment_policy=auto_augment_policy,
            ra_magnitude=ra_magnitude,
            augmix_severity=augmix_severity,
            random_erase_prob=random_erase_prob,
            is_bcos=bool(is_bcos),
        )
        steps: list = [T.RandomResizedCrop(crop_size, interpolation=interpolation)]
        if hflip_prob > 0:
            steps.append(T.RandomHorizontalFlip(hflip_prob))
        if auto_augment_policy is not None:
            steps.append(self._policy(auto_augment_policy, interpolation, ra_magnitude, augmix_severity))
        steps += [T.PILToTensor(), T.ConvertImageDtype(torch.float)]
        if not is_bcos:
            steps.append(T.Normalize(mean=mean, std=std))
        if random_erase_prob > 0:
            steps.append(T.RandomErasing(p=random_erase_prob))
        if is_bcos:
            steps.append(AddInverse())
        super().__init__(args, steps)

    @staticmethod
    def _policy(name: str, interpolation: InterpolationMode, ra_magnitude: int, augmix_severity: int):
        if name == "ra":
            return autoaugment.RandAugment(interpolation=interpolation, magnitude=ra_magnitude)
        if name == "ta_wide":
            return autoaugment.TrivialAugmentWide(interpolation=interpolation)
        if name == "augmix":
            return autoaugment.AugMix(interpolation=interpolation, severity=augmix_severity)
        if name in AUTO_AUGMENT_POLICIES:
            return autoaugment.AutoAugment(autoaugment.AutoAugmentPolicy(name), interpolation=interpolation)
        raise unknown_name("auto_augment_policy", str(name), AUTO_AUGMENT_POLICIES)


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
        crop_size = _size("crop_size", crop_size)
        resize_size = _size("resize_size", resize_size)
        mean, std = _triple("mean", mean), _triple("std", std)
        interpolation = _interpolation(interpolation)
        args = dict(
            crop_size=crop_size,
            resize_size=resize_size,
            mean=mean,
            std=std,
            interpolation=interpolation,
            is_bcos=bool(is_bcos),
        )
        rest = [T.PILToTensor(), T.ConvertImageDtype(torch.float), *_final_steps(is_bcos, mean, std)]
        super().__init__(
            args, T.Resize(resize_size, interpolation=interpolation), T.CenterCrop(crop_size), rest
        )

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
        crop_size: int = CIFAR10_IMAGE_SIZE,
        padding: int = 4,
        hflip_prob: float = 0.5,
    ) -> None:
        crop_size = _size("crop_size", crop_size)
        mean, std = _triple("mean", mean), _triple("std", std)
        hflip_prob = _probability("hflip_prob", hflip_prob)
        args = dict(mean=mean, std=std, is_bcos=bool(is_bcos), crop_size=crop_size, padding=padding, hflip_prob=hflip_prob)
        steps: list = []
        if hflip_prob > 0:
            steps.append(T.RandomHorizontalFlip(hflip_prob))
        steps += [T.RandomCrop(crop_size, padding=padding), T.ToTensor(), *_final_steps(is_bcos, mean, std)]
        super().__init__(args, steps)


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
        resize_size = _size("resize_size", resize_size, optional=True)
        crop_size = _size("crop_size", crop_size, optional=True)
        mean, std = _triple("mean", mean), _triple("std", std)
        interpolation = _interpolation(interpolation)
        args = dict(
            mean=mean,
            std=std,
            is_bcos=bool(is_bcos),
            resize_size=resize_size,
            crop_size=crop_size,
            interpolation=interpolation,
        )
        resize = None if resize_size is None else T.Resize(resize_size, interpolation=interpolation)
        crop = None if crop_size is None else T.CenterCrop(crop_size)
        super().__init__(args, resize, crop, [T.ToTensor(), *_final_steps(is_bcos, mean, std)])

    @property
    def output_size(self) -> int | tuple[int, int]:
        for key in ("crop_size", "resize_size"):
            if self.args[key] is not None:
                return self.args[key]
        return CIFAR10_IMAGE_SIZE

    def rescaled(self, divisor: int) -> CIFAR10ClassificationPresetTest:
        size = _divide(self.output_size, divisor)
        return self.with_args(resize_size=size, crop_size=size)


def _divide(size: int | tuple[int, int], divisor: int) -> int | tuple[int, int]:
    if not isinstance(divisor, int) or divisor < 1:
        raise ConfigError(f"rescaled() needs a positive integer divisor, got {divisor!r}")
    result = size // divisor if isinstance(size, int) else (size[0] // divisor, size[1] // divisor)
    if min(result if isinstance(result, tuple) else (result,)) < 1:
        raise ConfigError(f"cannot divide image size {size} by {divisor}: the result would be empty")
    return result
