"""Safe checkpoint loading, reload selection, metrics files, run-folder names and checkpoint stripping."""

from __future__ import annotations

import hashlib
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from bcos.checkpoint_io import (
    atomic_torch_save,
    checkpoint_format,
    extract_model_state_dict,
    load_checkpoint_file,
    load_state_dict_file,
    load_state_dict_into,
    sha256_of_file,
    verify_sha256_prefix,
)
from bcos.errors import CheckpointError, ConfigError, DataNotFoundError, UnknownNameError
from bcos.experiments.utils.checkpoint_stripping import strip_checkpoint
from bcos.experiments.utils.loading import ReloadTypes, load_checkpoint_from_run
from bcos.experiments.utils.metrics import Metrics, MetricsNotFoundError, read_metric_file, write_metric_file
from bcos.experiments.utils.run_folder import (
    RunFolder,
    best_checkpoint_filename,
    best_checkpoint_filename_template,
    parse_checkpoint_filename,
)

REPO = Path(__file__).resolve().parent.parent


# --------------------------------------------------------------------------- helpers


def _weights(seed: int) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    return nn.Linear(3, 2).state_dict()


def _lightning_checkpoint(epoch: int, model_seed: int, ema_seed: int | None = None) -> dict:
    state_dict = {f"model.{k}": v for k, v in _weights(model_seed).items()}
    if ema_seed is not None:
        state_dict.update({f"ema.module.{k}": v for k, v in _weights(ema_seed).items()})
        state_dict["ema.n_averaged"] = torch.tensor(epoch)
    return {"state_dict": state_dict, "epoch": epoch, "global_step": 10 * epoch, "pytorch-lightning_version": "2.4.0"}


def _make_run(root: Path, with_ema: bool = True, with_metrics: bool = True) -> RunFolder:
    """Epochs 0..4; plain accuracy best at epoch 3 (0.80), EMA best at epoch 2 (0.85)."""
    run = RunFolder(root / "CIFAR10" / "coll" / "exp")
    run.path.mkdir(parents=True)
    plain = [0.5, 0.6, 0.7, 0.8, 0.75]
    averaged = [0.55, 0.65, 0.85, 0.7, 0.6]
    for epoch in (2, 3, 4):
        checkpoint = _lightning_checkpoint(epoch, model_seed=epoch, ema_seed=100 + epoch if with_ema else None)
        torch.save(checkpoint, run.best_checkpoint(epoch, plain[epoch]))
        if with_ema:
            torch.save(checkpoint, run.best_checkpoint(epoch, averaged[epoch], ema=True))
    torch.save(_lightning_checkpoint(4, model_seed=4, ema_seed=104 if with_ema else None), run.last_checkpoint)
    if with_metrics:
        write_metric_file(run.metrics_file("eval_acc1"), list(enumerate(plain)))
        if with_ema:
            write_metric_file(run.metrics_file("eval_acc1_ema"), list(enumerate(averaged)))
    return run


def _assert_same(state_dict: dict, expected: dict) -> None:
    assert set(state_dict) == set(expected)
    for key, value in expected.items():
        assert torch.equal(state_dict[key], value), key


def _write_marker(path: str) -> None:
    Path(path).write_text("code ran")


class _Evil:
    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return _write_marker, (self.marker,)


# --------------------------------------------------------------------------- reload values


@pytest.mark.parametrize("value, expected", [("last", ("last", None)), ("best", ("best", None)),
                                             ("best_any", ("best_any", None)), ("epoch_42", ("epoch_", 42))])
def test_reload_types_parse(value, expected):
    assert ReloadTypes.parse(value) == expected
    assert ReloadTypes.validate(value)


@pytest.mark.parametrize("value", ["bestt", "epoch_", "epoch_x", "epoch_-1", "first"])
def test_reload_types_reject(value):
    assert not ReloadTypes.validate(value)
    with pytest.raises(ConfigError, match="epoch_<N>"):
        ReloadTypes.parse(value)


def test_reload_types_suggest_closest():
    with pytest.raises(ConfigError, match="did you mean 'best'"):
        ReloadTypes.parse("bset")


# --------------------------------------------------------------------------- safe file loading


