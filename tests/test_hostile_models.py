"""Issue 17, classes 3-5 for models: invalid Q/DQ numbers in a QDQ model, a graph without outputs, a
fixed batch larger than the data, multi-line messages, and opsets newer than ONNX Runtime implements."""

from __future__ import annotations

import os
import tempfile

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from hostile_kit import (
    assert_user_error,
    files_under,
    get_initializer,
    run_cli,
    set_initializer,
    tiny_data,
    tiny_mlp,
    tiny_qdq,
)
from onnx import helper

from mpcompile.ir import serde


# ============================================================================ class 3: QDQ models
def _node(model, name):
    return next(n for n in model.graph.node if n.name == name)


def _set_axis(model, node_name, axis):
    node = _node(model, node_name)
    for attr in node.attribute:
        if attr.name == "axis":
            attr.i = axis


QDQ_CASES = [
    ("activation scale 0", lambda m: set_initializer(m, "x_scale", np.float32(0)), "tensor 'x'", "scale 0.0 in 'x_scale'"),
    ("activation scale negative", lambda m: set_initializer(m, "x_scale", np.float32(-0.1)), "tensor 'x'", "not finite and > 0"),
    ("activation scale NaN", lambda m: set_initializer(m, "x_scale", np.float32(np.nan)), "tensor 'x'", "scale nan"),
    ("activation scale Inf", lambda m: set_initializer(m, "x_scale", np.float32(np.inf)), "tensor 'x'", "scale inf"),
    ("output scale 0", lambda m: set_initializer(m, "y_scale", np.float32(0)), "tensor 'a'", "QuantizeLinear 'a_Q'"),
    ("weight scale NaN", lambda m: _poke(m, "w_scale", 2, np.nan), "tensor 'w_q'", "DequantizeLinear 'w_DQ'"),
    ("bias scale negative", lambda m: _poke(m, "b_scale", 0, -1.0), "tensor 'b_q'", "scale -1.0 in 'b_scale'"),
    ("float zero-point", lambda m: set_initializer(m, "x_zp", np.float32(128.0)), "tensor 'x'", "zero-point 'x_zp' is float32"),
    ("zero-point size", lambda m: set_initializer(m, "w_zp", np.zeros(3, np.int8)), "tensor 'w_q'", "has [3]"),
    ("per-channel length", lambda m: (set_initializer(m, "w_scale", get_initializer(m, "w_scale")[:3]),
                                      set_initializer(m, "w_zp", np.zeros(3, np.int8))), "tensor 'w_q'", "3 entries"),
    ("axis out of range", lambda m: _set_axis(m, "w_DQ", 5), "tensor 'w_q'", "axis 5 is out of range for rank 2"),
    ("stored type", lambda m: set_initializer(m, "w_q", get_initializer(m, "w_q").astype(np.uint8)), "tensor 'w_q'", "uint8"),
    ("2-d scale", lambda m: set_initializer(m, "x_scale", np.full((2, 2), 0.1, np.float32)), "tensor 'x'", "shape [2, 2]"),
]


def _poke(model, name, index, value):
    array = get_initializer(model, name).copy()
    array[index] = value
    set_initializer(model, name, array)


@pytest.mark.parametrize("label,mutate,tensor,fragment", QDQ_CASES, ids=[c[0] for c in QDQ_CASES])
def test_qdq_parameters(tmp_path, label, mutate, tensor, fragment):
    model = tiny_qdq()
    mutate(model)
    path = tmp_path / "qdq.onnx"
    onnx.save(model, path)
    before = files_under(tmp_path)
    line = assert_user_error(run_cli("calibrate", path, "-o", tmp_path / "plan.onnx", "--quiet"), "qdq.onnx", tensor, fragment)
    assert line.endswith("(the QDQ model's quantization parameters are invalid; re-export it from the quantizer)")
    assert files_under(tmp_path) == before
    assert_user_error(run_cli("compile", path, "--backend", "onnxruntime", "-o", tmp_path / "out"), tensor)
    assert files_under(tmp_path) == before


def test_the_qdq_model_itself_imports(tmp_path):
    path = tmp_path / "qdq.onnx"
    onnx.save(tiny_qdq(), path)
    result = run_cli("calibrate", path, "-o", tmp_path / "plan.onnx", "--quiet")
    assert result.code in (0, None), result.stderr
    plan = serde.load_plan(tmp_path / "plan.onnx")
    assert plan.tensors["w_q"].quant.axis == 1 and plan.tensors["x"].quant.zero_point == 128


