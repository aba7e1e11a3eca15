"""A QDQ model made by ONNX Runtime's quantize_static imports with bit-identical numbers."""

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from mpcompile import importer
from mpcompile.ir.types import QType


def _quantize(src, dst, per_channel, activation_type):
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter([{"input": np.random.default_rng(i).normal(size=(1, 3, 16, 16)).astype(np.float32)} for i in range(8)])

        def get_next(self):
            return next(self.it, None)

    quantize_static(str(src), str(dst), Reader(), quant_format=QuantFormat.QDQ, per_channel=per_channel,
                    weight_type=QuantType.QInt8, activation_type=getattr(QuantType, activation_type))


def _qdq_params(model):
    """tensor feeding each Q (activations) or DQ of an initializer (weights): (scale, zero_point) arrays."""
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    params = {}
    for node in model.graph.node:
        if node.op_type == "QuantizeLinear" or (node.op_type == "DequantizeLinear" and node.input[0] in inits):
            params.setdefault(node.input[0], (inits[node.input[1]], inits[node.input[2]]))
    return params


@pytest.mark.parametrize("per_channel", [True, False])
@pytest.mark.parametrize("activation_type", ["QUInt8", "QInt8"])
def test_quantize_static_numbers_are_kept_bit_for_bit(tmp_path, per_channel, activation_type):
    from modelgen import small_cnn

    src, dst = tmp_path / "m.onnx", tmp_path / "q.onnx"
    model = small_cnn(batch=1)
    onnx.save(model, src)
    _quantize(src, dst, per_channel, activation_type)
    qdq = onnx.load(dst)
    expected = _qdq_params(qdq)
    graph = importer.load(dst)
    assert not any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in graph.nodes)
    annotated = {t.name: t.quant for t in graph.quantized_tensors()}
    matched = 0
    for source, (scale, zp) in expected.items():
        name = source[: -len("_quantized")] if source.endswith("_quantized") and source not in annotated else source
        spec = annotated.get(name) or annotated.get(source)
        if spec is None:
            # an activation renamed to the graph output it feeds
            continue
        matched += 1
        assert np.array_equal(np.asarray(spec.scale, np.float32).view(np.uint32).reshape(-1), scale.astype(np.float32).view(np.uint32).reshape(-1))
        assert np.array_equal(np.asarray(spec.zero_point).reshape(-1), zp.reshape(-1))
        assert spec.zero_point.dtype == zp.dtype
    assert matched >= len(expected) - 1  # at most the output, renamed to the graph output name
    # stored int8 weights re-quantize to exactly the same integers
    inits = {i.name: numpy_helper.to_array(i) for i in qdq.graph.initializer}
    for t in graph.quantized_tensors():
        if t.is_constant and t.quant.qtype == QType.INT8 and t.name in inits:
            assert np.array_equal(t.quant.quantize(t.value), inits[t.name])


def test_qdq_model_compiles_to_ort_and_tflite_with_the_same_numbers(tmp_path):
    """QDQ in (e.g. from quantization-aware training), integer artifacts out: no recalibration, 0 LSB."""
    from modelgen import small_cnn

    from mpcompile.pipeline import compile

    src, dst = tmp_path / "m.onnx", tmp_path / "q.onnx"
    onnx.save(small_cnn(batch=1), src)
    _quantize(src, dst, True, "QInt8")
    data = tmp_path / "eval.npz"
    np.savez(data, input=np.random.default_rng(5).normal(size=(16, 3, 16, 16)).astype(np.float32))
    backends = ["onnxruntime"]
    try:
        import ai_edge_litert  # noqa: F401

        backends.append("tflite")
    except ImportError:
        pass
    result = compile(dst, None, backends, tmp_path / "out", conform=True, eval_data=data, progress=False)
    assert result.stats is None  # the QDQ model's own scales, not a new calibration
    imported = importer.load(dst)
    for t in imported.quantized_tensors():
        assert result.plan.tensors[t.name].quant == t.quant
    assert result.conformance.passed, result.conformance.format_text()
    for backend in result.conformance.backends:
        assert backend.outputs["logits"].max_lsb <= 1
        assert not backend.deviations
