"""TensorRT backend.

CPU tests (everywhere): the calibration cache format, legalization, the TensorRT-ready QDQ
ONNX (checked for TensorRT's rules and run in ONNX Runtime against the plan's reference),
the ``trtexec`` command lines, and both version paths (10.x, 11.x) driven against stand-in
``tensorrt`` modules that expose exactly the names each version has.

GPU tests (marker ``gpu``) build and run real engines; they skip, with the reason, where
``tensorrt`` does not import or no CUDA device exists. Nothing imports TensorRT at module
level.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import re
import sys
import weakref
from pathlib import Path
from types import ModuleType
from typing import Any

import mpcompile_tensorrt as mt
import numpy as np
import onnx
import pytest
from mpcompile_tensorrt import cache as trt_cache
from mpcompile_tensorrt import environment, lowering
from mpcompile_tensorrt.qdq import cache_scales, tensorrt_violations

from mpcompile.backends.base import Artifact
from mpcompile.errors import BackendError, BackendUnavailableError, PlanError
from mpcompile.ir import serde
from mpcompile.ir.quant import spec_from_range, weight_spec
from mpcompile.ir.types import Precision, QType
from mpcompile.testing.cases import CASES
from mpcompile.testing.testsuite import MODES

ROOT = Path(__file__).resolve().parent.parent
MODELS = ROOT / "models"


def _model_file(*names: str) -> Path:
    for name in names:
        if (MODELS / name).is_file():
            return MODELS / name
    return MODELS / names[0]


MNIST = MODELS / "mnist_cnn.onnx"
MNIST_CALIB = _model_file("mnist_cnn.calib.npz", "mnist_calib.npz")
MNIST_EVAL = _model_file("mnist_cnn.eval.npz", "mnist_eval.npz")

SUBMODULES = (
    "build_common", "cache", "calibrators", "cuda_memory", "environment", "legalize",
    "lowering", "options", "profiles", "qdq", "runner", "trt10", "trt11",
)


# ============================================================================ fixtures
@pytest.fixture(scope="module")
def mnist_plan():
    from mpcompile.pipeline import calibrate

    return calibrate(str(MNIST), str(MNIST_CALIB), progress=False).plan


@pytest.fixture(scope="module")
def mnist_legal(mnist_plan):
    return _legalize(mnist_plan)


def _opts(**options: Any):
    return mt.backend.options(options)


def _legalize(plan, **options: Any):
    return mt.backend.legalize(plan, _opts(**options))


def _lower(legal, out_dir: Path, stem: str = "model", **options: Any) -> Artifact:
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    return mt.backend.lower(legal, Path(out_dir), stem=stem, options=_opts(**options))


def _runner(artifact: Artifact, **options: Any):
    return mt.backend.runner(artifact, _opts(**options))


def _save_model(tmp_path: Path, model: onnx.ModelProto, name: str, samples: int = 48, seed: int = 0) -> tuple[Path, Path]:
    from modelgen import random_inputs

    path = tmp_path / f"{name}.onnx"
    onnx.save(model, path)
    data = tmp_path / f"{name}.npz"
    np.savez(data, **random_inputs(model, samples, seed=seed))
    return path, data


def _plan(tmp_path: Path, model: onnx.ModelProto, name: str, **calibrate_options: Any):
    from mpcompile.pipeline import calibrate

    path, data = _save_model(tmp_path, model, name)
    return calibrate(str(path), str(data), progress=False, **calibrate_options).plan, data


def _conform(plan, legal, deviations, artifact: Artifact, data: Path, options: dict | None = None, **kw: Any):
    from mpcompile.backends.targets import LowerResult, Target
    from mpcompile.conformance import check_artifacts
    from mpcompile.data import open_data

    lowered = {"tensorrt": LowerResult("tensorrt", artifact, legal, deviations, 0.0)}
    target = Target(mt.backend, _opts(**(options or {})))
    return check_artifacts(plan, lowered, {"tensorrt": target}, open_data(plan, str(data)), **kw)


# ============================================================================ import hygiene and availability
def test_every_module_imports_without_tensorrt():
    installed = importlib.util.find_spec("tensorrt") is not None
    for name in SUBMODULES:
        importlib.import_module(f"mpcompile_tensorrt.{name}")
    if not installed:
        assert "tensorrt" not in sys.modules
    caps = mt.backend.capabilities
    assert caps.symmetric_activations_only and caps.per_channel_weights
    assert caps.activation_qtypes == frozenset({QType.INT8})
    assert caps.float_precisions == frozenset({Precision.FP32, Precision.FP16, Precision.BF16})
    assert caps.supports("Conv", Precision.INT8) and not caps.supports("Conv", Precision.INT16)


def test_check_available_names_the_missing_package_and_the_fix(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # import tensorrt -> ImportError
    with pytest.raises(BackendUnavailableError) as info:
        mt.backend.check_available()
    message = str(info.value)
    assert "tensorrt" in message and "pip install 'mpcompile[tensorrt]'" in message and "NVIDIA" in message
    assert mt.backend.version() == "not installed"
    assert mt.backend.can_lower_without_runtime(_opts(onnx_only=True))
    assert not mt.backend.can_lower_without_runtime(_opts())


def test_check_available_without_a_cuda_device(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", FakeTensorRT("10.16.1"))
    monkeypatch.setattr(environment, "_PROBES", {lib: (lambda index: None) for lib in environment.LIBRARIES})
    with pytest.raises(BackendUnavailableError, match="no CUDA device"):
        mt.backend.check_available()


def test_engine_lowering_without_tensorrt_is_a_clean_user_error(monkeypatch, mnist_legal, tmp_path):
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    with pytest.raises(BackendUnavailableError, match="onnx|pip install"):
        _lower(mnist_legal[0], tmp_path)


# ============================================================================ calibration cache
def _positive_float32s(n: int, seed: int) -> np.ndarray:
    bits = np.random.default_rng(seed).integers(1, 0x7F800000, size=n, dtype=np.uint32)  # every positive finite pattern
    return bits.view(np.float32)


def test_cache_round_trip_is_bit_exact():
    values = np.concatenate(
        [
            _positive_float32s(4000, 0),
            np.array([np.finfo(np.float32).tiny, np.finfo(np.float32).smallest_subnormal, np.finfo(np.float32).max,
                      1 / 127, 1.0, 2.0**-20], dtype=np.float32),
        ]
    )
    scales = {f"tensor_{i}/out:0 ({i})": v for i, v in enumerate(values)}
    text = trt_cache.write_cache(scales, "10.3.0.26", "entropy")
    lines = text.splitlines()
    assert lines[0] == "TRT-100300-EntropyCalibration2"
    assert all(re.fullmatch(r".+: [0-9a-f]{8}", line) for line in lines[1:])
    parsed = trt_cache.read_cache(text)
    assert parsed.version == 100300 and parsed.algorithm == "entropy"
    assert list(parsed.scales) == list(scales)
    got = np.array([parsed.scales[k] for k in scales], dtype=np.float32)
    assert np.array_equal(got.view(np.uint32), values.view(np.uint32))
    assert parsed.to_text() == text


def test_cache_known_encoding_and_headers():
    assert trt_cache.scale_hex(np.float32(1 / 127)) == "3c010204"  # big-endian float32 bits of amax/127 for amax 1
    assert trt_cache.scale_hex(0.5) == "3f000000"
    assert trt_cache.hex_scale("3c010204") == np.float32(1 / 127)
    assert trt_cache.scale_from_amax(1.0) == np.float32(1 / 127)
    assert trt_cache.header("10.16.1", "minmax") == "TRT-101601-MinMaxCalibration"
    assert trt_cache.header(100300) == "TRT-100300-EntropyCalibration2"
    assert trt_cache.nv_tensorrt_version("8.6.1.6") == 8601
    assert trt_cache.nv_tensorrt_version("11.1.0") == 110100


def test_cache_reads_tensorrt_written_files():
    # As TensorRT writes them: names with ": " and brackets; some writers drop leading zeros.
    text = "TRT-8601-EntropyCalibration2\r\ndata: 3c008912\n(Unnamed Layer* 4) [Fully Connected]_output: 3d65992f\nx: 20aac8\n"
    parsed = trt_cache.read_cache(text.encode())
    assert parsed.version == 8601
    assert set(parsed.scales) == {"data", "(Unnamed Layer* 4) [Fully Connected]_output", "x"}
    assert trt_cache.scale_hex(parsed.scales["x"]) == "0020aac8"
    assert parsed.amax("data") == pytest.approx(float(trt_cache.hex_scale("3c008912")) * 127)


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "empty"),
        ("TRT-EntropyCalibration2\n", "header"),
        ("TRT-100300-EntropyCalibration2\nx 3c010204\n", "line 2"),
        ("TRT-100300-EntropyCalibration2\nx: 3c01020g\n", "line 2"),
    ],
)
def test_cache_rejects_malformed_files(text, message):
    with pytest.raises(BackendError, match=message):
        trt_cache.read_cache(text)


def test_cache_refuses_unusable_scales():
    with pytest.raises(BackendError, match="positive"):
        trt_cache.write_cache({"x": 0.0}, "10.3.0")
    with pytest.raises(BackendError, match="line break"):
        trt_cache.write_cache({"a\nb": 1.0}, "10.3.0")
    with pytest.raises(BackendError, match="algorithm"):
        trt_cache.header("10.3.0", "percentile")


def test_plan_cache_carries_the_plan_scales(mnist_legal, tmp_path):
    legal, _ = mnist_legal
    artifact = mt.lower_onnx_only(legal, tmp_path, stem="mnist", legalize=False, tensorrt_version="10.8.0")
    parsed = trt_cache.load_cache(tmp_path / "mnist.calib.cache")
    assert parsed.version == 100800 and artifact.metadata["calibration_cache_header"] == "TRT-100800-EntropyCalibration2"
    for tensor in legal.activations():
        if tensor.quant is not None:
            assert parsed.scales[tensor.name].view(np.uint32) == np.float32(tensor.quant.scale).view(np.uint32)
    # A Conv output that only feeds its (fused) Relu carries the Relu's scale.
    relu = legal.node("/relu1/Relu")
    assert parsed.scales[relu.inputs[0]] == np.float32(legal.tensors[relu.outputs[0]].quant.scale)
    assert set(parsed.scales) == set(cache_scales(legal))


# ============================================================================ legalization
def test_legalization_makes_activations_symmetric_from_the_statistics(mnist_plan, mnist_legal):
    legal, deviations = mnist_legal
    changed = {d.subject for d in deviations if d.kind == "tensor"}
    for tensor in mnist_plan.activations():
        before, after = tensor.quant, legal.tensors[tensor.name].quant
        if before is None:
            continue
        assert after.qtype == QType.INT8 and int(after.zero_point) == 0 and after.symmetric
        if int(before.zero_point) != 0:
            assert tensor.name in changed
            amax = before.provenance["symmetric_amax"]  # re-derived from the calibration statistics
            expected = spec_from_range(-amax, amax, QType.INT8, symmetric=True)
            assert after.scale.view(np.uint32) == expected.scale.view(np.uint32)
    reasons = " ".join(d.reason for d in deviations)
    assert "symmetric" in reasons and "zero-point 0" in reasons
    for tensor in legal.initializers():  # weights untouched, biases follow the new input scales
        spec = tensor.quant
        if spec is not None and spec.qtype == QType.INT8:
            assert spec == mnist_plan.tensors[tensor.name].quant and spec.axis == 0
    conv = legal.node("/conv1/Conv")
    bias = legal.tensors[conv.inputs[2]].quant
    s_in, s_w = legal.tensors[conv.inputs[0]].quant.scale, legal.tensors[conv.inputs[1]].quant.scale
    assert np.array_equal(bias.scale, (np.float32(s_in) * s_w).astype(np.float32))
    again, more = _legalize(legal)
    assert more == [] and again == legal  # idempotent


def test_legalization_uint8_and_constant_operands(tmp_path):
    from modelgen import residual_mlp

    plan, _ = _plan(tmp_path, residual_mlp(), "mlp", activation_type="uint8")
    legal, deviations = _legalize(plan)
    assert tensorrt_violations(legal) == []
    by_subject = {d.subject: d for d in deviations}
    assert "uint8" in by_subject["x"].change and "int8" in by_subject["x"].change
    b1 = legal.tensors["b1"].quant  # the constant operand of an Add: symmetric narrow range like a weight
    assert b1.qtype == QType.INT8 and int(b1.zero_point) == 0 and b1.narrow_range
    assert "zero-point 0" in by_subject["b1"].reason
    assert b1.scale == weight_spec(plan.tensors["b1"].value, None).scale


def test_legalization_int16_leftovers_and_per_channel_constants(mnist_legal, tmp_path):
    from modelgen import residual_mlp

    # An int16 spec that survives the shared pass (next to an int8 node) becomes int8.
    legal = mnist_legal[0].copy()
    name = "/relu2/Relu_output_0"
    amax = legal.tensors[name].quant.provenance["symmetric_amax"]
    legal.tensors[name].quant = spec_from_range(-amax, amax, QType.INT16, symmetric=True, provenance={"symmetric_amax": amax})
    fixed, deviations = _legalize(legal)
    assert fixed.tensors[name].quant.qtype == QType.INT8
    assert any(d.subject == name and "int16 → int8" in d.reason for d in deviations)
    # Per-channel scales on a constant that is not a weight become per tensor.
    plan, _ = _plan(tmp_path, residual_mlp(), "mlp")
    plan.tensors["b1"].quant = weight_spec(plan.tensors["b1"].value, 0)
    fixed, deviations = _legalize(plan)
    assert fixed.tensors["b1"].quant.axis is None
    assert any(d.subject == "b1" and "per-tensor" in d.reason for d in deviations)
    # int16 nodes: no int16 node or spec is left (the shared pass picks their fallback precision).
    from modelgen import small_cnn

    plan16, _ = _plan(tmp_path, small_cnn(), "cnn16", precision="int16")
    fixed, deviations = _legalize(plan16)
    assert tensorrt_violations(fixed) == []
    assert all(n.precision != Precision.INT16 for n in fixed.nodes)
    assert any(d.kind == "node" and "int16" in d.change for d in deviations)


def test_lowering_an_unlegalized_plan_is_refused(mnist_plan, tmp_path):
    with pytest.raises(PlanError, match="legalize"):
        _lower(mnist_plan, tmp_path, onnx_only=True)


# ============================================================================ the TensorRT-ready QDQ ONNX
def assert_tensorrt_ready(path: Path) -> dict[str, int]:
    """TensorRT's Q/DQ rules on a written file; returns counts of what was checked."""
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    graph = serde.read_graph(path)
    assert graph.opset_imports.get("", 0) >= 13
    producers = graph.producers()
    counts = {"qdq": 0, "per_channel": 0, "weights": 0}
    for node in graph.nodes:
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear"):
            continue
        counts["qdq"] += 1
        assert node.domain in ("", "ai.onnx"), node.name
        assert len(node.inputs) == 3 and node.inputs[2], f"{node.name}: zero-point must be explicit"
        scale, zero = graph.tensors[node.inputs[1]], graph.tensors[node.inputs[2]]
        assert zero.is_constant and zero.value.dtype == np.int8 and not np.any(zero.value), node.name
        assert scale.is_constant and scale.value.dtype == np.float32 and np.all(scale.value > 0)
        assert zero.value.shape == scale.value.shape
        if scale.value.size > 1:
            counts["per_channel"] += 1
            assert "axis" in node.attrs, f"{node.name}: per-channel Q/DQ needs an explicit axis"
            data = graph.tensors[node.inputs[0]]
            assert data.is_constant and data.value.dtype == np.int8, "per-channel only on (int8) weights"
            assert data.value.shape[node.attrs["axis"]] == scale.value.size
            assert np.all(np.abs(data.value.astype(np.int32)) <= 127), "weights are narrow range"
    for node in graph.nodes:
        if node.op_type in ("Conv", "ConvTranspose", "Gemm", "MatMul"):
            w = producers.get(node.inputs[1])
            if w is not None and w.op_type == "DequantizeLinear":
                counts["weights"] += 1
                x = producers.get(node.inputs[0])
                assert x is not None and x.op_type == "DequantizeLinear", f"{node.name}: quantized input expected"
    return counts


