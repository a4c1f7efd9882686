"""One registry: each published model is declared once, beside its builder, and everything else
(create_model, list_models, bcos.models.pretrained, hubconf, the ImageNet collections) is generated
from or built through that declaration; no name-prefix tables; the models floor imports no data."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import bcos
from bcos.errors import ConfigError, UnknownNameError
from bcos.models import registry
from bcos.models.registry import get_architecture, get_pretrained_config, list_architectures

ROOT = Path(__file__).resolve().parents[1]
PACKAGE_FILES = sorted((ROOT / "bcos").rglob("*.py")) + [ROOT / "hubconf.py"]
MODELS_FILES = sorted((ROOT / "bcos" / "models").rglob("*.py"))


def _code_strings(path: Path) -> list[str]:
    """The string constants of ``path``'s code (docstrings, which only show examples, left out)."""
    tree = ast.parse(path.read_text())
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
        and node.body and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)
    }
    return [
        node.value for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings
    ]  # fmt: skip


def test_every_weights_hash_is_written_once_in_the_code():
    """The sha256 prefix of each published file is in exactly one place: the declaration beside its builder."""
    strings = {path: _code_strings(path) for path in PACKAGE_FILES}
    for name in bcos.list_models(pretrained=True):
        config = get_pretrained_config(name)
        prefix = config.weights.sha256_prefix
        places = [str(path.relative_to(ROOT)) for path, values in strings.items() for value in values if prefix in value]
        assert places == [f"bcos/models/{config.module}.py"], (name, places)


def test_published_models_are_declared_on_their_builder():
    for name in bcos.list_models():
        config = get_pretrained_config(name)
        architecture = get_architecture(config.architecture)
        module = sys.modules[f"bcos.models.{architecture.module}"]
        assert getattr(module, config.architecture) is architecture.builder


def test_entry_points_and_hubconf_are_generated_not_written():
    """No hand-written function per model: pretrained.py and hubconf.py define none."""
    for path in (ROOT / "bcos" / "models" / "pretrained.py", ROOT / "hubconf.py"):
        tree = ast.parse(path.read_text())
        defined = {node.name for node in ast.walk(tree) if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))}
        assert not defined & set(bcos.list_models()), path


def test_no_architecture_name_prefix_tables():
    """Builders are found by their registered name; no file matches architecture names by prefix."""
    scope = [*MODELS_FILES, ROOT / "hubconf.py", *sorted((ROOT / "bcos" / "experiments" / "ImageNet").rglob("*.py"))]
    prefixes = {"resne", "wide_resnet", "densenet", "vgg", "convnext", "simple_vit", "vitc"}
    for path in scope:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "startswith":
                pytest.fail(f"{path.relative_to(ROOT)}:{node.lineno} matches names by prefix")
            if isinstance(node, (ast.Tuple, ast.List, ast.Set, ast.Dict)):
                keys = node.keys if isinstance(node, ast.Dict) else node.elts
                literal = {k.value for k in keys if isinstance(k, ast.Constant) and isinstance(k.value, str)}
                if len(literal & prefixes) >= 2:
                    pytest.fail(f"{path.relative_to(ROOT)}:{node.lineno} holds a table of architecture prefixes")


def test_a_new_architecture_needs_no_table(monkeypatch):
    """Registering a builder in any module is all it takes: the module is read from the builder."""
    monkeypatch.setattr(registry, "_ARCHITECTURES", dict(registry._ARCHITECTURES))
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))

    @registry.register_architecture(
        registry.Published("tiny_net_demo", "bcos_final/resnet_18", "tiny_net-0123456789.pth", 1.0, 2.0, 60, "a tiny net"),
    )
    def tiny_net(num_classes: int = 1000, conv_layer=None, norm_layer=None, logit_bias=None) -> nn.Module:
        return nn.Sequential(conv_layer(6, num_classes, kernel_size=1), nn.AdaptiveAvgPool2d(1), nn.Flatten())

    assert get_architecture("tiny_net").module == "test_model_declarations"
    assert "tiny_net" in list_architectures(registry.BCOS_CNN)
    model = bcos.create_model("tiny_net_demo", num_classes=3)
    assert model(torch.rand(2, 6, 8, 8)).shape == (2, 3)
    assert model.pretrained_config.weights.file_name == "tiny_net-0123456789.pth"
    with pytest.raises(ConfigError, match="registered twice"):
        registry.register_architecture()(tiny_net)