# ============================================================================ class 4
def test_model_without_graph_outputs(tmp_path):
    model = tiny_mlp()
    del model.graph.output[:]
    path = tmp_path / "m.onnx"
    onnx.save(model, path)
    data = tiny_data(tmp_path / "d.npz")
    before = files_under(tmp_path)
    for args in (("inspect", path), ("calibrate", path, "--data", data, "-o", tmp_path / "p.onnx"),
                 ("compile", path, "--data", data, "--backend", "onnxruntime", "-o", tmp_path / "out")):
        assert_user_error(run_cli(*args), "m.onnx", "declares no outputs")
    assert files_under(tmp_path) == before


def test_weights_with_nan_are_refused_by_name(tmp_path):
    model = tiny_mlp()
    w = get_initializer(model, "w1").copy()
    w[3, 3] = np.inf
    set_initializer(model, "w1", w)
    path = tmp_path / "m.onnx"
    onnx.save(model, path)
    assert_user_error(run_cli("inspect", path), "m.onnx", "tensor 'w1'", "NaN or infinite", "node 'mm1'")


@pytest.mark.parametrize("shape,samples", [("64x8", None), ("8x8", "4")])
def test_fixed_batch_larger_than_the_data(tmp_path, shape, samples):
    path = tmp_path / "m.onnx"
    onnx.save(tiny_mlp(), path)
    data = tiny_data(tmp_path / "d.npz", n=16)
    extra = ("--samples", samples) if samples else ()
    before = files_under(tmp_path)
    assert_user_error(run_cli("calibrate", path, "--data", data, "--input-shape", f"x={shape}", *extra, "-o", tmp_path / "p.onnx"),
                      "d.npz", "batch dimension fixed to", "no batch can be formed", "--input-shape")
    assert files_under(tmp_path) == before
    ok = run_cli("calibrate", path, "--data", data, "--input-shape", "x=4x8", "-o", tmp_path / "p.onnx", "--quiet")
    assert ok.code in (0, None), ok.stderr


def test_a_partial_last_batch_is_one_warning_line(tmp_path):
    path = tmp_path / "m.onnx"
    onnx.save(tiny_mlp(), path)
    data = tiny_data(tmp_path / "d.npz", n=18)
    result = run_cli("calibrate", path, "--data", data, "--input-shape", "x=4x8", "-o", tmp_path / "p.onnx", "--quiet")
    assert result.code in (0, None), result.stderr
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("warning:") and "2 sample(s)" in lines[0], result.stderr


def test_multi_line_messages_become_one_line(tmp_path, monkeypatch):
    from mpcompile import pipeline
    from mpcompile.errors import DataError

    def boom(*args, **kwargs):
        raise DataError("first line\n  second line\n\nthird line")

    monkeypatch.setattr(pipeline, "calibrate", boom)
    path = tmp_path / "m.onnx"
    onnx.save(tiny_mlp(), path)
    line = assert_user_error(run_cli("calibrate", path, "--data", tmp_path / "d.npz"))
    assert line == "error: first line; second line; third line"


@pytest.mark.parametrize("args,fragment", [
    (("calibrate", "m.onnx", "--method", "bogus"), "Invalid value for '--method'"),
    (("calibrate", "m.onnx", "--no-such-option"), "No such option"),
    (("nosuchcommand",), "No such command"),
    (("calibrate",), "Missing argument"),
])
def test_usage_errors_are_one_line(args, fragment):
    line = assert_user_error(run_cli(*args), fragment)
    assert "--help" in line


def test_onnx_runtime_log_lines_are_silenced():
    """ORT logs its own error line (to fd 2) when a session fails to initialize; the CLI reports the error once."""
    from mpcompile.cli.main import _quiet_runtime_logs
    from mpcompile.ir.graph import Graph, Tensor
    from mpcompile.ortsession import inference_session

    graph = Graph("g", [], {"x": Tensor("x", np.float32, ("N", 4))}, ["x"], [])  # no outputs: ORT fails to initialize
    _quiet_runtime_logs(["compile"])
    with tempfile.TemporaryFile() as capture:
        saved = os.dup(2)
        os.dup2(capture.fileno(), 2)
        try:
            with pytest.raises(Exception):  # noqa: B017 - ORT's own exception type
                inference_session(graph)
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        capture.seek(0)
        assert capture.read() == b""


# ============================================================================ class 5: opsets
def _newest_runnable_opset() -> int | None:
    """The newest opset at which ONNX Runtime runs Q/DQ and Cast (what every plan's artifacts contain)."""
    registry = serde._runtime_registry()
    if registry is None:
        return None
    for opset in range(onnx.defs.onnx_opset_version(), serde.MIN_OPSET - 1, -1):
        if all(serde._runtime_runs(op, opset, registry) for op in serde._ADDED_OPS):
            return opset
    return None


