"""u8 × s8 kernels that saturate on x86 CPUs without VNNI (``mpcompile.backends.cpu``), and the uint8 weights that avoid it.

Without VNNI, ONNX Runtime's MLAS and OpenVINO's oneDNN add pairs of u8 × s8 products into saturating
16-bit lanes (``vpmaddubsw``). Measured on an AVX2-only AMD EPYC: the MatMul below was 60 LSB off the plan
on both; stored as uint8 (zero-point + 128, the same numbers) its weights were exact. On a CPU with VNNI
both storages are exact, so the int8 expectation is checked only where this CPU saturates.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from mpcompile.backends.cpu import VNNI_FLAGS, cpu_flags, exact_u8s8, uint8_weights
from mpcompile.pipeline import calibrate, conform, lower


@pytest.fixture
def saturating_matmul(tmp_path):
    """x in [7, 8] (uint8 codes near 255) times per-column weights near full scale (±127): two such products
    in one 16-bit lane exceed 32767."""
    rng = np.random.default_rng(3)
    w = (rng.choice([-1.0, 1.0], (256, 32)) * rng.uniform(0.8, 1.0, (256, 32))).astype(np.float32)
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")], "sat",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 256])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 32])],
                              [numpy_helper.from_array(w, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path / "saturating.onnx"
    onnx.save(model, path)
    data = tmp_path / "x.npz"
    x = rng.uniform(7.0, 8.0, (16, 256)) * rng.choice([0.0, 1.0], (16, 256), p=[0.02, 0.98])
    np.savez(data, x=x.astype(np.float32))
    return path, data


def test_cpu_flags_decide_the_weight_storage():
    cpuinfo = "processor\t: 0\nflags\t\t: fpu sse avx2 avx512f avx512bw\nbugs\t: none\n"
    assert cpu_flags(cpuinfo) == {"fpu", "sse", "avx2", "avx512f", "avx512bw"}
    assert not cpu_flags(cpuinfo) & VNNI_FLAGS  # AVX-512 without VNNI saturates like AVX2
    assert cpu_flags("no flags here") is None
    assert uint8_weights("uint8") and not uint8_weights("int8")
    assert uint8_weights("auto") == (not exact_u8s8())


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_uint8_weights_are_exact_where_int8_weights_saturate(saturating_matmul, tmp_path, backend):
    if backend == "openvino":
        pytest.importorskip("openvino")
    model, data = saturating_matmul
    plan = calibrate(model, data, progress=False).plan
    off = {}
    for weights in ("uint8", "int8"):
        artifact = lower(plan, [backend], tmp_path / weights, backend_options={backend: {"weights": weights}})[backend].artifact
        assert artifact.metadata["weights"].startswith(weights)
        report = conform(plan, [backend], data, artifacts={backend: artifact.path})
        off[weights] = report.backends[0].outputs["y"].max_lsb
    assert off["uint8"] <= 1, off
    if not exact_u8s8():  # this CPU saturates: int8 weights are measurably wrong here, and auto avoids them
        assert off["int8"] > 4, off
        assert uint8_weights("auto")


def test_ort_fuses_uint8_weights(saturating_matmul, tmp_path):
    model, data = saturating_matmul
    plan = calibrate(model, data, progress=False).plan
    artifact = lower(plan, ["onnxruntime"], tmp_path, backend_options={"onnxruntime": {"weights": "uint8"}})["onnxruntime"].artifact
    assert artifact.metadata["ort_fusion"]["integer_kernels"] == {"QLinearMatMul": 1}  # an integer kernel still


def test_tflite_is_exact_with_int8_weights(saturating_matmul, tmp_path):
    """XNNPACK widens to 16 bits before multiplying: no option needed."""
    pytest.importorskip("ai_edge_litert")
    model, data = saturating_matmul
    plan = calibrate(model, data, progress=False).plan
    report = conform(plan, ["tflite"], data)
    assert report.backends[0].outputs["y"].max_lsb <= 1, report.format_text()
