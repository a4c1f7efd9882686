"""The config system: collections and their names and hyper-parameters (inventory 3.4), the config
utilities, the collection command line, and import cost."""

from __future__ import annotations

import copy
import math
import subprocess
import sys
import textwrap
from functools import partial

import pytest
import torch
from torch import nn

from bcos.errors import ConfigError, UnknownNameError
from bcos.experiments.utils import (
    config_to_text,
    configs_cli,
    create_configs_with_different_seeds,
    get_config,
    get_configs_and_model_factory,
    list_collections,
    sanitize_config,
    update_config,
)
from bcos.modules import norms
from bcos.optim import LRSchedulerFactory, OptimizerFactory

EXPECTED_COUNTS = {
    ("CIFAR10", "norm_ablations_final"): 888,
    ("ImageNet", "baseline"): 30,
    ("ImageNet", "bcos_final"): 33,
    ("ImageNet", "bcos_final_long"): 7,
    ("ImageNet", "vit_final"): 16,
    ("Digits", "bcos_demo"): 3,
    ("FashionMNIST", "bcos_fast"): 216,
    ("FashionMNIST", "baseline"): 16,
    ("FashionMNIST", "norm_ablations_final"): 888,
}


def configs_of(dataset: str, base_network: str) -> dict:
    return get_configs_and_model_factory(dataset, base_network)[0]


# ---------------------------------------------------------------- collections
def test_list_collections():
    found = list_collections()
    for dataset, base_network in EXPECTED_COUNTS:
        assert base_network in found[dataset]
    assert list_collections("ImageNet") == {"ImageNet": found["ImageNet"]}


@pytest.mark.parametrize("dataset, base_network", list(EXPECTED_COUNTS))
def test_collection_counts(dataset, base_network):
    assert len(configs_of(dataset, base_network)) == EXPECTED_COUNTS[dataset, base_network]


def test_unknown_names_suggest_closest_match():
    with pytest.raises(UnknownNameError, match="did you mean 'CIFAR10'"):
        get_configs_and_model_factory("CIFAR1O", "norm_ablations_final")
    with pytest.raises(UnknownNameError, match="did you mean 'bcos_final'"):
        get_configs_and_model_factory("ImageNet", "bcos_finale")
    with pytest.raises(UnknownNameError, match="did you mean 'resnet_20_bnu-linear-nomaxout'.*--print-all"):
        get_config("CIFAR10", "norm_ablations_final", "resnet_20_bnu-linaer-nomaxout")
    with pytest.raises(UnknownNameError, match="dataset"):
        list_collections("Imagenet_")


def test_get_config_is_a_private_copy():
    config = get_config("ImageNet", "bcos_final", "resnet_18")
    config["data"]["batch_size"] = 1
    config["optimizer"].args["lr"] = 5.0
    original = configs_of("ImageNet", "bcos_final")["resnet_18"]
    assert original["data"]["batch_size"] == 64
    assert original["optimizer"].args["lr"] == 1e-3


def test_get_model_does_not_change_the_config():
    configs, get_model = get_configs_and_model_factory("CIFAR10", "norm_ablations_final")
    model_config = configs["resnet_20_bnu-linear-nomaxout"]["model"]
    before = copy.deepcopy(sanitize_config(model_config))
    with torch.device("meta"):
        get_model(model_config)
    assert sanitize_config(model_config) == before
    assert "conv_layer" not in model_config["args"]


def test_get_model_rejects_wrong_kind_and_unknown_architecture():
    configs, get_model = get_configs_and_model_factory("ImageNet", "bcos_final")
    model_config = update_config(configs["resnet_18"]["model"], dict(name="resnet_18"))
    with pytest.raises(UnknownNameError, match="did you mean 'resnet18'"):
        get_model(model_config)
    with pytest.raises(ConfigError, match="is_bcos"):
        get_model(update_config(configs["resnet_18"]["model"], dict(is_bcos=False)))


