"""The reference-compatible entry points (bcos.models.pretrained) and torch.hub (hubconf.py)."""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import inspect
import re
from pathlib import Path

import pytest
import torch

import bcos.models.pretrained as pretrained
from bcos.errors import CheckpointError
from bcos.models import registry, weights
from bcos.models.registry import get_pretrained_config, list_models

ROOT = Path(__file__).resolve().parents[1]
SMALL = "vitc_ti_patch1_14"


def load_hubconf():
    spec = importlib.util.spec_from_file_location("hubconf_under_test", ROOT / "hubconf.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_registered_model_has_an_entry_point_with_the_reference_signature():
    assert pretrained.list_available() == list_models()
    assert sorted(set(pretrained.__all__) - {"list_available"}) == list_models()
    for name in list_models():
        function = getattr(pretrained, name)
        assert function.__name__ == name
        parameters = inspect.signature(function).parameters
        assert list(parameters) == ["pretrained", "progress", "kwargs"]
        assert parameters["pretrained"].default is False and parameters["progress"].default is True
        config = get_pretrained_config(name)
        assert f"top-1 {config.top1:.3f}%" in function.__doc__
        assert config.weights.file_name in function.__doc__


def test_entry_points_forward_their_arguments(monkeypatch):
    calls = []
    monkeypatch.setattr(pretrained, "create_model", lambda *args, **kwargs: calls.append((args, kwargs)))
    pretrained.resnet152_long(True, False, num_classes=10, stochastic_depth_prob=0.2)
    pretrained.standard_vitc_l_patch1_14()
    assert calls == [
        (("resnet152_long", True), dict(progress=False, num_classes=10, stochastic_depth_prob=0.2)),
        (("standard_vitc_l_patch1_14", False), dict(progress=True)),
    ]


def test_an_entry_point_builds_the_registered_model():
    with torch.device("meta"):
        model = pretrained.vitc_ti_patch1_14(num_classes=5)
    assert model.pretrained_config is get_pretrained_config(SMALL)
    assert model[0].linear_head.linear.linear.weight.shape == (5, 192)
    assert hasattr(model, "explain") and model.pretrained_config.transform.is_bcos is True
    with torch.device("meta"):
        standard = pretrained.standard_vitc_ti_patch1_14()
    assert not hasattr(standard, "explain") and standard.pretrained_config.transform.is_bcos is False


def test_hubconf_lists_exactly_the_entry_points():
    hubconf = load_hubconf()
    assert hubconf.dependencies == ["torch", "torchvision"]
    # torch.hub.list() shows every public callable of hubconf
    public = sorted(name for name in dir(hubconf) if callable(getattr(hubconf, name)) and not name.startswith("_"))
    assert public == list_models() == list_models(pretrained=True)
    for name in public:  # generated from the entry points: same name, signature and docstring
        entry_point = getattr(hubconf, name)
        assert entry_point.__name__ == name
        assert inspect.signature(entry_point) == inspect.signature(getattr(pretrained, name))
        assert entry_point.__doc__ == getattr(pretrained, name).__doc__


def test_torch_hub_load_from_the_local_repository():
    from bcos.data.presets import ImageNetClassificationPresetEval

    model = torch.hub.load(str(ROOT), SMALL, source="local", pretrained=False)
    assert model.pretrained_config.name == SMALL
    # as in the reference, torch.hub models carry their evaluation transform
    assert model.transform == ImageNetClassificationPresetEval(crop_size=224, resize_size=256, is_bcos=True)
    assert sum(p.numel() for p in model.parameters()) == get_pretrained_config(SMALL).num_params
    assert model(torch.rand(1, 6, 32, 32)).shape == (1, 1000)


def test_torch_hub_load_pretrained_uses_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.delenv(weights.WEIGHTS_DIR_ENV, raising=False)
    torch.manual_seed(1)
    state_dict = registry.create_model(SMALL).state_dict()
    source = tmp_path / "weights.pth"
    torch.save(state_dict, source)
    sha256 = hashlib.sha256(source.read_bytes()).hexdigest()
    file_name = f"hub_{SMALL}-{sha256[:10]}.pth"
    config = get_pretrained_config(SMALL)
    published = weights.WeightsFile(f"{weights.WEIGHTS_BASE_URL}/{file_name}")
    monkeypatch.setitem(registry._REGISTRY, SMALL, dataclasses.replace(config, weights=published))
    cache = tmp_path / "torch_home" / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    source.rename(cache / file_name)

    model = torch.hub.load(str(ROOT), SMALL, source="local", pretrained=True)
    for key, value in model.state_dict().items():
        assert torch.equal(value, state_dict[key]), key

    (cache / file_name).unlink()
    monkeypatch.setattr(torch.hub, "download_url_to_file", _offline)
    expected = f"could not download {re.escape(published.url)} .* place it at {re.escape(str(cache / file_name))}"
    with pytest.raises(CheckpointError, match=expected):
        torch.hub.load(str(ROOT), SMALL, source="local", pretrained=True)


def _offline(url, dst, hash_prefix=None, progress=True):
    import urllib.error

    raise urllib.error.URLError("network is unreachable")
