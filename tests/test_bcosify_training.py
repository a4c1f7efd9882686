"""``bcos train --bcosify NAME --weights FILE --data-dir DIR``, end to end on a tiny image folder (offline).

A standard torchvision ResNet-18 with a local weights file is B-cosified, fine-tuned for two epochs
with B raised from 1 to 2, and the run is then found from its folder like any other: its config,
its trained B-cos model (explanations), the B schedule.
"""

from __future__ import annotations

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
    assert "is not a file" in capsys.readouterr().err
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