def test_crafted_pickle_is_refused_without_running_code(tmp_path):
    marker = tmp_path / "marker.txt"
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {"model.w": torch.ones(1)}, "epoch": 0,
                "pytorch-lightning_version": "2.4.0", "payload": _Evil(marker)}, path)
    with pytest.raises(CheckpointError, match="not a plain checkpoint") as info:
        load_checkpoint_file(path)
    assert str(path) in str(info.value)
    assert "\n" not in str(info.value)
    assert not marker.exists()
    # The payload is real: an unsafe load would have run it.
    torch.load(path, weights_only=False)
    assert marker.read_text() == "code ran"


def test_missing_and_corrupt_files(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint file"):
        load_checkpoint_file(tmp_path / "nope.ckpt")
    garbage = tmp_path / "garbage.ckpt"
    garbage.write_bytes(os.urandom(256))
    with pytest.raises(CheckpointError, match="not a readable torch checkpoint"):
        load_checkpoint_file(garbage)
    good = tmp_path / "good.ckpt"
    torch.save(_weights(0), good)
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(good.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="not a readable torch checkpoint"):
        load_checkpoint_file(truncated)
    tensor_only = tmp_path / "tensor.pt"
    torch.save(torch.ones(2), tensor_only)
    with pytest.raises(CheckpointError, match="not a dict"):
        load_checkpoint_file(tensor_only)


def test_atomic_torch_save_is_atomic_and_loadable(tmp_path):
    path = atomic_torch_save(_weights(1), tmp_path / "sub" / "w.pth")
    _assert_same(load_checkpoint_file(path), _weights(1))
    assert [p.name for p in path.parent.iterdir()] == ["w.pth"]  # no temporary left behind


# --------------------------------------------------------------------------- formats


def test_checkpoint_formats():
    assert checkpoint_format(_lightning_checkpoint(1, 1)) == "lightning"
    assert checkpoint_format({"model_state_dict": _weights(0), "optimizer": {}}) == "simple"
    assert checkpoint_format(_weights(0)) == "weights"
    with pytest.raises(CheckpointError, match="ambiguous"):
        checkpoint_format({**_lightning_checkpoint(1, 1), "model_state_dict": {}})
    with pytest.raises(CheckpointError, match="unsupported checkpoint format"):
        checkpoint_format({"something": 1})


def test_extract_model_and_ema_weights():
    checkpoint = _lightning_checkpoint(3, model_seed=1, ema_seed=2)
    _assert_same(extract_model_state_dict(checkpoint), _weights(1))
    _assert_same(extract_model_state_dict(checkpoint, ema=True), _weights(2))  # ema.n_averaged left out
    with pytest.raises(CheckpointError, match="no EMA weights"):
        extract_model_state_dict(_lightning_checkpoint(3, model_seed=1), ema=True)
    _assert_same(extract_model_state_dict({"model_state_dict": _weights(5)}), _weights(5))
    with pytest.raises(CheckpointError, match="without EMA"):
        extract_model_state_dict(_weights(5), ema=True)


def test_load_state_dict_into_names_the_differences():
    model = nn.Sequential(nn.Linear(3, 2), nn.Linear(2, 2))
    good = model.state_dict()
    load_state_dict_into(model, {k: torch.zeros_like(v) for k, v in good.items()})
    assert float(model[0].weight.detach().abs().sum()) == 0.0

    wrong = dict(good)
    wrong["0.weight"] = torch.zeros(4, 3)
    del wrong["1.bias"]
    wrong["2.weight"] = torch.zeros(1)
    with pytest.raises(CheckpointError) as info:
        load_state_dict_into(model, wrong, source="x.ckpt")
    message = str(info.value)
    assert "1 missing key(s) (e.g. 1.bias)" in message
    assert "1 unexpected key(s) (e.g. 2.weight)" in message
    assert "0.weight: checkpoint [4, 3] vs model [2, 3]" in message
    assert "'x.ckpt'" in message


def test_load_state_dict_file_reads_every_format(tmp_path):
    formats = {
        "weights.pth": _weights(1),
        "simple.pth": {"model_state_dict": _weights(1), "optimizer": {}},
        "lightning.ckpt": _lightning_checkpoint(2, model_seed=1, ema_seed=3),
        # a training checkpoint without Lightning's metadata, and one without the module prefix
        "partial.ckpt": {"epoch": 3, "state_dict": {f"model.{k}": v for k, v in _weights(1).items()}},
        "unprefixed.ckpt": {"state_dict": _weights(1)},
    }
    for name, content in formats.items():
        atomic_torch_save(content, tmp_path / name)
        _assert_same(load_state_dict_file(tmp_path / name), _weights(1))
    _assert_same(load_state_dict_file(tmp_path / "lightning.ckpt", ema=True), _weights(3))
    atomic_torch_save({"model_state_dict": {"w": "text"}}, tmp_path / "text.pth")
    with pytest.raises(CheckpointError, match="does not hold a state dict"):
        load_state_dict_file(tmp_path / "text.pth")


def test_load_state_dict_into_keeps_a_resized_classifier_fresh_only_when_asked():
    torch.manual_seed(0)
    pretrained = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 5)).state_dict()
    model = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))
    fresh_head = model[1].weight.detach().clone()
    with pytest.raises(CheckpointError, match=r"1\.weight: checkpoint \[5, 4\] vs model \[2, 4\]"):
        load_state_dict_into(model, pretrained, source="pretrained.pth")
    load_state_dict_into(model, pretrained, source="pretrained.pth", new_num_classes=2)
    assert torch.equal(model[0].weight, pretrained["0.weight"])
    assert torch.equal(model[1].weight, fresh_head)
    # only the class dimension may differ
    wrong = {**pretrained, "0.weight": torch.zeros(4, 7)}
    with pytest.raises(CheckpointError, match="1 shape mismatch"):
        load_state_dict_into(model, wrong, new_num_classes=2)


