"""Datamodules defined outside bcos are known before ``--dataset`` is checked, for every command.

A temporary user package ``tinyplug`` (not installed, found from the working directory) defines
``TinyShapesDataModule``: 32x32 images of a white square in one of four quadrants, four classes,
built in memory. Its configs are a collection ``TinyShapes/tiny`` in a folder appended to
``bcos.experiments.__path__`` (as a plugin package would), which does not import the datamodule.
Each command is run once without ``--datamodule`` (it fails with one line naming the fix) and once
with it, after the package and its registration are forgotten again, so nothing left over from an
earlier command helps. A second data set, ``Stripes``, is defined at the top of its collection's
``experiment_parameters.py`` and found through ``--dataset`` alone; a third comes from an entry point.
"""

from __future__ import annotations

import importlib.metadata
import json
import sys
import textwrap
from pathlib import Path

import pytest

import bcos.data.datamodules as datamodules
import bcos.experiments
from bcos.cli.errors import run_cli
from bcos.cli.main import main as bcos_main
from bcos.data.datamodule_sources import ENTRY_POINT_GROUP, find_datamodule_class, import_datamodule
from bcos.errors import ConfigError, UnknownNameError
from bcos.experiments.utils.datasets import resolve_datamodule

PLUGIN = "tinyplug"
SPEC = f"{PLUGIN}.data:TinyShapesDataModule"

DATA_PY = '''
"""A user datamodule: a white square in one of four quadrants (four classes), built in memory."""
import numpy as np
from PIL import Image
from torch.utils.data import Dataset

from bcos.data.datamodules import ClassificationDataModule


class Squares(Dataset):
    def __init__(self, per_class, seed, transform):
        rng = np.random.default_rng(seed)
        self.items = []
        for label in range(4):
            for _ in range(per_class):
                image = np.full((32, 32, 3), 20, np.uint8)
                top = (0 if label < 2 else 16) + int(rng.integers(0, 5))
                left = (0 if label % 2 == 0 else 16) + int(rng.integers(0, 5))
                image[top:top + 11, left:left + 11] = 235
                self.items.append((Image.fromarray(image), label))
        self.transform = transform

    def __len__(self):
        return len(self.items)

    def __getitem__(self, index):
        image, label = self.items[index]
        return self.transform(image), label


class TinyShapesDataModule(ClassificationDataModule):
    NUM_CLASSES = 4
    CATEGORIES = ["top-left", "top-right", "bottom-left", "bottom-right"]

    def make_train_dataset(self, transform):
        return Squares(48, 0, transform)

    def make_eval_dataset(self, transform):
        return Squares(6, 1, transform)


class NotADataModule:
    pass
'''

CONFIGS_PY = '''
from bcos.data.presets import CIFAR10ClassificationPresetTest, CIFAR10ClassificationPresetTrain
from bcos.modules import norms
from bcos.modules.losses import BinaryCrossEntropyLoss
from bcos.optim import LRSchedulerFactory, OptimizerFactory
{defines}
CONFIGS = {{
    "r8": dict(
        data=dict(
            train_transform=CIFAR10ClassificationPresetTrain(is_bcos=True, hflip_prob=0.0, padding=0),
            test_transform=CIFAR10ClassificationPresetTest(is_bcos=True),
            batch_size=16, num_workers=0, num_classes={classes},
        ),
        model=dict(
            is_bcos=True, name="resnet8",
            args=dict(num_classes={classes}, inplanes=8, norm_layer=norms.NoBias(norms.BatchNormUncentered2d)),
            bcos_args=dict(b=2, max_out=1),
        ),
        criterion=BinaryCrossEntropyLoss(),
        test_criterion=BinaryCrossEntropyLoss(),
        optimizer=OptimizerFactory(name="Adam", lr=1e-2),
        lr_scheduler=LRSchedulerFactory(name="cosineannealinglr", epochs=10),
        trainer=dict(max_epochs=10, num_sanity_val_steps=0, enable_model_summary=False),
    ),
}}
'''

STRIPES_DEFINITION = '''
import torch
from torch.utils.data import TensorDataset
from bcos.data.datamodules import ClassificationDataModule


class StripesDataModule(ClassificationDataModule):
    """Defined by its collection: horizontal (0) or vertical (1) stripes, already encoded."""

    NUM_CLASSES = 2

    def _stripes(self):
        horizontal = torch.zeros(3, 32, 32)
        horizontal[:, ::4] = 1.0
        images = torch.stack([horizontal, horizontal.transpose(1, 2)] * 4)
        return TensorDataset(torch.cat([images, 1 - images], 1), torch.tensor([0, 1] * 4))

    def make_train_dataset(self, transform):
        return self._stripes()

    def make_eval_dataset(self, transform):
        return self._stripes()

'''

MODEL_PY = "from bcos.experiments.Digits.bcos_demo.model import get_model  # noqa: F401\n"


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))


