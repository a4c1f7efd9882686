"""The model registry: layouts of all 34 published models, create_model, list_models, weight files."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import subprocess
import sys
import urllib.error
from pathlib import Path

import pytest
import torch
from PIL import Image

import bcos
from bcos.errors import CheckpointError, ConfigError, UnknownNameError
from bcos.models import registry, weights
from bcos.models.registry import create_model, get_pretrained_config, list_models

INDEX_PATH = Path(__file__).resolve().parents[2] / "shared" / "conformance" / "state_dict_index.json"
ALL_NAMES = list_models()
SMALL = "vitc_ti_patch1_14"  # the smallest published B-cos model (5.3M parameters)


@pytest.fixture(scope="module")
def index() -> dict:
    if not INDEX_PATH.is_file():
        pytest.skip(f"conformance index not found at {INDEX_PATH}")
    return json.loads(INDEX_PATH.read_text())


def layout(model: torch.nn.Module) -> list[list]:
    return [[k, list(v.shape), str(v.dtype).removeprefix("torch.")] for k, v in model.state_dict().items()]


def build_on_meta(name: str, **kwargs) -> torch.nn.Module:
    with torch.device("meta"):
        return create_model(name, **kwargs)


# --------------------------------------------------------------------------------------------
# The published models
# --------------------------------------------------------------------------------------------
def test_the_34_reference_entry_points_are_registered():
    assert len(ALL_NAMES) == 34
    modules = [get_pretrained_config(name).module for name in ALL_NAMES]
    counts = {module: modules.count(module) for module in set(modules)}
    assert counts == {"resnet": 8, "densenet": 5, "vgg": 1, "convnext": 4, "vit": 16}
    assert sum(get_pretrained_config(n).kind == "standard_vit" for n in ALL_NAMES) == 8


@pytest.mark.parametrize("name", ALL_NAMES)
def test_layout_and_parameter_count_equal_the_reference(name, index):
    config = get_pretrained_config(name)
    entry = index["experiments"][f"{config.source.dataset}/{config.source.collection}"][config.source.experiment]
    model = build_on_meta(name)
    assert layout(model) == index["signatures"][entry["state_dict"]]
    assert sum(p.numel() for p in model.parameters()) == entry["n_params"] == config.num_params
    assert entry["model_name"] == config.architecture
    assert entry["is_bcos"] == config.is_bcos == hasattr(model, "explain")
    assert model.pretrained_config is config


def test_metadata_of_some_models():
    resnet18 = get_pretrained_config("resnet18")
    assert resnet18.weights.url == (
        "https://github.com/B-cos/B-cos-v2/releases/download/v0.0.1-weights/resnet_18-68b4160fff.pth"
    )
    assert resnet18.weights.sha256_prefix == "68b4160fff"
    assert (resnet18.top1, resnet18.top5) == (68.736, 87.430)
    assert str(resnet18.source) == "ImageNet/bcos_final/resnet_18"
    assert get_pretrained_config("resnet50_long").weights.file_name == "resnet_50_long-ef38a88533.pth"
    # the reference's URL table had "bcos_simple_vit_b_patch16_224-" (trailing dash) as key
    assert get_pretrained_config("simple_vit_b_patch16_224").weights.file_name == (
        "bcos_simple_vit_b_patch16_224-1fc4750806.pth"
    )
    assert get_pretrained_config("standard_vitc_l_patch1_14").weights.sha256_prefix == "560e48f246"
    assert str(get_pretrained_config("convnext_tiny").source) == "ImageNet/bcos_final_long/convnext_tiny_pn"
    assert resnet18.summary() == (
        "resnet18: B-cos ResNet-18 (top-1 68.736%, top-5 87.430%, 11.69M params; ImageNet/bcos_final/resnet_18)"
    )


def test_builder_arguments_follow_the_collections():
    from bcos.modules import BcosConv2d
    from bcos.modules.norms import BatchNormUncentered2d, NoBias

    args = get_pretrained_config("resnet18").builder_kwargs()
    assert args["num_classes"] == 1000 and args["logit_bias"] == -math.log(999)
    assert args["conv_layer"].func is BcosConv2d and args["conv_layer"].keywords == {"b": 2, "max_out": 1}
    assert isinstance(args["norm_layer"], NoBias) and args["norm_layer"].make_layer is BatchNormUncentered2d
    assert get_pretrained_config("resnet152_long").builder_kwargs()["stochastic_depth_prob"] == 0.1
    assert "stochastic_depth_prob" not in get_pretrained_config("resnet152").builder_kwargs()
    assert get_pretrained_config("convnext_base").builder_kwargs()["norm_layer"] is None  # model default (PN)
    assert isinstance(get_pretrained_config("convnext_base_bnu").builder_kwargs()["norm_layer"], NoBias)
    vit = get_pretrained_config("vitc_s_patch1_14").builder_kwargs(bcos_args={"b": 3})
    assert vit["channels"] == 6 and vit["linear_layer"].keywords == {"b": 3, "max_out": 1}
    assert get_pretrained_config("standard_vitc_s_patch1_14").builder_kwargs()["linear_layer"] is torch.nn.Linear


@pytest.mark.parametrize(
    "name, resize, is_bcos",
    [("resnet18", 256, True), ("resnet50_long", 232, True), ("convnext_tiny", 232, True),
     ("convnext_base_bnu", 232, True), ("densenet121_long", 232, True), ("vitc_b_patch1_14", 256, True),
     ("standard_simple_vit_s_patch16_224", 256, False)],
)  # fmt: skip
def test_eval_transform(name, resize, is_bcos):
    from bcos.data.presets import ImageNetClassificationPresetEval, eval_transform

    model = build_on_meta(name)
    assert model.pretrained_config.transform == registry.EvalTransformSpec(resize, 224, is_bcos)
    transform = model.transform  # as in the reference
    assert transform == eval_transform(model) == eval_transform(model.pretrained_config.transform)
    assert transform == ImageNetClassificationPresetEval(crop_size=224, resize_size=resize, is_bcos=is_bcos)
    image = Image.new("RGB", (260, 300), color=(200, 30, 90))
    assert transform(image).shape == (6 if is_bcos else 3, 224, 224)


def test_eval_transform_refuses_what_is_not_a_registry_model():
    from bcos.data.presets import eval_transform

    with pytest.raises(ConfigError, match="takes a model from bcos.create_model"):
        eval_transform(torch.nn.Linear(2, 2))


# --------------------------------------------------------------------------------------------
# Agreement with the experiment configs (the configs state the arguments for training; the
# published models' recipe states them for building: both must agree)
# --------------------------------------------------------------------------------------------
def experiment_config(spec):
    collections = pytest.importorskip("bcos.experiments.utils.collections")
    configs, get_model = collections.get_configs_and_model_factory(spec.source.dataset, spec.source.collection)
    return configs[spec.source.experiment], get_model


@pytest.mark.parametrize("name", ALL_NAMES)
def test_registry_arguments_equal_the_experiment_config(name):
    from bcos.data.presets import eval_transform
    from bcos.models.vit import vit_final_logit_bias

    spec = get_pretrained_config(name)
    experiment, _ = experiment_config(spec)
    model_config = experiment["model"]
    assert model_config["name"] == spec.architecture
    assert model_config["is_bcos"] == spec.is_bcos
    assert model_config.get("bcos_args", {}) == (dict(spec.bcos_args) if spec.is_bcos else {})
    assert experiment["data"]["test_transform"] == eval_transform(spec.transform)
    ours = spec.builder_kwargs()
    assert {k: ours[k] for k in model_config["args"]} == model_config["args"]
    # what the collection's get_model adds itself: the layer classes made from bcos_args
    added = {k: v for k, v in ours.items() if k not in model_config["args"]}
    if spec.kind == "bcos_cnn":
        assert list(added) == ["conv_layer"] and added["conv_layer"].keywords == model_config["bcos_args"]
    elif spec.kind == "bcos_vit":
        assert sorted(added) == ["conv2d_layer", "linear_layer", "logit_bias"]
        assert all(added[layer].keywords == model_config["bcos_args"] for layer in ("conv2d_layer", "linear_layer"))
        assert added["logit_bias"] == model_config["logit_bias"] == vit_final_logit_bias(1000)
    else:
        assert added == {"linear_layer": torch.nn.Linear, "conv2d_layer": torch.nn.Conv2d}


# one model per collection, kind and argument variant (building all would take too long)
@pytest.mark.parametrize(
    "name",
    ["resnet18", "resnext50_32x4d", "vgg11_bnu", "resnet50_long", "convnext_tiny", "convnext_tiny_bnu",
     "vitc_ti_patch1_14", "simple_vit_ti_patch16_224", "standard_vitc_ti_patch1_14"],
)  # fmt: skip
def test_registry_model_equals_the_experiment_model(name):
    spec = get_pretrained_config(name)
    experiment, get_model = experiment_config(spec)
    model_config = {**experiment["model"], "args": dict(experiment["model"]["args"])}  # get_model adds to args
    with torch.device("meta"):
        theirs = get_model(model_config)
        ours = spec.build()
    # the printed tree shows every layer type and size, B, max_out, stochastic depth and the logit bias
    assert repr(ours) == repr(theirs)
    assert layout(ours) == layout(theirs)


# --------------------------------------------------------------------------------------------
# create_model and list_models
# --------------------------------------------------------------------------------------------
def test_list_models_patterns():
    assert list_models() == sorted(list_models()) and len(list_models("*")) == 34
    assert list_models("convnext*") == ["convnext_base", "convnext_base_bnu", "convnext_tiny", "convnext_tiny_bnu"]
    assert list_models("*_long") == ["densenet121_long", "resnet152_long", "resnet50_long"]
    assert list_models("ResNet1?") == ["resnet18"]
    assert list_models(["vgg*", "densenet12?"]) == ["densenet121", "vgg11_bnu"]
    assert list_models("standard_*") == [n for n in ALL_NAMES if n.startswith("standard_")]
    assert list_models("nothing*") == []
    assert list_models(pretrained=True) == ALL_NAMES
    assert list_models(pretrained=False) == []


def test_unknown_model_names_suggest_the_closest():
    with pytest.raises(UnknownNameError, match=r"unknown model 'resnet_18'; did you mean 'resnet18'\?"):
        create_model("resnet_18")
    with pytest.raises(UnknownNameError, match="bcos.list_models"):
        get_pretrained_config("alexnet")


def test_num_classes_replaces_the_classifier():
    model = build_on_meta("resnet18", num_classes=10)
    assert model.fc.linear.weight.shape == (10, 512, 1, 1)
    assert model.logit_layer.logit_bias == pytest.approx(-math.log(9))
    vit = build_on_meta("vitc_ti_patch1_14", num_classes=10)
    assert vit[0].linear_head.linear.linear.weight.shape == (10, 192)
    assert vit[1].logit_bias == pytest.approx(-math.log(9))
    standard = build_on_meta("standard_vitc_ti_patch1_14", num_classes=7)
    assert standard.linear_head.linear.bias.shape == (7,)


def test_keyword_arguments_override_the_config():
    model = build_on_meta("vitc_ti_patch1_14", logit_bias=0.0, bcos_args={"b": 3})
    assert model[1].logit_bias == 0.0
    assert model[0].linear_head.linear.b == 3
    assert build_on_meta("resnet18", logit_bias=-1.5).logit_layer.logit_bias == -1.5
    with pytest.raises(TypeError, match="unexpected keyword argument 'stochastic_dept_prob'"):
        build_on_meta("resnet18", stochastic_dept_prob=0.1)


def test_import_bcos_stays_cheap_and_exports_lazily():
    code = "import sys, bcos; assert 'create_model' in dir(bcos); print(sorted(m for m in sys.modules if m.startswith(('torch', 'bcos.'))))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"  # neither torch nor any bcos submodule is imported yet
    assert bcos.create_model is create_model and bcos.list_models is list_models
    with pytest.raises(AttributeError, match="no attribute 'no_such_name'"):
        bcos.no_such_name  # noqa: B018


# --------------------------------------------------------------------------------------------
# Weights: cache lookup, hash verification, download failures, safe loading
# --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def saved_weights(tmp_path_factory) -> tuple[Path, dict[str, torch.Tensor], str]:
    """A real state dict of the small model, saved once; returns (path, state dict, sha256)."""
    torch.manual_seed(0)
    state_dict = create_model(SMALL).state_dict()
    path = tmp_path_factory.mktemp("weights") / "source.pth"
    torch.save(state_dict, path)
    return path, state_dict, hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def torch_home(tmp_path, monkeypatch) -> Path:
    """An empty TORCH_HOME (and no BCOS_WEIGHTS_DIR); returns the hub checkpoint folder."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.delenv(weights.WEIGHTS_DIR_ENV, raising=False)
    return tmp_path / "torch_home" / "hub" / "checkpoints"