def test_register_model_needs_a_registered_architecture(monkeypatch):
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    config = get_pretrained_config("resnet18")
    with pytest.raises(UnknownNameError, match=r"unknown architecture 'resnet_18'; did you mean 'resnet18'\?"):
        registry.register_model(registry.PretrainedConfig(**{**config.__dict__, "name": "mine", "architecture": "resnet_18"}))


# --------------------------------------------------------------------------------------------
# The ImageNet collections build through the same builders
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("collection", ["bcos_final", "bcos_final_long", "vit_final"])
def test_every_collection_config_names_a_registered_architecture(collection):
    collections = pytest.importorskip("bcos.experiments.utils.collections")
    configs, _ = collections.get_configs_and_model_factory("ImageNet", collection)
    family = registry.BCOS_CNN if collection != "vit_final" else sys.modules["bcos.models.vit"].VIT
    for config in configs.values():
        assert config["model"]["name"] in list_architectures(family)


@pytest.mark.parametrize("collection, name", [("bcos_final", "vitc_ti_patch1_14"), ("vit_final", "resnet18")])
def test_a_collection_refuses_the_other_family(collection, name):
    collections = pytest.importorskip("bcos.experiments.utils.collections")
    configs, get_model = collections.get_configs_and_model_factory("ImageNet", collection)
    model_config = {**next(iter(configs.values()))["model"], "name": name}
    with pytest.raises(UnknownNameError, match="architecture"):
        get_model(model_config)


@pytest.mark.parametrize("name", ["densenet121_long", "convnext_base", "standard_simple_vit_ti_patch16_224"])
def test_collection_builds_the_registered_model(name):
    """The collection's get_model and create_model give the same tree for the experiment of ``name``."""
    collections = pytest.importorskip("bcos.experiments.utils.collections")
    spec = get_pretrained_config(name)
    configs, get_model = collections.get_configs_and_model_factory(spec.source.dataset, spec.source.collection)
    with torch.device("meta"):
        theirs = get_model(configs[spec.source.experiment]["model"])
        ours = bcos.create_model(name)
    assert repr(ours) == repr(theirs)
    assert [(k, v.shape) for k, v in ours.state_dict().items()] == [(k, v.shape) for k, v in theirs.state_dict().items()]


# --------------------------------------------------------------------------------------------
# The models floor does not reach upward
# --------------------------------------------------------------------------------------------
UPPER_FLOORS = ("bcos.data.datamodules", "bcos.experiments", "bcos.training", "bcos.cli", "bcos.explain.methods", "bcos.explain.localisation")


def _imported_modules(path: Path) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text())):  # every import, also inside functions
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
    return found


def test_models_files_import_no_upper_floor():
    for path in MODELS_FILES:
        for line, module in _imported_modules(path):
            assert not any(module == floor or module.startswith(floor + ".") for floor in UPPER_FLOORS), (
                f"{path.relative_to(ROOT)}:{line} imports {module}"
            )


def test_create_model_loads_nothing_from_above():
    code = (
        "import sys, bcos.models, bcos; m = bcos.create_model('vitc_ti_patch1_14'); "
        "import bcos.models.pretrained as p; p.resnet18(); "
        "print(sorted(n for n in sys.modules if n.split('.')[0] in ('lightning', 'torchmetrics', 'captum') "
        "or n.startswith(('bcos.data.datamodules', 'bcos.experiments', 'bcos.training', 'bcos.cli', 'bcos.explain.methods'))))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
