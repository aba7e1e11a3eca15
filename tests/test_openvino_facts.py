"""The OpenVINO facts the backend's capabilities and legalization rest on, re-measured on crafted inputs.

Each test builds a tiny QDQ ONNX model, runs it through ``openvino.convert_model`` and the CPU plugin
(``INFERENCE_PRECISION_HINT=f32``) and checks one fact recorded in ``plugins/mpcompile_openvino/README.md``:

* rounding: FakeQuantize and the integer kernels' requantization round half to even on the grid
  shifted by ``zp − qmin`` (``rint(x/s + zp − qmin) + qmin``), which is ONNX's ``rint(x/s) + zp``
  exactly when ``zp − qmin`` is even, and 1 LSB off on every tie otherwise;
* per-channel int8 weights and asymmetric activations run in integer kernels;
* 16-bit Q/DQ pairs are stripped (computed in float), and fail to compile when they feed an output.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from onnx import numpy_helper as nh

from mpcompile.backends.cpu import exact_u8s8

ov = pytest.importorskip("openvino", reason="needs OpenVINO (pip install 'mpcompile[openvino]')")


def _model(nodes, inits, shape, opset=17):
    graph = helper.make_graph(nodes, "fact", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 9
    return model


def _compile(model, tmp_path):
    path = tmp_path / "fact.onnx"
    onnx.save(model, path)
    return ov.Core().compile_model(ov.convert_model(str(path)), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})


def _qdq(x, s, z, out, dtype, axis=None):
    attrs = {} if axis is None else {"axis": axis}
    return ([helper.make_node("QuantizeLinear", [x, s, z], [f"{out}_q"], **attrs),
             helper.make_node("DequantizeLinear", [f"{out}_q", s, z], [out], **attrs)])


def _kinds(compiled):
    return {op.get_rt_info()["layerType"].astype(str): op.get_rt_info()["runtimePrecision"].astype(str)
            for op in compiled.get_runtime_model().get_ops()}


@pytest.mark.parametrize("dtype, zp", [(np.int8, 0), (np.int8, 4), (np.int8, 5), (np.int8, -7), (np.uint8, 128),
                                       (np.uint8, 37)])
def test_fakequantize_rounds_ties_half_to_even_after_the_zero_point(dtype, zp, tmp_path):
    s = np.float32(2 ** -4)  # a power of two: x/s is exact, every value below sits on a tie
    v = (np.arange(-300, 300) + 0.5).astype(np.float32)
    x = (v * s).reshape(1, -1)
    inits = [nh.from_array(np.array(s), "s"), nh.from_array(np.array(zp, dtype), "z")]
    compiled = _compile(_model(_qdq("x", "s", "z", "y", dtype), inits, list(x.shape)), tmp_path)
    q = np.rint(compiled(x)[0].reshape(-1).astype(np.float64) / s).astype(np.int64) + zp
    info = np.iinfo(dtype)
    onnx_rule = np.clip(np.rint(v) + zp, info.min, info.max)
    shifted_rule = np.clip(np.rint(v + zp - info.min) + info.min, info.min, info.max)
    np.testing.assert_array_equal(q, shifted_rule)
    inside = (onnx_rule > info.min) & (onnx_rule < info.max)
    differing = int(np.sum(q[inside] != onnx_rule[inside]))
    assert differing == (0 if (zp - info.min) % 2 == 0 else int(inside.sum()))


@pytest.mark.parametrize("op", ["Conv", "MatMul"])
def test_integer_kernels_requantize_with_the_same_rule(op, tmp_path):
    n = 255
    qin = np.arange(-127, 128, dtype=np.float32)  # integers on scale 1; the output scale 2 puts every odd one on a tie
    x, shape = (qin.reshape(1, 1, 1, n), [1, 1, 1, n]) if op == "Conv" else (qin.reshape(1, n, 1), [1, n, 1])
    w = np.ones((1, 1, 1, 1) if op == "Conv" else (1, 1), np.int8)
    for out_zp in (0, 3):
        nodes = [*_qdq("x", "one", "z0", "xd", np.int8), helper.make_node("DequantizeLinear", ["w", "one", "z0"], ["wd"]),
                 helper.make_node(op, ["xd", "wd"], ["a"]), *_qdq("a", "two", "zo", "y", np.int8)]
        inits = [nh.from_array(np.array(1.0, np.float32), "one"), nh.from_array(np.array(0, np.int8), "z0"),
                 nh.from_array(w, "w"), nh.from_array(np.array(2.0, np.float32), "two"),
                 nh.from_array(np.array(out_zp, np.int8), "zo")]
        compiled = _compile(_model(nodes, inits, shape), tmp_path)
        kinds = _kinds(compiled)
        assert ("Convolution" if op == "Conv" else "FullyConnected") in kinds, kinds
        q = np.rint(compiled(x)[0].reshape(-1) / 2.0).astype(np.int64) + out_zp
        np.testing.assert_array_equal(q, np.rint(qin / 2.0 + out_zp + 128) - 128)


def test_per_channel_weights_and_asymmetric_activations_run_in_integer_kernels(tmp_path):
    if not exact_u8s8():
        pytest.skip("this CPU has no VNNI: oneDNN's u8 x s8 kernels saturate (measured in test_u8s8_saturation.py)")
    rng = np.random.default_rng(0)
    w = rng.normal(0, 0.3, (8, 4, 3, 3)).astype(np.float32)
    sw = (np.abs(w).reshape(8, -1).max(1) / 127).astype(np.float32)
    wq = np.rint(w / sw[:, None, None, None]).astype(np.int8)
    nodes = [*_qdq("x", "sx", "zx", "xd", np.int8), helper.make_node("DequantizeLinear", ["w", "sw", "zw"], ["wd"], axis=0),
             helper.make_node("Conv", ["xd", "wd"], ["c"], pads=[1, 1, 1, 1]), *_qdq("c", "sc", "zc", "y", np.int8)]
    inits = [nh.from_array(np.array(0.02, np.float32), "sx"), nh.from_array(np.array(-36, np.int8), "zx"),
             nh.from_array(wq, "w"), nh.from_array(sw, "sw"), nh.from_array(np.zeros(8, np.int8), "zw"),
             nh.from_array(np.array(0.05, np.float32), "sc"), nh.from_array(np.array(10, np.int8), "zc")]
    graph = helper.make_graph(nodes, "fact", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 8, 8, 8])], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    compiled = _compile(model, tmp_path)
    assert _kinds(compiled)["Convolution"] in ("u8", "i8")
    x = rng.uniform(-1.8, 3.3, (2, 4, 8, 8)).astype(np.float32)
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    ref = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    lsb = np.rint(np.abs(compiled(x)[0] - ref) / 0.05)
    assert lsb.max() <= 1 and np.mean(lsb == 0) > 0.999


def test_sixteen_bit_qdq_is_stripped_to_float(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(0, 1, (4, 16)).astype(np.float32)
    w = rng.normal(0, 0.3, (16, 16)).astype(np.float32)
    nodes = [*_qdq("x", "s", "z", "xd", np.int16), helper.make_node("MatMul", ["xd", "w"], ["m"]),
             *_qdq("m", "so", "z", "md", np.int16), helper.make_node("Relu", ["md"], ["y"])]
    inits = [nh.from_array(np.array(2 ** -8, np.float32), "s"), nh.from_array(np.array(0, np.int16), "z"),
             nh.from_array(w, "w"), nh.from_array(np.array(2 ** -5, np.float32), "so")]
    compiled = _compile(_model(nodes, inits, [4, 16], opset=21), tmp_path)
    got = compiled(x)[0]
    np.testing.assert_allclose(got, np.maximum(x @ w, 0), rtol=1e-5, atol=1e-5)  # float: no int16 quantization at all
    assert not np.allclose(got, np.rint(got / 2 ** -5) * 2 ** -5)  # not on the plan's int16 grid
    with pytest.raises(Exception, match="FQ stripping failed"):  # an int16 Q/DQ feeding the output does not compile
        _compile(_model(_qdq("x", "s", "z", "y", np.int16), inits[:2], [4, 16], opset=21), tmp_path)
