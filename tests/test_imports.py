"""The import rules (DESIGN.md's "must not" column, as import-linter contracts in pyproject.toml)
hold, and the check can fail: a forbidden import added to a copy of the package breaks it."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import ROOT

pytest.importorskip("importlinter")


def _lint(root: Path) -> subprocess.CompletedProcess:
    # lint-imports reads [tool.importlinter] from the pyproject.toml in its working directory
    code = "import sys; from importlinter.cli import lint_imports_command; sys.exit(lint_imports_command())"
    return subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True,
                          env={"PYTHONPATH": str(root), "PATH": ""})


def test_the_import_rules_hold():
    result = _lint(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "broken" not in result.stdout.lower().replace("0 broken", "")


def test_a_forbidden_import_breaks_the_rules(tmp_path):
    copy = tmp_path / "repo"
    copy.mkdir()
    shutil.copy(ROOT / "pyproject.toml", copy)
    shutil.copytree(ROOT / "adapters_kit", copy / "adapters_kit",
                    ignore=shutil.ignore_patterns("__pycache__"))
    meta = copy / "adapters_kit" / "adapters" / "meta.py"
    meta.write_text(meta.read_text() + "\nfrom ..engine import model as _engine  # noqa\n")
    result = _lint(copy)
    assert result.returncode != 0
    assert "adapters_kit.adapters.meta" in result.stdout and "BROKEN" in result.stdout
