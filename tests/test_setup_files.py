"""The spec's set-up files agree with pyproject.toml: ``requirements.txt`` (the core),
``requirements-train.txt`` (core + training + interpretability extras) and ``environment.yml``
(conda: the Python version and the same pip packages), torch and torchvision pinned as the Makefile does.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
PINNED = ("torch", "torchvision")


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def _requirements(lines: list[str]) -> dict[str, Requirement]:
    found = {}
    for line in lines:
        line = line.split("#", 1)[0].strip()
        if line and not line.startswith("-"):
            requirement = Requirement(line)
            assert requirement.name not in found, f"{requirement.name} listed twice"
            found[requirement.name] = requirement
    return found


def _file(name: str) -> list[str]:
    return (ROOT / name).read_text().splitlines()


def _makefile_pins() -> dict[str, Requirement]:
    line = next(line for line in _file("Makefile") if line.startswith("TORCH_PINS"))
    return _requirements(line.split(":=", 1)[1].split())


def _expected(groups: list[str]) -> dict[str, str]:
    """name -> specifier that the files must carry: pyproject's, with torch/torchvision pinned."""
    project = _pyproject()
    wanted = _requirements(project["dependencies"])
    for group in groups:
        wanted.update(_requirements(project["optional-dependencies"][group]))
    pins = _makefile_pins()
    expected = {}
    for name, requirement in wanted.items():
        if name in PINNED:
            pinned = pins[name]
            version = Version(str(pinned.specifier).removeprefix("=="))
            assert version in requirement.specifier, f"the pinned {name} {version} violates pyproject's {requirement}"
            expected[name] = str(pinned.specifier)
        else:
            expected[name] = str(requirement.specifier)
    return expected


def _specifiers(requirements: dict[str, Requirement]) -> dict[str, str]:
    return {name: str(SpecifierSet(str(r.specifier))) for name, r in requirements.items()}


def test_requirements_txt_is_the_core():
    assert _specifiers(_requirements(_file("requirements.txt"))) == _expected([])


def test_requirements_train_txt_adds_the_training_extras():
    lines = _file("requirements-train.txt")
    assert "-r requirements.txt" in [line.strip() for line in lines]
    core = _requirements(_file("requirements.txt"))
    train = _requirements(lines)
    assert not set(core) & set(train)
    assert _specifiers({**core, **train}) == _expected(["training", "interpretability"])


def test_environment_yml_has_python_and_the_same_packages():
    environment = yaml.safe_load((ROOT / "environment.yml").read_text())
    assert environment["name"] == "bcos"
    conda = [item for item in environment["dependencies"] if isinstance(item, str)]
    pip = next(item["pip"] for item in environment["dependencies"] if isinstance(item, dict))
    python = next(item for item in conda if item.startswith("python="))
    minimum = re.search(r">=\s*([\d.]+)", _pyproject()["requires-python"]).group(1)
    assert python == f"python={minimum}"
    assert "pip" in conda
    assert _specifiers(_requirements(pip)) == _expected(["training", "interpretability"])
