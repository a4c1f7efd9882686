"""Issue 13: outputs never replace inputs or user files, every write is atomic, faults end in one line.

Disk-full cases use a failing writer (``os.fsync`` patched to raise ``ENOSPC`` for chosen files)
instead of a small tmpfs, which needs privileges the test machines do not have; read-only folders
are simulated the same way (``EROFS``/``EACCES``), since ``chmod`` does not stop root.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers_tiny_model import TINY_NAME, register_tiny_model, save_tiny_weights
from PIL import Image

import bcos.atomic_io as atomic_io
from bcos.atomic_io import INCOMPLETE_MARKER, atomic_open, atomic_write_text, results_folder, safe_path_component
from bcos.cli.main import main as bcos_main
from bcos.errors import OutputError

REPO = Path(__file__).resolve().parents[1]


def _fail_fsync_for(monkeypatch, predicate, code: int = errno.ENOSPC) -> None:
    """Make ``os.fsync`` inside the writer module fail with ``code`` for temporaries whose target name passes ``predicate``."""
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        name = os.readlink(f"/proc/self/fd/{fd}")
        if name.endswith(".tmp") and predicate(Path(name).name):
            raise OSError(code, os.strerror(code))
        real_fsync(fd)

    monkeypatch.setattr(atomic_io.os, "fsync", fsync)


# ------------------------------------------------------------------------------------ the writer module
@pytest.mark.parametrize(
    "value",
    ["/../../../tmp/x", "..", ".hidden", "", "a/b", "a\\b", "x" * 300, "n=32", "default+cache_dir=,n=8", "ü\x00;rm -rf"],
)
def test_safe_path_component_stays_in_its_folder(value, tmp_path):
    name = safe_path_component(value)
    assert name and "/" not in name and "\x00" not in name and not name.startswith(".") and len(name) <= 80
    assert (tmp_path / name).resolve().parent == tmp_path.resolve()
    if value in ("n=32", "default+cache_dir=,n=8"):
        assert name == value  # already safe names are kept as they are


def test_safe_path_component_keeps_different_values_apart():
    values = ["a/b", "a_b", "a\\b", "a b", "x" * 300, "x" * 301]
    assert len({safe_path_component(v) for v in values}) == len(values)


@pytest.mark.parametrize(("code", "fix"), [(errno.ENOSPC, "free disk space"), (errno.EROFS, "read-only"), (errno.EACCES, "writable")])
def test_a_failed_write_is_one_line_and_keeps_the_old_file(tmp_path, monkeypatch, code, fix):
    target = tmp_path / "summary.json"
    atomic_write_text(target, "old")
    _fail_fsync_for(monkeypatch, lambda name: True, code)
    with pytest.raises(OutputError) as caught:
        atomic_write_text(target, "new " * 1000)
    message = str(caught.value)
    assert message.startswith(f"cannot write '{target}'") and fix in message and "\n" not in message
    assert caught.value.errno == code and isinstance(caught.value, OSError)
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["summary.json"]  # the temporary is removed


def test_an_unwritable_folder_is_one_line(tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(atomic_io.os, "open", refuse)
    with pytest.raises(OutputError, match="permission denied; make the folder writable"):
        atomic_write_text(tmp_path / "cache" / "confidences.json", "{}")


def test_a_writer_killed_mid_write_leaves_the_old_file_and_one_hidden_temporary(tmp_path):
    target = tmp_path / "report.html"
    target.write_text("old complete report")
    code = (
        "import os, signal, sys\n"
        "from bcos.atomic_io import atomic_open\n"
        "with atomic_open(sys.argv[1], 'wb') as handle:\n"
        "    handle.write(b'<html>' * 100000); handle.flush()\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    result = subprocess.run([sys.executable, "-c", code, str(target)], cwd=REPO, timeout=120)
    assert result.returncode == -signal.SIGKILL
    assert target.read_text() == "old complete report"
    (temporary,) = [p for p in tmp_path.iterdir() if p != target]
    assert atomic_io.is_temporary(temporary) and temporary.stat().st_size == 600000
    assert atomic_io.remove_stale_temporaries(tmp_path) == [temporary]


def test_results_folder_is_marked_incomplete_until_its_block_ends(tmp_path):
    folder = tmp_path / "results"
    with results_folder(folder):
        assert (folder / INCOMPLETE_MARKER).is_file()
        atomic_write_text(folder / "a.json", "{}")
    assert sorted(p.name for p in folder.iterdir()) == ["a.json"]
    with pytest.raises(RuntimeError), results_folder(folder):
        raise RuntimeError("stopped half-way")
    assert "incomplete" in (folder / INCOMPLETE_MARKER).read_text()
    with results_folder(folder):  # a later complete run removes the marker
        pass
    assert not (folder / INCOMPLETE_MARKER).exists()
    (folder / INCOMPLETE_MARKER).write_text("a user's own file")
    with pytest.raises(OutputError, match="was not written by bcos"), results_folder(folder):
        pass
    assert (folder / INCOMPLETE_MARKER).read_text() == "a user's own file"


def test_with_a_failing_writer_atomic_open_raises_the_original_error_for_bugs(tmp_path):
    with pytest.raises(ValueError), atomic_open(tmp_path / "x", "wb"):
        raise ValueError("a bug, not a disk problem")
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------------ bcos explain
@pytest.fixture
def tiny_weights(monkeypatch, tmp_path):
    register_tiny_model(monkeypatch)
    return save_tiny_weights(tmp_path / "tiny.pth")


def _photo(path: Path, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, size=(40, 48, 3), dtype=np.uint8)).save(path)
    return path


def _explain(*argv: str, weights: Path) -> int:
    return bcos_main(["explain", *argv, "--model", TINY_NAME, "--weights", str(weights), "--no-progress", "--device", "cpu"])


def test_explain_never_replaces_its_inputs(tiny_weights, tmp_path, monkeypatch, capsys):
    photos = tmp_path / "photos"
    cat, dog = _photo(photos / "cat.png", 0), _photo(photos / "dog.png", 1)
    before = {p.name: p.read_bytes() for p in photos.iterdir()}
    monkeypatch.chdir(photos)
    assert _explain("cat.png", "--output", ".", weights=tiny_weights) == 2
    err = capsys.readouterr().err.strip()
    assert err == "error: the output 'cat.png' would replace the input image 'cat.png'; pass another --output DIR"
    assert _explain(".", "--output", ".", weights=tiny_weights) == 2
    assert "would replace the input image" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in photos.iterdir()} == before  # nothing written, nothing replaced
    assert cat.is_file() and dog.is_file()


def test_explain_never_replaces_a_users_file_but_updates_its_own(tiny_weights, tmp_path, capsys):
    image = _photo(tmp_path / "in" / "cat.jpg")
    out = tmp_path / "out"
    users = _photo(out / "cat.png", seed=5)
    mine = users.read_bytes()
    assert _explain(str(image), "--output", str(out), weights=tiny_weights) == 2
    assert "exists and was not written by bcos explain" in capsys.readouterr().err
    assert users.read_bytes() == mine
    (out / "report.html").write_text("<html>my own notes</html>")
    users.unlink()
    assert _explain(str(image), "--output", str(out), weights=tiny_weights) == 2
    assert "report.html' exists and was not written by bcos explain" in capsys.readouterr().err
    (out / "report.html").unlink()

    assert _explain(str(image), "--output", str(out), weights=tiny_weights) == 0
    assert sorted(p.name for p in out.iterdir()) == ["cat.png", "predictions.json", "report.html"]
    assert _explain(str(image), "--output", str(out), weights=tiny_weights) == 0  # its own files are replaced


def test_explain_with_the_disk_full_keeps_the_previous_output(tiny_weights, tmp_path, monkeypatch, capsys):
    images = [_photo(tmp_path / "in" / f"img{i}.png", i) for i in range(3)]
    out = tmp_path / "out"
    assert _explain(*map(str, images), "--output", str(out), weights=tiny_weights) == 0
    previous = {p.name: p.read_bytes() for p in out.iterdir()}
    capsys.readouterr()

    _fail_fsync_for(monkeypatch, lambda name: "img1" in name or "report" in name)  # the disk fills up mid-run
    assert _explain(*map(str, images), "--output", str(out), "--top-k", "2", weights=tiny_weights) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: cannot write '{out / 'img1.png'}': no space left on device; free disk space")
    assert len(err.splitlines()) == 1
    now = {p.name: p.read_bytes() for p in out.iterdir()}
    assert set(now) == {*previous, INCOMPLETE_MARKER}  # the folder says it is incomplete, no temporaries
    for name in ("img1.png", "img2.png", "predictions.json", "report.html"):
        assert now[name] == previous[name]  # every file is its old complete version or the new one


# ------------------------------------------------------------------------------------ signals
def _train_helper(base: Path, **env: str) -> subprocess.CompletedProcess:
    """``train.py`` (tests/helpers_ddp_train.py: a small Digits config, 2 epochs of 8 steps), one process."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "SUBMITIT_", "BCOS_TEST_"))}
    for key in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "NODE_RANK", "MASTER_ADDR", "MASTER_PORT"):
        environment.pop(key, None)
    environment.update(OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="", **env)
    options = ["--dataset", "Digits", "--base_network", "ddp_test", "--experiment_name", "tiny"]
    options += ["--base_directory", str(base), "--accelerator", "cpu", "--refresh_rate", "1000"]
    helper = Path(__file__).resolve().parent / "helpers_ddp_train.py"
    return subprocess.run(
        [sys.executable, str(helper), *options], env=environment, cwd=base.parent, capture_output=True, text=True,
        timeout=240, preexec_fn=_default_sigint,
    )


