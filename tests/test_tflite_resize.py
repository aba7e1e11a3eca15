"""The Resize check of the TFLite backend decides exactness by computing source pixels: are its models right?

``mpcompile_tflite.resize`` models ONNX Runtime's coordinate transformation (the reference evaluates
the plan with ONNX Runtime) and LiteRT's resize kernels. These tests hold both models to the real
runtimes on index ramps over a grid of sizes and every mode: where the check says "this TFLite
resize reads the same pixels", it must, and where ONNX's pixel is not determined it must say so.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("ai_edge_litert")

from mpcompile_tflite.model import QuantParams, TflModel, TflOperator, TflTensor  # noqa: E402
from mpcompile_tflite.resize import CONFIGS, ResizeAxis, onnx_coordinates, onnx_nearest, tflite_bilinear, tflite_nearest  # noqa: E402

pytestmark = pytest.mark.tflite

COORDS = ["half_pixel", "asymmetric", "pytorch_half_pixel", "tf_half_pixel_for_nn", "align_corners"]
ROUNDINGS = ["round_prefer_floor", "round_prefer_ceil", "floor", "ceil"]
IN_SIZES = (1, 2, 3, 5, 7, 10, 13)
OUT_SIZES = (1, 2, 3, 4, 6, 8, 9, 14, 16, 21, 26)


def _onnx_resize(n_in: int, mode: str, coord: str, nearest: str, scales: bool) -> dict[int, np.ndarray]:
    """ONNX Runtime's result (optimizations off, as the reference runs) on a ramp 0..n_in-1, per output size."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    nodes, outputs, inits, shapes = [], [], [], {}
    for n_out in OUT_SIZES:
        name = f"y{n_out}"
        if scales:
            scale = float(np.float32(n_out) / np.float32(n_in))
            if int(np.float32(scale) * np.float32(n_in)) != n_out:
                continue  # floor(in · scale) is another size
            inits.append(numpy_helper.from_array(np.array([1, 1, scale, 1], np.float32), f"s{n_out}"))
            inputs = ["x", "", f"s{n_out}"]
        else:
            inits.append(numpy_helper.from_array(np.array([1, 1, n_out, 1], np.int64), f"s{n_out}"))
            inputs = ["x", "", "", f"s{n_out}"]
        nodes.append(helper.make_node("Resize", inputs, [name], mode=mode, coordinate_transformation_mode=coord,
                                      nearest_mode=nearest))
        outputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, None))
        shapes[n_out] = name
    graph = helper.make_graph(nodes, "ramp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, n_in, 1])],
                              outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])
    model.ir_version = 9
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.log_severity_level = 3
    ort.set_default_logger_severity(3)
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    values = session.run(list(shapes.values()), {"x": np.arange(n_in, dtype=np.float32).reshape(1, 1, n_in, 1)})
    return {n_out: v.reshape(-1) for n_out, v in zip(shapes, values)}


@pytest.mark.parametrize("scales", [False, True], ids=["sizes", "scales"])
@pytest.mark.parametrize("nearest", ROUNDINGS)
@pytest.mark.parametrize("coord", COORDS)
def test_onnx_nearest_model_is_onnxruntime(coord, nearest, scales):
    determined = undetermined = 0
    for n_in in IN_SIZES:
        for n_out, got in _onnx_resize(n_in, "nearest", coord, nearest, scales).items():
            axis = ResizeAxis(n_in, n_out, float(np.float32(n_out) / np.float32(n_in)))
            want = onnx_nearest(axis, coord, nearest, sizes=not scales)
            if isinstance(want, str):
                assert "rounding boundary" in want
                undetermined += 1
                continue
            determined += 1
            assert np.array_equal(got.astype(np.int64), want), (n_in, n_out, got, want)
    assert determined > undetermined  # most sizes are determined (asymmetric + round: a third are not)


@pytest.mark.parametrize("coord", ["half_pixel", "asymmetric", "pytorch_half_pixel", "align_corners"])
def test_onnx_linear_model_is_onnxruntime(coord):
    for n_in in IN_SIZES:
        for n_out, got in _onnx_resize(n_in, "linear", coord, "floor", False).items():
            axis = ResizeAxis(n_in, n_out, float(np.float32(n_out) / np.float32(n_in)))
            want = np.clip(onnx_coordinates(axis, coord).astype(np.float64), 0, n_in - 1)
            assert np.allclose(got, want, atol=1e-5), (n_in, n_out, got, want)


def _tflite_resize(op: str, n_in: int, n_out: int, dtype: str, align: bool, half: bool, resolver: str) -> np.ndarray:
    from ai_edge_litert.interpreter import Interpreter, OpResolverType
    from mpcompile_tflite.flatbuffer import serialize

    model = TflModel()
    quant = QuantParams.from_arrays([1.0], [0]) if dtype == "int8" else None
    x = model.add_tensor(TflTensor("x", dtype, (1, n_in, 1, 1), quant=quant))
    y = model.add_tensor(TflTensor("y", dtype, (1, n_out, 1, 1), quant=quant))
    size = model.add_tensor(TflTensor("size", "int32", (2,), data=np.array([n_out, 1], np.int32)))
    options = "ResizeNearestNeighborOptions" if op == "RESIZE_NEAREST_NEIGHBOR" else "ResizeBilinearOptions"
    version = 3 if (align or half) else (2 if dtype == "int8" else 1)
    model.add_operator(TflOperator(op, [x, size], [y], options, {"alignCorners": align, "halfPixelCenters": half}, version))
    model.inputs, model.outputs = [x], [y]
    resolvers = {"xnnpack": OpResolverType.AUTO, "builtin": OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
                 "reference": OpResolverType.BUILTIN_REF}
    interpreter = Interpreter(model_content=serialize(model), experimental_op_resolver_type=resolvers[resolver])
    interpreter.allocate_tensors()
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], np.arange(n_in).astype(dtype).reshape(1, n_in, 1, 1))
    interpreter.invoke()
    return interpreter.get_tensor(interpreter.get_output_details()[0]["index"]).reshape(-1)


@pytest.mark.parametrize("resolver", ["xnnpack", "builtin", "reference"])
@pytest.mark.parametrize("dtype", ["float32", "int8"])
def test_tflite_kernel_models_are_litert(dtype, resolver):
    for n_in in IN_SIZES:
        for n_out in OUT_SIZES:
            axis = ResizeAxis(n_in, n_out, n_out / n_in)
            for align, half in CONFIGS:
                got = _tflite_resize("RESIZE_NEAREST_NEIGHBOR", n_in, n_out, dtype, align, half, resolver)
                # the check demands that every kernel's map agrees, so one of them must be the one that ran
                assert any(np.array_equal(got, m) for m in tflite_nearest(axis, align, half)), (n_in, n_out, align, half)
                got = _tflite_resize("RESIZE_BILINEAR", n_in, n_out, dtype, align, half, resolver).astype(np.float64)
                want = np.clip(tflite_bilinear(axis, align, half).astype(np.float64), 0, n_in - 1)
                # int8 output rounds the sampled ramp to an integer
                assert np.max(np.abs(got - want)) <= (1e-4 if dtype == "float32" else 0.5 + 1e-3), (n_in, n_out, align, half)
