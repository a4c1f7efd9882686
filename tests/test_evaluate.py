"""Top-1/top-5 counting, ``evaluate_model`` and ``evaluate.py`` on a tiny CIFAR-10."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from bcos.cli.errors import run_cli
from bcos.cli.evaluate import main
from bcos.errors import DataNotFoundError
from bcos.experiments.utils.evaluation import count_correct, evaluate_model, format_accuracy
from bcos.experiments.utils.experiment import Experiment
from tests.helpers_data import make_tiny_cifar10

REPO = Path(__file__).resolve().parent.parent
DATASET, COLLECTION, NAME = "CIFAR10", "norm_ablations_final", "resnet_20_bnu-linear-nomaxout"
ACCURACY_LINE = re.compile(r"^Acc@1 (\d+\.\d{3})% Acc@5 (\d+\.\d{3})%$", re.MULTILINE)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # The shared 2-core test machine is oversubscribed: intra-op threads make tiny forwards 10x slower.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# --------------------------------------------------------------------------- counting


def test_count_correct_hard_soft_and_few_classes():
    logits = torch.tensor([
        [0.0, 9.0, 1.0, 2.0, 3.0, 4.0, 5.0],  # ranking: 1, 6, 5, 4, 3, 2, 0
        [9.0, 0.0, 1.0, 2.0, 3.0, 4.0, 5.0],  # ranking: 0, 6, 5, 4, 3, 2, 1
        [0.0, 1.0, 9.0, 8.0, 7.0, 6.0, 5.0],  # ranking: 2, 3, 4, 5, 6, 1, 0
    ])
    targets = torch.tensor([1, 3, 0])  # top-1 hit, top-5 hit only (rank 5), miss
    assert count_correct(logits, targets) == [1, 2]
    soft = torch.nn.functional.one_hot(targets, 7).float() * 0.9 + 0.01
    assert count_correct(logits, soft) == [1, 2]
    assert count_correct(logits, torch.tensor([6, 1, 1]), topk=(1, 2, 6)) == [0, 1, 2]
    # three classes: every target is within the top 5
    assert count_correct(logits[:, :3], torch.tensor([0, 1, 2])) == [1, 3]


class _Logits(nn.Module):
    """Returns its input as logits (so test data decide the predictions)."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, x):
        return x * self.scale


def test_evaluate_model_counts_progress_and_restores_mode(capsys):
    torch.manual_seed(0)
    batches = [(torch.randn(5, 8), torch.randint(0, 8, (5,))) for _ in range(3)]
    model = _Logits().train()
    result = evaluate_model(model, batches, "cpu", progress=True)
    logits = torch.cat([b[0] for b in batches])
    targets = torch.cat([b[1] for b in batches])
    top5 = logits.topk(5, dim=1).indices
    assert result["samples"] == 15
    assert result["correct_top1"] == int((logits.argmax(1) == targets).sum())
    assert result["correct_top5"] == int((top5 == targets[:, None]).any(1).sum())
    assert result["acc1"] == result["correct_top1"] / 15
    assert model.training
    assert "Evaluating" in capsys.readouterr().err  # the progress bar
    assert format_accuracy({"acc1": 0.761234, "acc5": 0.93}) == "Acc@1 76.123% Acc@5 93.000%"
    with pytest.raises(DataNotFoundError, match="no samples"):
        evaluate_model(model, [], "cpu", progress=False)


# --------------------------------------------------------------------------- evaluate.py


@pytest.fixture(scope="module")
def tiny_setup(tmp_path_factory):
    """A tiny CIFAR-10, a weights file and a run folder holding the same weights (plain + EMA)."""
    root = tmp_path_factory.mktemp("evaluate")
    make_tiny_cifar10(root / "data", n_train=10, n_test=20)
    experiment = Experiment(DATASET, COLLECTION, NAME, base_directory=root / "experiments")
    torch.manual_seed(7)
    weights = experiment.get_model().state_dict()
    torch.manual_seed(8)
    ema_weights = experiment.get_model().state_dict()
    torch.save(weights, root / "weights.pth")
    experiment.save_dir.mkdir(parents=True)
    state_dict = {f"model.{k}": v for k, v in weights.items()}
    state_dict.update({f"ema.module.{k}": v for k, v in ema_weights.items()})
    torch.save({"state_dict": state_dict, "epoch": 1, "pytorch-lightning_version": "2.4.0"},
               experiment.run_folder.last_checkpoint)
    return root, weights, ema_weights


def _expected_accuracy(root: Path, state_dict: dict) -> tuple[float, float]:
    experiment = Experiment(DATASET, COLLECTION, NAME)
    model = experiment.get_model()
    model.load_state_dict(state_dict)
    datamodule = experiment.get_datamodule(batch_size=7, num_workers=0)
    datamodule.setup("test")
    result = evaluate_model(model, datamodule.test_dataloader(), "cpu", progress=False)
    assert result["samples"] == 20
    return round(100 * result["acc1"], 3), round(100 * result["acc5"], 3)


def _run(argv: list[str], capsys) -> tuple[int, str, str]:
    status = run_cli(main, argv)
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def _common(root: Path) -> list[str]:
    return ["--dataset", DATASET, "--base_network", COLLECTION, "--experiment_name", NAME,
            "--base_directory", str(root / "experiments"), "--batch_size", "8", "--num_workers", "0",
            "--no-cuda", "--no-progress"]


