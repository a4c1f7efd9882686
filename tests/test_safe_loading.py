"""Safe loading: a crafted pickle never runs code, whichever loader of the project reads it.

Each test plants a file whose unpickling would create a marker file (the payload is real: an
unsafe ``pickle.load`` does run it, as the first test shows) and hands it to one loader: the
``safe_load`` primitive and its two users, ``Experiment`` reloads (``last``, ``epoch_<N>``),
``--weights`` of ``evaluate.py``, registry weights (local files and published files with a valid
hash), resuming a training, Lightning's checkpoint IO, checkpoint stripping, the RISE mask cache
and the CIFAR-10 reader. Published weights are also checked against the sha256 prefix in their
name, for local copies and for downloads.
"""

from __future__ import annotations

import dataclasses
import hashlib
import pickle
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from helpers_data import make_tiny_cifar10

from bcos.errors import CheckpointError, DataNotFoundError
from bcos.experiments.utils import Experiment
from bcos.checkpoint_io import load_checkpoint_file, load_state_dict_file, safe_load
from bcos.models import registry
from bcos.models.weights import WeightsFile, fetch_weights_file

DATASET, COLLECTION, EXPERIMENT = "CIFAR10", "norm_ablations_final", "resnet_20"


def _run_payload(marker: str) -> None:
    Path(marker).write_text("code ran")


class _Payload:
    """Unpickling this calls ``_run_payload(marker)``: what an attacker's file would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (_run_payload, (self.marker,))


@pytest.fixture
def marker(tmp_path) -> Path:
    return tmp_path / "payload_ran.txt"


def _evil_checkpoint(path: Path, marker: Path) -> Path:
    """A Lightning-looking checkpoint with a code-running object among the plain data."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(
        {
            "state_dict": {"model.w": torch.ones(1)},
            "epoch": 0,
            "global_step": 1,
            "pytorch-lightning_version": "2.6.0",
            "hyper_parameters": {"note": _Payload(marker)},
        },
        path,
    )
    return path


def _assert_refused(error: pytest.ExceptionInfo, marker: Path) -> None:
    message = str(error.value)
    assert "\n" not in message and "could run code" in message and "refused" in message
    assert "_run_payload" in message  # names what was refused
    assert not marker.exists(), "the payload ran"


def test_the_payload_is_real(tmp_path, marker):
    path = _evil_checkpoint(tmp_path / "evil.ckpt", marker)
    torch.load(path, weights_only=False)  # what an unsafe loader would do
    assert marker.read_text() == "code ran"


@pytest.mark.parametrize("loader", [safe_load, load_checkpoint_file, load_state_dict_file])
def test_the_loading_primitive_and_its_users_refuse_a_crafted_pickle(tmp_path, marker, loader):
    path = _evil_checkpoint(tmp_path / "evil.ckpt", marker)
    with pytest.raises(CheckpointError) as error:
        loader(path)
    _assert_refused(error, marker)
    assert str(path) in str(error.value)
    assert path.exists()  # refused, not deleted


def _run_folder(base: Path) -> Path:
    return base / DATASET / COLLECTION / EXPERIMENT


@pytest.mark.parametrize("reload, name", [("last", "last.ckpt"), ("epoch_3", "epoch=3-val_acc1=0.5000.ckpt")])
def test_experiment_reload_refuses_a_crafted_checkpoint(tmp_path, marker, reload, name):
    base = tmp_path / "experiments"
    _evil_checkpoint(_run_folder(base) / name, marker)
    experiment = Experiment(DATASET, COLLECTION, EXPERIMENT, base_directory=base)
    with pytest.raises(CheckpointError) as error:
        experiment.load_trained_model(reload=reload)
    _assert_refused(error, marker)


