"""The Experiment class on a fake run folder of a real CIFAR-10 config with Lightning-format checkpoints."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from bcos.errors import CheckpointError, ConfigError, UnknownNameError
from bcos.experiments.utils.checkpoint_stripping import strip_checkpoint
from bcos.experiments.utils.collections import get_configs_and_model_factory
from bcos.experiments.utils.experiment import Experiment
from bcos.experiments.utils.metrics import write_metric_file

DATASET, COLLECTION, NAME = "CIFAR10", "norm_ablations_final", "resnet_20_bnu-linear-nomaxout"
PLAIN_ACC = [0.30, 0.50, 0.62, 0.71, 0.69, 0.70]  # best plain epoch: 3
EMA_ACC = [0.31, 0.52, 0.66, 0.70, 0.74, 0.72]  # best EMA epoch: 4 (and better than plain)


def _weights(experiment: Experiment, seed: int) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    return experiment.get_model().state_dict()


def _checkpoint(model_weights: dict, ema_weights: dict, epoch: int) -> dict:
    state_dict = {f"model.{k}": v for k, v in model_weights.items()}
    state_dict.update({f"ema.module.{k}": v for k, v in ema_weights.items()})
    state_dict["ema.n_averaged"] = torch.tensor(100 * epoch)
    return {
        "state_dict": state_dict,
        "epoch": epoch,
        "global_step": 100 * epoch,
        "pytorch-lightning_version": "2.4.0",
        "callbacks": {"MetricsTracker": {"eval_acc1": [(e, a) for e, a in enumerate(PLAIN_ACC[: epoch + 1])]}},
    }


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A run folder: last.ckpt (epoch 5), best checkpoints for epochs 2, 3, 4, metrics files.

    The plain weights of epoch E come from seed E, the EMA weights from seed 100 + E.
    """
    base = tmp_path_factory.mktemp("experiments")
    experiment = Experiment(DATASET, COLLECTION, NAME, base_directory=base)
    folder = experiment.run_folder
    folder.path.mkdir(parents=True)
    weights = {seed: _weights(experiment, seed) for seed in (2, 3, 4, 5, 102, 103, 104, 105)}
    for epoch in (2, 3, 4):
        checkpoint = _checkpoint(weights[epoch], weights[100 + epoch], epoch)
        torch.save(checkpoint, folder.best_checkpoint(epoch, PLAIN_ACC[epoch]))
        torch.save(checkpoint, folder.best_checkpoint(epoch, EMA_ACC[epoch], ema=True))
    torch.save(_checkpoint(weights[5], weights[105], 5), folder.last_checkpoint)
    write_metric_file(folder.metrics_file("eval_acc1"), list(enumerate(PLAIN_ACC)))
    write_metric_file(folder.metrics_file("eval_acc1_ema"), list(enumerate(EMA_ACC)))
    return base, weights


def _assert_loaded(model: torch.nn.Module, expected: dict) -> None:
    state = model.state_dict()
    assert set(state) == set(expected)
    for key, value in expected.items():
        assert torch.equal(state[key], value), key


# --------------------------------------------------------------------------- construction


def test_names_and_path_give_the_same_experiment(tmp_path):
    by_names = Experiment(DATASET, COLLECTION, NAME, base_directory=tmp_path)
    assert by_names.save_dir == tmp_path / DATASET / COLLECTION / NAME
    by_path = Experiment(by_names.save_dir)
    by_string = Experiment(str(by_names.save_dir) + "/")
    for experiment in (by_path, by_string):
        assert (experiment.dataset, experiment.base_network, experiment.experiment_name) == (DATASET, COLLECTION, NAME)
        assert experiment.save_dir == by_names.save_dir
        assert experiment.base_directory == tmp_path
    assert by_names.last_training_checkpoint_path == by_names.save_dir / "last.ckpt"
    assert Experiment(DATASET, COLLECTION, NAME).save_dir == Path("experiments", DATASET, COLLECTION, NAME)


def test_bad_names_and_arguments():
    with pytest.raises(UnknownNameError, match="did you mean 'resnet_20_bnu-linear-nomaxout'"):
        Experiment(DATASET, COLLECTION, "resnet_20_bnu-linear-nomaxot")
    with pytest.raises(UnknownNameError, match="did you mean 'CIFAR10'"):
        Experiment("CIFAR1O", COLLECTION, NAME)
    with pytest.raises(UnknownNameError, match="did you mean 'norm_ablations_final'"):
        Experiment(DATASET, "norm_ablation_final", NAME)
    with pytest.raises(ConfigError, match="needs base_network and experiment_name"):
        Experiment(DATASET, COLLECTION)
    with pytest.raises(ConfigError, match="must not be given"):
        Experiment(f"experiments/{DATASET}/{COLLECTION}/{NAME}", COLLECTION, NAME)
    with pytest.raises(ConfigError, match="<base_directory>/<dataset>"):
        Experiment(f"{COLLECTION}/{NAME}")


def test_config_is_a_private_copy():
    shared, _ = get_configs_and_model_factory(DATASET, COLLECTION)
    original_batch_size = shared[NAME]["data"]["batch_size"]
    experiment = Experiment(DATASET, COLLECTION, NAME)
    experiment.config["data"]["batch_size"] = original_batch_size + 1
    experiment.config["model"]["args"]["num_classes"] = 3
    assert shared[NAME]["data"]["batch_size"] == original_batch_size
    assert Experiment(DATASET, COLLECTION, NAME).config["data"]["batch_size"] == original_batch_size