def test_mnist_qdq_onnx_is_tensorrt_ready_accurate_and_conforms(mnist_plan, mnist_legal, tmp_path):
    legal, deviations = mnist_legal
    artifact = mt.lower_onnx_only(mnist_plan, tmp_path, stem="mnist")
    assert artifact.path.name == "mnist.trt.onnx" and artifact.metadata["onnx_only"] is True
    assert {f.name for f in artifact.files} == {"mnist.trt.onnx", "mnist.fp32.onnx", "mnist.calib.cache"}
    assert [d.to_dict() for d in artifact.deviations] == [d.to_dict() for d in deviations]
    counts = assert_tensorrt_ready(artifact.path)
    assert counts["weights"] == 4 and counts["per_channel"] == 4
    assert json.loads(json.dumps(artifact.to_dict()))  # manifest-serializable

    report = _conform(mnist_plan, legal, deviations, artifact, MNIST_EVAL, per_layer=True)
    trt = report.backends[0]
    assert report.passed, report.format_text()
    assert trt.accuracy >= 0.965, report.format_text()
    assert trt.outputs["logits"].max_lsb <= 1.0
    assert trt.per_layer and all(acc.passed() for acc in trt.per_layer.values())


def test_small_conv_model_qdq_onnx(tmp_path):
    from modelgen import small_cnn

    plan, data = _plan(tmp_path, small_cnn(with_bn=True), "cnn")
    legal, deviations = _legalize(plan)
    artifact = mt.lower_onnx_only(legal, tmp_path / "out", legalize=False)
    counts = assert_tensorrt_ready(artifact.path)
    assert counts["weights"] == 3
    graph = serde.read_graph(artifact.path)
    assert graph.inputs == plan.inputs and graph.outputs == plan.outputs  # I/O names unchanged
    bias_name = legal.node("conv1").inputs[2]  # BatchNorm folded into it
    bias = graph.tensors[bias_name]
    assert bias.value.dtype == np.float32  # float bias holding the plan's int32 values
    spec = legal.tensors[bias_name].quant
    assert spec.qtype == QType.INT32 and np.array_equal(bias.value, spec.fake_quantize(plan.tensors[bias_name].value))
    report = _conform(plan, legal, deviations, artifact, data)
    assert report.passed and report.backends[0].outputs["logits"].max_lsb == 0.0, report.format_text()


