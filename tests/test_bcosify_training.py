"""``bcos train --bcosify NAME --weights FILE --data-dir DIR``, end to end on a tiny image folder (offline).

A standard torchvision ResNet-18 with a local weights file is B-cosified, fine-tuned for two epochs
with B raised from 1 to 2, and the run is then found from its folder like any other: its config,
its trained B-cos model (explanations), the B schedule.
"""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
import torchvision.models as tvm
from PIL import Image

from bcos.bcosification import BcosifiedModel, get_b
from bcos.cli.main import main
from bcos.errors import ConfigError
from bcos.training.callbacks.b_schedule import BSchedule, b_of_epoch
from tests.helpers_data import make_tiny_image_folder

pytest.importorskip("lightning")


def test_b_schedule_values():
    assert [b_of_epoch(e, 1, 2, 2) for e in range(4)] == [1.0, 1.5, 2.0, 2.0]
    assert b_of_epoch(0, 1, 2.5, 0) == 2.5


@pytest.mark.parametrize(
    "config",
    [
        {"start": 0.5, "end": 0.5, "epochs": 2},  # both below 1
        {"start": 1, "end": 0.5, "epochs": 2},  # the target below 1
        {"start": float("nan"), "end": 2, "epochs": 2},
        {"start": 1, "end": float("inf"), "epochs": 2},
        {"start": 1, "end": 2, "epochs": -1},
        {"start": 1, "end": 2, "epochs": 1.5},
        {"start": 1, "end": 2},  # a key missing
        {"start": 1, "end": 2, "epochs": 2, "steps": 3},  # an unknown key
    ],
)
def test_b_schedule_refuses_bad_configs_in_one_line(config):
    with pytest.raises(ConfigError) as caught:
        BSchedule.from_config(config)
    assert "\n" not in str(caught.value)
    schedule = BSchedule.from_config({"start": 1, "end": 2.5, "epochs": 3})
    assert (schedule.start, schedule.end, schedule.epochs) == (1.0, 2.5, 3)


def test_bcosify_command_end_to_end_offline(tmp_path, capsys):
    data = make_tiny_image_folder(tmp_path / "clothes", ["shirt", "shoe"], n_per_class=4)
    weights = tmp_path / "resnet18.pth"
    torch.manual_seed(0)
    torch.save(tvm.resnet18().state_dict(), weights)
    base = tmp_path / "experiments"
    argv = [
        "train", "--bcosify", "resnet18", "--weights", str(weights), "--data-dir", str(data), "--epochs", "2",
        "--b-start", "1", "--b-warmup-epochs", "1", "--image-size", "32", "--batch-size", "4", "--num-workers", "0",
        "--lr", "1e-3", "--base_directory", str(base), "--name", "tiny",
    ]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "B-cosifying resnet18 (B=2 from 1, bias=remove) from " in out
    run = base / "ImageFolder" / "bcosify" / "tiny"
    spec = json.loads((run / "bcosify.json").read_text())
    assert spec["categories"] == ["shirt", "shoe"] and spec["b_start"] == 1.0
    assert (run / "last.ckpt").is_file()

    from bcos.training.finetune import load_finetuned

    model = load_finetuned(run, reload="last")
    assert isinstance(model, BcosifiedModel) and get_b(model) == 2.0
    assert model.categories == ["shirt", "shoe"]
    x = model.transform(Image.new("RGB", (40, 40), (200, 30, 30)))[None]
    explanation = model.explain(x)
    assert explanation.contribution_map.shape == (1, 32, 32)

    # the run is a run like any other: bcos explain --run finds its model and classes
    image = next((data / "val" / "shoe").iterdir())
    output = tmp_path / "explanations"
    assert main(["explain", str(image), "--run", str(run), "--reload", "last", "--output", str(output), "--no-progress"]) == 0
    predictions = json.loads((output / "predictions.json").read_text())
    assert json.dumps(predictions).count("shirt") + json.dumps(predictions).count("shoe") >= 1


