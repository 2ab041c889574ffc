"""The formatter and the linter ([tool.ruff] in pyproject.toml) hold for the whole repository, so CI (which runs
this suite) keeps the style without anyone remembering to run them; a planted misformat and an unused import show
each check fails."""

from __future__ import annotations

import shutil
import subprocess
import sys

from tests.conftest import ROOT


def _ruff(*args: str, cwd=ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ruff", *args], cwd=cwd, capture_output=True, text=True)


def test_the_code_is_formatted():
    result = _ruff("format", "--check", ".")
    assert result.returncode == 0, f"run `ruff format .`:\n{result.stdout}{result.stderr}"


def test_the_linter_finds_nothing():
    result = _ruff("check", ".")
    assert result.returncode == 0, f"run `ruff check --fix .` and fix what remains:\n{result.stdout}{result.stderr}"


def test_a_planted_misformat_and_unused_import_are_caught(tmp_path):
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    (tmp_path / "planted.py").write_text("import os\nx = {  'a':1 }\n")
    assert _ruff("format", "--check", ".", cwd=tmp_path).returncode == 1
    linted = _ruff("check", ".", cwd=tmp_path)
    assert linted.returncode == 1 and "F401" in linted.stdout