def test_residual_add_reads_qdq_on_both_inputs(tmp_path):
    from modelgen import residual_mlp

    plan, data = _plan(tmp_path, residual_mlp(), "mlp")
    legal, deviations = _legalize(plan)
    artifact = mt.lower_onnx_only(legal, tmp_path / "out", legalize=False)
    assert_tensorrt_ready(artifact.path)
    graph = serde.read_graph(artifact.path)
    producers = graph.producers()
    residual = graph.node("residual")
    assert [producers[i].op_type for i in residual.inputs] == ["DequantizeLinear", "DequantizeLinear"]
    assert artifact.metadata["placement"]["notes"] == []  # no Add left unfusable
    report = _conform(plan, legal, deviations, artifact, data)
    assert report.passed, report.format_text()


def test_half_precision_nodes_are_typed_tensors(tmp_path):
    from modelgen import small_cnn

    plan, data = _plan(tmp_path, small_cnn(softmax=True), "mixed", keep=["conv2=fp16", "gap=fp16", "fc=fp32"])
    legal, deviations = _legalize(plan)
    artifact = mt.lower_onnx_only(legal, tmp_path / "out", legalize=False)
    assert_tensorrt_ready(artifact.path)
    graph = serde.read_graph(artifact.path)
    conv2 = graph.node("conv2")
    assert graph.tensors[conv2.inputs[1]].value.dtype == np.float16  # FP16 weights stored as FP16
    producers = graph.producers()
    assert producers[conv2.inputs[0]].op_type == "Cast" and producers[conv2.inputs[0]].attrs["to"] == 10
    casts = [n for n in graph.nodes if n.op_type == "Cast"]
    assert len(casts) == 4  # in/out of conv2 and of gap
    # ONNX Runtime runs the FP16 kernels as written …
    with _runner(artifact) as runner:
        runner.run({"input": np.zeros((2, 3, 16, 16), np.float32)})
        assert not runner.emulated
    # … and, with FP16 emulated as the reference does (float32 math between FP16 roundings), it conforms exactly.
    report = _conform(plan, legal, deviations, artifact, data, options={"emulate_half": True})
    assert report.passed and report.backends[0].outputs["probs"].max_lsb == 0.0, report.format_text()
    native = _conform(plan, legal, deviations, artifact, data)
    assert native.backends[0].outputs["probs"].cosine > 0.999


