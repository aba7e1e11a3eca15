"""An output whose size depends on the values (NonZero): quantization may select a different count than FP32.
Conformance reports it, by output name, instead of crashing on the shapes."""

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from mpcompile.pipeline import compile as compile_model


def _selector(tmp_path):
    """x → MatMul (int8) → Greater(0) → NonZero: values near 0 cross the threshold once quantized."""
    n = helper.make_node
    graph = helper.make_graph(
        [n("MatMul", ["x", "w"], ["s"], name="fc"), n("Greater", ["s", "t"], ["mask"], name="gt"),
         n("NonZero", ["mask"], ["where"], name="nonzero"), n("Relu", ["s"], ["y"], name="relu")],
        "selector", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 256])],
        [helper.make_tensor_value_info("where", TensorProto.INT64, [2, "K"]),
         helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 256])],
        [numpy_helper.from_array(np.random.default_rng(3).normal(0, 0.1, (256, 256)).astype(np.float32), "w"),
         numpy_helper.from_array(np.float32(0.0), "t")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path / "selector.onnx"
    onnx.save(model, path)
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "calib.npz", x=rng.normal(0, 1, (32, 256)).astype(np.float32))
    np.savez(tmp_path / "eval.npz", x=rng.normal(0, 1, (32, 256)).astype(np.float32))
    return path


def test_a_count_that_changes_under_quantization_is_reported_not_a_crash(tmp_path):
    path = _selector(tmp_path)
    result = compile_model(str(path), data=str(tmp_path / "calib.npz"), eval_data=str(tmp_path / "eval.npz"),
                           backends=["onnxruntime"], out_dir=str(tmp_path / "out"), conform=True, progress=False)
    report = result.conformance
    cost = report.reference_vs_fp32["where"]
    assert cost.shape_mismatches > 0 and "where the reference has" in cost.first_mismatch  # the plan selects differently
    assert report.to_dict()["reference_vs_fp32"]["where"]["shape_mismatches"] == cost.shape_mismatches
    assert "where: the plan selects another count than FP32" in report.format_text()
    backend = report.backends[0]
    if backend.outputs["where"].shape_mismatches:  # the artifact against the plan: a failure by name, never a pass
        assert not backend.passed
        assert any("'where'" in m and "depends on the values" in m for m in backend.failures)
    else:
        assert backend.outputs["where"].passed()