def publish_as(monkeypatch, name: str, sha256: str) -> str:
    """Make the registry expect a weights file with the given hash; returns its file name."""
    config = get_pretrained_config(name)
    file_name = f"test_{name}-{sha256[:10]}.pth"
    url = f"{weights.WEIGHTS_BASE_URL}/{file_name}"
    monkeypatch.setitem(registry._REGISTRY, name, dataclasses.replace(config, weights=weights.WeightsFile(url)))
    return file_name


def no_network(monkeypatch) -> list[str]:
    calls: list[str] = []

    def refuse(url, dst, hash_prefix=None, progress=True):
        calls.append(url)
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)
    return calls


def assert_same_weights(model: torch.nn.Module, state_dict: dict[str, torch.Tensor], skip: tuple = ()) -> None:
    for key, value in model.state_dict().items():
        if key not in skip:
            assert torch.equal(value, state_dict[key]), key


def test_pretrained_loads_a_verified_file_from_the_torch_hub_cache(saved_weights, torch_home, monkeypatch):
    path, state_dict, sha256 = saved_weights
    file_name = publish_as(monkeypatch, SMALL, sha256)
    torch_home.mkdir(parents=True)
    (torch_home / file_name).write_bytes(path.read_bytes())
    calls = no_network(monkeypatch)
    model = create_model(SMALL, pretrained=True)
    assert calls == []
    assert_same_weights(model, state_dict)
    assert model.pretrained_config.weights.file_name == file_name