def test_bf16_nodes_run_emulated_on_cpu(tmp_path):
    from modelgen import small_cnn

    plan, data = _plan(tmp_path, small_cnn(), "bf16", keep=["conv2=bf16"])
    legal, deviations = _legalize(plan)
    artifact = mt.lower_onnx_only(legal, tmp_path / "out", legalize=False)
    assert_tensorrt_ready(artifact.path)
    graph = serde.read_graph(artifact.path)
    assert graph.tensors[graph.node("conv2").inputs[1]].value.dtype.name == "bfloat16"
    report = _conform(plan, legal, deviations, artifact, data)
    assert report.passed, report.format_text()
    with _runner(artifact) as runner:
        runner.run({"input": np.zeros((1, 3, 16, 16), np.float32)})
        assert runner.emulated  # no BF16 Conv kernel on ONNX Runtime's CPU provider


@pytest.mark.parametrize("mode", sorted(MODES))
@pytest.mark.parametrize("case", sorted(CASES))
def test_conformance_suite_cases_onnx_only(case, mode, tmp_path):
    """mpcompile's conformance suite (every case × precision mode) on the TensorRT-ready ONNX, on CPU."""
    plan, data = _plan(tmp_path, CASES[case](), case, **MODES[mode])
    legal, deviations = _legalize(plan)
    artifact = mt.lower_onnx_only(legal, tmp_path / "out", legalize=False)
    if any(t.quant is not None for t in legal.tensors.values()):
        assert_tensorrt_ready(artifact.path)
    report = _conform(plan, legal, deviations, artifact, data, batch_size=8)
    assert report.passed, report.format_text()


# ============================================================================ trtexec commands and options
def test_trtexec_command_lines(mnist_legal, tmp_path):
    artifact = mt.lower_onnx_only(mnist_legal[0], tmp_path, legalize=False, workspace=2 << 30)
    commands = artifact.metadata["trtexec"]
    shapes = "--minShapes=input:1x1x28x28 --optShapes=input:32x1x28x28 --maxShapes=input:32x1x28x28"
    assert commands["11.x"] == (
        f"trtexec --onnx=model.trt.onnx --stronglyTyped {shapes} --memPoolSize=workspace:2048 --saveEngine=model.engine"
    )
    assert commands["10.x explicit"] == commands["11.x"]
    assert commands["10.x implicit"] == (
        f"trtexec --onnx=model.fp32.onnx --int8 --calib=model.calib.cache {shapes} "
        f"--optShapesCalib=input:32x1x28x28 --memPoolSize=workspace:2048 --saveEngine=model.engine"
    )
    for flag in ("--int8", "--fp16", "--bf16", "--best", "--calib"):  # removed in 11 / meaningless when strongly typed
        assert flag not in commands["11.x"]
    for name in ("model.trt.onnx", "model.fp32.onnx", "model.calib.cache"):
        assert (tmp_path / name).is_file()
    assert artifact.metadata["profiles"]["input"] == {"min": [1, 1, 28, 28], "opt": [32, 1, 28, 28], "max": [32, 1, 28, 28], "dynamic": True}


def test_trtexec_mixed_precision_and_static_shapes(tmp_path):
    from modelgen import small_cnn

    plan, _ = _plan(tmp_path, small_cnn(batch=4), "static", keep=["conv2=fp16", "fc=fp32"])
    legal, _ = _legalize(plan)
    artifact = mt.lower_onnx_only(legal, tmp_path / "out", legalize=False, batch_size=8)
    commands = artifact.metadata["trtexec"]
    implicit = commands["10.x implicit"]
    assert "--int8 --fp16 --calib=model.calib.cache" in implicit
    assert "--precisionConstraints=prefer --layerPrecisions=conv2:fp16,fc:fp32" in implicit
    assert "Shapes" not in implicit and "Shapes" not in commands["11.x"]  # the batch is fixed: no profile
    assert "--fp16" not in commands["11.x"]  # FP16 comes from the tensor types


def test_profiles_from_options_and_errors(mnist_legal, tmp_path):
    legal = mnist_legal[0]
    shapes = {"input": {"min": (1, 1, 28, 28), "opt": (8, 1, 28, 28), "max": (64, 1, 28, 28)}}
    artifact = mt.lower_onnx_only(legal, tmp_path, legalize=False, shapes=shapes)
    assert "--maxShapes=input:64x1x28x28" in artifact.metadata["trtexec"]["11.x"]
    artifact = mt.lower_onnx_only(legal, tmp_path, legalize=False, batch_size=16, max_batch_size=128)
    assert artifact.metadata["profiles"]["input"]["max"] == [128, 1, 28, 28]
    with pytest.raises(BackendError, match="no option 'unrelated_option'; valid options: batch_size"):
        mt.lower_onnx_only(legal, tmp_path, legalize=False, unrelated_option=1)
    for bad, message in [
        ({"shapes": {"input": (1, 3, 28, 28)}}, "dim 1 must be 1"),
        ({"shapes": {"nope": (1, 1, 28, 28)}}, "not inputs"),
        ({"quantization": "dynamic"}, "explicit"),
        ({"calibrator": "percentile"}, "'plan', 'entropy' or 'minmax'"),
        ({"quantization": "explicit", "calibrator": "entropy"}, "implicit"),
        ({"batch_size": 0}, "greater than or equal to 1"),
        ({"max_batch_size": 4}, "max_batch_size"),
    ]:
        with pytest.raises(BackendError, match=message):
            mt.lower_onnx_only(legal, tmp_path, legalize=False, **bad)


# ============================================================================ stand-in TensorRT modules
REMOVED_IN_11 = frozenset(
    {
        "tensorrt.IInt8Calibrator",
        "tensorrt.IInt8EntropyCalibrator",
        "tensorrt.IInt8EntropyCalibrator2",
        "tensorrt.IInt8MinMaxCalibrator",
        "tensorrt.IInt8LegacyCalibrator",
        "tensorrt.CalibrationAlgoType",
        "BuilderFlag.FP16",
        "BuilderFlag.BF16",
        "BuilderFlag.INT8",
        "BuilderFlag.FP8",
        "BuilderFlag.OBEY_PRECISION_CONSTRAINTS",
        "BuilderFlag.PREFER_PRECISION_CONSTRAINTS",
        "IBuilderConfig.int8_calibrator",
        "IBuilderConfig.set_calibration_profile",
        "IBuilderConfig.get_calibration_profile",
        "ITensor.set_dynamic_range",
        "ITensor.dynamic_range",
        "ILayer.precision",
        "ILayer.set_output_type",
        "ILayer.reset_precision",
    }
)


class Api:
    """A recorded TensorRT API surface: the names one version has, and every name the code touched."""

    def __init__(self, version: str, removed: frozenset[str]) -> None:
        self.version = version
        self.removed = removed
        self.touched: list[str] = []

    def touch(self, name: str) -> None:
        self.touched.append(name)
        if name in self.removed:
            raise AttributeError(f"TensorRT {self.version} has no {name}")


class Obj:
    """Base of stand-in API objects: public attribute reads and writes go through ``Api.touch``."""

    _kind = "Obj"

    def __init__(self, api: Api) -> None:
        object.__setattr__(self, "_api", api)

    def __getattribute__(self, name: str) -> Any:
        if not name.startswith("_"):
            object.__getattribute__(self, "_api").touch(f"{type(self)._kind}.{name}")
        return object.__getattribute__(self, name)

    def __setattr__(self, name: str, value: Any) -> None:
        if not name.startswith("_"):
            object.__getattribute__(self, "_api").touch(f"{type(self)._kind}.{name}")
        object.__setattr__(self, name, value)


