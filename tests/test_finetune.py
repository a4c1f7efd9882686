"""Fine-tuning (bcos.training.finetune and the ImageFolder/finetune collection): data checks and
splits, specs, the model with a new classifier, a frozen backbone, and `bcos train --finetune`
end to end (train, then explain and evaluate the fine-tuned run)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers_data import make_tiny_image_folder
from helpers_tiny_model import TINY_NAME, register_tiny_model, save_tiny_weights

from bcos.cli.main import main as bcos_main
from bcos.errors import ConfigError, DataNotFoundError, UnknownNameError
from bcos.experiments.ImageFolder.finetune import experiment_parameters as collection
from bcos.experiments.ImageFolder.finetune.model import freeze_backbone, get_model
from bcos.experiments.utils import Experiment, get_config
from bcos.models.registry import create_model
from bcos.training.finetune import (
    FinetuneSpec,
    default_run_name,
    make_spec,
    split_image_folder,
)

CLASSES = ["apple", "banana", "cherry"]


@pytest.fixture
def tiny(monkeypatch, tmp_path):
    register_tiny_model(monkeypatch)
    return save_tiny_weights(tmp_path / "tiny.pth")


def _flat_folder(root: Path, n_per_class: int = 5) -> Path:
    make_tiny_image_folder(root, CLASSES, n_per_class, splits=("all",), image_size=36)
    return root / "all"


# ------------------------------------------------------------------------------------ data
def test_split_is_seeded_per_class_and_links_the_originals(tmp_path):
    source = _flat_folder(tmp_path / "src")
    first = split_image_folder(source, tmp_path / "split", val_fraction=0.2, seed=3)
    listing = sorted(str(p.relative_to(first)) for p in first.rglob("*.png"))
    assert len([p for p in listing if p.startswith("val/")]) == 3  # one of five per class
    assert len([p for p in listing if p.startswith("train/")]) == 12
    assert {Path(p).parts[1] for p in listing} == set(CLASSES)
    linked = next(first.rglob("*.png"))
    assert linked.resolve().parent.parent == source.resolve()
    again = split_image_folder(source, tmp_path / "split", val_fraction=0.2, seed=3)  # replaces the old split
    assert sorted(str(p.relative_to(again)) for p in again.rglob("*.png")) == listing


def test_split_rejects_classes_that_cannot_be_split(tmp_path):
    source = _flat_folder(tmp_path / "src", n_per_class=1)
    with pytest.raises(DataNotFoundError, match="at least 2"):
        split_image_folder(source, tmp_path / "split")
    with pytest.raises(ConfigError, match="val_fraction"):
        split_image_folder(source, tmp_path / "split", val_fraction=1.5)
    (tmp_path / "empty" / "a").mkdir(parents=True)
    with pytest.raises(DataNotFoundError, match="no class folders with images"):
        split_image_folder(tmp_path / "empty", tmp_path / "split")


def test_spec_of_a_flat_folder_splits_it_into_the_run_folder(tiny, tmp_path):
    source = _flat_folder(tmp_path / "fruit")
    spec = make_spec(TINY_NAME, source, freeze_backbone=True, base_directory=tmp_path / "runs")
    assert spec.name == default_run_name(TINY_NAME, source, True) == f"{TINY_NAME}-all-frozen"
    assert Path(spec.data_dir) == (tmp_path / "runs/ImageFolder/finetune" / spec.name / "data_split").resolve()
    assert spec.source_dir == str(source.resolve())
    assert spec.categories == CLASSES and spec.num_classes == 3
    assert spec.lr == 1e-3  # frozen backbone: only the classifier trains
    assert spec.image_size == 32  # the model's evaluation crop
    assert FinetuneSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec


def test_a_runs_split_is_kept_for_resuming_and_replaced_only_on_request(tiny, tmp_path):
    source = _flat_folder(tmp_path / "fruit")
    base = tmp_path / "runs"
    spec = make_spec(TINY_NAME, source, name="run", seed=1, base_directory=base)
    spec.write(base / "ImageFolder" / "finetune" / "run")
    marker = Path(spec.data_dir) / "kept"
    marker.touch()
    again = make_spec(TINY_NAME, source, name="run", seed=1, epochs=3, base_directory=base)
    assert again.data_dir == spec.data_dir and marker.exists() and again.val_fraction == 0.2
    with pytest.raises(ConfigError, match="another split"):
        make_spec(TINY_NAME, source, name="run", seed=2, base_directory=base)
    assert marker.exists()  # the earlier run's split is untouched
    replaced = make_spec(TINY_NAME, source, name="run", seed=2, base_directory=base, replace=True)
    assert not marker.exists() and replaced.seed == 2
    replaced.write(base / "ImageFolder" / "finetune" / "run")

    def files(split: str) -> list[Path]:
        return sorted(p.relative_to(split) for p in Path(split).rglob("*") if p.is_file())

    before = files(replaced.data_dir)
    shutil.rmtree(replaced.data_dir)  # a split that went missing is made again the same way (not "another split")
    again = make_spec(TINY_NAME, source, name="run", seed=2, base_directory=base)
    assert again == replaced and files(again.data_dir) == before and before


def test_spec_of_a_split_folder_uses_it_and_checks_it(tiny, tmp_path):
    root = make_tiny_image_folder(tmp_path / "fruit", CLASSES, 2)
    spec = make_spec(TINY_NAME, root, lr=0.5, base_directory=tmp_path / "runs")
    assert spec.data_dir == str(root.resolve()) and spec.source_dir is None and spec.lr == 0.5
    assert not (tmp_path / "runs").exists()  # nothing written for an already split folder

    (root / "val" / "cherry").rename(root / "val" / "durian")
    with pytest.raises(DataNotFoundError, match="differ"):
        make_spec(TINY_NAME, root)
    only_train = make_tiny_image_folder(tmp_path / "half", CLASSES, 2, splits=("train",))
    with pytest.raises(DataNotFoundError, match="no val/ folder"):
        make_spec(TINY_NAME, only_train)
    with pytest.raises(DataNotFoundError, match="does not exist"):
        make_spec(TINY_NAME, tmp_path / "nowhere")
    with pytest.raises(UnknownNameError, match="did you mean 'resnet18'"):
        make_spec("resnet_18", root)
    with pytest.raises(ConfigError, match="epochs"):
        make_spec(TINY_NAME, only_train, epochs=0)  # the numbers are checked before the data


def test_a_runs_config_is_read_from_its_run_folder(tiny, tmp_path):
    root = make_tiny_image_folder(tmp_path / "fruit", CLASSES, 2)
    spec = make_spec(TINY_NAME, root, name="mine", weights=tiny)
    run = tmp_path / "runs" / "ImageFolder" / "finetune" / "mine"
    spec.write(run)
    assert FinetuneSpec.read(run) == spec
    experiment = Experiment(run)
    config = experiment.config
    assert config["data"]["num_classes"] == 3 and config["data"]["root"] == str(root.resolve())
    assert config["model"]["init"] == {"pretrained": True, "weights": str(tiny.resolve())}
    assert config["model"]["categories"] == CLASSES
    assert collection.CONFIGS == {}  # nothing was registered anywhere

    # training starts from the given weights; loading trained weights never needs them
    trained = experiment.get_model()
    assert torch.equal(trained.state_dict()["conv1.linear.weight"], torch.load(tiny, weights_only=True)["conv1.linear.weight"])
    torch.save(trained.state_dict(), tmp_path / "trained.pth")
    tiny.unlink()
    loaded = experiment.load_model_from_weights(tmp_path / "trained.pth")
    assert loaded.categories == CLASSES
    assert torch.equal(loaded.state_dict()["fc.linear.weight"], trained.state_dict()["fc.linear.weight"])


def test_run_folders_without_a_readable_spec_are_refused(tiny, tmp_path):
    root = make_tiny_image_folder(tmp_path / "fruit", CLASSES, 2)
    runs = tmp_path / "runs" / "ImageFolder" / "finetune"
    make_spec(TINY_NAME, root, name="mine").write(runs / "mine")
    with pytest.raises(UnknownNameError, match="did you mean 'mine'"):
        Experiment(runs / "mien")
    (runs / "broken").mkdir()
    (runs / "broken" / "finetune.json").write_text("{not json")
    with pytest.raises(ConfigError, match="not a valid fine-tuning spec"):
        Experiment(runs / "broken")
    with pytest.raises(ConfigError, match="read from their run folders"):
        get_config("ImageFolder", "finetune", "mine")


def test_importing_the_collection_reads_no_working_directory(tmp_path):
    (tmp_path / "experiments" / "ImageFolder" / "finetune" / "broken").mkdir(parents=True)
    (tmp_path / "experiments" / "ImageFolder" / "finetune" / "broken" / "finetune.json").write_text("{not json")
    code = (
        "import warnings; warnings.simplefilter('error')\n"
        "from bcos.experiments.ImageFolder.finetune import experiment_parameters as c\n"
        "print(len(c.CONFIGS))"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "0"


# ------------------------------------------------------------------------------------ model
def test_new_classifier_on_pretrained_backbone(tiny):
    source = torch.load(tiny, weights_only=True)
    model = get_model({"name": TINY_NAME, "args": {"num_classes": 3}, "init": {"pretrained": True, "weights": str(tiny)}})
    own = model.state_dict()
    assert own["fc.linear.weight"].shape[0] == 3
    backbone = [k for k in source if not k.startswith("fc.")]
    assert backbone and all(torch.equal(own[k], source[k]) for k in backbone)
    assert not hasattr(model, "transform")  # the source model's transform does not apply any more
    fresh = get_model({"name": TINY_NAME, "args": {"num_classes": 3}})
    assert not torch.equal(fresh.state_dict()["conv1.linear.weight"], source["conv1.linear.weight"])


def test_frozen_backbone_trains_only_the_classifier_and_keeps_its_statistics(tiny):
    model = create_model(TINY_NAME, num_classes=3, weights=tiny)
    frozen = freeze_backbone(model)
    assert frozen and not any(name.startswith("fc.") for name in frozen)
    trainable = [name for name, p in model.named_parameters() if p.requires_grad]
    assert trainable and all(name.startswith("fc.") for name in trainable)

    before = {k: v.clone() for k, v in model.state_dict().items()}
    features = model.get_feature_extractor()
    x = torch.rand(4, 6, 32, 32)
    model.eval()
    eval_features = features(x)
    model.train()
    assert torch.allclose(features(x), eval_features)  # norms use the pretrained statistics in train mode
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    model(x).sum().backward()
    optimizer.step()
    after = model.state_dict()
    changed = {k for k in after if not torch.equal(after[k], before[k])}
    assert changed and all(k.startswith("fc.") for k in changed)


def test_models_without_a_classifier_cannot_be_frozen():
    with pytest.raises(ConfigError, match="get_classifier"):
        freeze_backbone(torch.nn.Linear(2, 2))


# ------------------------------------------------------------------------------------ end to end
def test_bcos_train_finetune_then_explain_and_evaluate(tiny, tmp_path, capsys):
    data = _flat_folder(tmp_path / "fruit", n_per_class=3)
    base = tmp_path / "runs"
    common = ["--data-dir", str(data), "--weights", str(tiny), "--base_directory", str(base)]
    status = bcos_main([
        "train", "--finetune", TINY_NAME, *common, "--epochs", "1", "--batch-size", "8",
        "--num-workers", "0", "--name", "fruit", "--refresh_rate", "50",
    ])  # fmt: skip
    assert status == 0
    run = base / "ImageFolder" / "finetune" / "fruit"
    assert (run / "finetune.json").is_file() and (run / "last.ckpt").is_file()
    assert "bcos explain IMAGES... --run" in capsys.readouterr().out

    image = next((run / "data_split" / "val").rglob("*.png"))
    out = tmp_path / "explained"
    assert bcos_main(["explain", str(image), "--run", str(run), "--reload", "last", "--output", str(out), "--top-k", "2"]) == 0
    record = json.loads((out / "predictions.json").read_text())[0]
    assert {p["class_name"] for p in record["predictions"]} <= set(CLASSES)
    assert len(record["explained"]) == 2 and (out / "report.html").is_file()

    capsys.readouterr()
    assert bcos_main([
        "evaluate", "--dataset", "ImageFolder", "--base_network", "finetune", "--experiment_name", "fruit",
        "--reload", "last", "--base_directory", str(base), "--no-progress",
    ]) == 0  # fmt: skip
    assert "Acc@1" in capsys.readouterr().out

    # the same run folder with another model or data is refused unless started over
    other = make_tiny_image_folder(tmp_path / "other", ["x", "y"], 2)
    assert bcos_main(["train", "--finetune", TINY_NAME, "--data-dir", str(other), "--weights", str(tiny),
                      "--base_directory", str(base), "--name", "fruit", "--fast_dev_run"]) == 2  # fmt: skip
    assert "pick another --name" in capsys.readouterr().err


def test_bcos_train_option_mistakes_exit_with_status_2(tiny, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        bcos_main(["train", "--epochs", "3"])
    assert exit_info.value.code == 2 and "--epochs only apply with --finetune" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        bcos_main(["train", "--finetune", TINY_NAME])
    assert "--data-dir" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        bcos_main(["train", "--finetune", TINY_NAME, "--data-dir", str(tmp_path), "--dataset", "CIFAR10"])
    assert "drop --dataset" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        bcos_main(["train", "--dataset", "CIFAR10"])
    assert "required: --base_network, --experiment_name" in capsys.readouterr().err
    data = _flat_folder(tmp_path / "fruit")
    runs = tmp_path / "runs"
    assert bcos_main(["train", "--finetune", "resnet_18", "--data-dir", str(data), "--base_directory", str(runs)]) == 2
    assert "did you mean 'resnet18'" in capsys.readouterr().err
    assert bcos_main(["train", "--finetune", TINY_NAME, "--data-dir", str(data), "--base_directory", str(runs),
                      "--batch-size", "0"]) == 2  # fmt: skip
    assert "batch_size must be at least 1" in capsys.readouterr().err
    assert not runs.exists()  # nothing was split or written
