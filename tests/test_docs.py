"""The documentation: the site builds offline with `mkdocs build --strict`, and the pages that
restate facts (the model zoo table, the command list) agree with the code."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from bcos.cli.models import format_rows, model_rows

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
# pages in the site's navigation that other parts of the project write
PAGES_OF_OTHERS = ("localisation.md", "benchmarks.md")


def test_site_builds_offline_in_strict_mode(tmp_path):
    pytest.importorskip("mkdocs", reason="mkdocs is in the dev extra: pip install -e '.[dev]'")
    missing = [page for page in PAGES_OF_OTHERS if not (DOCS / page).is_file()]
    if missing:
        pytest.skip(f"docs/{', docs/'.join(missing)} not written yet; the strict build needs every page of the nav")
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file", str(REPO / "mkdocs.yml"),
         "--site-dir", str(tmp_path / "site")],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "NO_PROXY": "*", "http_proxy": "http://127.0.0.1:9", "https_proxy": "http://127.0.0.1:9"},
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    for page in ("index", "what-is-bcos", "explanation-api", "cli", "configs", "training", "finetuning",
                 "model-zoo", "differences"):  # fmt: skip
        assert (tmp_path / "site" / f"{page}.html").is_file(), page


def test_every_nav_page_exists_or_belongs_to_others():
    nav = re.findall(r"^\s+- [^:]+: (\S+\.md)$", (REPO / "mkdocs.yml").read_text(), re.M)
    assert "index.md" in nav and "finetuning.md" in nav
    for page in nav:
        assert (DOCS / page).is_file() or page in PAGES_OF_OTHERS, page


def test_model_zoo_page_lists_the_registry():
    text = (DOCS / "model-zoo.md").read_text()
    table = re.search(r"<!-- zoo-table:start[^>]*-->\n(.*?)\n<!-- zoo-table:end -->", text, re.S)
    assert table, "the generated table markers are missing"
    assert table.group(1) == format_rows(model_rows(), "markdown"), (
        "docs/model-zoo.md is out of date: paste the output of 'bcos models list --format markdown'"
    )


def test_command_reference_covers_every_command():
    from bcos.cli.main import build_parser

    commands = next(a for a in build_parser()._actions if a.dest == "command").choices
    text = (DOCS / "cli.md").read_text()
    for command in commands:
        if command != "localize":  # the alias
            assert f"`bcos {command}`" in text, command