def test_get_model_builds_fresh_models_and_merges_kwargs():
    experiment = Experiment(DATASET, COLLECTION, NAME)
    first, second = experiment.get_model(), experiment.get_model()
    assert first is not second
    assert sum(p.numel() for p in first.parameters()) == 272_112  # B-cos ResNet-20, as in the reference
    assert first(torch.rand(2, 6, 32, 32)).shape == (2, 10)
    narrow = experiment.get_model(args={"num_classes": 4})
    assert narrow(torch.rand(1, 6, 32, 32)).shape == (1, 4)
    assert experiment.config["model"]["args"]["num_classes"] == 10


# --------------------------------------------------------------------------- reloading


@pytest.mark.parametrize(
    "reload, ema, seed",
    [
        ("last", False, 5),
        ("last", True, 105),
        ("best", False, 3),
        ("best", True, 104),
        ("best_any", False, 104),  # the EMA model validated best (0.74 > 0.71)
        ("epoch_2", False, 2),
        ("epoch_2", True, 102),
    ],
)
def test_load_trained_model_every_reload_mode(run, reload, ema, seed):
    base, weights = run
    experiment = Experiment(DATASET, COLLECTION, NAME, base_directory=base)
    _assert_loaded(experiment.load_trained_model(reload=reload, ema=ema), weights[seed])


def test_return_training_checkpoint_and_verbose(run, capsys):
    base, weights = run
    experiment = Experiment(DATASET, COLLECTION, NAME, base_directory=base)
    result = experiment.load_trained_model(reload="best", verbose=True, return_training_ckpt_if_possible=True)
    assert set(result) == {"model", "ckpt"}
    assert result["ckpt"]["epoch"] == 3 and result["ckpt"]["global_step"] == 300
    _assert_loaded(result["model"], weights[3])
    out = capsys.readouterr().out
    assert "epoch 3" in out and "71.00%" in out


def test_metrics_and_available_checkpoints(run):
    base, _ = run
    experiment = Experiment(DATASET, COLLECTION, NAME, base_directory=base)
    metrics = experiment.load_metrics()
    assert metrics["eval_acc1"].shape == (6, 2)
    assert metrics.get_best_epoch_and_accuracy() == (3, pytest.approx(0.71))
    assert metrics.get_best_epoch_and_accuracy_ema() == (4, pytest.approx(0.74))
    names = sorted(p.name for p in experiment.available_checkpoints())
    assert names[-1] == "last.ckpt" and len(names) == 7
    assert experiment.last_training_checkpoint_state_dict["epoch"] == 5


def test_reload_errors(run):
    base, _ = run
    experiment = Experiment(DATASET, COLLECTION, NAME, base_directory=base)
    with pytest.raises(CheckpointError, match="no checkpoint for epoch 999 .*available: last, epoch_2, epoch_3, epoch_4"):
        experiment.load_trained_model(reload="epoch_999")
    with pytest.raises(ConfigError, match="did you mean 'best_any'"):
        experiment.load_trained_model(reload="bestany")


def test_empty_run_folder_says_train_first_or_pass_weights(tmp_path):
    experiment = Experiment(DATASET, COLLECTION, NAME, base_directory=tmp_path)
    with pytest.warns(UserWarning, match="no checkpoints"):
        assert experiment.available_checkpoints() == []
    experiment.save_dir.mkdir(parents=True)
    with pytest.raises(CheckpointError, match=r"no checkpoints in .*train it first .*--weights PATH"):
        experiment.load_trained_model()


def test_checkpoint_of_another_architecture_names_the_differences(tmp_path):
    other = Experiment(DATASET, COLLECTION, "resnet_20_bnu-linear", base_directory=tmp_path)  # MaxOut 2
    experiment = Experiment(DATASET, COLLECTION, NAME, base_directory=tmp_path)
    experiment.save_dir.mkdir(parents=True)
    wrong = other.get_model().state_dict()
    torch.save(_checkpoint(wrong, wrong, 0), experiment.run_folder.last_checkpoint)
    with pytest.raises(CheckpointError, match=r"does not fit the model: .*shape mismatch.*checkpoint \[32, 6, 3, 3\] vs model \[16, 6, 3, 3\]"):
        experiment.load_trained_model()


def test_stripped_weights_load_into_the_experiment(run, tmp_path):
    base, weights = run
    experiment = Experiment(DATASET, COLLECTION, NAME, base_directory=base)
    stripped = strip_checkpoint(experiment.run_folder.last_checkpoint, output=tmp_path, ema=True)
    assert stripped.path.name.startswith(f"{NAME}-")
    _assert_loaded(experiment.load_model_from_weights(stripped.path), weights[105])
    # a training checkpoint works as a weights file too
    _assert_loaded(experiment.load_model_from_weights(experiment.run_folder.last_checkpoint), weights[5])


def test_published_weights_when_no_local_run(tmp_path, monkeypatch, run):
    """Without a run folder, an experiment that has published weights loads them (fixes the dead
    ``_try_load_external_weights`` of the reference)."""
    import bcos.experiments.utils.experiment as experiment_module
    import bcos.models.weights as weights_module

    _, weights = run
    published = tmp_path / "published.pth"
    torch.save(weights[3], published)
    monkeypatch.setattr(experiment_module, "_published_entry_for", lambda *names: "resnet18")
    monkeypatch.setattr(weights_module, "fetch_weights_file", lambda file, progress=True: published)
    experiment = Experiment(DATASET, COLLECTION, NAME, base_directory=tmp_path / "none")
    _assert_loaded(experiment.load_trained_model(), weights[3])
    with pytest.warns(UserWarning, match="do not apply"):
        experiment.load_trained_model(reload="best")


def test_published_lookup_matches_the_registry():
    from bcos.experiments.utils.experiment import _published_entry_for

    assert _published_entry_for("ImageNet", "bcos_final", "resnet_18") == "resnet18"
    assert _published_entry_for(DATASET, COLLECTION, NAME) is None