@pytest.mark.filterwarnings("ignore:the CIFAR10 evaluation set has 20 examples")
def test_evaluate_with_weights_and_reload_agree(tiny_setup, monkeypatch, capsys):
    root, weights, ema_weights = tiny_setup
    monkeypatch.setenv("DATA_ROOT", str(root / "data"))
    deterministic_before = torch.are_deterministic_algorithms_enabled()

    status, out, err = _run([*_common(root), "--weights", str(root / "weights.pth")], capsys)
    assert status == 0, err
    match = ACCURACY_LINE.search(out)
    assert match is not None, out
    measured = (float(match[1]), float(match[2]))
    assert measured == _expected_accuracy(root, weights)
    assert "Out of a total of 20" in out
    assert torch.are_deterministic_algorithms_enabled() == deterministic_before

    status, out, err = _run([*_common(root), "--reload", "last"], capsys)
    assert status == 0, err
    assert "Loaded 'last.ckpt' (epoch 1)" in out
    assert (float(ACCURACY_LINE.search(out)[1]), float(ACCURACY_LINE.search(out)[2])) == measured

    status, out, err = _run([*_common(root), "--reload", "last", "--ema"], capsys)
    assert status == 0, err
    assert "(EMA)" in out
    assert (float(ACCURACY_LINE.search(out)[1]), float(ACCURACY_LINE.search(out)[2])) == _expected_accuracy(root, ema_weights)


_HUBCONF = """
from types import SimpleNamespace

import torch

from bcos.experiments.utils.experiment import Experiment

__all__ = ["tiny_cifar"]


def tiny_cifar(pretrained=False):
    model = Experiment("CIFAR10", "norm_ablations_final", "resnet_20_bnu-linear-nomaxout").get_model()
    if pretrained:
        model.load_state_dict(torch.load(WEIGHTS, weights_only=True))
    source = SimpleNamespace(dataset="CIFAR10", collection="norm_ablations_final",
                             experiment="resnet_20_bnu-linear-nomaxout")
    model.pretrained_config = SimpleNamespace(source=source)
    return model
"""


@pytest.mark.filterwarnings("ignore:the CIFAR10 evaluation set has 20 examples")
def test_evaluate_hubconf_model_uses_its_source_config(tiny_setup, tmp_path, monkeypatch, capsys):
    root, weights, _ = tiny_setup
    monkeypatch.setenv("DATA_ROOT", str(root / "data"))
    (tmp_path / "hubconf.py").write_text(f"WEIGHTS = {str(root / 'weights.pth')!r}\n" + _HUBCONF)
    monkeypatch.chdir(tmp_path)
    options = ["--batch_size", "8", "--num_workers", "0", "--no-cuda", "--no-progress"]
    status, out, err = _run(["--hubconf", "tiny_cifar", *options], capsys)  # code from the working directory
    assert status == 2 and err.strip() == (
        f"error: --hubconf would import and run '{(tmp_path / 'hubconf.py').resolve()}' from the working directory; "
        "pass --trust-local-hubconf if you trust that file, or run from another folder to use bcos's own hubconf.py"
    )
    options.append("--trust-local-hubconf")
    status, out, err = _run(["--hubconf", "tiny_cifar", *options], capsys)
    assert status == 0, err
    assert f"warning: --hubconf imports and runs '{(tmp_path / 'hubconf.py').resolve()}'" in err
    match = ACCURACY_LINE.search(out)
    assert (float(match[1]), float(match[2])) == _expected_accuracy(root, weights)
    status, _, err = _run(["--hubconf", "tiny_cifr", *options], capsys)
    assert status == 2 and "did you mean 'tiny_cifar'" in err


def test_get_datamodule_overrides_do_not_touch_the_config(tiny_setup, monkeypatch):
    root, _, _ = tiny_setup
    monkeypatch.setenv("DATA_ROOT", str(root / "data"))
    experiment = Experiment(DATASET, COLLECTION, NAME)
    batch_size = experiment.config["data"]["batch_size"]
    datamodule = experiment.get_datamodule(batch_size=3, num_workers=0)
    assert datamodule.batch_size == 3
    assert experiment.config["data"]["batch_size"] == batch_size
    assert experiment.get_datamodule().batch_size == batch_size


def test_evaluate_errors_are_one_line(tiny_setup, monkeypatch, capsys):
    root, _, _ = tiny_setup
    monkeypatch.setenv("DATA_ROOT", str(root / "data"))
    status, _, err = _run(_common(root), capsys)
    assert status == 2 and err.startswith("error: pass --reload")
    status, _, err = _run([*_common(root), "--reload", "epoch_999"], capsys)
    assert status == 2 and "available: last" in err and err.count("\n") == 1
    status, _, err = _run([*_common(root)[:-8], "--reload", "last", "--dataset", "CIFAR1O"], capsys)
    assert status == 2 and "did you mean 'CIFAR10'" in err
    status, _, err = _run(["--hubconf", "resnet18", "--reload", "last"], capsys)
    assert status == 2 and "drop --reload" in err
    status, _, err = _run(["--hubconf", "resnet18", "--ema"], capsys)
    assert status == 2 and "drop --reload/--weights/--ema" in err
    with pytest.raises(SystemExit) as info:  # argparse: mutually exclusive options
        run_cli(main, [*_common(root), "--reload", "last", "--weights", "x.pth"])
    assert info.value.code == 2
    assert "not allowed with argument" in capsys.readouterr().err


def test_root_script_is_a_thin_entry_point(tiny_setup, tmp_path):
    root, _, _ = tiny_setup
    done = subprocess.run([sys.executable, str(REPO / "evaluate.py"), *_common(root), "--reload", "epoch_3"],
                          capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert done.returncode == 2
    assert done.stderr.startswith("error: no checkpoint for epoch 3") and "Traceback" not in done.stderr