def _enum(api: Api, kind: str, members: list[str] | dict[str, Any]) -> Obj:
    values = members if isinstance(members, dict) else {m: f"{kind}.{m}" for m in members}
    return type(kind, (Obj,), {"_kind": kind, **values})(api)


class FakeLogger:
    WARNING = "WARNING"

    def __init__(self, severity: str) -> None:
        self.severity = severity


class FakeCalibratorBase:
    """What TensorRT 10's pybind11 trampolines need: the base ``__init__`` must run."""

    def __init__(self) -> None:
        self._base_initialized = True


class IInt8EntropyCalibrator2(FakeCalibratorBase):
    pass


class IInt8MinMaxCalibrator(FakeCalibratorBase):
    pass


class ITensor(Obj):
    _kind = "ITensor"

    def __init__(self, api: Api, name: str, shape: tuple[int, ...]) -> None:
        super().__init__(api)
        self._name, self._shape = name, shape

    @property
    def name(self) -> str:
        return self._name

    @property
    def shape(self) -> tuple[int, ...]:
        return self._shape

    def set_dynamic_range(self, lo: float, hi: float) -> bool:
        return True


class ILayer(Obj):
    _kind = "ILayer"
    precision = None

    def __init__(self, api: Api, name: str) -> None:
        super().__init__(api)
        object.__setattr__(self, "name", name)


class INetworkDefinition(Obj):
    _kind = "INetworkDefinition"

    def __init__(self, api: Api, flags: int) -> None:
        super().__init__(api)
        self._flags, self._inputs, self._layers = flags, [], []

    @property
    def num_inputs(self) -> int:
        return len(self._inputs)

    def get_input(self, index: int) -> ITensor:
        return self._inputs[index]

    @property
    def num_layers(self) -> int:
        return len(self._layers)

    def get_layer(self, index: int) -> ILayer:
        return self._layers[index]


class OnnxParser(Obj):
    _kind = "OnnxParser"

    def __init__(self, api: Api, network: INetworkDefinition, logger: FakeLogger) -> None:
        super().__init__(api)
        self._network = network

    def parse_from_file(self, path: str) -> bool:
        graph = serde.read_graph(path)
        net = self._network
        net._source = Path(path).name
        net._inputs = [ITensor(net._api, n, tuple(d if isinstance(d, int) else -1 for d in graph.tensors[n].shape)) for n in graph.inputs]
        net._layers = [ILayer(net._api, n.name) for n in graph.nodes]
        net._has_qdq = any(n.op_type == "QuantizeLinear" for n in graph.nodes)
        net._parser = weakref.ref(self)  # TensorRT's parser owns the weights of what it parsed
        return True

    @property
    def num_errors(self) -> int:
        return 0

    def get_error(self, index: int) -> str:
        raise IndexError(index)


class IOptimizationProfile(Obj):
    _kind = "IOptimizationProfile"

    def __init__(self, api: Api) -> None:
        super().__init__(api)
        self._shapes: dict[str, tuple] = {}

    def set_shape(self, name: str, lo: Any, opt: Any, hi: Any) -> None:
        self._shapes[name] = (tuple(lo), tuple(opt), tuple(hi))


class IBuilderConfig(Obj):
    _kind = "IBuilderConfig"
    int8_calibrator = None

    def __init__(self, api: Api) -> None:
        super().__init__(api)
        self._flags: list[str] = []
        self._pools: dict[str, int] = {}
        self._profiles: list[IOptimizationProfile] = []
        self._calibration_profile = None

    def set_memory_pool_limit(self, pool: str, size: int) -> None:
        self._pools[pool] = size

    def set_flag(self, flag: str) -> None:
        self._flags.append(flag)

    def add_optimization_profile(self, profile: IOptimizationProfile) -> int:
        self._profiles.append(profile)
        return len(self._profiles) - 1

    def set_calibration_profile(self, profile: IOptimizationProfile) -> bool:
        self._calibration_profile = profile
        return True


class IBuilder(Obj):
    _kind = "IBuilder"

    def __init__(self, api: Api, logger: FakeLogger) -> None:
        super().__init__(api)
        self._module: FakeTensorRT = api.module  # type: ignore[attr-defined]

    def create_network(self, flags: int = 0) -> INetworkDefinition:
        return INetworkDefinition(self._api, flags)

    def create_builder_config(self) -> IBuilderConfig:
        return IBuilderConfig(self._api)

    def create_optimization_profile(self) -> IOptimizationProfile:
        return IOptimizationProfile(self._api)

    def build_serialized_network(self, network: INetworkDefinition, config: IBuilderConfig) -> bytearray | None:
        module = self._module
        module.last_build = {"network": network, "config": config}
        if network._parser() is None:
            raise AssertionError("the ONNX parser was freed before the build: its weights are gone")
        calibrator = object.__getattribute__(config, "__dict__").get("int8_calibrator")
        if calibrator is not None:
            if not getattr(calibrator, "_base_initialized", False):
                return None  # a real trampoline would crash here
            if not self._calibrate(calibrator, network, config):
                return None
        return bytearray(f"FAKE-ENGINE {self._api.version} {network._source}".encode())

    def _calibrate(self, calibrator: Any, network: INetworkDefinition, config: IBuilderConfig) -> bool:
        module = self._module
        cache = calibrator.read_calibration_cache()
        algorithm = "entropy" if isinstance(calibrator, IInt8EntropyCalibrator2) else "minmax"
        if cache:
            parsed = trt_cache.read_cache(bytes(cache))
            header = trt_cache.header(self._api.version, algorithm)
            if bytes(cache).decode().split("\n", 1)[0] == header:
                module.calibration = {"from_cache": dict(parsed.scales)}
                return True
        names = [t.name for t in network._inputs]
        profile = config._calibration_profile
        batches = []
        while True:
            pointers = calibrator.get_batch(names)
            if not pointers:
                break
            for name, pointer in zip(names, pointers):
                shape = profile._shapes[name][1] if profile is not None else network._inputs[0].shape
                raw = module.memory.by_ptr[int(pointer)]
                batches.append((name, raw[: int(np.prod(shape)) * 4].view(np.float32).reshape(shape).copy()))
        module.calibration = {"batches": batches}
        if not batches:
            return False
        scales = {name: np.float32(np.abs(np.concatenate([b.ravel() for n, b in batches if n == name])).max() / 127) for name in names}
        calibrator.write_calibration_cache(memoryview(trt_cache.write_cache(scales, self._api.version, algorithm).encode()))
        return True


