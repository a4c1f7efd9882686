"""Every experiment config of the five reference collections builds a model whose state-dict keys,
shapes, dtypes and parameter count equal the reference's (../shared/conformance/state_dict_index.json),
so released weights and checkpoints load with ``strict=True``.

Models are built on the meta device with parameter initialisation switched off (only the layout is
compared), and each distinct model config is built once (the seed copies share their model).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from bcos.experiments.utils import get_configs_and_model_factory, sanitize_config

INDEX_PATH = Path(__file__).resolve().parents[1] / ".." / "shared" / "conformance" / "state_dict_index.json"

if not INDEX_PATH.is_file():
    pytest.skip(f"conformance index not found at {INDEX_PATH}", allow_module_level=True)

INDEX = json.loads(INDEX_PATH.read_text())
COLLECTIONS = sorted(INDEX["experiments"])


@pytest.fixture
def no_init(monkeypatch):
    """Parameter initialisation only costs time here: the layout does not depend on it."""
    for name in dir(nn.init):
        if name.endswith("_") and not name.startswith("_"):
            monkeypatch.setattr(nn.init, name, lambda tensor, *args, **kwargs: tensor)


def layout(model: nn.Module) -> list:
    return [[key, list(value.shape), str(value.dtype).removeprefix("torch.")] for key, value in model.state_dict().items()]


def test_index_covers_all_974_experiments():
    assert sum(len(experiments) for experiments in INDEX["experiments"].values()) == 974


@pytest.mark.parametrize("collection", COLLECTIONS)
def test_every_config_matches_reference_layout(collection, no_init):
    dataset, base_network = collection.split("/")
    configs, get_model = get_configs_and_model_factory(dataset, base_network)
    expected = INDEX["experiments"][collection]
    assert sorted(configs) == sorted(expected)

    built: dict[str, tuple[list, int]] = {}  # distinct model config -> (layout, parameter count)
    mismatches = []
    for name, entry in expected.items():
        model_config = configs[name]["model"]
        assert model_config["is_bcos"] == entry["is_bcos"], name
        key = repr(sanitize_config(model_config))
        if key not in built:
            with torch.device("meta"):
                model = get_model(model_config)
            built[key] = (layout(model), sum(p.numel() for p in model.parameters()))
        got_layout, got_params = built[key]
        if got_layout != INDEX["signatures"][entry["state_dict"]] or got_params != entry["n_params"]:
            mismatches.append(f"{name}: {got_params} parameters (reference {entry['n_params']})")
    assert not mismatches, mismatches[:10]
    # seed copies (and nothing else) share a model config
    distinct_names = {name.rsplit("-seed=", 1)[0] for name in expected}
    assert len(built) == len(distinct_names)
