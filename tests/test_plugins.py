"""Backend discovery through real entry points: pip-installed plugin packages, good and broken."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

PLUGINS = Path(__file__).parent / "plugins"


@pytest.fixture(scope="module")
def plugin_env(tmp_path_factory) -> Path:
    """A site directory holding the test plugins, pip-installed exactly as a user would install them.

    Installed with ``--target`` beside (not into) the test environment, so the example backends
    never leak into other tests; ``PYTHONPATH`` makes their entry points visible to mpcompile.
    """
    root = tmp_path_factory.mktemp("plugin-site")
    for plugin in ("mpcompile_example_backend", "mpcompile_broken_backend"):
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
             "--disable-pip-version-check", "--target", str(root), str(PLUGINS / plugin)],
            check=True,
        )
    return root


def _mpcompile(site: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    import os

    environ = dict(env or os.environ)
    environ["PYTHONPATH"] = os.pathsep.join([str(site), environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return subprocess.run([sys.executable, "-m", "mpcompile", *args], capture_output=True, text=True, env=environ)


def test_builtin_backends_listed_and_tensorrt_explains_itself():
    from mpcompile.backends.registry import discover

    entries = {e.name: e for e in discover()}
    assert {"onnxruntime", "tflite", "tensorrt"} <= set(entries)
    assert entries["onnxruntime"].available
    trt = entries["tensorrt"]
    try:
        import tensorrt  # noqa: F401

        has_trt = True
    except ImportError:
        has_trt = False
    if not has_trt:
        assert not trt.available
        assert "tensorrt" in trt.reason.lower()
        assert "pip install" in trt.install_hint


def test_third_party_plugin_is_discovered_and_broken_one_is_reported(plugin_env):
    result = _mpcompile(plugin_env, "backends", "--json")
    assert result.returncode == 0, result.stderr
    entries = {e["name"]: e for e in json.loads(result.stdout)}
    assert entries["onnx-reference"]["available"] is True
    assert "mpcompile-example-backend" in entries["onnx-reference"]["source"]
    assert entries["broken"]["available"] is False
    assert "mpcompile_dependency_that_does_not_exist" in entries["broken"]["reason"]
    assert _mpcompile(plugin_env, "--help").returncode == 0
    table = _mpcompile(plugin_env, "backends")
    assert table.returncode == 0 and "broken" in table.stdout


def test_third_party_plugin_lowers_and_conforms(plugin_env, tmp_path):
    root = Path(__file__).parent.parent
    result = _mpcompile(
        plugin_env, "conform", str(root / "models" / "mnist_cnn.onnx"), "--backend", "onnx-reference", "--backend", "onnxruntime",
        "--data", str(root / "models" / "mnist_cnn.calib.npz"), "--samples", "16",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "[PASS] onnx-reference" in result.stdout


def test_strict_mode_makes_load_failures_raise(plugin_env):
    import os

    env = dict(os.environ, MPCOMPILE_STRICT_PLUGINS="1")
    result = _mpcompile(plugin_env, "backends", env=env)
    assert result.returncode != 0
    assert "mpcompile_dependency_that_does_not_exist" in result.stderr
