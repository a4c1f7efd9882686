"""The `bcos` command: help of every command, the model and config listings, `bcos explain` with a
registry model and with a trained run (the `make demo` layout), errors, and the console script."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers_tiny_model import TINY_NAME, register_tiny_model, save_tiny_weights
from PIL import Image

import bcos
from bcos.cli.main import main as bcos_main
from bcos.data.categories import DIGITS_CATEGORIES, IMAGENET_CATEGORIES

REPO = Path(__file__).resolve().parents[1]


def _exit_code(argv: list[str]) -> int:
    """The status of ``bcos argv``, whether it returns or exits (argparse)."""
    try:
        return bcos_main(argv)
    except SystemExit as exit_info:
        return int(exit_info.code or 0)


def _write_images(folder: Path, count: int, size: tuple[int, int] = (40, 48)) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = []
    for i in range(count):
        path = folder / f"img{i}.{'png' if i % 2 else 'jpg'}"
        Image.fromarray(rng.integers(0, 255, size=(*size, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


# ------------------------------------------------------------------------------------ help
HELP_COMMANDS = [
    [],
    ["train"],
    ["evaluate"],
    ["explain"],
    ["localise"],
    ["configs"],
    ["configs", "list"],
    ["configs", "show"],
    ["configs", "find"],
    ["models"],
    ["models", "list"],
    ["models", "show"],
]


@pytest.mark.parametrize("command", HELP_COMMANDS, ids=lambda c: " ".join(c) or "bcos")
def test_every_command_has_help_with_an_example(command, capsys):
    assert _exit_code([*command, "--help"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("usage: bcos")
    assert "example" in text and "bcos " + (command[0] if command else "") in text.split("example", 1)[1]


def test_top_level_help_lists_every_command(capsys):
    _exit_code(["--help"])
    text = capsys.readouterr().out
    for command in ("train", "evaluate", "explain", "localise", "configs", "models"):
        assert re.search(rf"^\s+{command}\b", text, re.M), command


def test_commands_keep_the_spec_scripts_options(capsys):
    _exit_code(["train", "--help"])
    train = capsys.readouterr().out
    for option in ("--dataset", "--base_network", "--experiment_name", "--wandb_logger", "--distributed", "--amp",
                   "--force-no-resume", "--finetune", "--data-dir", "--freeze-backbone"):  # fmt: skip
        assert option in train
    _exit_code(["evaluate", "--help"])
    evaluate = capsys.readouterr().out
    assert all(o in evaluate for o in ("--reload", "--hubconf", "--weights", "--batch_size"))
    _exit_code(["localise", "--help"])
    localise = capsys.readouterr().out
    assert all(o in localise for o in ("--save_path", "--analysis_config", "--explainer_name", "--smooth"))


def test_train_checks_names_like_train_py(capsys):
    argv = ["train", "--dataset", "Digits", "--base_network", "bcos_demo", "--experiment_name", "resnet_8_bnu-lineer"]
    assert bcos_main(argv) == 2
    assert "did you mean 'resnet_8_bnu-linear'" in capsys.readouterr().err
    assert bcos_main(["train", "--dataset", "Digit", "--base_network", "bcos_demo", "--experiment_name", "x"]) == 2
    assert "did you mean 'Digits'" in capsys.readouterr().err


# ------------------------------------------------------------------------------------ models
def test_models_table_shows_accuracy_size_and_weights(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("BCOS_WEIGHTS_DIR", str(tmp_path))
    (tmp_path / "resnet_18-68b4160fff.pth").write_bytes(b"only the name is looked at")
    assert bcos_main(["models"]) == 0
    rows = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()[2:]}
    assert len(rows) == 34
    assert re.search(r"75\.88\s+92\.53\s+25\.5\s+224 \(resize 256\)\s+yes\s+download", rows["resnet50"])
    assert "local" in rows["resnet18"].split() and "no" in rows["standard_vitc_b_patch1_14"].split()

    assert bcos_main(["models", "--local", "--format", "json"]) == 0
    (entry,) = json.loads(capsys.readouterr().out)
    assert entry["name"] == "resnet18" and entry["local_path"] == str(tmp_path / "resnet_18-68b4160fff.pth")
    assert entry["top1"] == 68.736 and entry["params"] == 11_693_120

    assert bcos_main(["models", "convnext_*", "--format", "names"]) == 0  # `list` is implied
    assert capsys.readouterr().out.split() == ["convnext_base", "convnext_base_bnu", "convnext_tiny", "convnext_tiny_bnu"]


def test_models_show_and_unknown_names(capsys):
    assert bcos_main(["models", "show", "vitc_s_patch1_14"]) == 0
    text = capsys.readouterr().out
    assert "bcos_vitc_s_patch1_14-cf55c88f0c.pth" in text and "74.50" in text and "20,878,704" in text
    assert "ImageNet/vit_final/bcos_vitc_s_patch1_14" in text
    assert bcos_main(["models", "show", "resnet_50"]) == 2
    assert "did you mean 'resnet50'" in capsys.readouterr().err
    assert bcos_main(["models", "list", "nothing*"]) == 2


# ------------------------------------------------------------------------------------ configs
def test_configs_list_show_find(capsys):
    assert bcos_main(["configs"]) == 0
    text = capsys.readouterr().out
    assert re.search(r"CIFAR10/norm_ablations_final\s+888", text) and re.search(r"ImageNet/bcos_final\s+33", text)

    assert bcos_main(["configs", "list", "ImageNet/bcos_final", "resnet_1*"]) == 0
    assert capsys.readouterr().out.split() == ["resnet_18", "resnet_101", "resnet_152", "resnet_18-seed=420",
                                               "resnet_101-seed=420", "resnet_152-seed=420", "resnet_18-seed=1337",
                                               "resnet_101-seed=1337", "resnet_152-seed=1337"]  # fmt: skip

    assert bcos_main(["configs", "show", "ImageNet", "bcos_final", "resnet_50"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("# ImageNet/bcos_final/resnet_50") and "batch_size: 64" in text and "resnet50" in text

    assert bcos_main(["configs", "find", "convnext_tiny*"]) == 0
    assert capsys.readouterr().out.split() == [
        "ImageNet/bcos_final_long/convnext_tiny_bnu",
        "ImageNet/bcos_final_long/convnext_tiny_pn",
    ]


def test_configs_errors_name_the_fix(capsys):
    assert bcos_main(["configs", "show", "ImageNet", "bcos_final", "resnet_5O"]) == 2
    assert "did you mean 'resnet_50'" in capsys.readouterr().err
    assert bcos_main(["configs", "show", "ImageNet/bcos_final"]) == 2
    assert "DATASET BASE_NETWORK EXPERIMENT" in capsys.readouterr().err
    assert bcos_main(["configs", "list", "CIFAR1O"]) == 2
    assert "did you mean 'CIFAR10'" in capsys.readouterr().err


# ------------------------------------------------------------------------------------ explain
@pytest.fixture
def tiny_weights(monkeypatch, tmp_path):
    register_tiny_model(monkeypatch)
    return save_tiny_weights(tmp_path / "tiny.pth")


def test_explain_a_folder_and_a_file_with_a_registry_model(tiny_weights, tmp_path, capsys):
    _write_images(tmp_path / "photos", 2)
    single = _write_images(tmp_path / "single", 1, size=(64, 50))[0]
    out = tmp_path / "out"
    status = bcos_main([
        "explain", str(tmp_path / "photos"), str(single), "--model", TINY_NAME, "--weights", str(tiny_weights),
        "--top-k", "2", "--output", str(out), "--batch-size", "2",
    ])  # fmt: skip
    assert status == 0
    captured = capsys.readouterr()
    assert "explaining" in captured.err  # progress bar over the images
    assert f"Report: {out / 'report.html'}" in captured.out

    records = json.loads((out / "predictions.json").read_text())
    assert [r["image"] for r in records] == ["photos/img0.jpg", "photos/img1.png", str(single)]
    assert [r["png"] for r in records] == ["photos__img0.png", "photos__img1.png", "img0.png"]
    for record in records:
        assert len(record["predictions"]) == 2 and len(record["explained"]) == 2
        assert all(p["class_name"] == IMAGENET_CATEGORIES[p["class_index"]] for p in record["predictions"])
        for explained in record["explained"]:  # B-cos CNN: contributions + bias == logit
            assert explained["contribution_sum"] + explained["logit_bias"] == pytest.approx(explained["logit"], abs=1e-3)
        png = np.asarray(Image.open(out / record["png"]))
        assert png.shape[1] > png.shape[0]  # three panels side by side

    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 3 and TINY_NAME in html


def test_explain_a_chosen_class_by_name(tiny_weights, tmp_path, capsys):
    (image,) = _write_images(tmp_path / "one", 1)
    out = tmp_path / "out"
    assert bcos_main(["explain", str(image), "--model", TINY_NAME, "--weights", str(tiny_weights),
                      "--target", "Tabby", "--output", str(out), "--no-report"]) == 0  # fmt: skip
    (record,) = json.loads((out / "predictions.json").read_text())
    assert [e["class_index"] for e in record["explained"]] == [IMAGENET_CATEGORIES.index("tabby")]
    assert not (out / "report.html").exists()
    assert bcos_main(["explain", str(image), "--model", TINY_NAME, "--weights", str(tiny_weights),
                      "--target", "tabbby", "--output", str(out)]) == 2  # fmt: skip
    assert "did you mean 'tabby'" in capsys.readouterr().err


def _fake_demo_run(base: Path) -> Path:
    """experiments/Digits/bcos_demo/resnet_8_bnu-linear with a last.ckpt (untrained weights)."""
    from bcos.experiments.utils import Experiment
    from bcos.checkpoint_io import atomic_torch_save

    experiment = Experiment("Digits", "bcos_demo", "resnet_8_bnu-linear", base_directory=base)
    torch.manual_seed(0)
    model = experiment.get_model()
    state = {f"model.{k}": v for k, v in model.state_dict().items()}
    experiment.save_dir.mkdir(parents=True)
    atomic_torch_save({"state_dict": state, "epoch": 0, "pytorch-lightning_version": "2.5.0"}, experiment.save_dir / "last.ckpt")
    return experiment.save_dir


def test_explain_with_a_trained_run_resizes_to_its_input_size(tmp_path, capsys):
    run = _fake_demo_run(tmp_path / "experiments")
    (image,) = _write_images(tmp_path / "digit", 1, size=(120, 90))
    out = tmp_path / "out"
    assert bcos_main(["explain", str(image), "--run", str(run), "--reload", "last", "--output", str(out), "--top-k", "3"]) == 0
    (record,) = json.loads((out / "predictions.json").read_text())
    assert {p["class_name"] for p in record["predictions"]} <= set(DIGITS_CATEGORIES)
    assert "Digits/bcos_demo/resnet_8_bnu-linear" in (out / "report.html").read_text()
    assert f"{image}: " in capsys.readouterr().out


def test_explain_errors_exit_with_status_2(tiny_weights, tmp_path, capsys):
    (image,) = _write_images(tmp_path / "one", 1)
    cases = {
        "not both or neither": ["explain", str(image), "--model", TINY_NAME, "--run", str(tmp_path)],
        "no image or folder": ["explain", str(tmp_path / "missing.jpg"), "--model", TINY_NAME],
        "holds no images": ["explain", str(tmp_path / "empty"), "--model", TINY_NAME],
        "without explanations": ["explain", str(image), "--model", "standard_vitc_ti_patch1_14"],
        "did you mean 'resnet50'": ["explain", str(image), "--model", "resnet_50"],
        "--top-k must be at least 1": ["explain", str(image), "--model", TINY_NAME, "--top-k", "0"],
        "does not exist": ["explain", str(image), "--run", str(tmp_path / "no_run")],
        "drop them with --model": ["explain", str(image), "--model", TINY_NAME, "--reload", "last"],
    }
    (tmp_path / "empty").mkdir()
    for message, argv in cases.items():
        assert bcos_main(argv) == 2, message
        assert message in capsys.readouterr().err


# ------------------------------------------------------------------------------------ console script
def test_console_script(tmp_path):
    script = shutil.which("bcos", path=str(Path(sys.executable).parent))
    assert script is not None, "the bcos console script is not installed (pip install -e .)"
    result = subprocess.run([script, "--version"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == f"bcos {bcos.__version__}"
    result = subprocess.run([script, "models", "show", "resnet5"], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert result.returncode == 2 and result.stderr.strip().startswith("error: unknown model 'resnet5'")
    assert "Traceback" not in result.stderr