def forget(*datasets: str) -> None:
    """Unregister ``datasets`` and drop the plugin's and the test collections' modules."""
    for name in datasets:
        datamodules._REGISTRY.pop(name, None)
    for module in list(sys.modules):
        if module.split(".")[0] == PLUGIN or module.startswith(("bcos.experiments.TinyShapes", "bcos.experiments.Stripes")):
            del sys.modules[module]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """The plugin package, the two collections and a run of ``TinyShapes/tiny/r8`` trained with --datamodule."""
    root = tmp_path_factory.mktemp("registration")
    _write(root / "src" / PLUGIN / "__init__.py", "")
    _write(root / "src" / PLUGIN / "data.py", DATA_PY)
    configs = root / "configs"
    for dataset, defines, classes in (("TinyShapes", "", 4), ("Stripes", STRIPES_DEFINITION, 2)):
        folder = configs / dataset / "tiny"
        _write(folder / "__init__.py", "")
        _write(folder / "model.py", MODEL_PY)
        _write(folder / "experiment_parameters.py", CONFIGS_PY.format(defines=defines, classes=classes))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(datamodules, "_REGISTRY", dict(datamodules._REGISTRY))
        patch.setattr(bcos.experiments, "__path__", [*bcos.experiments.__path__, str(configs)])
        patch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(root / "src"))])
        patch.chdir(root / "src")
        forget("TinyShapes", "Stripes")
        base = root / "experiments"
        argv = ["train", "--datamodule", SPEC, "--base_network", "tiny", "--experiment_name", "r8"]
        assert bcos_main([*argv, "--base_directory", str(base), "--refresh_rate", "1000"]) == 0
        yield {"root": root, "base": base, "run": base / "TinyShapes" / "tiny" / "r8"}
        forget("TinyShapes", "Stripes")


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) >= 1 and err[-1].startswith("error: "), err
    return err[-1]


def test_train_with_datamodule_made_a_run(world):
    run = world["run"]
    assert (run / "last.ckpt").is_file()
    assert datamodules.registry()["TinyShapes"].__module__ == f"{PLUGIN}.data"


def test_train_fast_dev_run_through_train_py(world, capsys):
    from bcos.cli.train import main as train_main

    forget("TinyShapes")
    argv = ["--dataset", "TinyShapes", "--base_network", "tiny", "--experiment_name", "r8", "--fast_dev_run"]
    argv += ["--base_directory", str(world["root"] / "fast")]
    assert train_main(argv) == 2
    line = _one_error_line(capsys)
    assert "nothing defines TinyShapesDataModule" in line and "--datamodule" in line
    forget("TinyShapes")
    assert train_main([*argv, "--datamodule", SPEC]) == 0


def test_evaluate_with_datamodule(world, capsys):
    argv = ["evaluate", "--dataset", "TinyShapes", "--base_network", "tiny", "--experiment_name", "r8", "--reload", "last"]
    argv += ["--base_directory", str(world["base"]), "--batch_size", "8", "--no-progress"]
    forget("TinyShapes")
    assert bcos_main(argv) == 2
    assert "TinyShapesDataModule" in _one_error_line(capsys)
    forget("TinyShapes")
    assert bcos_main([*argv, "--datamodule", SPEC]) == 0
    out = capsys.readouterr().out
    assert "Out of a total of 24" in out and "Acc@1" in out


def test_explain_with_datamodule_names_its_categories(world, tmp_path, capsys):
    from PIL import Image

    image = Image.new("RGB", (32, 32), (20, 20, 20))
    image.paste((235, 235, 235), (18, 18, 29, 29))  # bottom-right
    image.save(tmp_path / "square.png")
    argv = ["explain", str(tmp_path / "square.png"), "--run", str(world["run"]), "--reload", "last"]
    argv += ["--output", str(tmp_path / "out"), "--no-progress", "--no-report"]
    forget("TinyShapes")
    assert bcos_main(argv) == 2
    assert "TinyShapesDataModule" in _one_error_line(capsys)
    forget("TinyShapes")
    assert bcos_main([*argv, "--datamodule", SPEC]) == 0
    predictions = json.loads((tmp_path / "out" / "predictions.json").read_text())
    text = json.dumps(predictions)
    assert any(name in text for name in ("top-left", "top-right", "bottom-left", "bottom-right"))


def test_localise_with_datamodule(world, capsys):
    argv = ["localise", "--save_path", str(world["run"]), "--reload", "last", "--analysis_config", "500_2x2_noconfthresh"]
    argv += ["--smooth", "1", "--sample_size", "1", "--batch_size", "8", "--device", "cpu"]
    forget("TinyShapes")
    assert bcos_main(argv) == 2
    assert "TinyShapesDataModule" in _one_error_line(capsys)
    forget("TinyShapes")
    assert bcos_main([*argv, "--datamodule", SPEC]) == 0
    assert "Saved results to" in capsys.readouterr().out


def test_module_entry_point_runs_localisation_too(world):
    from bcos.cli.localisation import main as localisation_main

    forget("TinyShapes")
    argv = ["--save_path", str(world["run"]), "--analysis_config", "500_2x2_noconfthresh", "--smooth", "3"]
    assert run_cli(localisation_main, [*argv, "--sample_size", "1", "--device", "cpu", "--datamodule", SPEC]) == 0


