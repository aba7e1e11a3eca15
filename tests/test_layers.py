"""The layer contracts in pyproject.toml hold, and the checker really catches a violation."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LINT = shutil.which("lint-imports")

pytestmark = pytest.mark.skipif(LINT is None, reason="import-linter is not installed (pip install -e '.[test]')")


def _lint(root: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), str(root / "plugins")])}
    return subprocess.run([LINT, "--no-cache"], cwd=root, env=env, capture_output=True, text=True, timeout=300)


def _copy_project(tmp_path: Path) -> Path:
    root = tmp_path / "project"
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "build")
    shutil.copytree(ROOT / "mpcompile", root / "mpcompile", ignore=ignore)
    shutil.copytree(ROOT / "plugins", root / "plugins", ignore=ignore)
    shutil.copy(ROOT / "pyproject.toml", root / "pyproject.toml")
    return root


def test_the_layer_contracts_hold():
    result = _lint(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "BROKEN" not in result.stdout


def test_an_upward_import_breaks_the_layers(tmp_path):
    root = _copy_project(tmp_path)
    (root / "mpcompile" / "ir" / "planted.py").write_text("from mpcompile.pipeline import compile  # noqa: F401\n")
    result = _lint(root)
    assert result.returncode != 0
    assert "core layers follow the data flow BROKEN" in result.stdout
    assert "mpcompile.ir.planted" in result.stdout and "mpcompile.pipeline" in result.stdout


def test_a_plugin_reaching_past_the_plugin_api_breaks_its_contract(tmp_path):
    root = _copy_project(tmp_path)
    (root / "plugins" / "mpcompile_tflite" / "planted.py").write_text("from mpcompile.ir.graph import Graph  # noqa: F401\n")
    result = _lint(root)
    assert result.returncode != 0
    assert "built-in backends import only the public plugin API BROKEN" in result.stdout
    assert "mpcompile_tflite.planted" in result.stdout