def test_sha256_of_file_and_prefix_check(tmp_path):
    path = tmp_path / "w-abc.pth"
    atomic_torch_save(_weights(0), path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert sha256_of_file(path) == digest
    verify_sha256_prefix(path, digest[:10])
    with pytest.raises(CheckpointError, match="corrupt or not the published file"):
        verify_sha256_prefix(path, "0" * 10 if not digest.startswith("0" * 10) else "1" * 10)
    path.write_bytes(b"changed")  # a new size: the remembered digest is not reused
    assert sha256_of_file(path) == hashlib.sha256(b"changed").hexdigest()


def test_only_checkpoint_io_reads_torch_files():
    """One owner: every torch.load of the package goes through bcos.checkpoint_io (weights_only=True)."""
    import ast

    readers = []
    for path in (REPO / "bcos").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Attribute) and node.attr == "load" and isinstance(node.value, ast.Name) and node.value.id == "torch":
                readers.append(str(path.relative_to(REPO)))
    assert sorted(set(readers)) == ["bcos/checkpoint_io.py"]


# --------------------------------------------------------------------------- reload from a run folder


def test_reload_last_epoch_and_best(tmp_path):
    run = _make_run(tmp_path)
    last = load_checkpoint_from_run(run.path, "last")
    assert (last.path.name, last.epoch, last.ema) == ("last.ckpt", 4, False)
    _assert_same(last.state_dict, _weights(4))

    _assert_same(load_checkpoint_from_run(run, "last", ema=True).state_dict, _weights(104))
    _assert_same(load_checkpoint_from_run(run, "epoch_2").state_dict, _weights(2))

    best = load_checkpoint_from_run(run, "best")
    assert (best.epoch, best.ema, best.path.name) == (3, False, "epoch=3-val_acc1=0.8000.ckpt")
    _assert_same(best.state_dict, _weights(3))

    best_ema = load_checkpoint_from_run(run, "best", ema=True)
    assert (best_ema.epoch, best_ema.ema, best_ema.path.name) == (2, True, "epoch=2-val_acc1_ema=0.8500.ckpt")
    _assert_same(best_ema.state_dict, _weights(102))


def test_reload_best_any_picks_the_better_model(tmp_path):
    run = _make_run(tmp_path)
    chosen = load_checkpoint_from_run(run, "best_any", ema=False)
    assert (chosen.epoch, chosen.ema) == (2, True)  # EMA 0.85 beats plain 0.80
    _assert_same(chosen.state_dict, _weights(102))

    write_metric_file(run.metrics_file("eval_acc1"), [(0, 0.5), (3, 0.9)])
    chosen = load_checkpoint_from_run(run, "best_any", ema=True)
    assert (chosen.epoch, chosen.ema) == (3, False)
    _assert_same(chosen.state_dict, _weights(3))