def _default_sigint() -> None:
    # A suite started in the background by a shell without job control inherits SIGINT ignored
    # (POSIX shells do that for `cmd &`), and Python then leaves it ignored: give the child what a
    # terminal's Ctrl-C reaches.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.slow  # a training process of a few seconds per signal
@pytest.mark.parametrize(
    ("signal_name", "status", "said"), [("SIGINT", 130, "Ctrl-C (SIGINT)"), ("SIGTERM", 143, "SIGTERM")], ids=["sigint", "sigterm"]
)
def test_a_signal_during_training_exits_with_the_shells_status_and_one_line(tmp_path, signal_name, status, said):
    base = tmp_path / "experiments"
    stopped = _train_helper(base, BCOS_TEST_SIGTERM_AT_STEP="11", BCOS_TEST_SIGNAL=signal_name)  # epoch 1, step 3
    assert stopped.returncode == status, stopped.stderr[-3000:]
    errors = [line for line in stopped.stderr.splitlines() if line.startswith("error:")]
    assert errors == [errors[-1]] and errors[0].startswith(f"error: training stopped by {said} at epoch 1;")
    assert "last.ckpt is the resume point" in errors[0] and "Traceback" not in stopped.stderr
    run = base / "Digits" / "ddp_test" / "tiny"
    import torch

    assert torch.load(run / "last.ckpt", weights_only=True)["epoch"] == 0  # the last finished epoch is kept
    # resuming from it is what tests/test_training_processes.py checks bit for bit after SIGTERM