def test_bcos_weights_dir_is_searched_first(saved_weights, torch_home, tmp_path, monkeypatch):
    path, state_dict, sha256 = saved_weights
    file_name = publish_as(monkeypatch, SMALL, sha256)
    own_dir = tmp_path / "my_weights"
    own_dir.mkdir()
    (own_dir / file_name).write_bytes(path.read_bytes())
    torch_home.mkdir(parents=True)
    (torch_home / file_name).write_bytes(b"corrupt")  # would be refused if it were used
    monkeypatch.setenv(weights.WEIGHTS_DIR_ENV, str(own_dir))
    no_network(monkeypatch)
    assert_same_weights(create_model(SMALL, pretrained=True), state_dict)


def test_a_local_file_with_the_wrong_hash_is_refused(torch_home, monkeypatch):
    config = get_pretrained_config(SMALL)
    torch_home.mkdir(parents=True)
    (torch_home / config.weights.file_name).write_bytes(b"not the published file")
    no_network(monkeypatch)
    with pytest.raises(CheckpointError, match=r"expected ddd6193a77\.\.\..*delete it and download it again from https://") as error:
        create_model(SMALL, pretrained=True)
    assert "\n" not in str(error.value)


def test_missing_file_without_network_names_url_and_place(torch_home, monkeypatch):
    calls = no_network(monkeypatch)
    config = get_pretrained_config("resnet18")
    with pytest.raises(CheckpointError) as error:
        create_model("resnet18", pretrained=True, progress=False)
    message = str(error.value)
    assert calls == [config.weights.url]
    assert "\n" not in message
    assert message.startswith(f"could not download {config.weights.url} (")
    assert f"place it at {torch_home / 'resnet_18-68b4160fff.pth'}" in message