def test_best_any_without_ema_and_best_without_metrics(tmp_path):
    run = _make_run(tmp_path, with_ema=False, with_metrics=False)
    # no metrics files: the accuracy in the checkpoint names decides
    best = load_checkpoint_from_run(run, "best")
    assert best.epoch == 3
    chosen = load_checkpoint_from_run(run, "best_any")
    assert (chosen.epoch, chosen.ema) == (3, False)
    with pytest.raises(CheckpointError, match="EMA"):
        load_checkpoint_from_run(run, "best", ema=True)
    with pytest.raises(CheckpointError, match="no EMA weights"):
        load_checkpoint_from_run(run, "last", ema=True)


def test_reload_errors_list_what_exists(tmp_path):
    run = _make_run(tmp_path)
    with pytest.raises(CheckpointError, match=r"no checkpoint for epoch 999 .* available: last, epoch_2, epoch_3, epoch_4"):
        load_checkpoint_from_run(run, "epoch_999")
    run.last_checkpoint.unlink()
    with pytest.raises(CheckpointError, match=r"no last.ckpt .* epoch_2, epoch_3, epoch_4"):
        load_checkpoint_from_run(run, "last")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CheckpointError, match=r"train the experiment first .* \(--weights PATH\)"):
        load_checkpoint_from_run(empty, "last")
    with pytest.raises(CheckpointError, match="train the experiment first"):
        load_checkpoint_from_run(tmp_path / "missing", "best")
    with pytest.raises(ConfigError, match="unknown reload"):
        load_checkpoint_from_run(run, "latest")


def test_verbose_reload_prints_epoch_and_accuracy(tmp_path, capsys):
    run = _make_run(tmp_path)
    load_checkpoint_from_run(run, "best", ema=True, verbose=True)
    out = capsys.readouterr().out
    assert "epoch 2" in out and "(EMA)" in out and "85.00%" in out


# --------------------------------------------------------------------------- metrics files


def test_metrics_single_row_and_empty_files(tmp_path):
    write_metric_file(tmp_path / "eval_acc1.gz", [(0, 0.25)])
    (tmp_path / "eval_acc5.gz").write_bytes(b"")
    metrics = Metrics.from_metrics_dir(tmp_path)
    assert metrics["eval_acc1"].shape == (1, 2)
    assert metrics["eval_acc5"].shape == (0, 2)
    assert metrics.get_best_epoch_and_accuracy() == (0, 0.25)
    with pytest.raises(MetricsNotFoundError, match="no rows"):
        metrics.find_best_epoch_and_metric_value_for("eval_acc5")
    assert not metrics.has_ema()
    with pytest.raises(MetricsNotFoundError, match="without EMA|not trained with EMA"):
        metrics.get_best_epoch_and_accuracy_ema()


def test_metrics_reference_format_and_helpers(tmp_path):
    # the format the training callback writes: np.savetxt of (epoch, value) rows, gzip by suffix
    np.savetxt(tmp_path / "val_acc1.gz", [(0, 0.1), (1, 0.7), (2, 0.7), (3, 0.2)])
    np.savetxt(tmp_path / "val_loss.gz", [(0, 2.0), (1, 0.5), (2, 0.9), (3, 1.0)])
    metrics = Metrics.from_metrics_dir(tmp_path)
    assert metrics.get_best_epoch_and_accuracy() == (1, 0.7)  # alias val_acc1, ties -> earliest
    assert metrics.find_best_epoch_and_metric_value_for("val_loss", mode="min") == (1, 0.5)
    assert metrics.value_at_epoch("val_loss", 2) == 0.9
    assert metrics.value_at_epoch("val_loss", 9) is None
    with pytest.raises(UnknownNameError, match="did you mean 'val_loss'"):
        metrics.find_best_epoch_and_metric_value_for("val_los")
    metrics.save(tmp_path / "copy")
    assert np.allclose(read_metric_file(tmp_path / "copy" / "val_acc1.gz"), metrics["val_acc1"].numpy())


def test_metrics_missing_or_broken(tmp_path):
    with pytest.raises(MetricsNotFoundError, match="train the experiment first"):
        Metrics.from_experiment_dir(tmp_path / "nothing")
    with pytest.raises(MetricsNotFoundError, match="no metrics folder"):
        Metrics.from_experiment_dir(tmp_path)
    np.savetxt(tmp_path / "bad.gz", [(1, 2, 3), (4, 5, 6)])
    with pytest.raises(DataNotFoundError, match="3 columns"):
        read_metric_file(tmp_path / "bad.gz")


