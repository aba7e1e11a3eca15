"""Independent oracle: TensorFlow's own TFLite converter, given the plan's ranges as FakeQuant ops,
must produce the numbers mpcompile's flatbuffer writer produces (docs/design.md: exact scales once the
FakeQuant min/max are nudged a few ulps). Needs the optional ``tensorflow`` extra; skipped without it."""

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

pytestmark = pytest.mark.slow
tf = pytest.importorskip("tensorflow", reason="the oracle needs TensorFlow (pip install 'mpcompile[tensorflow]')")
pytest.importorskip("ai_edge_litert")


def _nudged(lo: float, hi: float, levels: int, scale: np.float32) -> tuple[float, float]:
    """float32 (min, max) for which the converter's f32((f64(max) - f64(min)) / levels) is exactly ``scale``."""
    lo32, hi32 = np.float32(lo), np.float32(hi)
    for _ in range(256):
        got = np.float32((np.float64(hi32) - np.float64(lo32)) / levels)
        if got == scale:
            return float(lo32), float(hi32)
        hi32 = np.nextafter(hi32, np.float32(np.inf) if got < scale else np.float32(-np.inf))
    raise AssertionError(f"no float32 range gives scale {scale}")


def _run(path, xs: np.ndarray) -> np.ndarray:
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=str(path))
    interp.allocate_tensors()
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    results = []
    for row in xs:
        value = row[None]
        if inp["dtype"] == np.int8:
            s, z = inp["quantization"]
            value = np.clip(np.rint(value / s) + z, -128, 127).astype(np.int8)
        interp.set_tensor(inp["index"], value)
        interp.invoke()
        got = interp.get_tensor(out["index"])
        if out["dtype"] == np.int8:
            s, z = out["quantization"]
            got = (got.astype(np.float32) - z) * s
        results.append(got[0])
    return np.array(results)


def test_tflite_converter_from_fakequant_agrees_within_one_lsb(tmp_path):
    from mpcompile.pipeline import calibrate, lower

    rng = np.random.default_rng(0)
    w1, b1 = rng.normal(0, 0.3, (16, 32)).astype(np.float32), rng.normal(0, 0.1, 32).astype(np.float32)
    w2, b2 = rng.normal(0, 0.3, (32, 10)).astype(np.float32), rng.normal(0, 0.1, 10).astype(np.float32)
    nodes = [helper.make_node("Gemm", ["x", "W1", "b1"], ["h"], name="fc1"), helper.make_node("Relu", ["h"], ["r"], name="relu"),
             helper.make_node("Gemm", ["r", "W2", "b2"], ["y"], name="fc2")]
    inits = [numpy_helper.from_array(a, n) for a, n in ((w1, "W1"), (b1, "b1"), (w2, "W2"), (b2, "b2"))]
    graph = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 10])], initializer=inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "mlp.onnx")
    x = rng.normal(0, 1, (256, 16)).astype(np.float32)
    np.savez(tmp_path / "d.npz", x=x)
    # per-tensor weights: a per-channel FakeQuant on a MatMul weight does not convert (docs/design.md)
    plan = calibrate(tmp_path / "mlp.onnx", tmp_path / "d.npz", per_channel=False, progress=False).plan
    spec = {n: plan.tensors[n].quant for n in ("x", "r", "y", "W1", "W2")}
    ranges = {}
    for n in ("x", "r", "y"):
        s, z = float(spec[n].scale), int(spec[n].zero_point)
        ranges[n] = _nudged((spec[n].qmin - z) * s, (spec[n].qmax - z) * s, 255, np.float32(spec[n].scale))
    for n in ("W1", "W2"):
        s = float(spec[n].scale)
        ranges[n] = _nudged(-127 * s, 127 * s, 254, np.float32(spec[n].scale))

    def fake_quant(value, name, narrow=False):
        return tf.quantization.fake_quant_with_min_max_vars(value, *ranges[name], num_bits=8, narrow_range=narrow)

    @tf.function(input_signature=[tf.TensorSpec([1, 16], tf.float32)])
    def model(inp):
        h = tf.nn.relu(tf.matmul(fake_quant(inp, "x"), fake_quant(tf.constant(w1), "W1", True)) + b1)
        y = tf.matmul(fake_quant(h, "r"), fake_quant(tf.constant(w2), "W2", True)) + b2
        return fake_quant(y, "y")

    converter = tf.lite.TFLiteConverter.from_concrete_functions([model.get_concrete_function()], model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    oracle = tmp_path / "oracle.tflite"
    oracle.write_bytes(converter.convert())
    ours = lower(plan, ["tflite"], tmp_path / "out")["tflite"].artifact.path
    diff = np.abs(_run(ours, x[:64]) - _run(oracle, x[:64])).max() / float(spec["y"].scale)
    print(f"mpcompile vs TFLite converter (FakeQuant oracle): max {diff:.2f} LSB")
    assert diff <= 1.0