# ---------------------------------------------------------------- hyper-parameters (inventory 3.4)
def test_cifar10_names_and_hyper_parameters():
    configs = configs_of("CIFAR10", "norm_ablations_final")
    base = configs["resnet_20"]
    assert base["model"]["name"] == "resnet20" and base["model"]["is_bcos"]
    assert base["model"]["args"]["norm_layer"] is nn.Identity
    assert base["model"]["args"]["logit_bias"] == pytest.approx(-math.log(9))
    assert base["model"]["bcos_args"] == dict(b=2, max_out=2)
    assert base["data"]["batch_size"] == 64 and base["data"]["num_workers"] == 4
    assert base["optimizer"] == OptimizerFactory("Adam", lr=1e-3)
    assert base["lr_scheduler"] == LRSchedulerFactory("cosineannealinglr", epochs=100)
    assert base["trainer"] == dict(max_epochs=100)
    assert "seed" not in base and "use_agc" not in base and "ema" not in base

    variant = configs["resnet_56_gnu-unaffine-nomaxout-seed=1337"]
    assert variant["model"]["name"] == "resnet56"
    assert variant["model"]["bcos_args"]["max_out"] == 1
    assert variant["seed"] == 1337
    norm = variant["model"]["args"]["norm_layer"](16)
    assert isinstance(norm, norms.GroupNormUncentered2d) and norm.num_groups == 2
    assert norm.weight is None and norm.bias is None
    linear = configs["resnet_32_bn-linear"]["model"]["args"]["norm_layer"](8)
    assert isinstance(linear, norms.BatchNorm2d) and linear.bias is None and linear.weight is not None

    suffixes = {"", "-linear", "-unaffine"}
    expected = {f"resnet_{d}" for d in (20, 32, 44, 56)}
    expected |= {f"resnet_{d}_{n}{s}" for d in (20, 32, 44, 56) for n in ("an", "bn", "gn", "in", "ln", "pn",
                 "anu", "bnu", "gnu", "inu", "lnu", "pnu") for s in suffixes}
    expected |= {f"{name}-nomaxout" for name in expected}
    expected |= {f"{name}-seed={seed}" for name in expected for seed in (420, 1337)}
    assert set(configs) == expected


def test_imagenet_baseline_hyper_parameters():
    configs = configs_of("ImageNet", "baseline")
    config = configs["vgg_11_bn-seed=420"]
    assert config["model"] == dict(is_bcos=False, args=dict(num_classes=1000), name="vgg11_bn")
    assert config["optimizer"] == OptimizerFactory("SGD", lr=0.1, momentum=0.9, weight_decay=1e-4)
    assert config["lr_scheduler"] == LRSchedulerFactory("steplr", step_size=30, gamma=0.1)
    assert isinstance(config["criterion"], nn.CrossEntropyLoss)
    assert config["data"]["batch_size"] == 64 and config["data"]["num_workers"] == 8
    assert not config["data"]["train_transform"].args["is_bcos"]


def test_imagenet_bcos_final_hyper_parameters():
    configs = configs_of("ImageNet", "bcos_final")
    config = configs["densenet_169"]
    assert config["model"]["args"]["logit_bias"] == pytest.approx(-math.log(999))
    assert config["model"]["bcos_args"] == dict(b=2, max_out=1)
    assert config["use_agc"] is True
    assert config["lr_scheduler"] == LRSchedulerFactory(
        "cosineannealinglr", epochs=90, warmup_method="linear", warmup_epochs=5, warmup_decay=0.01
    )
    assert type(config["criterion"]).__name__ == "UniformOffLabelsBCEWithLogitsLoss"
    assert type(config["test_criterion"]).__name__ == "BinaryCrossEntropyLoss"
    assert config["data"]["batch_size"] == 64 and config["data"]["num_workers"] == 16
    resnext = configs["resnext_50_32x4d-seed=1337"]
    assert resnext["lr_scheduler"].epochs == 100 and resnext["lr_scheduler"].warmup_epochs == 5
    assert resnext["trainer"]["max_epochs"] == 100


def test_imagenet_bcos_final_long_hyper_parameters():
    configs = configs_of("ImageNet", "bcos_final_long")
    for name, config in configs.items():
        half = name in ("resnet_152", "convnext_base_pn", "convnext_base_bnu")
        assert config["data"]["batch_size"] == (64 if half else 128), name
        assert config["trainer"].get("accumulate_grad_batches") == (2 if half else None), name
        assert config["ema"] == dict(steps=32, decay=0.99998)
        assert config["trainer"]["max_epochs"] == 600 and config["lr_scheduler"].epochs == 600
        assert config["data"]["mixup_alpha"] == 0.2 and config["data"]["cutmix_alpha"] == 1.0
    assert configs["densenet_121"]["data"]["ra_repetitions"] is None
    assert configs["resnet_50"]["data"]["ra_repetitions"] == 4
    assert configs["resnet_50"]["model"]["args"]["stochastic_depth_prob"] == 0.1
    assert configs["convnext_tiny_pn"]["model"]["args"]["norm_layer"] is None
    train = configs["resnet_50"]["data"]["train_transform"].args
    assert train["crop_size"] == 176 and train["auto_augment_policy"] == "ta_wide" and train["random_erase_prob"] == 0.1
    test = configs["resnet_50"]["data"]["test_transform"].args
    assert test["resize_size"] == 232 and test["crop_size"] == 224


