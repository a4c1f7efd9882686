"""Durable runs: SIGKILL at several points, resume from ``last.ckpt``, same result as no kill.

Each training runs in its own process (forked from a "zygote" process that imported torch and
Lightning once, so a training takes seconds) on a tiny CIFAR-10 in the real format with a tiny B-cos CNN (random crops and flips, so the data order and
augmentations must be resumed exactly too). The child kills itself with SIGKILL at a chosen point:
in a training step, in a validation step, half-way through writing a checkpoint file, or
half-way through writing a metrics file. On the CPU with one thread and ``--debug`` (deterministic
algorithms), the killed-and-resumed run must end with bit-identical weights, optimizer state,
metrics files and best-checkpoint names as an uninterrupted run. A second training pointed at a
folder that a live training holds is refused without touching the folder.
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from helpers_data import make_tiny_cifar10

pytestmark = pytest.mark.slow

COLLECTION = "kill_test"
EPOCHS = 3
KILL_ENV = "BCOS_TEST_KILL_AT"  # "<point>:<n>": die at the n-th event of that kind in this process
HOLD_ENV = "BCOS_TEST_HOLD_DIR"  # wait in the first training step until <dir>/release exists
WORKERS_ENV = "BCOS_TEST_NUM_WORKERS"  # data-loader worker processes of the child's config
CHILD_TIMEOUT_S = 120


# ------------------------------------------------------------------------------- the child process
def _die() -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def _child(base_directory: str, experiment_name: str, *extra_args: str) -> int:
    """Train the tiny experiment; with ``$BCOS_TEST_KILL_AT`` set, SIGKILL this process mid-run."""
    import numpy as np
    from torch import nn

    import bcos.experiments.utils.collections as collections_module
    import bcos.experiments.utils.experiment as experiment_module
    import bcos.experiments.utils.metrics as metrics_module
    from bcos.cli.train import main as train_main
    from bcos.data.presets import (
        CIFAR10ClassificationPresetTest,
        CIFAR10ClassificationPresetTrain,
    )
    from bcos.models.base import BcosUtilMixin
    from bcos.modules import BcosConv2d, BinaryCrossEntropyLoss, LogitLayer
    from bcos.optim import LRSchedulerFactory, OptimizerFactory

    point, _, count = os.environ.get(KILL_ENV, "none:0").partition(":")
    kill_at = int(count)
    seen = {"train": 0, "val": 0, "save": 0, "metrics": 0}

    def event(kind: str) -> bool:
        seen[kind] += 1
        return point == kind and seen[kind] == kill_at

    class Net(BcosUtilMixin, nn.Module):
        def __init__(self, num_classes: int = 10) -> None:
            super().__init__()
            self.features = nn.Sequential(
                BcosConv2d(6, 8, kernel_size=3, padding=1, stride=2), BcosConv2d(8, 8, kernel_size=3, padding=1, stride=2)
            )
            self.classifier = BcosConv2d(8, num_classes, kernel_size=1)
            self.logit_layer = LogitLayer(logit_bias=-math.log(num_classes - 1))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.logit_layer(self.classifier(self.features(x)).mean(dim=(2, 3)))

    class Loss(nn.Module):
        def __init__(self, kind: str) -> None:
            super().__init__()
            self.kind = kind
            self.loss = BinaryCrossEntropyLoss()

        def forward(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
            hold = os.environ.get(HOLD_ENV)
            if hold and self.kind == "train" and seen["train"] == 0:
                Path(hold, "holding").touch()
                while not Path(hold, "release").exists():
                    time.sleep(0.05)
            if event(self.kind):
                _die()
            return self.loss(outputs, targets)

    config = dict(
        data=dict(
            train_transform=CIFAR10ClassificationPresetTrain(is_bcos=True),
            test_transform=CIFAR10ClassificationPresetTest(is_bcos=True),
            batch_size=16,
            num_workers=int(os.environ.get(WORKERS_ENV) or 0),
            num_classes=10,
        ),
        model=dict(is_bcos=True, name="kill_net", args=dict(num_classes=10)),
        criterion=Loss("train"),
        test_criterion=Loss("val"),
        optimizer=OptimizerFactory(name="Adam", lr=1e-2),
        lr_scheduler=LRSchedulerFactory(name="cosineannealinglr", epochs=EPOCHS),
        trainer=dict(max_epochs=EPOCHS, num_sanity_val_steps=0, enable_model_summary=False, log_every_n_steps=1),
    )
    original = collections_module.get_configs_and_model_factory

    def lookup(dataset: str, base_network: str):
        if (dataset, base_network) == ("CIFAR10", COLLECTION):
            return {"tiny": config}, lambda model_config: Net(**model_config.get("args", {}))
        return original(dataset, base_network)

    collections_module.get_configs_and_model_factory = lookup
    experiment_module.get_configs_and_model_factory = lookup

    real_save = torch.save

    def killing_save(obj, target, *args, **kwargs):
        if not event("save"):
            return real_save(obj, target, *args, **kwargs)
        buffer = io.BytesIO()
        real_save(obj, buffer, *args, **kwargs)
        data = buffer.getvalue()
        opened = isinstance(target, (str, os.PathLike))
        with open(target, "wb") if opened else contextlib.nullcontext(target) as handle:
            handle.write(data[: len(data) // 2])  # half a checkpoint reaches the disk
            handle.flush()
            os.fsync(handle.fileno())
        _die()

    real_savetxt = np.savetxt

    def killing_savetxt(fname, table, *args, **kwargs):
        if not event("metrics"):
            return real_savetxt(fname, table, *args, **kwargs)
        if isinstance(fname, (str, os.PathLike)):
            with open(fname, "w") as handle:
                handle.write("0.0 ")  # a truncated row
        else:
            fname.write(b"0.0 ")
            fname.flush()  # a gzip stream without its end reaches the disk
        _die()

    torch.save = killing_save
    metrics_module.np.savetxt = killing_savetxt

    argv = ["--dataset", "CIFAR10", "--base_network", COLLECTION, "--experiment_name", experiment_name]
    return train_main([*argv, "--base_directory", base_directory, "--refresh_rate", "1000", *extra_args])


# ------------------------------------------------------------------------------------- the zygote
def _zygote() -> None:
    """Import everything once, then fork one fresh child per training request (read from stdin).

    A request is a JSON line ``{"argv": [...], "env": {...}, "cwd": ..., "log": ...}`` and is
    answered with ``{"pid": ...}``; ``{"wait": pid}`` is answered with ``{"status": ...}`` (the exit
    code, or minus the signal number). Importing torch and Lightning once keeps each training to
    seconds; the zygote itself never computes anything, so forking it is safe.
    """
    import json

    import numpy
    from torch import nn

    import bcos.cli.train
    import bcos.data.datamodules
    import bcos.training.run

    torch.set_num_threads(1)
    for line in sys.stdin:
        request = json.loads(line)
        if "wait" in request:
            _, status = os.waitpid(request["wait"], 0)
            reply = {"status": os.waitstatus_to_exitcode(status)}
        else:
            pid = os.fork()
            if pid == 0:
                code = 1
                try:
                    os.environ.update(request["env"])
                    os.chdir(request["cwd"])
                    log = os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
                    os.dup2(log, 1)
                    os.dup2(log, 2)
                    code = _child(*request["argv"])
                except BaseException:
                    import traceback

                    traceback.print_exc()
                finally:
                    sys.stdout.flush()
                    sys.stderr.flush()
                    os._exit(code)
            reply = {"pid": pid}
        print(json.dumps(reply), flush=True)


class Zygote:
    """The test's handle on the zygote process: start trainings, wait for them."""

    def __init__(self, data_root: Path, logs: Path) -> None:
        self.data_root = data_root
        self.logs = logs
        self.count = 0
        env = {key: value for key, value in os.environ.items() if key not in (KILL_ENV, HOLD_ENV)}
        env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="", PYTHONHASHSEED="0")
        # the bcos of this checkout, whatever is installed
        repo = str(Path(__file__).resolve().parents[1])
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [repo, env.get("PYTHONPATH")]))
        self.process = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "zygote"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            text=True,
        )

    def _ask(self, request: dict) -> dict:
        import json
        import select

        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()
        ready, _, _ = select.select([self.process.stdout], [], [], CHILD_TIMEOUT_S)
        assert ready, f"no answer from the training process within {CHILD_TIMEOUT_S} s"
        line = self.process.stdout.readline()
        assert line, "the zygote died"
        return json.loads(line)

    def start(self, base: Path, *args: str, **env: str) -> tuple[int, Path]:
        """Start one training of the tiny experiment in ``base``; returns its pid and log file."""
        self.count += 1
        base.parent.mkdir(parents=True, exist_ok=True)
        log = self.logs / f"run{self.count}.log"
        env = {"DATA_ROOT": str(self.data_root), KILL_ENV: "none:0", HOLD_ENV: "", WORKERS_ENV: "0", **env}
        request = {"argv": [str(base), "tiny", *args], "env": env, "cwd": str(base.parent), "log": str(log)}
        return self._ask(request)["pid"], log

    def wait(self, pid: int) -> int:
        """The exit code of a training (minus the signal number when killed)."""
        return self._ask({"wait": pid})["status"]

    def train(self, base: Path, kill_at: str | None = None, debug: bool = True, workers: int = 0) -> tuple[int, str]:
        """Run one training to its end (or its kill); ``--debug`` makes it deterministic."""
        env = {WORKERS_ENV: str(workers), **({KILL_ENV: kill_at} if kill_at else {})}
        pid, log = self.start(base, *(["--debug"] if debug else []), **env)
        return self.wait(pid), log.read_text()

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait(timeout=30)


