"""The floor order of docs/architecture.md holds for every import of the package.

Every ``import`` and ``from ... import`` statement in ``bcos/`` (at module level, inside functions,
under ``if TYPE_CHECKING``) is read from the source with ``ast``; an import may point to its own
floor or a lower one, never to a higher one. Every module must belong to a floor, so a new package
has to be placed in the plan (here and in docs/architecture.md) before it can be imported.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGE = REPO / "bcos"

#: bottom first, as in docs/architecture.md; a name covers the module and everything inside it
FLOORS: list[list[str]] = [
    # "bcos" is the package root: its version and the lazy names of bcos/__init__.py
    ["bcos", "bcos.errors", "bcos.environment", "bcos.atomic_io", "bcos.checkpoint_io", "bcos.settings", "bcos.cpu_allocator"],
    ["bcos.ops"],
    ["bcos.modules"],
    # the data pipelines (presets, transforms, data sets) need nothing of the models; the models
    # build their evaluation transform from them, as torchvision's models use its transforms
    ["bcos.data"],
    ["bcos.explanation"],
    ["bcos.models", "bcos.common", "bcos.deploy", "bcos.bcosification"],
    ["bcos.optim"],
    ["bcos.experiments"],
    ["bcos.explain"],
    ["bcos.training"],
    ["bcos.cli", "bcos.demo"],
]

#: (importing module, imported module) -> why this one import may point upwards
EXCEPTIONS: dict[tuple[str, str], str] = {
    ("bcos", "bcos.models.registry"): "the package root names bcos.create_model/list_models for type "
    "checkers only (if TYPE_CHECKING); at run time it imports them lazily, on first use",
}


def _floor_of(module: str) -> int | None:
    """The floor of ``module``: that of the longest floor name it equals or lies inside."""
    best: tuple[int, int] | None = None
    for level, names in enumerate(FLOORS):
        for name in names:
            if module == name or module.startswith(name + "."):
                if best is None or len(name) > best[0]:
                    best = (len(name), level)
    return None if best is None else best[1]


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _is_module(name: str) -> bool:
    relative = Path(*name.split("."))
    return (REPO / relative).with_suffix(".py").is_file() or (REPO / relative / "__init__.py").is_file()


def _imported_modules(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every bcos module that ``path`` imports, wherever the statement is."""
    module = _module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(base_parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            for alias in node.names:
                # "from bcos import settings" imports the module bcos.settings, not the package root
                target = f"{base}.{alias.name}"
                found.append((node.lineno, target if _is_module(target) else base))
    return sorted({(line, name) for line, name in found if name == "bcos" or name.startswith("bcos.")})


def _all_modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def test_every_module_has_a_floor():
    missing = sorted({_module_name(p) for p in _all_modules() if _floor_of(_module_name(p)) is None})
    assert not missing, f"modules without a floor (add them to FLOORS and docs/architecture.md): {missing}"


def test_no_import_points_to_a_higher_floor():
    violations = []
    for path in _all_modules():
        importer = _module_name(path)
        own = _floor_of(importer)
        for line, imported in _imported_modules(path):
            target = _floor_of(imported)
            if target is None or own is None or target <= own:
                continue
            if (importer, imported) in EXCEPTIONS:
                continue
            violations.append(f"{path.relative_to(REPO)}:{line} ({importer}, floor {own + 1}) imports {imported} (floor {target + 1})")
    assert not violations, "imports that point upwards:\n" + "\n".join(violations)


def test_the_floor_test_sees_imports_inside_functions():
    """The AST walk finds a function-level import and resolves relative and submodule imports."""
    source = PACKAGE / "models" / "base.py"
    found = {name for _, name in _imported_modules(source)}
    assert {"bcos.explanation.contributions", "bcos.modules.explanation_mode"} <= found
    localisation = PACKAGE / "explain" / "localisation" / "analysis.py"
    inside_functions = {name for _, name in _imported_modules(localisation)}
    assert {"bcos.experiments.utils.experiment", "bcos.data.datamodule_sources", "bcos.explain.methods"} <= inside_functions
    assert _floor_of("bcos.data") < _floor_of("bcos.models.registry") == _floor_of("bcos.models") < _floor_of("bcos.optim")
    assert _floor_of("bcos.explanation.checks") < _floor_of("bcos.models") < _floor_of("bcos.explain.methods")
    assert _floor_of("bcos.explain") != _floor_of("bcos.explanation")  # a prefix of the name is not a parent


@pytest.mark.parametrize("names", FLOORS, ids=lambda names: names[0] if names[0] != "bcos" else "bcos-root")
def test_floors_match_docs_architecture(names):
    text = (REPO / "docs" / "architecture.md").read_text()
    section = text.split("## Floors", 1)[1].split("\n## ", 1)[0]
    items = [item for item in re.split(r"\n(?=\d+\. )", section) if re.match(r"\d+\. ", item)]
    assert len(items) == len(FLOORS), "docs/architecture.md lists another number of floors than FLOORS"
    level = FLOORS.index(names)
    documented = set(re.findall(r"`(bcos(?:\.\w+)*)`", items[level]))
    assert set(names) <= documented, f"floor {level + 1} of docs/architecture.md does not name {sorted(set(names) - documented)}"
