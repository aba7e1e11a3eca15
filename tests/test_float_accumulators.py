"""An integer MatMul whose output only float nodes read writes its dequantized accumulator where the
backend can (ORT's MatMulIntegerToFloat, OpenVINO's int8 FullyConnected with an f32 output), and keeps
the plan's requantization where it cannot (TFLite's int8 FULLY_CONNECTED writes int8)."""

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from mpcompile.backends.registry import get_backend
from mpcompile.pipeline import calibrate, compile
from mpcompile.reference.fakequant import ReferenceRunner

N = 32


def _outlier_block(tmp_path, gamma0: float = 1.0, output: str = "y"):
    """stream = MatMul(x); f = MatMul(stream) + b with an outlier output column (BERT's FFN output has
    such channels); LayerNorm(stream + f) → MatMul → y. One 8-bit scale over ``f0`` leaves the ordinary
    columns a few levels; every reader of ``f0`` is float (the residual sum a LayerNorm reads)."""
    rng = np.random.default_rng(7)
    w_f = rng.normal(size=(N, N)).astype(np.float32) / 8
    w_f[:, 0] *= 200.0
    gamma = np.ones(N, np.float32)
    gamma[0] = gamma0
    inits = [
        numpy_helper.from_array(rng.normal(size=(16, N)).astype(np.float32) / 4, "w_stream"),
        numpy_helper.from_array(w_f, "w_f"),
        numpy_helper.from_array(rng.normal(size=N).astype(np.float32) / 8, "b_f"),
        numpy_helper.from_array(gamma, "gamma"),
        numpy_helper.from_array(np.zeros(N, np.float32), "beta"),
        numpy_helper.from_array(rng.normal(size=(N, 8)).astype(np.float32) / 4, "w_out"),
    ]
    nodes = [
        helper.make_node("MatMul", ["x", "w_stream"], ["stream"], name="dense_in"),
        helper.make_node("MatMul", ["stream", "w_f"], ["f0"], name="dense_f"),
        helper.make_node("Add", ["f0", "b_f"], ["f"], name="bias"),
        helper.make_node("Add", ["stream", "f"], ["row"], name="residual"),
        helper.make_node("LayerNormalization", ["row", "gamma", "beta"], ["normed"], axis=-1, name="norm"),
        helper.make_node("MatMul", ["normed", "w_out"], [output], name="dense_out"),
    ]
    graph = helper.make_graph(nodes, "outlier", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 16])],
                              [helper.make_tensor_value_info(output, TensorProto.FLOAT, [None, 8])], inits)
    path = tmp_path / "outlier.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), path)
    x = rng.normal(size=(64, 16)).astype(np.float32)
    np.savez(tmp_path / "x.npz", x=x)
    return path, tmp_path / "x.npz", x


def test_the_plan_marks_requantizations_only_float_nodes_read(tmp_path):
    path, data, _ = _outlier_block(tmp_path)
    plan = calibrate(path, data, progress=False).plan
    assert plan.tensors["f0"].quant is not None and plan.tensors["f0"].quant.provenance["readers"] == "float"
    # 'stream' is also read by the integer dense_f; 'normed' by the integer dense_out; 'y' is a graph output
    for name in ("stream", "normed", "y"):
        spec = plan.tensors[name].quant
        assert spec is not None and "readers" not in spec.provenance, name


def test_inspect_says_which_requantizations_a_backend_may_drop(tmp_path):
    from mpcompile.cli.inspect_cmd import describe

    path, data, _ = _outlier_block(tmp_path)
    roles = {row["tensor"]: row["role"] for row in describe(calibrate(path, data, progress=False).plan)["quantized_tensors"]}
    assert "float readers" in roles["f0"] and "float readers" not in roles["stream"]