def _require_newer_onnx_than_runtime() -> int:
    newest = _newest_runnable_opset()
    if newest is None:
        pytest.skip("this onnxruntime does not expose its kernel registry")
    if newest >= onnx.defs.onnx_opset_version():
        pytest.skip(f"onnxruntime {ort.__version__} implements every opset onnx {onnx.__version__} defines")
    return newest


def test_new_opset_whose_operators_did_not_change_is_moved_down_exactly(tmp_path):
    newest = _require_newer_onnx_than_runtime()
    opset = onnx.defs.onnx_opset_version()
    path = tmp_path / "m.onnx"
    onnx.save(tiny_mlp(opset=opset), path)
    graph = serde.import_model(path)
    assert graph.opset_imports[""] == newest and graph.metadata["mpcompile.source_opset"] == str(opset)
    data = tiny_data(tmp_path / "d.npz")
    result = run_cli("compile", path, "--data", data, "--backend", "onnxruntime", "-o", tmp_path / "out", "--quiet")
    assert result.code in (0, None), result.stderr
    artifact = next((tmp_path / "out" / "onnxruntime").glob("*.onnx"))
    session = ort.InferenceSession(str(artifact), providers=["CPUExecutionProvider"])  # loads: the point of the check
    assert session.run(None, {"x": np.ones((2, 8), np.float32)})[0].shape == (2, 4)


def test_new_opset_with_changed_operators_is_refused_with_the_opset_to_use(tmp_path):
    newest = _require_newer_onnx_than_runtime()
    opset = onnx.defs.onnx_opset_version()
    path = tmp_path / "qdq.onnx"
    onnx.save(tiny_qdq(opset=opset), path)  # QuantizeLinear is one of the operators ORT lacks at this opset
    before = files_under(tmp_path)
    line = assert_user_error(run_cli("compile", path, "--backend", "onnxruntime", "-o", tmp_path / "out"),
                             "qdq.onnx", f"opset {opset}", f"onnxruntime {ort.__version__}",
                             f"re-export the model with opset ≤ {newest}")
    assert "QuantizeLinear" in line
    assert files_under(tmp_path) == before


def test_opset_newer_than_onnx_knows(tmp_path):
    newest = _newest_runnable_opset()
    if newest is None:
        pytest.skip("this onnxruntime does not expose its kernel registry")
    model = tiny_mlp(opset=onnx.defs.onnx_opset_version())
    model.opset_import[0].version = onnx.defs.onnx_opset_version() + 1
    path = tmp_path / "m.onnx"
    onnx.save(model, path)
    result = run_cli("inspect", path)
    if result.code in (0, None):  # a runtime that implements even this opset: nothing to refuse
        return
    assert_user_error(result, "m.onnx", f"opset {onnx.defs.onnx_opset_version() + 1}", "re-export the model with opset ≤")


def test_supported_opsets_are_untouched(tmp_path):
    for opset in (13, 17, 21):
        path = tmp_path / f"m{opset}.onnx"
        onnx.save(tiny_mlp(opset=opset), path)
        graph = serde.import_model(path)
        assert graph.opset_imports[""] == opset and "mpcompile.source_opset" not in graph.metadata


def test_runtime_kernel_rule_matches_onnx_runtime(tmp_path):
    """The kernel-matching rule the check applies agrees with ORT itself, op by op, at every opset."""
    registry = serde._runtime_registry()
    if registry is None:
        pytest.skip("this onnxruntime does not expose its kernel registry")
    for opset in range(19, onnx.defs.onnx_opset_version() + 1):
        graph = helper.make_graph(
            [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"]), helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"])],
            "g", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [2])],
            [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [2])],
            initializer=[onnx.numpy_helper.from_array(np.array(0.1, np.float32), "s"),
                         onnx.numpy_helper.from_array(np.array(0, np.int8), "z")],
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
        try:
            ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
            runs = True
        except Exception:
            runs = False
        expected = all(serde._runtime_runs(op, opset, registry) for op in ("QuantizeLinear", "DequantizeLinear"))
        assert runs == expected, opset


@pytest.mark.parametrize("which", ["node output", "metadata value"])
def test_names_that_are_not_utf8(tmp_path, which):
    """Protobuf hands out ``bytes`` for a string field that is not UTF-8: refused on read, naming the field."""
    model = tiny_mlp()
    model.metadata_props.add(key="note", value="vvvv")
    blob = bytearray(model.SerializeToString())
    marker = b"vvvv" if which == "metadata value" else b"\x12\x02m1"
    index = blob.index(marker) + (1 if which == "metadata value" else 3)
    blob[index] = 0xE1
    path = tmp_path / "m.onnx"
    path.write_bytes(bytes(blob))
    expected = "metadata_props[0].value" if which == "metadata value" else "graph.node[0].output"
    assert_user_error(run_cli("inspect", path), "m.onnx", expected, "not valid UTF-8")
