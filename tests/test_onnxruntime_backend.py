"""The ONNX Runtime backend: integer kernels, accuracy on the real MNIST model, and a planted bug caught."""

import collections

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from conftest import MNIST, MNIST_CALIB, MNIST_EVAL
from onnx import numpy_helper

from mpcompile.pipeline import calibrate, compile, conform, lower


def _optimized_ops(path, tmp_path):
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    options.log_severity_level = 3
    ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return collections.Counter(n.op_type for n in onnx.load(tmp_path / "optimized.onnx").graph.node)


def test_mnist_compile_reaches_accuracy_and_conforms(tmp_path):
    result = compile(MNIST, MNIST_CALIB, ["onnxruntime"], tmp_path / "out", conform=True, eval_data=MNIST_EVAL, progress=False)
    report = result.conformance
    assert report.passed, report.format_text()
    ort_report = report.backends[0]
    assert ort_report.accuracy >= 0.967  # what ORT's quantize_static reaches on this architecture (docs/design.md)
    assert ort_report.outputs["logits"].max_lsb <= 1
    ops = _optimized_ops(result.artifacts["onnxruntime"].path, tmp_path)
    assert ops["QLinearConv"] == 2, ops  # true integer kernels after ORT's QDQ fusion
    assert ops["QGemm"] + ops["QLinearMatMul"] >= 1, ops


@pytest.mark.parametrize("weights", ["int8", "uint8"])
def test_weights_are_stored_as_integers_with_explicit_axis(tmp_path, weights):
    plan = calibrate(MNIST, MNIST_CALIB, progress=False).plan
    artifact = lower(plan, ["onnxruntime"], tmp_path, backend_options={"onnxruntime": {"weights": weights}})["onnxruntime"].artifact
    model = onnx.load(artifact.path)
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    dq_weights = [n for n in model.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in inits]
    assert dq_weights
    for node in dq_weights:
        data = inits[node.input[0]]
        assert data.dtype in (np.dtype(weights), np.int32)
        if inits[node.input[1]].ndim == 1 and inits[node.input[1]].size > 1:
            assert any(a.name == "axis" for a in node.attribute), node.name


def test_planted_scale_bug_is_caught_and_named(tmp_path):
    plan = calibrate(MNIST, MNIST_CALIB, progress=False).plan
    artifact = lower(plan, ["onnxruntime"], tmp_path / "good")["onnxruntime"].artifact
    model = onnx.load(artifact.path)
    # The bug: the QuantizeLinear of one tensor uses a scale 1.5x off from its DequantizeLinear.
    victim = "/pool1/MaxPool_output_0_scale"
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    model.graph.initializer.append(numpy_helper.from_array((inits[victim] * np.float32(1.5)).astype(np.float32), "corrupted_scale"))
    quantizers = [n for n in model.graph.node if n.op_type == "QuantizeLinear" and n.input[1] == victim]
    assert len(quantizers) == 1
    quantizers[0].input[1] = "corrupted_scale"
    bad = tmp_path / "bad.onnx"
    onnx.save(model, bad)
    report = conform(plan, ["onnxruntime"], MNIST_EVAL, artifacts={"onnxruntime": bad}, per_layer=True, samples=200)
    assert not report.passed
    backend = report.backends[0]
    assert backend.first_divergence == "/pool1/MaxPool_output_0", backend.failures
    assert any("/pool1/MaxPool_output_0" in msg for msg in backend.failures)


def test_uint8_and_per_tensor_plans_conform(tmp_path):
    for options in ({"activation_type": "uint8"}, {"per_channel": False}, {"method": "entropy"}, {"method": "percentile"}):
        plan = calibrate(MNIST, MNIST_CALIB, progress=False, samples=200, **options).plan
        report = conform(plan, ["onnxruntime"], MNIST_EVAL, samples=200, out_dir=tmp_path / str(len(options)))
        assert report.passed, (options, report.format_text())
        assert report.backends[0].accuracy >= 0.96, options


def test_artifact_name_says_what_it_holds(tmp_path):
    """A float plan gives no QDQ model: ORT's CPU provider runs FP16 as FP32, so the fp16 plan's file is .fp32.onnx."""
    int8 = compile(MNIST, MNIST_CALIB, ["onnxruntime"], tmp_path / "int8", conform=False, progress=False)
    assert int8.artifacts["onnxruntime"].path.name.endswith(".qdq.onnx")
    fp16 = compile(MNIST, MNIST_CALIB, ["onnxruntime"], tmp_path / "fp16", conform=False, progress=False, precision="fp16")
    artifact = fp16.artifacts["onnxruntime"]
    assert artifact.path.name.endswith(".fp32.onnx"), artifact.path
    assert artifact.metadata["format"] == "FP32 ONNX"
    model = onnx.load(artifact.path)
    assert not {n.op_type for n in model.graph.node} & {"QuantizeLinear", "DequantizeLinear"}