def test_legalization_drops_them_where_the_kernel_writes_float_and_only_there(tmp_path):
    path, data, x = _outlier_block(tmp_path)
    plan = calibrate(path, data, progress=False).plan
    ort, tflite = get_backend("onnxruntime"), get_backend("tflite")
    legal_ort, deviations = ort.legalize(plan, ort.Options())
    assert legal_ort.tensors["f0"].quant is None
    assert any(d.subject == "f0" and "accumulator" in d.reason for d in deviations)
    assert legal_ort.tensors["stream"].quant is not None
    legal_tflite, _ = tflite.legalize(plan, tflite.Options())
    assert legal_tflite.tensors["f0"].quant is not None

    fp32 = ReferenceRunner(plan, float_reference=True).run({"x": x})["y"]

    def error(p):
        return float(np.sqrt(np.mean((ReferenceRunner(p).run({"x": x})["y"] - fp32) ** 2)))

    assert error(legal_ort) * 2 < error(plan), (error(legal_ort), error(plan))


def test_onnxruntime_runs_the_float_output_as_an_integer_kernel_and_conforms(tmp_path):
    path, data, _ = _outlier_block(tmp_path)
    result = compile(path, data=data, backends=["onnxruntime"], out_dir=tmp_path / "out", conform=True, progress=False)
    assert result.conformance is not None and result.conformance.passed, result.conformance.format_text()
    kernels = result.artifacts["onnxruntime"].metadata["ort_fusion"]["integer_kernels"]
    assert kernels.get("MatMulIntegerToFloat") == 1 and kernels.get("QLinearMatMul") == 2, kernels
    backend = result.conformance.backends[0]
    assert backend.vs_fp32["y"].cosine > result.conformance.reference_vs_fp32["y"].cosine
    text = result.conformance.format_text()
    assert "each artifact against FP32: onnxruntime" in text
    # the plan (before legalization) is below 0.99 cosine, the artifact is not: no advice to change the plan
    assert result.conformance.reference_vs_fp32["y"].cosine < 0.99 < backend.vs_fp32["y"].cosine
    assert "far from FP32" not in text and "far from FP32" not in (tmp_path / "out" / "conformance.html").read_text()


def test_openvino_drops_it_and_conforms(tmp_path):
    pytest.importorskip("openvino")
    path, data, _ = _outlier_block(tmp_path)
    result = compile(path, data=data, backends=["openvino"], out_dir=tmp_path / "out", conform=True, progress=False)
    assert result.results["openvino"].plan.tensors["f0"].quant is None
    assert result.conformance is not None and result.conformance.passed, result.conformance.format_text()


def test_openvino_ir_check_follows_a_fakequantize_folded_through_a_layernorm_scale(tmp_path):
    """With a zero LayerNorm bias, OpenVINO folds the norm's per-channel scale into the FakeQuantize after it
    (a range of ±1.6 became ±160 on the channel whose scale is 0.01): the same numbers, which the IR check
    must recognise instead of refusing the artifact."""
    pytest.importorskip("openvino")
    path, data, _ = _outlier_block(tmp_path, gamma0=0.01)
    result = compile(path, data=data, backends=["openvino"], out_dir=tmp_path / "out", conform=True, progress=False)
    assert result.results["openvino"].error is None, result.results["openvino"].error
    assert result.conformance.passed, result.conformance.format_text()


def test_the_report_lists_every_artifact_against_fp32_under_any_output_name(tmp_path):
    """Output names are paths in real exports (PaddlePaddle's 'save_infer_model/scale_0.tmp_1')."""
    name = "save_infer_model/scale_0.tmp_1"
    path, data, _ = _outlier_block(tmp_path, output=name)
    result = compile(path, data=data, backends=["onnxruntime", "tflite"], out_dir=tmp_path / "out", conform=True,
                     progress=False)
    html = (tmp_path / "out" / "conformance.html").read_text()
    assert "onnxruntime artifact" in html and "tflite artifact" in html
    assert result.conformance.far_from_fp32(name) is None  # the ORT artifact is close to FP32
