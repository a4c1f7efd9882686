"""Bad input gets a clear answer: a table of mistakes across the command lines and the API.

Every row is one mistake a user makes. A command line must exit with status 2 and print exactly
one ``error: ...`` line on stderr that names the fix (no traceback unless ``--debug``); an API
call must raise a :class:`bcos.errors.BcosError` whose one-line message names the fix. Unknown
names suggest the closest match. Nothing in the workspace (run folders, checkpoints, weights, data)
may be deleted or overwritten by a failed command.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from helpers_data import make_tiny_cifar10, make_tiny_image_folder

from bcos.errors import (
    BcosError,
    ConfigError,
    DataNotFoundError,
    InputError,
    UnknownArgumentError,
    UnknownNameError,
)

DATASET, COLLECTION, EXPERIMENT = "CIFAR10", "norm_ablations_final", "resnet_20"
OTHER_ARCHITECTURE = "resnet_32"
EXP = ["--dataset", DATASET, "--base_network", COLLECTION, "--experiment_name", EXPERIMENT]
RUN = f"experiments/{DATASET}/{COLLECTION}/{EXPERIMENT}"


# ---------------------------------------------------------------------------------- the workspace
@pytest.fixture(scope="module")
def template(tmp_path_factory) -> Path:
    """Files the mistakes are made with (copied fresh for every row)."""
    from bcos.experiments.utils import Experiment

    root = tmp_path_factory.mktemp("template")
    torch.manual_seed(0)
    model = Experiment(DATASET, COLLECTION, EXPERIMENT).get_model()
    weights = {key: value.clone() for key, value in model.state_dict().items()}
    torch.save(weights, root / "resnet20.pth")
    torch.save(Experiment(DATASET, COLLECTION, OTHER_ARCHITECTURE).get_model().state_dict(), root / "resnet32.pth")
    (root / "truncated.pth").write_bytes((root / "resnet20.pth").read_bytes()[:1000])

    run = root / "experiments" / DATASET / COLLECTION / EXPERIMENT
    run.mkdir(parents=True)
    checkpoint = {
        "state_dict": {f"model.{key}": value for key, value in weights.items()},
        "epoch": 0,
        "global_step": 10,
        "pytorch-lightning_version": "2.6.0",
    }
    torch.save(checkpoint, run / "last.ckpt")
    torch.save(checkpoint, run / "epoch=0-val_acc1=0.1000.ckpt")
    (root / "experiments" / DATASET / COLLECTION / "resnet_20_bn").mkdir()  # an empty run folder

    data = make_tiny_cifar10(root / "cifar", n_train=10, n_test=10)
    corrupt = make_tiny_cifar10(root / "cifar_corrupt", n_train=10, n_test=10)
    (corrupt / "cifar-10-batches-py" / "test_batch").write_bytes(os.urandom(300))
    truncated = make_tiny_cifar10(root / "cifar_truncated", n_train=10, n_test=10)
    test_batch = truncated / "cifar-10-batches-py" / "test_batch"
    test_batch.write_bytes(test_batch.read_bytes()[:500])
    assert data.is_dir()
    (root / "a_file").write_text("not a folder")
    (root / "not_an_image.png").write_text("hello")
    from PIL import Image

    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(root / "rgb.png")
    Image.fromarray(np.full((20, 24), 200, np.uint8)).save(root / "gray.png")  # 1 channel
    Image.fromarray(np.full((32, 32, 4), 100, np.uint8)).save(root / "rgba.png")  # 4 channels
    return root


@pytest.fixture
def workspace(template, tmp_path, monkeypatch) -> Path:
    import shutil

    root = tmp_path / "ws"
    shutil.copytree(template, root)
    monkeypatch.chdir(root)
    monkeypatch.setenv("DATA_ROOT", str(root / "cifar"))
    monkeypatch.delenv("IMAGENET_PATH", raising=False)
    monkeypatch.setenv("TORCH_HOME", str(root / "torch_home"))
    monkeypatch.setenv("BCOS_WEIGHTS_DIR", str(root / "no_weights_here"))
    monkeypatch.setenv("BCOS_CACHE_DIR", str(root / "cache"))
    return root


def _snapshot(root: Path) -> dict[str, tuple[int, str]]:
    """Every file under ``root`` with its size and content hash."""
    return {
        str(path.relative_to(root)): (path.stat().st_size, hashlib.sha256(path.read_bytes()).hexdigest())
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


# -------------------------------------------------------------------------------------- the table
@dataclass(frozen=True)
class CliCase:
    """``main(argv)`` must return 2 and print one error line matching ``fix``."""

    id: str
    command: str  # train | evaluate | submitit | bcos | localisation
    argv: tuple[str, ...]
    fix: str  # a regular expression the error line must contain
    env: tuple[tuple[str, str | None], ...] = ()


def _main(command: str) -> Callable[[list[str]], int]:
    from bcos.cli.errors import run_cli

    if command == "train":
        from bcos.cli.train import main

        return main
    if command == "evaluate":
        from bcos.cli.evaluate import main

        return lambda argv: run_cli(main, argv)
    if command == "submitit":
        from bcos.cli.submitit_launcher import main

        return main
    if command == "localisation":
        from bcos.cli.localisation import main

        return lambda argv: run_cli(main, argv)
    from bcos.cli.main import main

    return main


CLI_CASES = [
    # unknown names, with the closest match
    CliCase("train-unknown-dataset", "train", ("--dataset", "CIFAR1O", "--base_network", COLLECTION, "--experiment_name", EXPERIMENT), r"unknown dataset 'CIFAR1O'; did you mean 'CIFAR10'\?"),
    CliCase("train-unknown-collection", "train", ("--dataset", DATASET, "--base_network", "norm_ablation_final", "--experiment_name", EXPERIMENT), r"did you mean 'norm_ablations_final'\?"),
    CliCase("train-unknown-experiment", "train", ("--dataset", DATASET, "--base_network", COLLECTION, "--experiment_name", "resnet_2O"), r"did you mean 'resnet_20'\?.*list them with"),
    CliCase("evaluate-unknown-experiment", "evaluate", ("--dataset", DATASET, "--base_network", COLLECTION, "--experiment_name", "resnet_2o", "--reload", "last"), r"did you mean 'resnet_20'\?"),
    CliCase("evaluate-unknown-reload", "evaluate", (*EXP, "--reload", "bset"), r"unknown reload 'bset'; did you mean 'best'\?"),
    CliCase("evaluate-unknown-hub-entry", "evaluate", ("--hubconf", "resnet1B"), r"did you mean 'resnet18'\?"),
    CliCase("submitit-unknown-experiment", "submitit", ("--dataset", DATASET, "--base_network", COLLECTION, "--experiment_name", "resnet_20_bnn", "--gpus", "1", "--nodes", "1"), r"did you mean 'resnet_20_bn"),
    # options that cannot work
    CliCase("train-jit", "train", (*EXP, "--jit"), r"--jit \(TorchScript\) is not supported .*use --compile.*docs/deploying\.md"),
    CliCase("train-wandb-without-project", "train", (*EXP, "--wandb_logger"), r"needs --wandb_project NAME", (("WANDB_PROJECT", None),)),
    CliCase("train-refresh-rate-0", "train", (*EXP, "--refresh_rate", "0"), r"--refresh_rate must be at least 1"),
    CliCase("train-explanation-interval-0", "train", (*EXP, "--explanation_logging", "--explanation_logging_every_n_epochs", "0"), r"must be at least 1"),
    CliCase("train-fp16-on-cpu", "train", (*EXP, "--amp", "fp16"), r"--amp fp16 needs a GPU; use --amp bf16"),
    CliCase("submitit-no-gpus-no-nodes", "submitit", (*EXP, "--gpus", "-1", "--nodes", "0"), r"--gpus must be >= 0 and --nodes >= 1"),
    CliCase("evaluate-batch-size-0", "evaluate", (*EXP, "--reload", "last", "--batch_size", "0"), r"--batch_size must be at least 1"),
    CliCase("evaluate-no-checkpoint-choice", "evaluate", EXP, r"pass --reload .* or --weights PATH"),
    # run folders and checkpoints
    CliCase("evaluate-reload-epoch-999", "evaluate", (*EXP, "--reload", "epoch_999"), r"no checkpoint for epoch 999 .*available: last, epoch_0"),
    CliCase("evaluate-empty-run-folder", "evaluate", ("--dataset", DATASET, "--base_network", COLLECTION, "--experiment_name", "resnet_20_bn", "--reload", "last"), r"no checkpoints in .*train it first \(train.py\) or pass a weights file"),
    CliCase("evaluate-ema-without-ema", "evaluate", (*EXP, "--reload", "last", "--ema"), r"trained without EMA: drop ema=True / --ema"),
    CliCase("evaluate-weights-missing", "evaluate", (*EXP, "--weights", "missing.pth"), r"no checkpoint file at 'missing.pth'.*check the path"),
    CliCase("evaluate-weights-truncated", "evaluate", (*EXP, "--weights", "truncated.pth"), r"not a readable torch checkpoint.*re-download or re-create it"),
    CliCase("evaluate-weights-other-architecture", "evaluate", (*EXP, "--weights", "resnet32.pth"), r"does not fit the model: .*load it into the architecture/config it was trained with"),
    CliCase("train-truncated-last-ckpt", "train", EXP, r"cannot resume: .*not a readable torch checkpoint.*pass --force-no-resume"),
    # data
    CliCase("evaluate-data-root-unset", "evaluate", (*EXP, "--weights", "resnet20.pth"), r"DATA_ROOT is not set; set the environment variable DATA_ROOT", (("DATA_ROOT", None),)),
    CliCase("evaluate-corrupt-cifar", "evaluate", (*EXP, "--weights", "resnet20.pth"), r"CIFAR-10 file .*test_batch.* is corrupt or truncated .*delete", (("DATA_ROOT", "cifar_corrupt"),)),
    CliCase("evaluate-truncated-cifar", "evaluate", (*EXP, "--weights", "resnet20.pth"), r"CIFAR-10 file .*test_batch.* is corrupt or truncated .*delete", (("DATA_ROOT", "cifar_truncated"),)),
    # where results go
    CliCase("train-base-directory-is-a-file", "train", (*EXP, "--base_directory", "a_file/experiments"), r"cannot create the run folder a_file/experiments/.*\(Not a directory\); choose a writable --base_directory"),
    CliCase("explain-output-is-a-file", "bcos", ("explain", "rgb.png", "--run", RUN, "--output", "a_file/out"), r"cannot create the output folder 'a_file/out' \(Not a directory\); pass a writable --output DIR"),
    # the bcos command and the localisation analysis
    CliCase("bcos-explain-missing-image", "bcos", ("explain", "missing.jpg", "--run", RUN), r"no image or folder at 'missing.jpg'; check the path"),
    CliCase("bcos-explain-unreadable-image", "bcos", ("explain", "not_an_image.png", "--run", RUN), r"none of the images could be read; check the files"),
    CliCase("bcos-explain-target-out-of-range", "bcos", ("explain", "rgb.png", "--run", RUN, "--target", "99"), r"--target 99 is out of range; the model has classes 0..9"),
    CliCase("bcos-explain-unknown-class", "bcos", ("explain", "rgb.png", "--run", RUN, "--target", "truk"), r"unknown class 'truk'; did you mean 'truck'\?"),
    CliCase("bcos-explain-reload-epoch-999", "bcos", ("explain", "rgb.png", "--run", RUN, "--reload", "epoch_999"), r"no checkpoint for epoch 999 .*available: last, epoch_0"),
    CliCase("bcos-explain-run-missing", "bcos", ("explain", "rgb.png", "--run", "experiments/nowhere"), r"run folder 'experiments/nowhere' does not exist; pass <base>/<dataset>/<base_network>/<experiment_name>"),
    CliCase("bcos-models-unknown", "bcos", ("models", "resnet1B"), r"unknown model 'resnet1B'; did you mean 'resnet18'\?"),
    CliCase("bcos-finetune-missing-data", "bcos", ("train", "--finetune", "resnet18", "--data-dir", "nowhere"), r"data folder 'nowhere' does not exist; pass --data-dir FOLDER"),
    CliCase("localise-unknown-analysis-config", "localisation", ("--save_path", RUN, "--analysis_config", "500_3x4", "--smooth", "1"), r"did you mean '500_3x3'\?.*e.g. 500_3x3"),
    CliCase("localise-unknown-explainer", "localisation", ("--save_path", RUN, "--analysis_config", "500_3x3", "--smooth", "1", "--explainer_name", "Oursss"), r"did you mean 'Ours'\?"),
    CliCase("localise-even-smoothing", "localisation", ("--save_path", RUN, "--analysis_config", "500_3x3", "--smooth", "2"), r"smooth must be a positive odd integer \(1 means no smoothing\)"),
    CliCase("localise-missing-run-folder", "localisation", ("--save_path", "nowhere", "--analysis_config", "500_3x3", "--smooth", "1"), r"--save_path 'nowhere' is not a folder; pass a run folder"),
]


def _prepare(case_id: str, root: Path) -> None:
    if case_id == "train-truncated-last-ckpt":
        last = root / "experiments" / DATASET / COLLECTION / EXPERIMENT / "last.ckpt"
        last.write_bytes(last.read_bytes()[:2000])


@pytest.mark.parametrize("case", CLI_CASES, ids=lambda case: case.id)
def test_cli_bad_input(case: CliCase, workspace: Path, capsys, monkeypatch):
    for name, value in case.env:
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, str(workspace / value))
    _prepare(case.id, workspace)
    argv = list(case.argv)
    if case.command in ("train", "evaluate") and "--base_directory" not in argv and "--hubconf" not in argv:
        argv += ["--base_directory", "experiments"]
    before = _snapshot(workspace)

    code = _main(case.command)(argv)

    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert code == 2, f"exit {code}; stderr: {captured.err[-3000:]}"
    assert "Traceback" not in captured.err, captured.err[-3000:]
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1, f"expected one 'error: ' line, got: {captured.err[-3000:]}"
    assert re.search(case.fix, errors[0]), f"{errors[0]!r} does not match {case.fix!r}"
    after = _snapshot(workspace)
    changed = [name for name in before if before[name] != after.get(name)]
    assert not changed, f"files deleted or overwritten: {changed}"


def test_debug_shows_the_traceback(workspace, capsys):
    from bcos.cli.train import main

    assert main(["--dataset", "CIFAR1O", "--base_network", COLLECTION, "--experiment_name", EXPERIMENT, "--debug"]) == 2
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and err.strip().splitlines()[-1].startswith("error: unknown dataset")


# ----------------------------------------------------------------------------------------- the API
@dataclass(frozen=True)
class ApiCase:
    id: str
    call: Callable[[Path], object]
    error: type[BcosError]
    fix: str


def _model():
    from bcos.experiments.utils import Experiment

    return Experiment(DATASET, COLLECTION, EXPERIMENT).get_model().eval()


def _explain(inputs: torch.Tensor, **kwargs):
    return _model().explain(inputs, **kwargs)


def _imagenet_test_set(root: Path):
    from bcos.data.datamodules import get_datamodule_class
    from bcos.data.presets import (
        ImageNetClassificationPresetEval,
        ImageNetClassificationPresetTrain,
    )

    config = {
        "train_transform": ImageNetClassificationPresetTrain(crop_size=224, is_bcos=True),
        "test_transform": ImageNetClassificationPresetEval(crop_size=224, is_bcos=True),
        "batch_size": 2,
        "num_workers": 0,
        "num_classes": 1000,
    }
    datamodule = get_datamodule_class("ImageNet")(config)
    datamodule.setup("test")
    return datamodule


def _set_env(name: str, value: str | None) -> None:
    if value is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = value


def _with_env(name: str, value: Callable[[Path], str | None], call: Callable[[Path], object]) -> Callable[[Path], object]:
    def run(root: Path) -> object:
        _set_env(name, value(root))
        return call(root)

    return run


def _best_with_corrupt_metrics(root: Path):
    from bcos.experiments.utils import Experiment

    metrics = root / "experiments" / DATASET / COLLECTION / EXPERIMENT / "metrics"
    metrics.mkdir()
    (metrics / "eval_acc1.gz").write_bytes(b"not gzip")
    return Experiment(DATASET, COLLECTION, EXPERIMENT, base_directory=root / "experiments").load_trained_model(reload="best")


def _imagenet_without_val(root: Path):
    make_tiny_image_folder(root / "imagenet", classes=["a", "b"], n_per_class=1, splits=("train",))
    os.environ["IMAGENET_PATH"] = str(root / "imagenet")
    return _imagenet_test_set(root)


API_CASES = [
    # tensors given to a model or explainer
    ApiCase("explain-3-channels-to-6-channel-model", lambda root: _explain(torch.rand(1, 3, 32, 32)), InputError, r"expects 6 input channels but inputs have 3; .*apply AddInverse"),
    ApiCase("explainer-3-channels-to-6-channel-model", lambda root: __import__("bcos.explain.methods.registry", fromlist=["x"]).get_explainer_class("IxG")(_model()).attribute(torch.rand(1, 3, 32, 32), target=0), InputError, r"expects 6 input channels but inputs have 3; .*apply AddInverse"),
    ApiCase("explain-empty-batch", lambda root: _explain(torch.rand(0, 6, 32, 32)), InputError, r"empty batch .*pass at least one image"),
    ApiCase("explain-nan-inputs", lambda root: _explain(torch.full((1, 6, 32, 32), math.nan)), InputError, r"NaN or infinite values; check the data"),
    ApiCase("explain-uint8-images", lambda root: _explain(torch.zeros(1, 6, 32, 32, dtype=torch.uint8)), InputError, r"floating-point tensor.*convert images with ToTensor"),
    ApiCase("explain-target-out-of-range", lambda root: _explain(torch.rand(1, 6, 32, 32), target=10), InputError, r"out of range .*valid: 0..9"),
    ApiCase("explain-too-many-targets", lambda root: _explain(torch.rand(2, 6, 32, 32), target=[1, 2, 3]), InputError, r"3 targets for 2 samples; pass one class index per sample"),
    # names
    ApiCase("create-model-unknown", lambda root: __import__("bcos").create_model("resnet1B"), UnknownNameError, r"did you mean 'resnet18'\?"),
    ApiCase("create-model-unknown-argument", lambda root: __import__("bcos").create_model("resnet18", num_clases=10), UnknownArgumentError, r"unexpected keyword argument 'num_clases'; did you mean 'num_classes'\?"),
    ApiCase("layer-unknown-argument", lambda root: __import__("bcos.modules", fromlist=["x"]).BcosConv2d(6, 4, 3, maxout=2), UnknownArgumentError, r"maxout; did you mean 'max_out'\?"),
    ApiCase("layer-infinite-b", lambda root: __import__("bcos.modules", fromlist=["x"]).BcosConv2d(6, 4, 3, b=math.inf), ConfigError, r"b must be a finite number >= 1 .*got inf"),
    ApiCase("explainer-unknown", lambda root: __import__("bcos.explain.methods.registry", fromlist=["x"]).get_explainer_class("Oursss"), UnknownNameError, r"did you mean 'Ours'\?"),
    ApiCase("analysis-config-unknown", lambda root: __import__("bcos.explain.localisation", fromlist=["x"]).get_localisation_config("500_3x4"), UnknownNameError, r"unknown analysis config '500_3x4'; did you mean '500_3x3'\?"),
    ApiCase("datamodule-wrong-case", lambda root: __import__("bcos.data.datamodules", fromlist=["x"]).get_datamodule_class("Imagenet"), UnknownNameError, r"did you mean 'ImageNet'\?"),
    ApiCase("optimizer-unknown", lambda root: __import__("bcos.optim", fromlist=["x"]).OptimizerFactory(name="Adamm", lr=0.1), UnknownNameError, r"did you mean 'Adam'\?"),
    ApiCase("experiment-without-name", lambda root: __import__("bcos.experiments.utils", fromlist=["x"]).Experiment(DATASET, COLLECTION), ConfigError, r"needs base_network and experiment_name too"),
    # data on disk
    ApiCase("imagenet-path-unset", _with_env("IMAGENET_PATH", lambda root: None, _imagenet_test_set), DataNotFoundError, r"IMAGENET_PATH is not set; set the environment variable IMAGENET_PATH"),
    ApiCase("imagenet-path-missing", _with_env("IMAGENET_PATH", lambda root: str(root / "nowhere"), _imagenet_test_set), DataNotFoundError, r"data folder '.*nowhere' does not exist.*; point the environment variable IMAGENET_PATH to the folder holding the 'train' and 'val'"),
    ApiCase("imagenet-without-val", _imagenet_without_val, DataNotFoundError, r"no ImageNet 'val' folder at .*; expected val/<class name>/<images> under"),
    ApiCase("metrics-file-corrupt", _best_with_corrupt_metrics, DataNotFoundError, r"metrics file .*eval_acc1.gz.* is unreadable .*delete it"),
    # settings of the tools
    ApiCase("rise-zero-masks", lambda root: __import__("bcos.explain.methods.rise", fromlist=["x"]).RISE(_model(), n=0), ConfigError, r"RISE n must be a positive integer"),
    ApiCase("smoothing-even", lambda root: __import__("bcos.explain.localisation", fromlist=["x"]).smooth_attributions(torch.zeros(1, 1, 4, 4), 2), ConfigError, r"positive odd integer \(1 means no smoothing\)"),
]


@pytest.mark.parametrize("case", API_CASES, ids=lambda case: case.id)
def test_api_bad_input(case: ApiCase, workspace: Path):
    # (the workspace fixture restores IMAGENET_PATH and DATA_ROOT that rows change)
    before = _snapshot(workspace)
    with pytest.raises(case.error) as error:
        case.call(workspace)
    message = str(error.value)
    assert "\n" not in message.strip(), message
    assert re.search(case.fix, message), f"{message!r} does not match {case.fix!r}"
    after = _snapshot(workspace)
    assert not [name for name in before if before[name] != after.get(name)]


def test_images_with_one_or_four_channels_are_converted_not_refused(workspace, capsys):
    """Grey-scale and RGBA files are common; ``bcos explain`` converts them to RGB."""
    from bcos.cli.main import main

    assert main(["explain", "gray.png", "rgba.png", "--run", RUN, "--no-report", "--output", "out", "--no-progress"]) == 0
    assert sorted(path.name for path in (workspace / "out").glob("*.png")) == ["gray.png", "rgba.png"]


# ------------------------------------------------------------------ a loss that turns NaN in training
def test_a_loss_that_turns_nan_stops_training_with_a_message_and_keeps_the_last_good_checkpoint(
    workspace, capsys, monkeypatch
):
    import bcos.experiments.utils.collections as collections_module
    import bcos.experiments.utils.experiment as experiment_module
    from bcos.cli.train import main
    from bcos.data.presets import (
        CIFAR10ClassificationPresetTest,
        CIFAR10ClassificationPresetTrain,
    )
    from bcos.models.base import BcosUtilMixin
    from bcos.modules import BcosConv2d, BinaryCrossEntropyLoss, LogitLayer
    from bcos.optim import LRSchedulerFactory, OptimizerFactory

    class Net(BcosUtilMixin, torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = BcosConv2d(6, 10, kernel_size=4, stride=4)
            self.logit_layer = LogitLayer(logit_bias=-math.log(9))

        def forward(self, x):
            return self.logit_layer(self.conv(x).mean(dim=(2, 3)))

    class TurnsNaN(torch.nn.Module):
        """The loss of the first epoch's batches, then NaN (a diverging run)."""

        calls = 0

        def forward(self, outputs, targets):
            TurnsNaN.calls += 1
            loss = BinaryCrossEntropyLoss()(outputs, targets)
            return loss * math.nan if TurnsNaN.calls > 2 else loss

    config = {
        "data": {
            "train_transform": CIFAR10ClassificationPresetTrain(is_bcos=True),
            "test_transform": CIFAR10ClassificationPresetTest(is_bcos=True),
            "batch_size": 5,
            "num_workers": 0,
            "num_classes": 10,
        },
        "model": {"is_bcos": True, "name": "net"},
        "criterion": TurnsNaN(),
        "test_criterion": BinaryCrossEntropyLoss(),
        "optimizer": OptimizerFactory(name="Adam", lr=1e-2),
        "lr_scheduler": LRSchedulerFactory(name="cosineannealinglr", epochs=2),
        "trainer": {"max_epochs": 2, "num_sanity_val_steps": 0, "enable_model_summary": False},
    }
    original = collections_module.get_configs_and_model_factory

    def lookup(dataset, base_network):
        if (dataset, base_network) == (DATASET, "nan_test"):
            return {"diverges": config}, lambda model_config: Net()
        return original(dataset, base_network)

    monkeypatch.setattr(collections_module, "get_configs_and_model_factory", lookup)
    monkeypatch.setattr(experiment_module, "get_configs_and_model_factory", lookup)
    original_run_folder_config = collections_module.get_run_folder_config_function
    monkeypatch.setattr(
        collections_module, "get_run_folder_config_function",
        lambda dataset, base_network: None if base_network == "nan_test" else original_run_folder_config(dataset, base_network),
    )  # fmt: skip
    argv = ["--dataset", DATASET, "--base_network", "nan_test", "--experiment_name", "diverges"]
    code = main([*argv, "--base_directory", "experiments", "--refresh_rate", "100"])

    # (a logging handler that an earlier test bound to its own, now closed, capture stream may
    # report "--- Logging error ---" blocks here; they are pytest's, not the program's)
    err = re.sub(r"--- Logging error ---\n.*?\nArguments: [^\n]*\n", "", capsys.readouterr().err, flags=re.DOTALL)
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert code == 2 and len(errors) == 1 and "Traceback" not in err, err[-3000:]
    assert errors[0].startswith("error: training stopped: the loss became nan at epoch 1")
    assert "lower the learning rate" in errors[0] and "kept" in errors[0]
    last = workspace / "experiments" / DATASET / "nan_test" / "diverges" / "last.ckpt"
    checkpoint = torch.load(last, weights_only=True)
    assert checkpoint["epoch"] == 0  # epoch 0 finished before the loss diverged
    assert all(torch.isfinite(value).all() for value in checkpoint["state_dict"].values() if value.is_floating_point())


def test_the_table_is_large_enough():
    assert len(CLI_CASES) + len(API_CASES) >= 30
