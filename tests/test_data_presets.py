"""Transform presets: output shapes and values, recorded arguments, with_args, eval helpers."""

from __future__ import annotations

import ast
import copy
import importlib.util
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from bcos.data.presets import (
    CIFAR10_MEAN,
    CIFAR10_STD,
    CIFAR10ClassificationPresetTest,
    CIFAR10ClassificationPresetTrain,
    ImageNetClassificationPresetEval,
    ImageNetClassificationPresetTrain,
)
from bcos.data.transforms import AddInverse
from bcos.errors import ConfigError, UnknownNameError


def _image(width: int, height: int, seed: int = 0) -> Image.Image:
    array = np.random.default_rng(seed).integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    return Image.fromarray(array)


def test_imagenet_eval_bcos_shape_and_values():
    preset = ImageNetClassificationPresetEval(crop_size=24, resize_size=32, is_bcos=True)
    out = preset(_image(40, 50))
    assert out.shape == (6, 24, 24) and out.dtype == torch.float32
    assert torch.allclose(out[:3] + out[3:], torch.ones(3, 24, 24))
    assert 0.0 <= out.min() and out.max() <= 1.0


def test_imagenet_eval_standard_is_normalised_three_channel():
    preset = ImageNetClassificationPresetEval(crop_size=24, resize_size=32)
    image = _image(32, 32)
    out = preset(image)
    assert out.shape == (3, 24, 24)
    raw = preset.transform_with_options(image, resize=False, center_crop=True)
    assert raw.shape == (3, 24, 24)
    expected = torch.from_numpy(np.array(image)[4:28, 4:28]).permute(2, 0, 1).float() / 255
    mean = torch.tensor(preset.args["mean"])[:, None, None]
    std = torch.tensor(preset.args["std"])[:, None, None]
    assert torch.allclose(raw, (expected - mean) / std, atol=1e-5)


def test_imagenet_eval_helpers():
    preset = ImageNetClassificationPresetEval(crop_size=24, resize_size=32, is_bcos=True)
    assert preset.resize.size == 32 and tuple(preset.center_crop.size) == (24, 24)
    assert preset.no_scale(_image(13, 11)).shape == (6, 11, 13)
    assert preset.transform_with_options(_image(40, 40), center_crop=False).shape == (6, 32, 32)
    smaller = preset.rescaled(2)
    assert smaller.args["crop_size"] == 12 and smaller.args["resize_size"] == 16
    assert smaller(_image(40, 40)).shape == (6, 12, 12)
    assert preset.output_size == 24


def test_imagenet_train_shapes_and_policies():
    for policy in (None, "ra", "ta_wide", "augmix", "imagenet"):
        preset = ImageNetClassificationPresetTrain(
            crop_size=16, auto_augment_policy=policy, random_erase_prob=0.5, is_bcos=True
        )
        out = preset(_image(30, 20))
        assert out.shape == (6, 16, 16), policy
    assert ImageNetClassificationPresetTrain(crop_size=16)(_image(30, 20)).shape == (3, 16, 16)
    with pytest.raises(UnknownNameError, match="ta_wide"):
        ImageNetClassificationPresetTrain(crop_size=16, auto_augment_policy="ta_wid")


def test_bcos_train_erasing_happens_before_add_inverse():
    preset = ImageNetClassificationPresetTrain(crop_size=8, random_erase_prob=0.1, is_bcos=True)
    steps = preset.transforms.transforms
    names = [type(step).__name__ for step in steps]
    assert names[-2:] == ["RandomErasing", "AddInverse"]
    steps = ImageNetClassificationPresetTrain(crop_size=8, random_erase_prob=0.1).transforms.transforms
    assert [type(s).__name__ for s in steps][-2:] == ["Normalize", "RandomErasing"]


def test_cifar_presets_shapes_and_values():
    image = _image(32, 32)
    train = CIFAR10ClassificationPresetTrain(is_bcos=True)
    assert train(image).shape == (6, 32, 32)
    test = CIFAR10ClassificationPresetTest(is_bcos=True)
    out = test(image)
    assert torch.allclose(out[:3], torch.from_numpy(np.array(image)).permute(2, 0, 1).float() / 255)
    standard = CIFAR10ClassificationPresetTest()(image)
    mean = torch.tensor(CIFAR10_MEAN)[:, None, None]
    std = torch.tensor(CIFAR10_STD)[:, None, None]
    assert torch.allclose(standard, (out[:3] - mean) / std, atol=1e-5)
    assert isinstance(train.transforms.transforms[-1], AddInverse)