def _folder(base: Path) -> Path:
    return base / "CIFAR10" / COLLECTION / "tiny"


def _snapshot(folder: Path) -> dict:
    """What must agree between runs: weights, optimizer, loop position, metrics, best checkpoints."""
    checkpoint = torch.load(folder / "last.ckpt", map_location="cpu", weights_only=True)
    from bcos.experiments.utils.metrics import read_metric_file

    # compared by value: the gzip header of a metrics file carries a time stamp
    metrics = {path.name: torch.from_numpy(read_metric_file(path)) for path in (folder / "metrics").glob("*.gz")}
    best = sorted(path.name for path in folder.glob("epoch=*.ckpt"))
    return {
        "state_dict": checkpoint["state_dict"],
        "optimizer": checkpoint["optimizer_states"],
        "lr_schedulers": checkpoint["lr_schedulers"],
        "epoch": checkpoint["epoch"],
        "global_step": checkpoint["global_step"],
        "metrics": metrics,
        "best": best,
    }


def _assert_same(actual, expected, where: str = "") -> None:
    if isinstance(expected, torch.Tensor):
        assert torch.equal(actual, expected), f"{where} differs"
    elif isinstance(expected, dict):
        assert set(actual) == set(expected), f"{where}: keys {sorted(actual)} vs {sorted(expected)}"
        for key in expected:
            _assert_same(actual[key], expected[key], f"{where}/{key}")
    elif isinstance(expected, (list, tuple)):
        assert len(actual) == len(expected), f"{where}: length differs"
        for index, (a, e) in enumerate(zip(actual, expected)):
            _assert_same(a, e, f"{where}[{index}]")
    else:
        assert actual == expected, f"{where}: {actual!r} != {expected!r}"


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    return make_tiny_cifar10(tmp_path_factory.mktemp("data"), n_train=64, n_test=32)