# ------------------------------------------------------------------------------------ unusual weights files
def _safetensors_bytes() -> bytes:
    """A valid safetensors file of one float32 tensor (the format: u64 header size, JSON header, data)."""
    header = json.dumps({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}).encode()
    return len(header).to_bytes(8, "little") + header + np.ones(2, dtype=np.float32).tobytes()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (_safetensors_bytes(), "it is a safetensors file, not a torch file; convert it once with"),
        (b"\x89HDF\r\n\x1a\n" + b"\0" * 64, "it is an HDF5 file (e.g. Keras weights), not a torch file"),
        (b"", "the file is empty (0 bytes)"),
        (b"PK\x03\x04 truncated zip", "corrupt or truncated"),
    ],
    ids=["safetensors", "hdf5", "empty", "truncated"],
)
def test_unusual_weights_files_are_named_for_what_they_are(tmp_path, content, message):
    from bcos.checkpoint_io import safe_load
    from bcos.errors import CheckpointError

    path = tmp_path / "weights.bin"
    path.write_bytes(content)
    with pytest.raises(CheckpointError) as caught:
        safe_load(path)
    assert str(caught.value).startswith(f"cannot load '{path}'") and message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_a_folder_given_as_weights_is_called_a_folder(tiny_weights, tmp_path, capsys):
    from bcos.checkpoint_io import safe_load
    from bcos.errors import CheckpointError

    with pytest.raises(CheckpointError, match=r"is a folder, not a checkpoint or weights file; pass a file inside it"):
        safe_load(tmp_path)
    image = _photo(tmp_path / "in" / "cat.png")
    assert _explain(str(image), "--output", str(tmp_path / "out"), weights=tmp_path) == 2
    err = capsys.readouterr().err
    assert "is a folder, not a checkpoint or weights file" in err and "does not exist" not in err


def test_an_unwritable_rise_cache_costs_time_not_the_results(tmp_path, monkeypatch):
    import torch

    from bcos.explain.methods.rise import RISE

    _fail_fsync_for(monkeypatch, lambda name: "masks" in name, errno.EACCES)
    explainer = RISE(torch.nn.Identity(), n=4, cache_dir=tmp_path / "cache")
    with pytest.warns(UserWarning, match="RISE masks are not cached: cannot write .*permission denied"):
        masks = explainer.masks((8, 8))
    assert masks.shape == (4, 1, 8, 8)
    assert not [p for p in (tmp_path / "cache").rglob("*") if p.is_file()]


