"""The CLI as a user meets it: help, errors that name the culprit (exit 2, no traceback), no partial outputs."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import MNIST, MNIST_CALIB
from onnx import TensorProto, helper


def run(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "mpcompile", *map(str, args)], capture_output=True, text=True, cwd=cwd)


def assert_user_error(result, *fragments):
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    lines = [ln for ln in result.stderr.strip().splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, result.stderr  # one line that says what is wrong (progress notes may precede it)
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_help_lists_every_command():
    result = run("--help")
    assert result.returncode == 0
    for command in ("compile", "calibrate", "lower", "conform", "inspect", "backends"):
        assert command in result.stdout
    for command in ("compile", "calibrate", "lower", "conform", "inspect", "backends"):
        sub = run(command, "--help")
        assert sub.returncode == 0, sub.stderr
        assert "Usage" in sub.stdout


def test_backends_json_lists_builtins():
    import json

    result = run("backends", "--json")
    assert result.returncode == 0
    names = {e["name"] for e in json.loads(result.stdout)}
    assert {"onnxruntime", "tflite", "tensorrt"} <= names


def test_inspect_model_and_plan(tmp_path):
    out = run("inspect", MNIST)
    assert out.returncode == 0 and "Conv" in out.stdout and "input" in out.stdout
    plan = tmp_path / "plan.onnx"
    assert run("calibrate", MNIST, "--data", MNIST_CALIB, "-o", plan, "--quiet").returncode == 0
    out = run("inspect", plan, "--explain")
    assert out.returncode == 0, out.stderr
    assert "quantized tensors" in out.stdout and "policy int8" in out.stdout


@pytest.mark.parametrize("kind", ["missing", "corrupt", "truncated", "not-onnx"])
def test_inspect_bad_files(tmp_path, kind):
    path = tmp_path / "m.onnx"
    if kind == "corrupt":
        path.write_bytes(b"\x0a\xff\xff\xff\xff\x0f garbage")
    elif kind == "truncated":
        data = MNIST.read_bytes()
        path.write_bytes(data[: len(data) // 3])
    elif kind == "not-onnx":
        path = tmp_path / "notes.txt"
        path.write_text("this is not a model\n" * 20)
    assert_user_error(run("inspect", path), str(path.name))


def _calibrate_error(tmp_path, data_path, *fragments, extra=()):
    out = tmp_path / "plan.onnx"
    result = run("calibrate", MNIST, "--data", data_path, "-o", out, "--quiet", *extra)
    assert_user_error(result, *fragments)
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".plan")]


def test_calibration_data_of_wrong_shape(tmp_path):
    path = tmp_path / "d.npz"
    np.savez(path, input=np.zeros((4, 28, 28, 1), np.float32))
    _calibrate_error(tmp_path, path, "input", "NHWC")


def test_calibration_data_of_wrong_dtype(tmp_path):
    path = tmp_path / "d.npz"
    np.savez(path, input=np.full((4, 1, 28, 28), 0.5, np.float64).astype(np.complex64))
    _calibrate_error(tmp_path, path, "input")


def test_calibration_data_with_wrong_input_name(tmp_path):
    path = tmp_path / "d.npz"
    np.savez(path, images=np.zeros((4, 1, 28, 28), np.float32))
    _calibrate_error(tmp_path, path, "input", "images")


def test_empty_calibration_file(tmp_path):
    path = tmp_path / "d.npz"
    np.savez(path, input=np.zeros((0, 1, 28, 28), np.float32))
    _calibrate_error(tmp_path, path, "no samples")


def test_nan_activations_name_tensor_and_sample(tmp_path):
    # a model whose Log produces -inf/NaN for non-positive inputs
    node = helper.make_node("Log", ["x"], ["y"], name="log")
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])])
    model_path = tmp_path / "log.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), model_path)
    data = np.ones((6, 4), np.float32)
    data[3, 2] = -1.0
    data_path = tmp_path / "d.npz"
    np.savez(data_path, x=data)
    out = tmp_path / "plan.onnx"
    result = run("calibrate", model_path, "--data", data_path, "-o", out, "--quiet", "--precision", "fp16")
    assert_user_error(result, "'y'", "sample 3")
    assert not out.exists()
    ok = run("calibrate", model_path, "--data", data_path, "-o", out, "--quiet", "--precision", "fp16", "--nan-policy", "ignore")
    assert ok.returncode == 0, ok.stderr


def test_compile_unknown_backend_leaves_nothing(tmp_path):
    out = tmp_path / "out"
    assert_user_error(run("compile", MNIST, "--backend", "nosuch", "-o", out), "nosuch")
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_compile_missing_optional_backend(tmp_path):
    try:
        import tensorrt  # noqa: F401
        pytest.skip("tensorrt is installed here")
    except ImportError:
        pass
    out = tmp_path / "out"
    assert_user_error(run("compile", MNIST, "--backend", "tensorrt", "-o", out), "tensorrt", "pip install")
    assert list(tmp_path.iterdir()) == []


def test_compile_model_with_unsupported_operator(tmp_path):
    node = helper.make_node("MyCustomOp", ["x"], ["y"], name="custom", domain="com.example")
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.example", 1)])
    path = tmp_path / "custom.onnx"
    onnx.save(model, path)
    out = tmp_path / "out"
    assert_user_error(run("compile", path, "--backend", "onnxruntime", "-o", out), "MyCustomOp", "custom")
    assert not out.exists()


def test_compile_writes_manifest_with_deviations(tmp_path):
    import json

    out = tmp_path / "out"
    result = run("compile", MNIST, "--backend", "onnxruntime", "-o", out, "--quiet")
    assert result.returncode == 0, result.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    entry = manifest["backends"]["onnxruntime"]
    assert (out / entry["artifact"]).is_file()
    assert entry["deviations"] == []
    assert manifest["model_sha256"] and manifest["plan_sha256"]
    assert manifest["conformance"]["backends"]["onnxruntime"]["passed"]
    assert (out / "conformance.html").read_text().startswith("<!doctype html>")
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".partial")]


def test_readme_python_example_runs(tmp_path, monkeypatch):
    """The README's Python API example, executed verbatim (from the repo root)."""
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    block = readme.split("## Python API", 1)[1].split("```python", 1)[1].split("```", 1)[0]
    monkeypatch.chdir(Path(__file__).parent.parent)
    block = block.replace('out_dir="mpcompile-out/api-example"', f'out_dir="{tmp_path / "api"}"')
    exec(compile(block, "README.md", "exec"), {})


def test_tensorrt_onnx_only_without_tensorrt(tmp_path):
    plan = tmp_path / "plan.onnx"
    assert run("calibrate", MNIST, "--data", MNIST_CALIB, "-o", plan, "--quiet").returncode == 0
    out = tmp_path / "trt"
    result = run("lower", plan, "--backend", "tensorrt", "--backend-option", "tensorrt.onnx_only=true", "-o", out)
    assert result.returncode == 0, result.stderr
    assert "trtexec" in result.stdout and "--stronglyTyped" in result.stdout
    assert list(out.glob("tensorrt/*.trt.onnx")) and list(out.glob("tensorrt/*.cache"))


def test_input_shape_freezes_dynamic_dims(tmp_path):
    plan = tmp_path / "plan.onnx"
    result = run("calibrate", MNIST, "--data", MNIST_CALIB, "--input-shape", "input=1x1x28x28", "--samples", "8", "-o", plan, "--quiet")
    assert result.returncode == 0, result.stderr
    assert onnx.load(plan).graph.input[0].type.tensor_type.shape.dim[0].dim_value == 1
    assert_user_error(run("calibrate", MNIST, "--data", MNIST_CALIB, "--input-shape", "input=1x28x28", "-o", plan), "rank")
