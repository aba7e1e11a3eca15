"""Div by a constant written as Mul by its reciprocal at import (passes/div_by_constant.py)."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from ort_models import op_counts, optimized

from mpcompile import importer
from mpcompile.ir import serde
from mpcompile.passes.div_by_constant import DivByConstant
from mpcompile.pipeline import calibrate, compile


def paddle_hardswish_cnn(divisor: float = 6.0) -> onnx.ModelProto:
    """Conv → x · relu6(x + 3) / 6 (PaddlePaddle's HardSwish export) → Conv."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.normal(0, 0.3, (8, 3, 3, 3)).astype(np.float32), "w0"),
             numpy_helper.from_array(rng.normal(0, 0.2, (8, 8, 3, 3)).astype(np.float32), "w1"),
             numpy_helper.from_array(np.float32(3), "three"), numpy_helper.from_array(np.float32(0), "zero"),
             numpy_helper.from_array(np.float32(6), "six"), numpy_helper.from_array(np.float32(divisor), "divisor")]
    n = helper.make_node
    nodes = [n("Conv", ["x", "w0"], ["c0"], name="conv0", pads=[1, 1, 1, 1]),
             n("Add", ["c0", "three"], ["shifted"], name="add3"), n("Clip", ["shifted", "zero", "six"], ["relu6"], name="relu6"),
             n("Mul", ["c0", "relu6"], ["scaled"], name="mul"), n("Div", ["scaled", "divisor"], ["hs"], name="div6"),
             n("Conv", ["hs", "w1"], ["y"], name="conv1", pads=[1, 1, 1, 1])]
    graph = helper.make_graph(nodes, "hardswish", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 16, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 8, 16, 16])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


@pytest.fixture
def hardswish(tmp_path):
    model, data = tmp_path / "hardswish.onnx", tmp_path / "hardswish.calib.npz"
    onnx.save(paddle_hardswish_cnn(), model)
    np.savez(data, x=np.random.default_rng(1).normal(0, 1, (8, 3, 16, 16)).astype(np.float32))
    return model, data


def test_div_becomes_mul_and_computes_the_same_function(hardswish, tmp_path):
    model, data = hardswish
    graph = importer.load(model)
    assert graph.op_counts().get("Div", 0) == 0
    mul = next(node for node in graph.nodes if node.name == "div6")
    assert mul.op_type == "Mul" and graph.tensors[mul.inputs[1]].value == np.float32(1 / 6)
    assert "divisor" not in graph.tensors  # read by nobody any more
    x = dict(np.load(data))
    imported = tmp_path / "imported.onnx"
    serde.save_onnx(graph, imported)
    ours, theirs = (ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]).run(None, x)[0] for p in (imported, model))
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("value", [0.0, np.inf, np.nan, 3e38])  # 1/3e38 is a float32 denormal
def test_a_divisor_without_a_normal_reciprocal_stays_a_div(value):
    graph = serde.import_proto(paddle_hardswish_cnn())
    graph.tensors["divisor"].value = np.float32(value)
    assert not DivByConstant()(graph).modified and graph.op_counts()["Div"] == 1


def test_integer_and_activation_divisors_stay():
    graph = serde.import_proto(paddle_hardswish_cnn())
    graph.tensors["divisor"].value = np.int64(6)  # shape arithmetic: integer division
    div = next(node for node in graph.nodes if node.op_type == "Div")
    assert not DivByConstant()(graph).modified
    div.inputs = ["scaled", "c0"]  # an activation divisor
    assert not DivByConstant()(graph).modified


def test_a_div_read_by_a_rounding_op_stays():
    """Shape arithmetic: ceil(9 / 3) = 3 but ceil(9 · float32(1/3)) = 4."""
    from mpcompile.ir.graph import Node, Tensor

    graph = serde.import_proto(paddle_hardswish_cnn())
    graph.add_tensor(Tensor("rounded", np.float32, graph.tensors["hs"].shape))
    graph.nodes.append(Node("ceil", "Ceil", ["hs"], ["rounded"]))
    graph.outputs.append("rounded")
    assert not DivByConstant()(graph).modified


def test_the_division_runs_as_an_integer_mul_in_ort(hardswish, tmp_path):
    model, data = hardswish
    plan = calibrate(model, data, progress=False).plan
    assert plan.node("div6").precision.is_integer
    result = compile(model, data, ["onnxruntime"], tmp_path / "out", conform=True, progress=False)
    assert result.conformance.passed, result.conformance.format_text()
    counts = op_counts(optimized(result.artifacts["onnxruntime"].path, tmp_path))
    assert counts.get("QLinearMul", 0) >= 2 and counts.get("Div", 0) == 0, counts
