"""bcos.settings reads the environment when a value is used, and code assignments win."""

from __future__ import annotations

import pytest

from bcos import settings


def test_settings_follow_the_environment(monkeypatch):
    monkeypatch.setenv("DATA_ROOT", "/first")
    assert settings.data_root() == settings.DATA_ROOT == "/first"
    monkeypatch.setenv("DATA_ROOT", "/second")
    assert settings.DATA_ROOT == "/second"
    monkeypatch.delenv("DATA_ROOT")
    assert settings.data_root() is None
    monkeypatch.setenv("IMAGENET_PATH", "/imagenet")
    monkeypatch.setenv("IMAGENET_TRAIN_TAR_FILES_DIR", "/tars")
    assert settings.imagenet_path() == settings.IMAGENET_PATH == "/imagenet"
    assert settings.imagenet_train_tar_files_dir() == "/tars"


def test_shm_default_and_override(monkeypatch):
    monkeypatch.delenv("SHMTMPDIR", raising=False)
    assert settings.shm_tmp_dir() == settings.SHMTMPDIR == "/dev/shm"
    monkeypatch.setenv("SHMTMPDIR", "/fast")
    assert settings.shm_tmp_dir() == "/fast"


def test_assignment_in_code_overrides_the_environment(monkeypatch):
    monkeypatch.setenv("DATA_ROOT", "/from-env")
    monkeypatch.setattr(settings, "DATA_ROOT", "/from-code", raising=False)
    assert settings.data_root() == settings.DATA_ROOT == "/from-code"


def test_unknown_setting():
    with pytest.raises(AttributeError):
        settings.NOT_A_SETTING  # noqa: B018


def test_a_path_set_in_settings_py_wins_over_the_environment(monkeypatch):
    monkeypatch.setenv("IMAGENET_PATH", "/from-env")
    assert set(settings.PATHS_SET_HERE) == {"DATA_ROOT", "IMAGENET_PATH", "SHMTMPDIR", "IMAGENET_TRAIN_TAR_FILES_DIR"}
    assert all(value is None for value in settings.PATHS_SET_HERE.values())  # as shipped: the environment decides
    monkeypatch.setitem(settings.PATHS_SET_HERE, "IMAGENET_PATH", "/edited")
    assert settings.imagenet_path() == settings.IMAGENET_PATH == "/edited"
    monkeypatch.setattr(settings, "IMAGENET_PATH", "/from-code", raising=False)
    assert settings.imagenet_path() == "/from-code"