class IExecutionContext(Obj):
    _kind = "IExecutionContext"

    def __init__(self, api: Api, engine: ICudaEngine) -> None:
        super().__init__(api)
        self._engine, self._shapes, self._addresses, self._calls = engine, {}, {}, []

    def set_input_shape(self, name: str, shape: tuple[int, ...]) -> bool:
        self._calls.append("set_input_shape")
        self._shapes[name] = tuple(shape)
        return True

    def set_tensor_address(self, name: str, address: int) -> bool:
        self._calls.append(f"set_tensor_address:{name}")
        self._addresses[name] = int(address)
        return True

    def infer_shapes(self) -> list[str]:
        return []

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        return (self._shapes["input"][0], 10)

    def execute_async_v3(self, stream_handle: int) -> bool:
        self._calls.append(f"execute_async_v3:{stream_handle}")
        memory = self._engine._module.memory
        n = self._shapes["input"][0]
        x = memory.by_ptr[self._addresses["input"]][: n * 784 * 4].view(np.float32).reshape(n, -1)
        out = np.repeat(x.sum(axis=1, keepdims=True), 10, axis=1).astype(np.float32)
        memory.by_ptr[self._addresses["logits"]][: out.nbytes] = out.reshape(-1).view(np.uint8)
        return True


class ICudaEngine(Obj):
    _kind = "ICudaEngine"

    def __init__(self, api: Api, module: FakeTensorRT) -> None:
        super().__init__(api)
        self._module = module

    @property
    def num_io_tensors(self) -> int:
        return 2

    def get_tensor_name(self, index: int) -> str:
        return ["input", "logits"][index]

    def get_tensor_mode(self, name: str) -> str:
        modes = self._module.TensorIOMode
        return modes.INPUT if name == "input" else modes.OUTPUT

    def get_tensor_dtype(self, name: str) -> str:
        return "DataType.FLOAT"

    def create_execution_context(self) -> IExecutionContext:
        self._module.context = IExecutionContext(self._api, self)
        return self._module.context


class Runtime(Obj):
    _kind = "IRuntime"

    def __init__(self, api: Api, logger: FakeLogger) -> None:
        super().__init__(api)

    def deserialize_cuda_engine(self, data: bytes) -> ICudaEngine | None:
        return ICudaEngine(self._api, self._api.module) if data.startswith(b"FAKE-ENGINE") else None  # type: ignore[attr-defined]


class FakeTensorRT(ModuleType):
    """A ``tensorrt`` module for one version: 10.x has the implicit-INT8 API, 11.x does not."""

    def __init__(self, version: str) -> None:
        super().__init__("tensorrt")
        major = int(version.split(".")[0])
        api = Api(version, REMOVED_IN_11 if major >= 11 else frozenset())
        api.module = self  # type: ignore[attr-defined]
        flags = ["TF32", "REFIT", "SPARSE_WEIGHTS", "DIRECT_IO"] + (
            [] if major >= 11 else ["FP16", "BF16", "INT8", "OBEY_PRECISION_CONSTRAINTS", "PREFER_PRECISION_CONSTRAINTS"]
        )
        names = {
            "Logger": FakeLogger,
            "Builder": lambda logger: IBuilder(api, logger),
            "OnnxParser": lambda network, logger: OnnxParser(api, network, logger),
            "Runtime": lambda logger: Runtime(api, logger),
            "BuilderFlag": _enum(api, "BuilderFlag", flags),
            "MemoryPoolType": _enum(api, "MemoryPoolType", ["WORKSPACE", "TACTIC_SHARED_MEMORY"]),
            "NetworkDefinitionCreationFlag": _enum(api, "NetworkDefinitionCreationFlag", {"EXPLICIT_BATCH": 0, "STRONGLY_TYPED": 1}),
            "TensorIOMode": _enum(api, "TensorIOMode", ["INPUT", "OUTPUT", "NONE"]),
            "float32": "DataType.FLOAT",
            "float16": "DataType.HALF",
            "bfloat16": "DataType.BF16",
            "int8": "DataType.INT8",
            "nptype": lambda dtype: {"DataType.FLOAT": np.float32, "DataType.HALF": np.float16}[dtype],
            "IInt8EntropyCalibrator2": IInt8EntropyCalibrator2,
            "IInt8MinMaxCalibrator": IInt8MinMaxCalibrator,
            "CalibrationAlgoType": object(),
        }
        self.__dict__["_names"] = names
        self.__dict__["_api"] = api
        self.__version__ = version
        self.memory = None
        self.calibration = None
        self.last_build = None
        self.context = None

    def __getattr__(self, name: str) -> Any:  # only called for names not set on the instance
        if name.startswith("__"):
            raise AttributeError(name)
        api = self.__dict__["_api"]
        api.touch(f"tensorrt.{name}")
        try:
            return self.__dict__["_names"][name]
        except KeyError:
            raise AttributeError(f"module 'tensorrt' {api.version} has no attribute {name!r}") from None

    @property
    def touched(self) -> set[str]:
        return set(self.__dict__["_api"].touched)