def test_bcosify_command_errors_are_one_line(tmp_path, capsys):
    data = make_tiny_image_folder(tmp_path / "d", ["a", "b"], n_per_class=2)
    assert main(["train", "--bcosify", "resnet81", "--data-dir", str(data)]) == 2
    assert "did you mean 'resnet18'" in capsys.readouterr().err
    assert main(["train", "--bcosify", "resnet18", "--data-dir", str(data), "--weights", str(tmp_path / "no.pth")]) == 2
    assert "does not exist" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["train", "--dataset", "CIFAR10", "--base_network", "x", "--experiment_name", "y", "--b", "2"])
    assert "--b only apply with --bcosify NAME" in capsys.readouterr().err
    for extra in (["--dataset", "CIFAR10"], ["--datamodule", "mypkg.data:FlowersDataModule"]):
        with pytest.raises(SystemExit):
            main(["train", "--bcosify", "resnet18", "--data-dir", str(data), *extra])
        assert f"--bcosify names the experiment itself; drop {extra[0]}" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="b-warmup-epochs"):
        from bcos.training.bcosify import make_bcosify_spec

        make_bcosify_spec("resnet18", data, epochs=2, b_start=1, b_warmup_epochs=2, base_directory=tmp_path)


@pytest.mark.parametrize("option, value", [("--b", "inf"), ("--b", "nan"), ("--b-start", "inf"), ("--b-start", "nan")])
def test_non_finite_numbers_are_refused_before_anything_is_written(tmp_path, capsys, option, value):
    """Issue 16: ``--b inf`` wrote ``"b": Infinity`` (not JSON) into bcosify.json."""
    data = make_tiny_image_folder(tmp_path / "d", ["a", "b"], n_per_class=2)
    base = tmp_path / "experiments"
    argv = ["train", "--bcosify", "resnet18", "--data-dir", str(data), "--no-pretrained", "--epochs", "3",
            "--b-warmup-epochs", "1", "--base_directory", str(base), option, value]  # fmt: skip
    if option == "--b-start":
        argv += ["--b", "2"]
    assert main(argv) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and option in errors[0] and "finite" in errors[0], errors
    assert not list(base.rglob("bcosify.json"))


def test_the_spec_is_read_written_and_named_as_a_bcosification_spec(tmp_path):
    from bcos.training.bcosify import BcosifySpec, make_bcosify_spec
    from bcos.training.finetune import FinetuneSpec

    data = make_tiny_image_folder(tmp_path / "d", ["a", "b"], n_per_class=2)
    spec = make_bcosify_spec("resnet18", data, epochs=2, b=2.5, base_directory=tmp_path)
    assert spec.write(tmp_path / "run").name == "bcosify.json"
    assert BcosifySpec.read(tmp_path / "run") == spec
    with pytest.raises(ConfigError, match=r"is not a fine-tuning run folder \(no finetune.json\)"):
        FinetuneSpec.read(tmp_path / "run")
    with pytest.raises(ConfigError, match=r"unknown B-cosification spec keys \['steps'\]"):
        BcosifySpec.from_dict({**spec.to_dict(), "steps": 3})
    (tmp_path / "run" / "bcosify.json").write_text("{not json")
    with pytest.raises(ConfigError, match="is not a valid B-cosification spec"):
        BcosifySpec.read(tmp_path / "run")


def test_a_bcosification_runs_split_and_spec_guard_its_folder(tmp_path):
    from bcos.training.bcosify import bcosify_and_finetune, make_bcosify_spec

    source = tmp_path / "flat"
    for index, name in enumerate(["a", "b"]):
        (source / name).mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (8, 8), (40 * i, 100 * index, 0)).save(source / name / f"{i}.png")
    base = tmp_path / "runs"
    spec = make_bcosify_spec("resnet18", source, name="run", seed=1, base_directory=base)
    run = base / "ImageFolder" / "bcosify" / "run"
    assert spec.data_dir == str((run / "data_split").resolve()) and spec.source_dir == str(source.resolve())
    spec.write(run)
    marker = run / "data_split" / "kept"
    marker.touch()
    assert make_bcosify_spec("resnet18", source, name="run", seed=1, epochs=3, base_directory=base).data_dir == spec.data_dir
    assert marker.exists()  # resuming keeps the split
    with pytest.raises(ConfigError, match="holds a B-cosification run of another split"):
        make_bcosify_spec("resnet18", source, name="run", seed=2, base_directory=base)
    with pytest.raises(ConfigError, match="holds a B-cosification run with other b; pick another --name"):
        bcosify_and_finetune(dataclasses.replace(spec, b=3.0), base_directory=base)
    with pytest.raises(ConfigError, match=r"bcosify_and_finetune\(\) sets dataset itself"):
        bcosify_and_finetune(spec, base_directory=base, dataset="CIFAR10")