def test_cifar_test_preset_supports_rescaling():
    preset = CIFAR10ClassificationPresetTest(is_bcos=True)
    assert preset.resize is None and preset.center_crop is None and preset.output_size == 32
    smaller = preset.rescaled(3)
    assert smaller.args["crop_size"] == 10 and smaller.args["resize_size"] == 10
    assert smaller(_image(32, 32)).shape == (6, 10, 10)
    assert preset.with_args(crop_size=16)(_image(32, 32)).shape == (6, 16, 16)


def test_args_repr_config_and_with_args():
    preset = ImageNetClassificationPresetEval(crop_size=224, resize_size=232, is_bcos=True, mean=(0.1, 0.2, 0.3))
    assert preset.args["crop_size"] == 224 and preset.args["resize_size"] == 232 and preset.args["is_bcos"]
    assert repr(preset).startswith("ImageNetClassificationPresetEval([Resize(size=232")
    config = preset.__to_config__()
    assert config["transform"] == repr(preset)
    assert config["interpolation"] == "InterpolationMode.BILINEAR"
    changed = preset.with_args(crop_size=112)
    assert changed.args["crop_size"] == 112 and changed.args["resize_size"] == 232
    assert changed.args["mean"] == (0.1, 0.2, 0.3), "with_args keeps every other argument"
    assert changed != preset and preset.with_args() == preset
    with pytest.raises(UnknownNameError, match="crop_size"):
        preset.with_args(crop_sise=3)
    # a written interpolation string is accepted back
    parsed = ImageNetClassificationPresetEval(crop_size=8, interpolation=config["interpolation"])
    assert parsed.args["interpolation"] == preset.args["interpolation"]


def test_presets_copy_and_pickle():
    preset = CIFAR10ClassificationPresetTrain(is_bcos=True)
    preset(_image(32, 32))
    for clone in (copy.deepcopy(preset), pickle.loads(pickle.dumps(preset))):
        assert clone == preset and clone is not preset
        assert clone(_image(32, 32)).shape == (6, 32, 32)


def test_presets_reject_bad_arguments():
    with pytest.raises(ConfigError, match="crop_size"):
        ImageNetClassificationPresetEval(crop_size=0)
    with pytest.raises(ConfigError, match="mean"):
        CIFAR10ClassificationPresetTest(mean=(0.5, 0.5))
    with pytest.raises(ConfigError, match="hflip_prob"):
        ImageNetClassificationPresetTrain(crop_size=8, hflip_prob=2)
    with pytest.raises(UnknownNameError, match="bilinear"):
        ImageNetClassificationPresetEval(crop_size=8, interpolation="bilinaer")
    with pytest.raises(TypeError):
        ImageNetClassificationPresetEval(224)  # keyword-only, like the reference


def _imported_modules(module: str) -> set[str]:
    """Modules imported at module level by ``module`` and, transitively, by the bcos modules it imports."""
    seen: set[str] = set()
    pending = [module]
    while pending:
        name = pending.pop()
        if name in seen:
            continue
        seen.add(name)
        spec = importlib.util.find_spec(name)
        if not name.startswith("bcos") or spec is None or spec.origin is None:
            continue
        for node in ast.parse(Path(spec.origin).read_text()).body:  # top level only: lazy imports are fine
            if isinstance(node, ast.Import):
                pending += [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                pending.append(node.module)
    return seen


@pytest.mark.parametrize("module", ["bcos.data", "bcos.data.presets", "bcos.data.transforms", "bcos.data.sampler"])
def test_light_modules_do_not_import_lightning(module):
    roots = {name.split(".")[0] for name in _imported_modules(module)}
    assert not roots & {"lightning", "pytorch_lightning", "torchmetrics", "captum"}
    assert "bcos.data.datamodules" not in _imported_modules(module)
