"""Exports that store a dynamic dimension as -1 or 0 (Paddle…), and --input-shape on any dynamic dimension."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from test_cli import assert_user_error, run

import mpcompile


def _paddle_style_model(tmp_path, stored=-1):
    """x[-1, 4] → MatMul → Relu → y[-1, 8], with the batch stored as a fixed -1 (or 0), as Paddle exports do."""
    w = numpy_helper.from_array(np.random.default_rng(0).normal(size=(4, 8)).astype(np.float32), "w")
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8])
    x.type.tensor_type.shape.dim[0].dim_value = stored
    y.type.tensor_type.shape.dim[0].dim_value = stored
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["h"], name="mm"), helper.make_node("Relu", ["h"], ["y"], name="relu")],
        "paddle_style", [x], [y], [w],
    )
    path = tmp_path / "paddle_style.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    data = tmp_path / "paddle_style.npz"
    np.savez(data, x=np.random.default_rng(1).normal(size=(16, 4)).astype(np.float32))
    return path, data


@pytest.mark.parametrize("stored", [-1, 0])
def test_a_stored_minus_one_batch_is_dynamic(tmp_path, stored):
    model, data = _paddle_style_model(tmp_path, stored)
    graph = mpcompile.load(model)
    assert isinstance(graph.tensor("x").shape[0], str)  # a named dynamic dimension, not -1
    result = mpcompile.compile(model, data, ["onnxruntime"], tmp_path / "out", conform=True, progress=False)
    assert result.exit_code == 0, result.conformance.format_text()


@pytest.mark.parametrize("shape", ["x=2x4", "x=-1x4", "x=?x4"])
def test_input_shape_freezes_a_stored_minus_one(tmp_path, shape):
    model, data = _paddle_style_model(tmp_path)
    plan = tmp_path / "plan.onnx"
    result = run("calibrate", model, "--data", data, "--input-shape", shape, "--samples", "8", "-o", plan, "--quiet")
    assert result.returncode == 0, result.stderr
    dim = onnx.load(plan).graph.input[0].type.tensor_type.shape.dim[0]
    assert (dim.dim_value == 2) if shape == "x=2x4" else (dim.dim_param and not dim.dim_value)


def test_input_shape_against_a_real_fixed_dimension_names_it(tmp_path):
    model, data = _paddle_style_model(tmp_path)
    result = run("calibrate", model, "--data", data, "--input-shape", "x=2x5", "-o", tmp_path / "p.onnx")
    assert_user_error(result, "fixed dimension 1 of 4", "--input-shape gave 5")


@pytest.mark.parametrize("bad", ["x=0x4", "x=ax4", "x=", "=2x4"])
def test_malformed_input_shapes_say_the_form(tmp_path, bad):
    model, data = _paddle_style_model(tmp_path)
    result = run("calibrate", model, "--data", data, "--input-shape", bad, "-o", tmp_path / "p.onnx")
    assert result.returncode == 2 and "-1 or ? keeps a dimension dynamic" in result.stderr
