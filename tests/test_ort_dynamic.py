"""``onnxruntime.quantization=dynamic``: the plan's int8 weights, activations quantized per batch at run time.

The reference is the legalized plan itself: legalization inserts ``DynamicQuantizeLinear →
DequantizeLinear`` before each dynamic MatMul as ordinary nodes, so the fake-quant reference (ORT
with every optimization off) computes the same quantization the fused kernels do; the artifact
may differ from it only by float rounding (int32 sums scaled once vs float sums).
"""

import numpy as np
import pytest
from conftest import MNIST, MNIST_CALIB, MNIST_EVAL
from ort_models import op_counts, optimized, write_tiny_encoder

from mpcompile.backends.api import Artifact, BackendOptionError, OnnxFileRunner, ReferenceRunner
from mpcompile.backends.registry import get_backend
from mpcompile.pipeline import calibrate, compile, conform, lower

DYNAMIC = {"onnxruntime": {"quantization": "dynamic"}}


def test_option_is_validated():
    backend = get_backend("onnxruntime")
    assert backend.options({"quantization": "dynamic"}).quantization == "dynamic"
    assert backend.options().quantization == "static"
    with pytest.raises(BackendOptionError, match="quantization"):
        backend.options({"quantization": "sometimes"})


def _dynamic(model, data, folder, **options):
    """The plan lowered with quantization=dynamic, and its conformance (the reference of the legalized plan)."""
    plan = calibrate(model, data, progress=False).plan
    values = {"onnxruntime": {"quantization": "dynamic", **options}}
    artifact = lower(plan, ["onnxruntime"], folder, backend_options=values)["onnxruntime"].artifact
    report = conform(plan, ["onnxruntime"], data, artifacts={"onnxruntime": artifact.path}, backend_options=values)
    return artifact, report


def test_encoder_dynamic_fuses_and_matches_its_reference(tmp_path):
    model, data = write_tiny_encoder(tmp_path)
    artifact, report = _dynamic(model, data, tmp_path / "out")
    assert report.passed, report.format_text()
    out = report.backends[0].outputs["y"]
    assert out.max_abs_diff < 1e-4, out.to_dict()  # float rounding only
    counts = op_counts(optimized(artifact.path, tmp_path))
    assert counts["DynamicQuantizeMatMul"] + counts["MatMulIntegerToFloat"] == 6, counts  # every weighted MatMul
    assert counts["QuantizeLinear"] == 0 and counts["QLinearMatMul"] == 0, counts
    assert counts["SkipLayerNormalization"] == 0 and counts["LayerNormalization"] == 3, counts  # residuals written as Sum
    changes = {d.change for d in artifact.deviations}
    assert "int8 static activations → int8 dynamic activations (uint8, per batch)" in changes
    assert artifact.metadata["ort_fusion"]["runtime_dequantized_weights"] == []


def test_compile_with_conformance_and_report(tmp_path):
    """End to end, HTML report included (the legalized plan has more nodes than the plan)."""
    model, data = write_tiny_encoder(tmp_path)
    result = compile(model, data, ["onnxruntime"], tmp_path / "out", conform=True, eval_data=data, progress=False,
                     backend_options=DYNAMIC)
    assert result.conformance.passed, result.conformance.format_text()
    assert (tmp_path / "out" / "conformance.html").is_file()


def test_legalized_plan_carries_the_dynamic_quantization(tmp_path):
    model, data = write_tiny_encoder(tmp_path)
    plan = calibrate(model, data, progress=False).plan
    backend = get_backend("onnxruntime")
    options = backend.options({"quantization": "dynamic"})
    legal, deviations = backend.legalize(plan, options)
    assert sum(n.op_type == "DynamicQuantizeLinear" for n in legal.nodes) == 4  # h0 (Q, K, V share one), c, h1, g4
    weights = {t.name for t in legal.quantized_tensors()}
    assert weights == {"wq", "wk", "wv", "wo", "w1", "w2", "emb"}  # weights and the embedding table only
    assert all(n.precision is None or n.precision.value == "fp32" or n.op_type in ("MatMul", "Gather") for n in legal.nodes)
    artifact = backend.lower(legal, tmp_path, stem="enc", options=options)
    with np.load(data) as z:
        feeds = {"ids": z["ids"][:16]}
    exposed = ["q0", "f0", "y"]
    ref = ReferenceRunner(legal).run(feeds, exposed)
    got = OnnxFileRunner(artifact).run(feeds, exposed)
    for name in exposed:
        assert np.allclose(got[name], ref[name], rtol=1e-4, atol=1e-5), (name, float(np.abs(got[name] - ref[name]).max()))
    # the same plan in a batch of its own: dynamic ranges depend on the batch, the reference follows it
    one = {"ids": feeds["ids"][:1]}
    assert np.allclose(OnnxFileRunner(artifact).run(one)["y"], ReferenceRunner(legal).run(one)["y"], rtol=1e-4, atol=1e-5)


def test_mnist_dynamic_gemms_become_dynamic_matmuls(tmp_path):
    plan = calibrate(MNIST, MNIST_CALIB, progress=False).plan
    artifact = lower(plan, ["onnxruntime"], tmp_path / "out", backend_options=DYNAMIC)["onnxruntime"].artifact
    report = conform(plan, ["onnxruntime"], MNIST_EVAL, artifacts={"onnxruntime": artifact.path}, backend_options=DYNAMIC)
    assert report.passed, report.format_text()
    assert report.backends[0].accuracy >= 0.98
    counts = op_counts(optimized(artifact.path, tmp_path))
    assert counts["DynamicQuantizeMatMul"] == 2, counts  # fc1, fc2 (2-D: a float MatMul + Add would become a Gemm)
    assert counts["Conv"] == 2 and counts["QLinearConv"] == 0, counts  # convolutions run FP32 in this mode
    subjects = {d.subject for d in artifact.deviations if d.change.startswith("Gemm")}
    assert subjects == {"/fc1/Gemm", "/fc2/Gemm"}


def test_runner_is_the_plain_onnx_runner(tmp_path):
    model, data = write_tiny_encoder(tmp_path)
    result = compile(model, data, ["onnxruntime"], tmp_path / "out", conform=False, progress=False, backend_options=DYNAMIC)
    artifact = result.artifacts["onnxruntime"]
    backend = get_backend("onnxruntime")
    runner = backend.runner(Artifact("onnxruntime", artifact.path, [artifact.path]), backend.options(DYNAMIC["onnxruntime"]))
    with np.load(data) as z:
        out = runner.run({"ids": z["ids"][:4]})
    assert out["y"].shape == (4, 32) and np.isfinite(out["y"]).all()


def test_skip_layernorm_fusion_is_an_option(tmp_path):
    model, data = write_tiny_encoder(tmp_path)
    artifact, report = _dynamic(model, data, tmp_path / "out", skip_layernorm_fusion=True)
    assert report.passed, report.format_text()
    counts = op_counts(optimized(artifact.path, tmp_path))
    assert counts["SkipLayerNormalization"] == 2 and counts["Sum"] == 0, counts  # ORT's fusion, when asked for