def test_imagenet_vit_final_hyper_parameters():
    configs = configs_of("ImageNet", "vit_final")
    for name, config in configs.items():
        big = "_l_" in name or "simple_vit_b" in name
        assert config["data"]["batch_size"] == (64 if big else 128), name
        assert config["lr_scheduler"].warmup_steps == (50_000 if big else 10_000), name
        assert config["lr_scheduler"].interval == "step"
        assert config["data"]["mixup_alpha"] == 0.2 and "cutmix_alpha" not in config["data"]
        assert config["data"]["train_transform"].args["auto_augment_policy"] == "ra"
    standard = configs["vitc_s_patch1_14"]
    assert standard["optimizer"] == OptimizerFactory("AdamW", lr=1e-3, weight_decay=1e-4)
    assert standard["trainer"]["gradient_clip_val"] == 1.0 and standard["use_agc"] is False
    assert standard["model"]["args"]["channels"] == 3 and standard["data"]["num_workers"] == 16
    bcos_vit = configs["bcos_vitc_s_patch1_14"]
    assert bcos_vit["optimizer"] == OptimizerFactory("Adam", lr=1e-3)
    assert bcos_vit["use_agc"] is True and "gradient_clip_val" not in bcos_vit["trainer"]
    assert bcos_vit["model"]["logit_bias"] == pytest.approx(math.log(1 / 999))
    assert bcos_vit["data"]["num_workers"] == 10 and bcos_vit["model"]["args"]["channels"] == 6


def test_digits_demo_config_builds_a_small_bcos_resnet():
    configs, get_model = get_configs_and_model_factory("Digits", "bcos_demo")
    config = configs["resnet_8_bnu-linear"]
    model = get_model(config["model"])
    assert sum(p.numel() for p in model.parameters()) < 200_000
    images = config["data"]["test_transform"](_digit_image())
    assert images.shape == (6, 32, 32)
    assert model(images[None]).shape == (1, 10)
    assert config["data"]["train_transform"].args["hflip_prob"] == 0.0  # digits are not mirror-symmetric
    assert configs["resnet_8_bnu-linear-maxout"]["model"]["bcos_args"]["max_out"] == 2


def _digit_image():
    from PIL import Image

    return Image.new("RGB", (32, 32), (10, 200, 30))


# ---------------------------------------------------------------- utilities
def test_update_config_merges_recursively_without_changing_inputs():
    old = dict(a=1, sub=dict(x=1, y=dict(z=2)), items=[1, 2])
    new = dict(sub=dict(y=dict(w=3)), b=dict(c=4))
    result = update_config(old, new)
    assert result == dict(a=1, sub=dict(x=1, y=dict(z=2, w=3)), items=[1, 2], b=dict(c=4))
    assert old == dict(a=1, sub=dict(x=1, y=dict(z=2)), items=[1, 2])
    assert new == dict(sub=dict(y=dict(w=3)), b=dict(c=4))
    result["sub"]["x"] = 99
    result["items"].append(3)
    result["b"]["c"] = 99
    assert old["sub"]["x"] == 1 and old["items"] == [1, 2] and new["b"]["c"] == 4
    # a non-dict may be replaced by anything, also by None
    assert update_config(dict(a=4), dict(a=None)) == dict(a=None)


def test_update_config_refuses_to_replace_a_dict():
    with pytest.raises(ConfigError, match="'data.sub'.*update its entries"):
        update_config(dict(data=dict(sub=dict(a=1))), dict(data=dict(sub=3)))


def test_create_configs_with_different_seeds():
    configs = dict(a=dict(x=dict(y=1)), b=dict(seed=3))
    seeded = create_configs_with_different_seeds(configs, seeds=[420, 1337])
    assert list(seeded) == ["a-seed=420", "b-seed=420", "a-seed=1337", "b-seed=1337"]
    assert seeded["b-seed=1337"]["seed"] == 1337
    assert seeded["a-seed=420"] == dict(x=dict(y=1), seed=420)
    seeded["a-seed=420"]["x"]["y"] = 5
    assert configs["a"]["x"]["y"] == 1 and "seed" not in configs["a"]
    assert list(create_configs_with_different_seeds(configs, 7)) == ["a-seed=7", "b-seed=7"]
    with pytest.raises(ConfigError, match="integers"):
        create_configs_with_different_seeds(configs, ["1"])