def test_collection_defined_datamodule_is_found_by_dataset(world, capsys):
    from bcos.cli.train import main as train_main

    forget("Stripes")
    argv = ["--dataset", "Stripes", "--base_network", "tiny", "--experiment_name", "r8", "--fast_dev_run"]
    assert train_main([*argv, "--base_directory", str(world["root"] / "stripes")]) == 0
    assert datamodules.registry()["Stripes"].__module__ == "bcos.experiments.Stripes.tiny.experiment_parameters"
    forget("Stripes")
    assert resolve_datamodule("Stripes").dataset_name() == "Stripes"  # without a collection named: all of them


def test_entry_point_datamodule(world, monkeypatch):
    forget("TinyShapes")
    entry_point = importlib.metadata.EntryPoint(name="TinyShapes", value=SPEC, group=ENTRY_POINT_GROUP)
    calls = []

    def entry_points(**selection):
        calls.append(selection)
        return [entry_point] if selection.get("group") == ENTRY_POINT_GROUP else []

    monkeypatch.syspath_prepend(str(world["root"] / "src"))
    monkeypatch.setattr(importlib.metadata, "entry_points", entry_points)
    assert find_datamodule_class("TinyShapes").__module__ == f"{PLUGIN}.data"
    assert calls == [{"group": ENTRY_POINT_GROUP}]
    with pytest.raises(UnknownNameError, match=r"unknown dataset 'TinyShape'; did you mean 'TinyShapes'\?"):
        find_datamodule_class("TinyShape")
    wrong = importlib.metadata.EntryPoint(name="Flowers", value=SPEC, group=ENTRY_POINT_GROUP)
    monkeypatch.setattr(importlib.metadata, "entry_points", lambda **selection: [wrong])
    with pytest.raises(ConfigError, match="the entry point's name must be 'TinyShapes'"):
        find_datamodule_class("Flowers")


@pytest.mark.parametrize(
    "spec, message",
    [
        ("no_such_pkg.data:FlowersDataModule", r"no module named 'no_such_pkg.data'; install its package, run from the folder"),
        (f"{PLUGIN}.data:FlowersDataModule", r"unknown attribute of tinyplug.data 'FlowersDataModule'"),
        (f"{PLUGIN}.data:NotADataModule", r"is 'NotADataModule', not a subclass of bcos.data.datamodules.ClassificationDataModule"),
        (f"{PLUGIN}.data:np", r"is 'module', not a subclass"),
        ("tinyplug.data:", r"--datamodule takes MODULE:CLASS"),
    ],
)
def test_bad_datamodule_values_are_one_line_errors(world, capsys, spec, message):
    import re

    forget("TinyShapes")
    argv = ["train", "--datamodule", spec, "--base_network", "tiny", "--experiment_name", "r8"]
    assert bcos_main([*argv, "--base_directory", str(world["root"] / "bad")]) == 2
    assert re.search(message, _one_error_line(capsys))


def test_datamodule_and_another_dataset_conflict(world):
    forget("TinyShapes")
    with pytest.raises(ConfigError, match="registered as 'TinyShapes', but --dataset is 'Digits'"):
        resolve_datamodule("Digits", datamodule=SPEC)
    assert import_datamodule(f"{PLUGIN}.data").dataset_name() == "TinyShapes"  # a module alone: its one datamodule


@pytest.mark.parametrize(
    "source, reason",
    [
        ("class Broken(\n", r"SyntaxError: '\(' was never closed"),
        ("raise RuntimeError('the data server is down')\n", r"RuntimeError: the data server is down"),
        ("import os\nos.path.joinn('a')\n", r"AttributeError: module 'posixpath' has no attribute 'joinn'"),
    ],
)
def test_a_datamodule_module_that_fails_to_import_is_one_line(tmp_path, monkeypatch, capsys, source, reason):
    """Issue 16: the module's own error (not a missing module) ended in a traceback; --debug still shows it."""
    import re

    module = f"broken_plugin_{abs(hash(source))}"
    _write(tmp_path / f"{module}.py", source)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    argv = ["train", "--datamodule", f"{module}:FlowersDataModule", "--base_network", "tiny", "--experiment_name", "r8",
            "--base_directory", str(tmp_path / "runs")]  # fmt: skip
    assert bcos_main(argv) == 2
    captured = capsys.readouterr().err
    assert "Traceback" not in captured
    line = _one_error_line_of(captured)
    assert re.fullmatch(rf"error: --datamodule {module}:FlowersDataModule: importing {module} failed \({reason}.*\); fix the module", line), line
    assert bcos_main([*argv, "--debug"]) == 2
    captured = capsys.readouterr().err
    assert "Traceback" in captured and f"{module}.py" in captured and captured.strip().splitlines()[-1] == line
    assert not (tmp_path / "runs").exists()


def _one_error_line_of(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    return lines[0]