@pytest.fixture(scope="module")
def zygote(tmp_path_factory, data_root):
    handle = Zygote(data_root, tmp_path_factory.mktemp("logs"))
    yield handle
    handle.close()


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, zygote) -> dict:
    base = tmp_path_factory.mktemp("plain") / "experiments"
    code, log = zygote.train(base)
    assert code == 0, log[-3000:]
    return _snapshot(_folder(base))


def test_killed_at_several_points_resumes_to_the_same_weights_and_metrics(tmp_path, zygote, uninterrupted):
    base = tmp_path / "experiments"
    folder = _folder(base)
    steps_per_epoch = 64 // 16
    kills = [
        # (kill point, what last.ckpt holds afterwards)
        ("train:2", None),  # in epoch 0, before any checkpoint: the run starts over
        (f"train:{steps_per_epoch + 2}", 0),  # in epoch 1: resumes after epoch 0
        ("save:2", 0),  # half-way through writing last.ckpt of epoch 1 (epoch=1-*.ckpt was written)
        ("metrics:1", 0),  # half-way through writing a metrics file before epoch 1's checkpoint
        ("val:2", 0),  # in epoch 1's validation (2 batches per epoch)
    ]
    for kill_at, last_epoch in kills:
        code, err = zygote.train(base, kill_at)
        assert code == -signal.SIGKILL, f"{kill_at}: expected a kill, got exit {code}: {err[-2000:]}"
        last = folder / "last.ckpt"
        if last_epoch is None:
            assert not last.exists()
        else:  # the file a kill left is always a complete checkpoint
            assert torch.load(last, map_location="cpu", weights_only=True)["epoch"] == last_epoch, kill_at

    code, err = zygote.train(base)
    assert code == 0, err[-3000:]
    _assert_same(_snapshot(folder), uninterrupted)
    leftovers = [path.name for path in folder.rglob("*.tmp")]
    assert not leftovers, f"temporary files of killed writes were left behind: {leftovers}"