def test_download_goes_into_the_cache_with_a_hash_check(saved_weights, torch_home, monkeypatch):
    path, state_dict, sha256 = saved_weights
    file_name = publish_as(monkeypatch, SMALL, sha256)
    seen = {}

    def fake_download(url, dst, hash_prefix=None, progress=True):
        seen.update(url=url, dst=dst, hash_prefix=hash_prefix, progress=progress)
        Path(dst).write_bytes(path.read_bytes())

    monkeypatch.setattr(torch.hub, "download_url_to_file", fake_download)
    model = create_model(SMALL, pretrained=True, progress=False)
    assert seen == dict(url=f"{weights.WEIGHTS_BASE_URL}/{file_name}", dst=str(torch_home / file_name), hash_prefix=sha256[:10], progress=False)
    assert_same_weights(model, state_dict)


def test_hash_mismatch_during_download_is_a_checkpoint_error(torch_home, monkeypatch):
    def bad_download(url, dst, hash_prefix=None, progress=True):
        raise RuntimeError(f'invalid hash value (expected "{hash_prefix}", got "0123456789")')

    monkeypatch.setattr(torch.hub, "download_url_to_file", bad_download)
    with pytest.raises(CheckpointError, match="does not match its sha256 prefix 68b4160fff"):
        create_model("resnet18", pretrained=True)


