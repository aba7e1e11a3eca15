"""Shared by the hostile-input tests: the CLI run in-process with every byte of stderr captured, the
contract for bad input (exit 2, one ``error:`` line, no traceback, nothing written), and small models."""

from __future__ import annotations

import contextlib
import io
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


@dataclass
class Run:
    code: object
    stdout: str
    stderr: str

    @property
    def error_lines(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if line.startswith("error:")]


def run_cli(*args: object) -> Run:
    """``mpcompile ARGS`` in this process (fast), capturing Python's and the C libraries' stderr (fd 2)."""
    from mpcompile.cli.main import main

    out, err = io.StringIO(), io.StringIO()
    code: object = None
    with tempfile.TemporaryFile(mode="w+b") as fd_capture:
        sys.stderr.flush()
        saved = os.dup(2)
        os.dup2(fd_capture.fileno(), 2)
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                try:
                    main([str(a) for a in args])
                except SystemExit as exc:
                    code = exc.code
                except BaseException:  # anything else escaping main() is itself a failure of the contract
                    import traceback

                    code = "escaped"
                    err.write(traceback.format_exc())
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        fd_capture.seek(0)
        native = fd_capture.read().decode("utf-8", errors="replace")
    return Run(code, out.getvalue(), native + err.getvalue())


def assert_user_error(run: Run, *fragments: str) -> str:
    """Exit 2, exactly one ``error:`` line, no traceback, no log line of ONNX Runtime's own on stderr.

    (Progress notes such as "no evaluation data: skipping conformance" may precede the error.)
    """
    assert run.code == 2, f"exit {run.code!r}:\n{run.stderr}"
    assert "Traceback" not in run.stderr, run.stderr
    lines = run.error_lines
    assert len(lines) == 1, run.stderr
    assert ":onnxruntime:" not in run.stderr, run.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def files_under(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


# ---------------------------------------------------------------------------------------------- models
def tiny_mlp(opset: int = 17) -> onnx.ModelProto:
    """x[N,8] → MatMul → Add → Relu → Gemm → y[N,4]: fast to import, calibrate and lower."""
    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(rng.normal(0, 0.3, (8, 8)).astype(np.float32), "w1"),
        numpy_helper.from_array(rng.normal(0, 0.1, (8,)).astype(np.float32), "b1"),
        numpy_helper.from_array(rng.normal(0, 0.3, (4, 8)).astype(np.float32), "w2"),
        numpy_helper.from_array(rng.normal(0, 0.1, (4,)).astype(np.float32), "b2"),
    ]
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["m1"], name="mm1"),
        helper.make_node("Add", ["m1", "b1"], ["a1"], name="bias1"),
        helper.make_node("Relu", ["a1"], ["r1"], name="relu1"),
        helper.make_node("Gemm", ["r1", "w2", "b2"], ["y"], name="fc", transB=1),
    ]
    graph = helper.make_graph(
        nodes, "tiny_mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])], initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model


def tiny_qdq(opset: int = 17) -> onnx.ModelProto:
    """A QDQ model as a quantizer writes it: x → Q/DQ → MatMul(DQ(int8 W, per-channel)) → Add(DQ(int32 b)) → Q/DQ → y."""
    rng = np.random.default_rng(1)
    w = rng.normal(0, 0.3, (8, 4)).astype(np.float32)
    w_scale = (np.abs(w).max(axis=0) / 127).astype(np.float32)
    w_q = np.clip(np.rint(w / w_scale), -127, 127).astype(np.int8)
    x_scale = np.float32(4 / 255)
    b_scale = (x_scale * w_scale).astype(np.float32)
    b_q = np.rint(rng.normal(0, 0.1, 4) / b_scale).astype(np.int32)
    inits = [
        numpy_helper.from_array(np.array(x_scale, np.float32), "x_scale"),
        numpy_helper.from_array(np.array(128, np.uint8), "x_zp"),
        numpy_helper.from_array(w_q, "w_q"),
        numpy_helper.from_array(w_scale, "w_scale"),
        numpy_helper.from_array(np.zeros(4, np.int8), "w_zp"),
        numpy_helper.from_array(b_q, "b_q"),
        numpy_helper.from_array(b_scale, "b_scale"),
        numpy_helper.from_array(np.zeros(4, np.int32), "b_zp"),
        numpy_helper.from_array(np.array(0.05, np.float32), "y_scale"),
        numpy_helper.from_array(np.array(-10, np.int8), "y_zp"),
    ]
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "x_scale", "x_zp"], ["x_q"], name="x_Q"),
        helper.make_node("DequantizeLinear", ["x_q", "x_scale", "x_zp"], ["x_dq"], name="x_DQ"),
        helper.make_node("DequantizeLinear", ["w_q", "w_scale", "w_zp"], ["w_dq"], name="w_DQ", axis=1),
        helper.make_node("DequantizeLinear", ["b_q", "b_scale", "b_zp"], ["b_dq"], name="b_DQ", axis=0),
        helper.make_node("MatMul", ["x_dq", "w_dq"], ["m"], name="mm"),
        helper.make_node("Add", ["m", "b_dq"], ["a"], name="bias"),
        helper.make_node("QuantizeLinear", ["a", "y_scale", "y_zp"], ["a_q"], name="a_Q"),
        helper.make_node("DequantizeLinear", ["a_q", "y_scale", "y_zp"], ["y"], name="a_DQ"),
    ]
    graph = helper.make_graph(
        nodes, "tiny_qdq", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])], initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model


def tiny_data(path: Path, n: int = 16) -> Path:
    np.savez(path, x=np.random.default_rng(2).normal(0, 1, (n, 8)).astype(np.float32))
    return path


def set_initializer(model: onnx.ModelProto, name: str, value: np.ndarray) -> None:
    for index, init in enumerate(model.graph.initializer):
        if init.name == name:
            model.graph.initializer[index].CopyFrom(numpy_helper.from_array(np.asarray(value), name))
            return
    raise KeyError(name)


def get_initializer(model: onnx.ModelProto, name: str) -> np.ndarray:
    for init in model.graph.initializer:
        if init.name == name:
            return numpy_helper.to_array(init)
    raise KeyError(name)


def metadata(model: onnx.ModelProto, key: str) -> onnx.StringStringEntryProto:
    for prop in model.metadata_props:
        if prop.key == key:
            return prop
    raise KeyError(key)