# --------------------------------------------------------------------------- run-folder names


def test_checkpoint_names_round_trip_and_match_lightning(tmp_path):
    name = best_checkpoint_filename(12, 0.91234)
    assert name == "epoch=12-val_acc1=0.9123.ckpt"
    parsed = parse_checkpoint_filename(name)
    assert (parsed.epoch, parsed.metric, parsed.value, parsed.is_ema) == (12, "val_acc1", 0.9123, False)
    assert parse_checkpoint_filename("epoch=3-val_acc1_ema=0.5000-v1.ckpt").is_ema
    assert parse_checkpoint_filename("last.ckpt") is None
    assert parse_checkpoint_filename("epoch=3.ckpt") is None
    # Lightning's ModelCheckpoint expands "{epoch}-{val_acc1:.4f}" to "epoch=7-val_acc1=0.5322"
    assert best_checkpoint_filename_template() == "{epoch}-{val_acc1:.4f}"
    assert best_checkpoint_filename_template(ema=True) == "{epoch}-{val_acc1_ema:.4f}"


def test_run_folder_layout(tmp_path):
    run = RunFolder.of("CIFAR10", "coll", "exp", base_directory=tmp_path)
    assert run.path == tmp_path / "CIFAR10" / "coll" / "exp"
    assert run.checkpoints() == [] and run.available_epochs() == []
    assert run.metrics_file("eval_acc1") == run.path / "metrics" / "eval_acc1.gz"
    assert (run.config_file.name, run.localisation_dir.name) == ("config.txt", "localisation_analysis")
    run = _make_run(tmp_path / "other")
    assert run.available_epochs() == [2, 3, 4]
    assert len(run.epoch_checkpoints()[3]) == 2


# --------------------------------------------------------------------------- stripping


def test_strip_checkpoint_name_hash_and_content(tmp_path, monkeypatch):
    run = _make_run(tmp_path)
    monkeypatch.chdir(tmp_path)
    result = strip_checkpoint(run.last_checkpoint)
    assert result.path.parent == tmp_path
    digest = hashlib.sha256(result.path.read_bytes()).hexdigest()
    assert result.sha256 == digest
    assert result.path.name == f"exp-{digest[:10]}.pth"
    assert result.epoch == 4
    _assert_same(load_checkpoint_file(result.path), _weights(4))

    # same weights, same bytes: the hash does not depend on file names
    (tmp_path / "out").mkdir()
    again = strip_checkpoint(run.best_checkpoint(4, 0.75), output=tmp_path / "out" / "x")
    assert again.path == tmp_path / "out" / f"x-{digest[:10]}.pth"

    ema = strip_checkpoint(run.last_checkpoint, output=tmp_path / "out", ema=True)
    assert ema.path.name.startswith("exp-") and ema.sha256 != digest
    _assert_same(load_checkpoint_file(ema.path), _weights(104))
    custom = strip_checkpoint(run.last_checkpoint, output=tmp_path / "named.pt")
    assert custom.path.name == f"named-{digest[:10]}.pt"
    assert not list(tmp_path.glob(".*tmp"))


def test_strip_script(tmp_path):
    run = _make_run(tmp_path)
    script = REPO / "scripts" / "strip_checkpoints.py"
    done = subprocess.run([sys.executable, str(script), "-c", str(run.last_checkpoint), "--out", str(tmp_path), "--ema"],
                          capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert done.returncode == 0, done.stderr
    written = next(tmp_path.glob("exp-*.pth"))
    digest = hashlib.sha256(written.read_bytes()).hexdigest()
    assert written.name == f"exp-{digest[:10]}.pth"
    assert f"SHA256 hash={digest}" in done.stdout
    assert "epoch=4" in done.stdout



def test_strip_script_error_is_one_line(tmp_path, capsys):
    from bcos.cli.errors import run_cli

    spec = importlib.util.spec_from_file_location("strip_checkpoints", REPO / "scripts" / "strip_checkpoints.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert run_cli(module.main, ["-c", str(tmp_path / "nope.ckpt")]) == 2
    assert capsys.readouterr().err.startswith("error: no checkpoint file")