def test_fine_tuning_keeps_the_backbone_and_gets_a_fresh_classifier(saved_weights, torch_home, monkeypatch):
    path, state_dict, sha256 = saved_weights
    file_name = publish_as(monkeypatch, SMALL, sha256)
    torch_home.mkdir(parents=True)
    (torch_home / file_name).write_bytes(path.read_bytes())
    model = create_model(SMALL, pretrained=True, num_classes=10)
    head = "0.linear_head.linear.linear.weight"
    assert model.state_dict()[head].shape == (10, 192)
    assert_same_weights(model, state_dict, skip=(head,))
    assert model[1].logit_bias == pytest.approx(-math.log(9))
    assert model(torch.rand(1, 6, 64, 64)).shape == (1, 10)


def test_weights_argument_loads_a_local_state_dict(saved_weights, tmp_path):
    path, state_dict, _ = saved_weights
    assert_same_weights(create_model(SMALL, weights=path), state_dict)
    # a training checkpoint whose state dict is stored under "state_dict" with a "model." prefix
    checkpoint = tmp_path / "last.ckpt"
    torch.save({"epoch": 3, "state_dict": {f"model.{k}": v for k, v in state_dict.items()}}, checkpoint)
    assert_same_weights(create_model(SMALL, weights=str(checkpoint)), state_dict)


def test_a_model_built_on_meta_takes_the_loaded_tensors(saved_weights):
    path, state_dict, _ = saved_weights
    with torch.device("meta"):
        model = create_model(SMALL, weights=path)
    assert all(not p.is_meta and p.requires_grad for p in model.parameters())
    assert_same_weights(model, state_dict)
    assert model(torch.rand(1, 6, 32, 32)).shape == (1, 1000)
    with torch.device("meta"), pytest.raises(CheckpointError, match="left tensors of the model on the meta device"):
        create_model(SMALL, weights=path, num_classes=10)


def test_weights_that_do_not_fit_are_refused(saved_weights, tmp_path):
    path, state_dict, _ = saved_weights
    with pytest.raises(CheckpointError, match="does not exist"):
        create_model(SMALL, weights=tmp_path / "missing.pth")
    with pytest.raises(CheckpointError, match="shape mismatch"):
        create_model("vitc_s_patch1_14", weights=path)
    partial_file = tmp_path / "partial.pth"
    torch.save({k: v for k, v in list(state_dict.items())[1:]}, partial_file)
    with pytest.raises(CheckpointError, match=r"1 missing key\(s\) \(e.g. 0.to_patch_embedding"):
        create_model(SMALL, weights=partial_file)
    # same class count: a resized classifier is an error, not a silent fresh initialisation
    resized = tmp_path / "resized.pth"
    torch.save({**state_dict, "0.linear_head.linear.linear.weight": torch.zeros(10, 192)}, resized)
    with pytest.raises(CheckpointError, match="shape mismatch"):
        create_model(SMALL, weights=resized)


def test_weights_are_loaded_without_unpickling_code(tmp_path):
    unsafe = tmp_path / "unsafe.pth"
    torch.save({"weight": torch.zeros(1), "code": Path("x")}, unsafe)
    with pytest.raises(CheckpointError, match="cannot load .* safely"):
        create_model(SMALL, weights=unsafe)
    not_a_state_dict = tmp_path / "list.pth"
    torch.save([torch.zeros(1)], not_a_state_dict)
    with pytest.raises(CheckpointError, match="does not hold a state dict"):
        create_model(SMALL, weights=not_a_state_dict)


def test_a_published_file_passed_as_weights_is_verified(tmp_path):
    fake = tmp_path / get_pretrained_config(SMALL).weights.file_name
    fake.write_bytes(b"something else")
    with pytest.raises(CheckpointError, match="expected ddd6193a77"):
        create_model(SMALL, weights=fake)


def test_register_a_model_without_weights(monkeypatch):
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    custom = dataclasses.replace(
        get_pretrained_config("resnet18"), name="my_resnet18", weights=None, top1=None, top5=None, num_classes=10
    )
    registry.register_model(custom)
    assert list_models(pretrained=False) == ["my_resnet18"]
    assert "my_resnet18" not in list_models(pretrained=True)
    assert build_on_meta("my_resnet18").fc.linear.weight.shape[0] == 10
    with pytest.raises(CheckpointError, match="has no published weights; pass weights=PATH"):
        create_model("my_resnet18", pretrained=True)
    with pytest.raises(ConfigError, match="already registered"):
        registry.register_model(custom)
    assert "no accuracy" in custom.summary()