class HostBuffers:
    """Stands in for ``cuda_memory.DeviceBuffers``: host arrays whose addresses play device pointers."""

    library = "host"

    def __init__(self) -> None:
        self.arrays: dict[str, np.ndarray] = {}
        self.by_ptr: dict[int, np.ndarray] = {}
        self.uploads: list[tuple[str, np.dtype, tuple[int, ...]]] = []
        self.freed = False

    def allocate(self, name: str, nbytes: int) -> int:
        buf = self.arrays.get(name)
        if buf is None or buf.nbytes < nbytes:
            buf = np.zeros(max(nbytes, 1), np.uint8)
            self.arrays[name] = buf
            self.by_ptr[buf.ctypes.data] = buf
        return buf.ctypes.data

    def upload(self, name: str, array: np.ndarray) -> int:
        raw = np.ascontiguousarray(array).reshape(-1).view(np.uint8)
        pointer = self.allocate(name, raw.nbytes)
        self.arrays[name][: raw.nbytes] = raw
        self.uploads.append((name, array.dtype, tuple(array.shape)))
        return pointer

    def download(self, name: str, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
        return self.arrays[name][:nbytes].view(dtype).reshape(shape).copy()

    def stream_handle(self) -> int:
        return 4242

    def synchronize(self) -> None:
        pass

    def free(self) -> None:
        self.freed = True


@pytest.fixture
def fake_gpu(monkeypatch):
    """Install a stand-in ``tensorrt`` of the given version and a pretend CUDA device; returns the module."""

    def install(version: str) -> FakeTensorRT:
        fake = FakeTensorRT(version)
        fake.memory = HostBuffers()
        monkeypatch.setattr(environment, "import_tensorrt", lambda: fake)
        monkeypatch.setattr(
            environment, "cuda_device", lambda index=0, prefer=None: environment.CudaDevice("Fake GPU", "8.9", "host", index)
        )
        from mpcompile_tensorrt import cuda_memory

        monkeypatch.setattr(cuda_memory, "device_buffers", lambda library=None, index=0: fake.memory)
        return fake

    return install


# ============================================================================ the version switch
def test_builder_selection_by_major_version():
    from mpcompile_tensorrt import trt10, trt11

    assert lowering.select_builder(FakeTensorRT("10.16.1")) is trt10
    assert lowering.select_builder(FakeTensorRT("11.1.0")) is trt11
    assert lowering.select_builder(FakeTensorRT("12.0.0")) is trt11
    with pytest.raises(BackendUnavailableError, match="older than 10"):
        lowering.select_builder(FakeTensorRT("8.6.1"))
    assert trt10.DEFAULT_QUANTIZATION == "implicit" and trt11.DEFAULT_QUANTIZATION == "explicit"


def test_tensorrt_11_path_never_touches_removed_api(fake_gpu, mnist_legal, tmp_path):
    fake = fake_gpu("11.1.0")
    artifact = _lower(mnist_legal[0], tmp_path, stem="mnist")
    assert artifact.path == tmp_path / "mnist.engine" and artifact.path.read_bytes().startswith(b"FAKE-ENGINE 11.1.0")
    meta = artifact.metadata
    assert meta["quantization"] == "explicit" and meta["tensorrt"] == "11.1.0" and meta["tensorrt_major"] == 11
    assert meta["gpu"] == "Fake GPU" and meta["compute_capability"] == "8.9"
    assert meta["build"]["network"] == "strongly typed"
    assert not (fake.touched & REMOVED_IN_11), sorted(fake.touched & REMOVED_IN_11)
    assert "NetworkDefinitionCreationFlag.STRONGLY_TYPED" in fake.touched
    assert not any(name.startswith("BuilderFlag.") for name in fake.touched)
    build = fake.last_build
    assert build["network"]._flags == 1 << 1  # 1 << int(NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    assert build["network"]._source == "mnist.trt.onnx" and build["network"]._has_qdq
    assert build["config"]._flags == [] and build["config"]._pools == {"MemoryPoolType.WORKSPACE": 1 << 30}
    (profile,) = build["config"]._profiles
    assert profile._shapes["input"] == ((1, 1, 28, 28), (32, 1, 28, 28), (32, 1, 28, 28))


def test_tensorrt_11_refuses_implicit_quantization(fake_gpu, mnist_legal, tmp_path):
    from mpcompile_tensorrt.calibrators import calibrator_base

    fake = fake_gpu("11.0.0")
    with pytest.raises(BackendError, match="removed in TensorRT 11"):
        _lower(mnist_legal[0], tmp_path, quantization="implicit")
    with pytest.raises(BackendError, match="removed in TensorRT 11"):
        calibrator_base(fake, "entropy")
    # The 10.x implicit builder, run against 11.x, fails on the removed names: the switch is what keeps it away.
    from mpcompile_tensorrt import trt10

    with pytest.raises((AttributeError, BackendError)):
        trt10.build(fake, _request(tmp_path, mnist_legal[0], quantization="implicit"))


def _request(tmp_path: Path, legal, **kw: Any):
    from mpcompile_tensorrt.build_common import BuildRequest
    from mpcompile_tensorrt.options import TensorRTOptions
    from mpcompile_tensorrt.profiles import input_profiles
    from mpcompile_tensorrt.qdq import node_precisions

    files = lowering.write_files(legal, tmp_path, "model", TensorRTOptions(), "11.0.0")
    values = {
        "qdq_onnx": files.qdq_onnx, "float_onnx": files.float_onnx, "quantization": "explicit",
        "profiles": input_profiles(legal, TensorRTOptions()), "workspace": 1 << 20, "cache": files.cache_text.encode(),
        "node_precisions": node_precisions(legal),
    }
    return BuildRequest(**{**values, **kw})


def test_tensorrt_10_implicit_int8_uses_the_plan_cache(fake_gpu, mnist_legal, tmp_path):
    fake = fake_gpu("10.16.1")
    artifact = _lower(mnist_legal[0], tmp_path)
    meta = artifact.metadata
    assert meta["quantization"] == "implicit" and meta["tensorrt_major"] == 10
    assert meta["build"]["builder_flags"] == ["INT8"] and meta["build"]["calibrator"] == "plan"
    assert meta["build"]["plan_cache_reads"] == 1 and "warning" not in meta["build"]
    build = fake.last_build
    assert build["network"]._flags == 0 and build["network"]._source == "model.fp32.onnx" and not build["network"]._has_qdq
    config = build["config"]
    assert config._flags == ["BuilderFlag.INT8"]
    calibrator = object.__getattribute__(config, "__dict__")["int8_calibrator"]
    assert isinstance(calibrator, IInt8EntropyCalibrator2) and calibrator._base_initialized
    assert calibrator.get_batch_size() == 1
    assert config._calibration_profile._shapes["input"] == ((32, 1, 28, 28),) * 3
    # TensorRT took exactly the plan's scales: the cache it read is the one written next to the engine.
    assert calibrator.cache == (tmp_path / "model.calib.cache").read_bytes()
    used = fake.calibration["from_cache"]
    for name, scale in cache_scales(mnist_legal[0]).items():
        assert used[name].view(np.uint32) == scale.view(np.uint32)
    assert {"tensorrt.IInt8EntropyCalibrator2", "IBuilderConfig.int8_calibrator", "IBuilderConfig.set_calibration_profile"} <= fake.touched


def test_tensorrt_10_explicit_is_strongly_typed(fake_gpu, mnist_legal, tmp_path):
    fake = fake_gpu("10.16.1")
    artifact = _lower(mnist_legal[0], tmp_path, quantization="explicit")
    assert artifact.metadata["quantization"] == "explicit"
    build = fake.last_build
    assert build["network"]._source == "model.trt.onnx" and build["config"]._flags == []
    assert not any(n.startswith("BuilderFlag.") or "Calibrator" in n for n in fake.touched)


def test_tensorrt_10_rejected_cache_fails_instead_of_calibrating_on_nothing(fake_gpu, mnist_legal, tmp_path):
    fake_gpu("10.16.1")
    with pytest.raises(BackendError, match="rejected the cache"):
        _lower(mnist_legal[0], tmp_path, tensorrt_version="10.3.0")  # header for another version


def test_tensorrt_10_mixed_precision_pins_float_layers(fake_gpu, tmp_path):
    from modelgen import small_cnn

    fake = fake_gpu("10.8.0")
    plan, _ = _plan(tmp_path, small_cnn(), "mixed", keep=["conv2=fp16", "fc=fp32"])
    legal, _ = _legalize(plan)
    artifact = _lower(legal, tmp_path / "out")
    build = artifact.metadata["build"]
    assert build["builder_flags"] == ["INT8", "FP16", "PREFER_PRECISION_CONSTRAINTS"]
    assert build["constrained_layers"] == 2 and build["unmatched_float_nodes"] == []
    layers = {layer.name: layer for layer in fake.last_build["network"]._layers}
    assert object.__getattribute__(layers["conv2"], "precision") == "DataType.HALF"
    assert object.__getattribute__(layers["fc"], "precision") == "DataType.FLOAT"
    assert object.__getattribute__(layers["conv1"], "precision") is None  # INT8 layers are left to the builder


def test_tensorrt_10_calibrates_on_the_data_with_device_buffers(fake_gpu, mnist_legal, tmp_path):
    fake = fake_gpu("10.16.1")
    artifact = _lower(
        mnist_legal[0], tmp_path, calibrator="minmax", calibration_data=str(MNIST_CALIB), batch_size=64, calibration_samples=200
    )
    batches = fake.calibration["batches"]
    assert len(batches) == 3 and artifact.metadata["build"]["skipped_partial_batches"] == 1  # 200 = 3×64 + 8
    assert all(name == "input" and b.shape == (64, 1, 28, 28) and b.dtype == np.float32 for name, b in batches)
    data = np.load(MNIST_CALIB)["input"]
    assert np.array_equal(batches[0][1], data[:64])
    assert fake.memory.uploads[0] == ("input", np.dtype(np.float32), (64, 1, 28, 28)) and fake.memory.freed
    assert (tmp_path / "model.tensorrt.calib.cache").read_text().startswith("TRT-101601-MinMaxCalibration")
    assert artifact.metadata["tensorrt_scales_vs_plan"]["compared"] == 1
    assert any("calibrated by TensorRT" in d.change for d in artifact.deviations)
    assert "tensorrt.IInt8MinMaxCalibrator" in fake.touched


def test_calibrator_classes(mnist_legal):
    from mpcompile_tensorrt.calibrators import dataset_calibrator, plan_calibrator

    from mpcompile.pipeline import open_data

    fake = FakeTensorRT("10.16.1")
    calibrator = plan_calibrator(fake, b"TRT-101601-EntropyCalibration2\nx: 3c010204\n")
    assert isinstance(calibrator, IInt8EntropyCalibrator2) and calibrator._base_initialized
    assert calibrator.read_calibration_cache() == b"TRT-101601-EntropyCalibration2\nx: 3c010204\n"
    assert calibrator.get_batch(["input"]) is None and "rejected" in calibrator.error
    calibrator.write_calibration_cache(memoryview(b"abc"))
    assert calibrator.written == b"abc"

    memory = HostBuffers()
    dataset = open_data(mnist_legal[0], str(MNIST_CALIB))
    feeder = dataset_calibrator(fake, "entropy", dataset, ["input"], batch_size=100, device=memory, limit=250,
                                calibration_shapes={"input": (100, 1, 28, 28)})
    pointers = [feeder.get_batch(["input"]) for _ in range(3)]
    assert all(isinstance(p, list) and isinstance(p[0], int) for p in pointers[:2]) and pointers[2] is None
    assert feeder.batches_served == 2 and feeder.batches_skipped == 1 and feeder.read_calibration_cache() is None
    broken = dataset_calibrator(fake, "minmax", dataset, ["nope"], batch_size=10, device=memory)
    assert broken.get_batch(["nope"]) is None and "no input 'nope'" in broken.error


def test_tensorrt_runner_drives_execute_async_v3(fake_gpu, mnist_legal, tmp_path):
    for version in ("10.16.1", "11.1.0"):
        fake = fake_gpu(version)
        artifact = _lower(mnist_legal[0], tmp_path / version, quantization="explicit")
        runner = _runner(artifact)
        x = np.random.default_rng(0).random((3, 1, 28, 28), dtype=np.float32)
        out = runner.run({"input": x.astype(np.float64)})  # cast to the engine's input type
        assert out["logits"].shape == (3, 10) and out["logits"].dtype == np.float32
        np.testing.assert_allclose(out["logits"][:, 0], x.reshape(3, -1).sum(axis=1), rtol=1e-6)
        calls = fake.context._calls
        assert calls == ["set_input_shape", "set_tensor_address:input", "set_tensor_address:logits", "execute_async_v3:4242"]
        runner.close()
        if version.startswith("11"):
            assert not (fake.touched & REMOVED_IN_11)


def test_engine_mismatch_is_reported(fake_gpu, tmp_path):
    fake_gpu("10.16.1")
    engine = tmp_path / "model.engine"
    engine.write_bytes(b"not an engine")
    with pytest.raises(BackendError, match="could not deserialize"):
        _runner(Artifact("tensorrt", engine, [engine], metadata={"tensorrt": "10.3.0", "gpu": "A100"}))


# ============================================================================ pipeline integration
def test_pipeline_lower_onnx_only_writes_manifest(mnist_plan, tmp_path):
    from mpcompile.pipeline import lower

    if importlib.util.find_spec("tensorrt") is None:
        from mpcompile.backends.registry import get_backend

        with pytest.raises(BackendUnavailableError):
            get_backend("tensorrt")
    results = lower(mnist_plan, ["tensorrt"], tmp_path / "out", backend_options={"tensorrt": {"onnx_only": True}})
    artifact = results["tensorrt"].artifact
    assert artifact.path == tmp_path / "out" / "tensorrt" / f"{MNIST.stem}.trt.onnx" and artifact.path.is_file()
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    trtexec = manifest["backends"]["tensorrt"]["metadata"]["trtexec"]
    assert "--stronglyTyped" in trtexec["11.x"] and "--calib=" in trtexec["10.x implicit"]
    assert_tensorrt_ready(artifact.path)


def test_conform_onnx_only_through_the_suite(mnist_plan, tmp_path):
    from mpcompile.pipeline import conform

    report = conform(mnist_plan, ["tensorrt"], str(MNIST_EVAL), samples=256, out_dir=tmp_path,
                     backend_options={"tensorrt": {"onnx_only": True}})
    assert report.passed, report.format_text()
    assert report.backends[0].accuracy >= 0.965


# ============================================================================ GPU
@pytest.fixture
def real_tensorrt():
    try:
        trt = importlib.import_module("tensorrt")
    except Exception as exc:
        pytest.skip(f"tensorrt does not import here ({type(exc).__name__}: {exc})")
    try:
        environment.cuda_device()
    except BackendUnavailableError as exc:
        pytest.skip(f"no CUDA device: {exc}")
    return trt


def _gpu_modes(trt: ModuleType) -> list[dict[str, Any]]:
    if environment.major_version(trt) >= 11:
        return [{"quantization": "explicit"}]
    return [{"quantization": "implicit"}, {"quantization": "explicit"}]


@pytest.mark.gpu
def test_gpu_mnist_engine_is_accurate_and_conforms(real_tensorrt, mnist_plan, mnist_legal, tmp_path):
    legal, deviations = mnist_legal
    for options in _gpu_modes(real_tensorrt):
        out = tmp_path / options["quantization"]
        artifact = _lower(legal, out, **options)
        assert artifact.path.suffix == ".engine" and artifact.metadata["gpu"]
        report = _conform(mnist_plan, legal, deviations, artifact, MNIST_EVAL)
        trt = report.backends[0]
        assert trt.error is None, report.format_text()
        assert trt.accuracy >= 0.965, report.format_text()
        # Explicit Q/DQ fixes every rounding point; implicit INT8 lets TensorRT pick kernels per layer.
        limit = 1.0 if options["quantization"] == "explicit" else 3.0
        assert trt.outputs["logits"].max_lsb <= limit, report.format_text()


@pytest.mark.gpu
def test_gpu_tensorrt_10_entropy_calibration(real_tensorrt, mnist_legal, tmp_path):
    if environment.major_version(real_tensorrt) != 10:
        pytest.skip("implicit INT8 calibration exists on TensorRT 10 only")
    artifact = _lower(mnist_legal[0], tmp_path, calibrator="entropy", calibration_data=str(MNIST_CALIB))
    assert artifact.metadata["build"]["calibration_batches"] > 0
    assert (tmp_path / "model.tensorrt.calib.cache").is_file()
    with _runner(artifact) as runner:
        x = np.load(MNIST_EVAL)["input"][:32]
        assert runner.run({"input": x})["logits"].shape == (32, 10)