def test_evaluate_weights_option_refuses_a_crafted_file(tmp_path, marker, capsys):
    from bcos.cli.errors import run_cli
    from bcos.cli.evaluate import main as evaluate_main

    weights = _evil_checkpoint(tmp_path / "weights.pth", marker)
    argv = ["--dataset", DATASET, "--base_network", COLLECTION, "--experiment_name", EXPERIMENT]
    argv += ["--base_directory", str(tmp_path / "experiments"), "--weights", str(weights)]
    assert run_cli(evaluate_main, argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: cannot load") and "could run code" in err and "Traceback" not in err
    assert not marker.exists() and weights.exists()


def test_registry_refuses_crafted_weights_given_as_a_path(tmp_path, marker):
    path = _evil_checkpoint(tmp_path / "mine.pth", marker)
    with pytest.raises(CheckpointError) as error:
        registry.create_model("resnet18", weights=path)
    _assert_refused(error, marker)


def test_published_weights_with_a_matching_hash_are_still_loaded_safely(tmp_path, marker, monkeypatch):
    """The hash only proves the file is the one the registry names, not that it is harmless."""
    source = _evil_checkpoint(tmp_path / "evil.pth", marker)
    prefix = hashlib.sha256(source.read_bytes()).hexdigest()[:10]
    weights_dir = tmp_path / "weights"
    weights_dir.mkdir()
    source.rename(weights_dir / f"evil-{prefix}.pth")
    monkeypatch.setenv("BCOS_WEIGHTS_DIR", str(weights_dir))
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    registry.register_model(
        dataclasses.replace(
            registry.get_pretrained_config("resnet18"),
            name="evil_resnet18",
            weights=WeightsFile(f"https://example.invalid/evil-{prefix}.pth"),
        )
    )
    with pytest.raises(CheckpointError) as error:
        registry.create_model("evil_resnet18", pretrained=True)
    _assert_refused(error, marker)


def test_a_local_published_file_with_the_wrong_sha256_is_refused(tmp_path, monkeypatch):
    weights = registry.get_pretrained_config("resnet18").weights
    monkeypatch.setenv("BCOS_WEIGHTS_DIR", str(tmp_path))
    wrong = tmp_path / weights.file_name
    torch.save({"fc.weight": torch.zeros(1)}, wrong)  # a loadable file, just not the published one
    with pytest.raises(CheckpointError, match=rf"expected {weights.sha256_prefix}\.\.\..*delete it and download it again"):
        fetch_weights_file(weights)
    with pytest.raises(CheckpointError, match="expected"):
        registry.create_model("resnet18", pretrained=True)


def test_a_download_with_the_wrong_sha256_is_refused_and_not_kept(tmp_path, monkeypatch):
    served = tmp_path / "server" / "resnet-0123456789.pth"
    served.parent.mkdir()
    torch.save({"w": torch.ones(2)}, served)
    assert not hashlib.sha256(served.read_bytes()).hexdigest().startswith("0123456789")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.delenv("BCOS_WEIGHTS_DIR", raising=False)
    with pytest.raises(CheckpointError, match="does not match its sha256 prefix 0123456789"):
        fetch_weights_file(WeightsFile(served.as_uri()), progress=False)
    cache = tmp_path / "torch_home" / "hub" / "checkpoints"
    assert not cache.exists() or not any(cache.iterdir())  # nothing unverified stays in the cache


def test_resuming_refuses_a_crafted_last_checkpoint_and_keeps_it(tmp_path, marker, capsys, monkeypatch):
    from bcos.cli.train import main as train_main

    monkeypatch.chdir(tmp_path)
    base = tmp_path / "experiments"
    last = _evil_checkpoint(_run_folder(base) / "last.ckpt", marker)
    before = last.read_bytes()
    argv = ["--dataset", DATASET, "--base_network", COLLECTION, "--experiment_name", EXPERIMENT]
    assert train_main([*argv, "--base_directory", str(base)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: cannot resume: cannot load") and "could run code" in err
    assert err.endswith("pass --force-no-resume to start the run over") and "Traceback" not in err
    assert not marker.exists() and last.read_bytes() == before


def test_lightning_checkpoint_io_refuses_a_crafted_checkpoint(tmp_path, marker):
    from bcos.training.atomic import AtomicCheckpointIO

    path = _evil_checkpoint(tmp_path / "last.ckpt", marker)
    with pytest.raises(pickle.UnpicklingError, match="(?i)weights.only"):
        AtomicCheckpointIO().load_checkpoint(path)
    assert not marker.exists()


def test_checkpoint_stripping_refuses_a_crafted_checkpoint(tmp_path, marker):
    from bcos.experiments.utils.checkpoint_stripping import strip_checkpoint

    path = _evil_checkpoint(tmp_path / "last.ckpt", marker)
    with pytest.raises(CheckpointError) as error:
        strip_checkpoint(path, tmp_path / "out")
    _assert_refused(error, marker)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_rise_mask_cache_never_unpickles_code_and_is_regenerated(tmp_path, marker):
    from bcos.explain.methods.rise import RISE

    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 2))
    rise = RISE(model, n=4, s=2, batch_size=4, cache_dir=tmp_path / "cache")
    cache = rise.mask_file((8, 8))
    cache.parent.mkdir(parents=True)
    with open(cache, "wb") as handle:
        pickle.dump(_Payload(marker), handle)
    masks = rise.masks((8, 8))
    assert not marker.exists()
    assert masks.shape == (4, 1, 8, 8)
    assert torch.equal(torch.load(cache, weights_only=True), masks)  # the crafted file was replaced


def test_cifar10_reader_refuses_a_crafted_data_file(tmp_path, marker):
    from bcos.data.cifar import CIFAR10Dataset

    root = make_tiny_cifar10(tmp_path / "data", n_train=10, n_test=10)
    with open(root / "cifar-10-batches-py" / "data_batch_1", "wb") as handle:
        pickle.dump({b"data": _Payload(marker), b"labels": [0]}, handle, protocol=2)
    with pytest.raises(DataNotFoundError, match="could run code, so it is refused") as error:
        CIFAR10Dataset(root, train=True)
    assert "\n" not in str(error.value) and "download CIFAR-10 again" in str(error.value)
    assert not marker.exists()
    assert len(CIFAR10Dataset(root, train=False)) == 10  # honest files still load


def test_the_resolved_config_of_a_run_is_plain_text():
    """config.txt is written by ``config_to_text`` and nothing in the project unpickles it."""
    from bcos.experiments.utils import config_to_text, get_config

    text = config_to_text(get_config(DATASET, COLLECTION, EXPERIMENT))
    assert isinstance(text, str) and len(text.splitlines()) > 10
    assert all(line.isprintable() for line in text.splitlines())
    assert "criterion" in text and "BinaryCrossEntropyLoss" in text
    package = Path(__file__).resolve().parents[1] / "bcos"
    readers = [
        path
        for path in package.rglob("*.py")
        if "config.txt" in path.read_text() or "CONFIG_FILENAME" in path.read_text()
    ]
    for path in readers:
        source = path.read_text()
        assert "pickle.load" not in source and "torch.load(" not in source, f"{path} may unpickle config.txt"
