"""Issue 13: read-only folders and unwritable caches for real, in a process without root's file privileges.

``chmod`` does not stop root, and the test machines run as root. Each command here therefore runs
in a subprocess that obeys file permissions: as user 65534 (nobody) when that user can run this
Python, else (the interpreter lives under root's 0700 home on the test machines) as root with the
capabilities that bypass file permissions dropped from its bounding set before ``exec``
(``CAP_DAC_OVERRIDE``, ``CAP_DAC_READ_SEARCH``, ``CAP_FOWNER``: what ``setpriv
--bounding-set=-dac_override,...`` does), so a folder of mode 0o555 is read-only to it. A probe
checks that the process really cannot write there; without a way to drop privileges the tests
are skipped with the reason.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent
NOBODY = 65534
_PR_CAPBSET_DROP = 24
_FILE_CAPABILITIES = (1, 2, 3)  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_FOWNER


def _as_nobody() -> None:
    os.setgroups([])
    os.setgid(NOBODY)
    os.setuid(NOBODY)


def _without_file_capabilities() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    for capability in _FILE_CAPABILITIES:
        if libc.prctl(_PR_CAPBSET_DROP, capability, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP) failed")


def _probe(preexec: Callable[[], None] | None, folder: Path) -> bool:
    """Whether a process started with ``preexec`` runs Python and cannot write into ``folder`` (0o555)."""
    code = "import sys, pathlib\ntry:\n    (pathlib.Path(sys.argv[1]) / 'x').write_text('x')\nexcept PermissionError:\n    sys.exit(7)\n"
    try:
        result = subprocess.run([sys.executable, "-c", code, str(folder)], preexec_fn=preexec, timeout=60, capture_output=True)
    except (PermissionError, subprocess.SubprocessError, OSError):
        return False
    return result.returncode == 7


@pytest.fixture(scope="module")
def unprivileged(tmp_path_factory):
    """``(run, scratch)``: ``run(argv, **env)`` runs a command without file privileges; ``scratch`` is a folder it can read."""
    scratch = Path(tempfile.mkdtemp(prefix="bcos-unprivileged-"))
    scratch.chmod(0o755)  # mkdtemp makes it 0o700: user 65534 could not enter it
    (scratch / "home").mkdir(mode=0o777)
    (scratch / "home").chmod(0o777)
    probe = scratch / "probe"
    probe.mkdir(mode=0o555)
    if os.getuid() != 0:
        candidates: list[Callable[[], None] | None] = [None]
    else:
        candidates = [_as_nobody, _without_file_capabilities]
    preexec = next((c for c in candidates if _probe(c, probe)), "none")
    if preexec == "none":
        shutil.rmtree(scratch, ignore_errors=True)
        pytest.skip("no way to run a process that obeys file permissions here (root without prctl capability dropping)")

    def run(argv: list[str], **env: str) -> subprocess.CompletedProcess:
        environment = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "SUBMITIT_", "BCOS_TEST_"))}
        environment.update(
            OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="", HOME=str(scratch / "home"), BCOS_CPU_KERNELS="0",
            MPLCONFIGDIR=str(scratch / "home" / "mpl"), PYTHONDONTWRITEBYTECODE="1", **env,
        )  # fmt: skip
        return subprocess.run(
            [sys.executable, *argv], env=environment, cwd=scratch, preexec_fn=preexec,
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip

    yield run, scratch
    for path in scratch.rglob("*"):  # read-only folders must become writable again to be removed
        if path.is_dir() and not path.is_symlink():
            path.chmod(0o755)
    shutil.rmtree(scratch, ignore_errors=True)


def _one_error_line(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr[-3000:]
    return errors[0]


def _folder(path: Path, mode: int) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(mode)
    return path


TRAIN = [str(TESTS / "helpers_ddp_train.py"), "--dataset", "Digits", "--base_network", "ddp_test", "--experiment_name", "tiny",
         "--accelerator", "cpu", "--refresh_rate", "1000"]  # fmt: skip


@pytest.mark.slow  # a training process (imports torch and Lightning)
def test_training_into_a_read_only_run_folder_is_one_line(unprivileged):
    run, scratch = unprivileged
    base = scratch / "train_ro"
    folder = _folder(base / "Digits" / "ddp_test" / "tiny", 0o555)
    for parent in (base, base / "Digits", base / "Digits" / "ddp_test"):
        parent.chmod(0o755)
    result = run([*TRAIN, "--base_directory", str(base)])
    line = _one_error_line(result)
    assert str(folder) in line and "Permission denied" in line and "choose a writable --base_directory" in line
    assert list(folder.iterdir()) == []


@pytest.mark.slow  # a localisation process (imports torch and Lightning, ranks the digits)
def test_localisation_into_a_read_only_run_folder_is_one_line(unprivileged):
    import torch

    sys.path.insert(0, str(TESTS))
    from helpers_ddp_train import TinyNet

    run, scratch = unprivileged
    folder = _folder(scratch / "localise_ro" / "Digits" / "ddp_test" / "tiny", 0o755)
    torch.manual_seed(0)
    state = {f"model.{key}": value for key, value in TinyNet().state_dict().items()}
    torch.save({"epoch": 1, "global_step": 16, "state_dict": state}, folder / "last.ckpt")
    (folder / "last.ckpt").chmod(0o644)
    folder.chmod(0o555)
    code = (
        "import sys\n"
        f"sys.path[:0] = [{str(TESTS)!r}, {str(REPO)!r}]\n"
        "import helpers_ddp_train as helper\n"
        "import bcos.experiments.utils.collections as collections, bcos.experiments.utils.experiment as experiment\n"
        "collections.get_configs_and_model_factory = experiment.get_configs_and_model_factory = "
        "helper._lookup(collections.get_configs_and_model_factory)\n"
        "from bcos.cli.errors import run_cli\n"
        "from bcos.cli.localisation import main\n"
        "sys.exit(run_cli(main, sys.argv[1:]))\n"
    )
    result = run(["-c", code, "--save_path", str(folder), "--analysis_config", "500_2x2_noconfthresh", "--smooth", "1",
                  "--sample_size", "1", "--device", "cpu"])  # fmt: skip
    line = _one_error_line(result)
    assert line.startswith(f"error: cannot write '{folder / 'localisation_analysis'}") or line.startswith(f"error: cannot write '{folder}")
    assert "permission denied; make the folder writable or choose another output folder" in line
    assert sorted(p.name for p in folder.iterdir()) == ["last.ckpt"]  # nothing written, nothing half-written


def test_an_unwritable_weights_cache_is_one_line_naming_it_and_the_setting(unprivileged):
    run, scratch = unprivileged
    cache = _folder(scratch / "torch_home_ro", 0o555)
    code = (
        "import sys\n"
        f"sys.path.insert(0, {str(REPO)!r})\n"
        "from bcos.cli.errors import run_cli\n"
        "from bcos.models.weights import WeightsFile, fetch_weights_file\n"
        "weights = WeightsFile('https://example.invalid/resnet_18-68b4160fff.pth')\n"
        "sys.exit(run_cli(lambda argv: fetch_weights_file(weights, progress=False)))\n"
    )
    line = _one_error_line(run(["-c", code], TORCH_HOME=str(cache)))
    assert f"'{cache / 'hub' / 'checkpoints'}'" in line and "permission denied" in line.lower()
    assert "TORCH_HOME" in line and "BCOS_WEIGHTS_DIR" in line
    assert list(cache.iterdir()) == []


def test_an_unwritable_torch_hub_cache_for_a_bcosify_source_is_named_not_called_offline(unprivileged):
    """Issue 16: torchvision's weights for ``bcos train --bcosify`` go to the same cache; it is named, not 'no network'."""
    pytest.importorskip("torchvision")
    run, scratch = unprivileged
    cache = _folder(scratch / "torch_home_ro_bcosify", 0o555)
    code = (
        "import sys\n"
        f"sys.path.insert(0, {str(REPO)!r})\n"
        "from bcos.cli.errors import run_cli\n"
        "from bcos.bcosification.sources import load_source_model\n"
        "sys.exit(run_cli(lambda argv: load_source_model('resnet18')))\n"
    )
    line = _one_error_line(run(["-c", code], TORCH_HOME=str(cache)))
    assert f"'{cache / 'hub' / 'checkpoints'}'" in line and "permission denied" in line.lower()
    assert "TORCH_HOME" in line and "--weights FILE" in line and "could not be downloaded" not in line
    assert list(cache.iterdir()) == []
