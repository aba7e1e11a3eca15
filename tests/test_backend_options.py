"""Typed per-backend options and per-backend independence, through the CLI and the Python API."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from conftest import MNIST, MNIST_CALIB
from onnx import TensorProto, helper, numpy_helper
from test_cli import assert_user_error, run

import mpcompile
from mpcompile.backends.api import Precision
from mpcompile.backends.options import BackendOptionError
from mpcompile.backends.registry import resolve_targets
from mpcompile.errors import BackendError, MpcompileError


@pytest.fixture(scope="module")
def mnist_plan(tmp_path_factory):
    plan = tmp_path_factory.mktemp("plan") / "plan.onnx"
    assert run("calibrate", MNIST, "--data", MNIST_CALIB, "--samples", "64", "-o", plan, "--quiet").returncode == 0
    return plan


# ============================================================================ typed options
def test_unknown_option_is_one_line_naming_backend_key_and_valid_keys(mnist_plan, tmp_path):
    result = run("lower", mnist_plan, "--backend", "tflite", "--backend-option", "tflite.bogus=1", "-o", tmp_path / "out")
    assert_user_error(result, "'tflite'", "'bogus'", "valid options:", "io", "nhwc_inputs", "fallback")
    assert not (tmp_path / "out").exists()


def test_the_python_api_raises_the_same_error(mnist_plan, tmp_path):
    with pytest.raises(BackendOptionError) as info:
        mpcompile.lower(str(mnist_plan), ["tflite"], tmp_path / "out", backend_options={"tflite": {"bogus": 1}})
    cli = run("lower", mnist_plan, "--backend", "tflite", "--backend-option", "tflite.bogus=1", "-o", tmp_path / "cli")
    assert f"error: {info.value}" in cli.stderr
    assert not (tmp_path / "out").exists()


def test_a_wrong_type_names_the_key_and_what_it_takes(mnist_plan, tmp_path):
    result = run("lower", mnist_plan, "--backend", "tflite", "--backend-option", "tflite.io=int4", "-o", tmp_path / "out")
    assert_user_error(result, "'tflite'", "io='int4'", "'float' or 'int8'")
    with pytest.raises(BackendOptionError, match="num_threads"):
        resolve_targets(["tflite"], {"tflite": {"num_threads": "many"}})


def test_cli_strings_become_typed_values():
    (target,), _ = resolve_targets(["tflite"], {"tflite": {"io": "int8", "nhwc_inputs": "true", "num_threads": "2"}})
    assert (target.options.io, target.options.nhwc_inputs, target.options.num_threads) == ("int8", True, 2)
    with pytest.raises(Exception):  # noqa: B017 - frozen: pydantic's ValidationError
        target.options.io = "float"


def test_options_for_a_backend_the_run_does_not_target_are_refused():
    with pytest.raises(BackendOptionError, match="'tflite'.*does not target"):
        resolve_targets(["onnxruntime"], {"tflite": {"io": "int8"}})
    with pytest.raises(BackendError, match="unknown backend 'nope'"):
        resolve_targets(None, {"nope": {}})


def test_malformed_assignment_says_the_shape(mnist_plan, tmp_path):
    assert_user_error(run("lower", mnist_plan, "--backend-option", "io=int8", "-o", tmp_path / "o"), "BACKEND.KEY=VALUE")


def test_backends_name_lists_options_with_types_defaults_and_help():
    result = run("backends", "tflite")
    assert result.returncode == 0, result.stderr
    assert "--backend-option tflite.KEY=VALUE" in result.stdout
    assert "nhwc_inputs (bool, default False)" in result.stdout
    data = json.loads(run("backends", "tensorrt", "--json").stdout)
    onnx_only = next(o for o in data["options"] if o["name"] == "onnx_only")
    assert onnx_only["default"] is False and "without TensorRT" in onnx_only["help"]
    assert_user_error(run("backends", "nope"), "unknown backend 'nope'")


def test_an_option_that_lets_an_unavailable_backend_lower(mnist_plan, tmp_path):
    """tensorrt.onnx_only=true needs no TensorRT; the core names no backend to make it so."""
    result = run("lower", mnist_plan, "--backend", "tensorrt", "--backend-option", "tensorrt.onnx_only=true",
                 "-o", tmp_path / "trt")
    assert result.returncode == 0, result.stderr
    assert list((tmp_path / "trt" / "tensorrt").glob("*.trt.onnx"))


# ============================================================================ one backend failing
def _model_tflite_cannot_run(tmp_path):
    """x → MatMul (int8) → Det: ONNX Runtime runs Det; the TFLite writer has no emitter for it."""
    w = numpy_helper.from_array(np.random.default_rng(0).normal(size=(3, 3)).astype(np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["h"], name="mm"), helper.make_node("Det", ["h"], ["y"], name="det")],
        "det_model",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 3, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None])],
        [w],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    path = tmp_path / "det_model.onnx"
    onnx.save(model, path)
    data = tmp_path / "det_model.npz"
    np.savez(data, x=np.random.default_rng(1).normal(size=(32, 3, 3)).astype(np.float32))
    return path, data


def test_a_backend_that_cannot_lower_does_not_stop_the_others(tmp_path):
    model, data = _model_tflite_cannot_run(tmp_path)
    result = mpcompile.compile(model, data, ["onnxruntime", "tflite"], tmp_path / "out", conform=True, progress=False)
    assert set(result.artifacts) == {"onnxruntime"} and result.artifacts["onnxruntime"].path.is_file()
    assert "Det (node det)" in result.failures["tflite"]
    assert [b.backend for b in result.conformance.backends] == ["onnxruntime"]
    assert result.conformance.backends[0].passed, result.conformance.format_text()
    assert result.exit_code == 3
    manifest = result.manifest
    assert "onnxruntime" in manifest["backends"] and "Det" in manifest["failed"]["tflite"]
    assert not (tmp_path / "out" / "tflite").exists()


def test_the_cli_reports_the_failed_backend_and_exits_3(tmp_path):
    model, data = _model_tflite_cannot_run(tmp_path)
    result = run("compile", model, "--data", data, "--backend", "onnxruntime", "--backend", "tflite",
                 "-o", tmp_path / "out", "--quiet")
    assert result.returncode == 3, result.stdout + result.stderr
    assert "tflite: FAILED: backend 'tflite' cannot run 1 node(s)" in result.stderr and "Traceback" not in result.stderr
    assert "[PASS] onnxruntime" in result.stdout
    assert (tmp_path / "out" / "onnxruntime").is_dir()


def test_when_no_backend_can_run_the_model_nothing_is_calibrated_or_written(tmp_path):
    model, data = _model_tflite_cannot_run(tmp_path)
    result = run("compile", model, "--data", data, "--backend", "tflite", "-o", tmp_path / "out", "--quiet")
    assert_user_error(result, "'tflite' cannot run", "Det (node det)")
    assert not (tmp_path / "out").exists()


def test_without_backend_every_available_one_and_the_skipped_are_named(tmp_path):
    result = run("compile", MNIST, "--samples", "32", "-o", tmp_path / "out", "--no-conform", "--quiet")
    assert result.returncode == 0, result.stderr
    assert "skipped backend tensorrt:" in result.stderr
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert {"onnxruntime", "tflite"} <= set(manifest["backends"]) and "tensorrt" in manifest["skipped"]


def test_unknown_calibration_keyword_names_the_valid_ones(tmp_path):
    with pytest.raises(MpcompileError, match="unknown option.*'nhwc_input'.*backend_options"):
        mpcompile.compile(MNIST, MNIST_CALIB, ["tflite"], tmp_path / "o", nhwc_input=True)


def test_the_readme_plugin_example_declares_a_working_backend():
    from pathlib import Path

    readme = (Path(__file__).parent.parent / "README.md").read_text()
    block = readme.split("## Writing a third-party backend", 1)[1].split("```python", 1)[1].split("```", 1)[0]
    namespace: dict = {}
    exec(compile(block, "README.md", "exec", dont_inherit=True), namespace)
    backend = namespace["backend"]
    assert backend.options({"target": "dsp"}).target == "dsp"
    with pytest.raises(BackendOptionError, match="'mybackend' option target='gpu'"):
        backend.options({"target": "gpu"})
    assert backend.capabilities.supports("Conv", Precision.INT8)


def test_a_plugin_whose_capabilities_raise_is_one_unavailable_entry(tmp_path, monkeypatch):
    from importlib.metadata import EntryPoint

    from mpcompile.backends import registry

    (tmp_path / "brokencaps.py").write_text(
        "from mpcompile.backends.api import Backend\n"
        "class Broken(Backend):\n"
        "    name = 'brokencaps'\n"
        "    @property\n"
        "    def capabilities(self):\n"
        "        raise RuntimeError('no table')\n"
        "    def lower(self, plan, out_dir, *, stem, options): ...\n"
        "    def runner(self, artifact, options): ...\n"
        "backend = Broken()\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delenv("MPCOMPILE_STRICT_PLUGINS", raising=False)
    entry = registry._load(EntryPoint("brokencaps", "brokencaps:backend", registry.GROUP))
    assert not entry.available and entry.backend is None
    assert "RuntimeError: no table" in entry.reason
    assert entry.to_dict()["capabilities"] is None