def test_with_data_loader_workers_a_killed_run_resumes_and_finishes(tmp_path, zygote):
    """Worker processes outlive a killed training for a moment; they must not keep the folder locked.

    (Persistent workers carry their random state from epoch to epoch, which no checkpoint can
    hold, so with workers the resumed run is equivalent but not bit-identical.)
    """
    base = tmp_path / "experiments"
    code, log = zygote.train(base, kill_at=f"train:{64 // 16 + 2}", workers=2)  # in epoch 1
    assert code == -signal.SIGKILL, log[-3000:]
    code, log = zygote.train(base, workers=2)  # at once: the orphaned workers may still be alive
    assert code == 0, log[-3000:]
    resumed = _snapshot(_folder(base))
    assert (resumed["epoch"], resumed["global_step"]) == (EPOCHS - 1, EPOCHS * 64 // 16)
    assert resumed["metrics"]["eval_acc1.gz"][:, 0].tolist() == list(range(EPOCHS))
    assert len(resumed["best"]) == EPOCHS


def test_a_second_training_on_a_live_run_folder_is_refused(tmp_path, zygote, uninterrupted):
    base = tmp_path / "experiments"
    hold = tmp_path / "hold"
    hold.mkdir()
    first, first_log = zygote.start(base, "--debug", **{HOLD_ENV: str(hold)})
    try:
        deadline = time.monotonic() + CHILD_TIMEOUT_S
        while not (hold / "holding").exists():
            assert time.monotonic() < deadline, "the first training never started: " + first_log.read_text()[-2000:]
            time.sleep(0.1)
        folder = _folder(base)
        before = {path.name: path.stat().st_mtime_ns for path in folder.iterdir()}

        code, err = zygote.train(base, debug=False)
        assert code == 2
        assert err.strip().splitlines()[-1].startswith("error: run folder") and "in use by another training" in err
        assert "Traceback" not in err
        assert {path.name: path.stat().st_mtime_ns for path in folder.iterdir()} == before  # untouched
    finally:
        (hold / "release").touch()
        first_code = zygote.wait(first)
    assert first_code == 0, first_log.read_text()[-2000:]
    _assert_same(_snapshot(_folder(base)), uninterrupted)  # the first training was not disturbed


if __name__ == "__main__" and sys.argv[1:] == ["zygote"]:
    _zygote()