# ------------------------------------------------------------------------------------ bad numbers
@pytest.mark.parametrize("lr", [float("nan"), float("inf"), -1.0])
def test_nan_or_infinite_learning_rates_are_config_errors(lr):
    from bcos.errors import ConfigError
    from bcos.optim import OptimizerFactory

    with pytest.raises(ConfigError, match="optimizer lr must be a non-negative number"):
        OptimizerFactory(name="Adam", lr=lr)


def test_nan_optimizer_and_schedule_settings_are_config_errors():
    from bcos.errors import ConfigError
    from bcos.optim import LRSchedulerFactory, OptimizerFactory

    with pytest.raises(ConfigError, match="optimizer weight_decay must be a finite number, got nan"):
        OptimizerFactory(name="AdamW", lr=1e-3, weight_decay=float("nan"))
    for key in ("gamma", "lr_min"):
        with pytest.raises(ConfigError, match=f"lr scheduler {key} must be a finite non-negative number"):
            LRSchedulerFactory(name="cosineannealinglr", epochs=4, **{key: float("nan")})


# ------------------------------------------------------------------------------------ unusual images
def test_explain_reads_16_bit_images_and_skips_broken_files_and_decompression_bombs(tiny_weights, tmp_path, monkeypatch, capsys):
    from bcos.cli.explain import _as_rgb

    folder = tmp_path / "photos"
    folder.mkdir()
    grey16 = np.linspace(0, 65535, 40 * 48).reshape(40, 48).astype(np.uint16)
    Image.fromarray(grey16).save(folder / "a_16bit.png")
    with Image.open(folder / "a_16bit.png") as image:
        rgb = np.asarray(_as_rgb(image))
    assert rgb.dtype == np.uint8 and rgb[0, 0, 0] == 0 and rgb[-1, -1, 0] == 255 and 100 < rgb[20, 24, 0] < 155
    (folder / "b_broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    _photo(folder / "c_huge.png", seed=3)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 40 * 48 // 2 - 1)  # c_huge (and a_16bit) count as bombs now
    with pytest.warns(UserWarning, match="skipping .*b_broken.jpg: not a readable image"):
        assert _explain(str(folder), "--output", str(tmp_path / "bombs"), weights=tiny_weights) == 2
    assert "none of the images could be read" in capsys.readouterr().err
    monkeypatch.undo()
    register_tiny_model(monkeypatch)
    with pytest.warns(UserWarning, match="b_broken.jpg"):
        assert _explain(str(folder), "--output", str(tmp_path / "out"), weights=tiny_weights) == 0
    records = json.loads((tmp_path / "out" / "predictions.json").read_text())
    assert [r["image"] for r in records] == ["photos/a_16bit.png", "photos/c_huge.png"]
    assert "skipped 1 unreadable file(s): photos/b_broken.jpg" in capsys.readouterr().out


def test_an_absurd_smoothing_window_gives_the_whole_image_window_not_a_memory_error():
    import torch

    from bcos.explanation.visualize import gradients_to_images

    torch.manual_seed(0)
    images, weights = torch.rand(2, 6, 8, 12), torch.randn(2, 6, 8, 12)
    whole = gradients_to_images(images, weights, smooth=2 * 12 - 1)
    np.testing.assert_allclose(gradients_to_images(images, weights, smooth=10**6), whole, rtol=1e-5, atol=1e-6)
    assert not np.allclose(gradients_to_images(images, weights, smooth=3), whole)


def test_explain_replaces_outputs_of_earlier_versions_listed_in_their_predictions(tiny_weights, tmp_path):
    """PNGs and reports written before the Software/generator markers are known by predictions.json."""
    image = _photo(tmp_path / "in" / "cat.jpg")
    out = tmp_path / "out"
    out.mkdir()
    _photo(out / "cat.png", seed=7)  # an old explanation without the marker
    (out / "report.html").write_text("<html>old report</html>")
    (out / "predictions.json").write_text(json.dumps([{"image": str(image), "png": "cat.png", "predictions": []}]))
    assert _explain(str(image), "--output", str(out), weights=tiny_weights) == 0
    assert json.loads((out / "predictions.json").read_text())[0]["predictions"]  # replaced by the new run