def test_sanitize_config_gives_plain_data():
    config = dict(
        optimizer=OptimizerFactory("Adam", lr=1e-3),
        model=dict(norm=nn.Identity, conv=partial(torch.nn.Conv2d, bias=False), values=(1, [2.0, None])),
        loss=nn.CrossEntropyLoss(),
        layer=norms.NoBias(norms.BatchNormUncentered2d),
    )
    result = sanitize_config(config)
    assert result["optimizer"] == dict(name="adam", lr=1e-3)
    assert result["model"]["norm"] == "torch.nn.modules.linear.Identity"
    assert result["model"]["conv"] == "partial(torch.nn.modules.conv.Conv2d, bias=False)"
    assert result["model"]["values"] == (1, [2.0, None])
    assert result["loss"] == "CrossEntropyLoss()"
    assert isinstance(result["layer"], str)

    def is_plain(value):
        if isinstance(value, dict):
            return all(isinstance(k, str) and is_plain(v) for k, v in value.items())
        if isinstance(value, (list, tuple)):
            return all(is_plain(v) for v in value)
        return isinstance(value, (str, int, float, bool, type(None)))

    for dataset, base_network in EXPECTED_COUNTS:
        config = next(iter(configs_of(dataset, base_network).values()))
        assert is_plain(sanitize_config(config)), (dataset, base_network)


def test_config_to_text_is_readable():
    config = configs_of("ImageNet", "bcos_final")["resnet_18"]
    text = config_to_text(config)
    lines = text.splitlines()
    assert "data:" in lines and "  batch_size: 64" in lines and "use_agc: True" in lines
    assert "  lr: 0.001" not in lines  # factories print themselves on one line
    assert any(line.startswith("optimizer: OptimizerFactory(optimizer='Adam', lr=0.001") for line in lines)
    assert any(line.startswith("    logit_bias: -6.906") for line in lines)
    multi = config_to_text(dict(a=dict(b=_MultiLine())))
    assert multi == "a:\n  b: first\n    second\n"


class _MultiLine:
    def __repr__(self) -> str:
        return "first\nsecond"


# ---------------------------------------------------------------- the collection command line
def test_configs_cli_default_find_and_list(capsys, tmp_path, monkeypatch):
    configs = configs_of("ImageNet", "bcos_final_long")
    configs_cli(configs, [])
    assert capsys.readouterr().out == "There are a total of 7 configs.\n"
    configs_cli(configs, ["-a"])
    assert capsys.readouterr().out.split() == list(configs)
    configs_cli(configs, ["--find", "resnet_50"])
    out = capsys.readouterr().out
    assert out.startswith("Found 'resnet_50'\n") and "stochastic_depth_prob: 0.1" in out
    with pytest.raises(SystemExit) as exit_info:
        configs_cli(configs, ["-f", "resnet50"])
    assert exit_info.value.code == 2
    assert "did you mean 'resnet_50'?" in capsys.readouterr().err
    monkeypatch.chdir(tmp_path)
    configs_cli(configs, ["-s"], dataset="ImageNet", base_network="bcos_final_long")
    lines = (tmp_path / "run_exps.sh").read_text().splitlines()
    assert len(lines) == 7
    assert "--dataset ImageNet --base_network bcos_final_long" in lines[0]
    assert lines[0].endswith("--experiment_name resnet_50 --amp --cache_dataset shm")


def test_collection_module_cli_and_import_cost():
    """``python -m <collection>.experiment_parameters`` works, and importing the 888 CIFAR configs
    costs well under a second of CPU time once torch and torchvision are loaded."""
    script = textwrap.dedent(
        """
        import sys, time, runpy
        import torch, torchvision  # the heavy third-party imports, paid by any torch program
        start = time.process_time()
        import bcos.experiments.CIFAR10.norm_ablations_final.experiment_parameters as ep
        elapsed = time.process_time() - start
        assert len(ep.CONFIGS) == 888
        heavy = [m for m in ("lightning", "pytorch_lightning", "torchmetrics", "captum") if m in sys.modules]
        print(f"{elapsed:.3f} {heavy}")
        sys.argv = ["experiment_parameters", "-f", "resnet_20_bnu-linear-nomaxot"]
        runpy.run_module("bcos.experiments.CIFAR10.norm_ablations_final.experiment_parameters", run_name="__main__")
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 2, result.stderr
    elapsed, heavy = result.stdout.split(" ", 1)
    assert heavy.strip() == "[]"
    assert float(elapsed) < 1.0
    assert "did you mean 'resnet_20_bnu-linear-nomaxout'?" in result.stderr
