"""What ``openvino.convert_model`` does to a plan's Q/DQ on real models, in small generated ones.

Found on the zoo (tests/test_zoo.py): convert_model rewrites the QDQ ONNX without changing a number, in
ways the IR check must know, and the runner must not mistake a raw tensor for a quantized one:

* a constant ``Mul``/``Div``/``Add`` producer is folded into the FakeQuantize's input range (a decomposed
  HardSwish ``x·relu6(x + 3) / 6``; a mean as ``ReduceSum / n``; a ``Mul`` by a constant);
* a FakeQuantize that repeats its input's grid (``Slice``/``MaxPool`` branches into a ``Concat`` that shares
  their spec) is removed, and the tensor's name with it;
* the Transposes and Squeeze around an ``LSTM`` are fused into an ``LSTMSequence``: its FakeQuantizes stay,
  unnamed;
* a graph input's FakeQuantize sinks past an ``Unsqueeze``: the input's name is then the raw ``Parameter``;
* in a plan cut at its quantized tensors (conformance/kernels.py), two identical quantized ``Slice``s that are
  only graph outputs (a YOLOX focus, ddddocr_det) are merged up to the DequantizeLinear's ``Subtract`` and the
  Q/DQ pair is left unfused: ``FakeQuantize → Convert<i8> → Convert<f32> → Subtract(zp) → Multiply(s)``.

Each model is calibrated with the default int8 plan, lowered (the IR check must pass) and conformed per layer.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import onnx
import pytest
from onnx import helper
from tflite_models import graph_model, recurrent

import mpcompile
from mpcompile.backends.targets import Target, lower_target
from mpcompile.conformance import check_artifacts
from mpcompile.data import open_data

ov = pytest.importorskip("openvino", reason="the openvino backend needs OpenVINO (pip install 'mpcompile[openvino]')")

from mpcompile_openvino import backend  # noqa: E402
from mpcompile_openvino.inspect import fake_quantize_params  # noqa: E402


def decomposed_hardswish(seed: int = 0) -> onnx.ModelProto:
    """Conv → x·clip(x + 3, 0, 6) / 6 (Paddle's HardSwish) → Conv → ReduceSum / 8 (a mean) → Mul by 0.5."""
    rng = np.random.default_rng(seed)
    inits = {
        "w1": rng.normal(0, 0.4, (8, 3, 3, 3)).astype(np.float32), "b1": rng.normal(0, 0.2, (8,)).astype(np.float32),
        "w2": rng.normal(0, 0.3, (8, 8, 1, 1)).astype(np.float32), "b2": rng.normal(0, 0.1, (8,)).astype(np.float32),
        "three": np.array(3.0, np.float32), "zero": np.array(0.0, np.float32), "six": np.array(6.0, np.float32),
        "eight": np.array(8.0, np.float32), "half": np.array(0.5, np.float32), "axes": np.array([1], np.int64),
    }
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Add", ["c1", "three"], ["a"]),
        helper.make_node("Clip", ["a", "zero", "six"], ["r6"]),
        helper.make_node("Mul", ["c1", "r6"], ["m"]),
        helper.make_node("Div", ["m", "six"], ["hs"]),
        helper.make_node("Conv", ["hs", "w2", "b2"], ["c2"]),
        helper.make_node("ReduceSum", ["c2", "axes"], ["s"], keepdims=1),
        helper.make_node("Div", ["s", "eight"], ["mean"]),
        helper.make_node("Mul", ["mean", "half"], ["y"]),
    ]
    return graph_model("decomposed_hardswish", nodes, {"x": ["N", 3, 12, 12]}, {"y": onnx.TensorProto.FLOAT}, inits)


def shared_grid_concat(seed: int = 0) -> onnx.ModelProto:
    """Space-to-depth by four Slices of the input into a Concat (a YOLO focus), Conv, then an SPP block:
    the Conv output and two MaxPools of it into a Concat, and a 1×1 Conv."""
    rng = np.random.default_rng(seed)
    inits = {
        "w1": rng.normal(0, 0.3, (8, 12, 3, 3)).astype(np.float32), "b1": rng.normal(0, 0.1, (8,)).astype(np.float32),
        "w2": rng.normal(0, 0.3, (4, 24, 1, 1)).astype(np.float32), "b2": rng.normal(0, 0.1, (4,)).astype(np.float32),
        "s0": np.array([0, 0], np.int64), "s1": np.array([1, 0], np.int64), "s2": np.array([0, 1], np.int64),
        "s3": np.array([1, 1], np.int64), "end": np.array([1 << 30, 1 << 30], np.int64),
        "hw": np.array([2, 3], np.int64), "step": np.array([2, 2], np.int64),
    }
    nodes = [helper.make_node("Slice", ["x", f"s{i}", "end", "hw", "step"], [f"sl{i}"]) for i in range(4)]
    nodes += [
        helper.make_node("Concat", ["sl0", "sl1", "sl2", "sl3"], ["focus"], axis=1),
        helper.make_node("Conv", ["focus", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("MaxPool", ["r1"], ["p5"], kernel_shape=[5, 5], pads=[2, 2, 2, 2]),
        helper.make_node("MaxPool", ["r1"], ["p3"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("Concat", ["r1", "p5", "p3"], ["spp"], axis=1),
        helper.make_node("Conv", ["spp", "w2", "b2"], ["y"]),
    ]
    return graph_model("shared_grid_concat", nodes, {"x": ["N", 3, 16, 16]}, {"y": onnx.TensorProto.FLOAT}, inits)


def unsqueezed_input(seed: int = 0) -> onnx.ModelProto:
    """A 1-D signal per sample, Unsqueezed twice to [N, 1, T, 1] before the first Conv (as CREPE does)."""
    rng = np.random.default_rng(seed)
    inits = {"w": rng.normal(0, 0.3, (4, 1, 9, 1)).astype(np.float32), "b": rng.normal(0, 0.1, (4,)).astype(np.float32),
             "a1": np.array([1], np.int64), "a3": np.array([3], np.int64)}
    nodes = [helper.make_node("Unsqueeze", ["x", "a1"], ["u1"]),
             helper.make_node("Unsqueeze", ["u1", "a3"], ["u"]),
             helper.make_node("Conv", ["u", "w", "b"], ["c"], strides=[4, 1]),
             helper.make_node("Relu", ["c"], ["y"])]
    return graph_model("unsqueezed_input", nodes, {"x": ["N", 64]}, {"y": onnx.TensorProto.FLOAT}, inits, opset=17)


def focus_silu(seed: int = 0) -> onnx.ModelProto:
    """A YOLOX focus as ddddocr_det exports it (each of the four space-to-depth slices re-slices the rows, so
    ``x[:, :, ::2]`` and ``x[:, :, 1::2]`` are each computed twice), Concat, Conv → SiLU ``c·sigmoid(c)`` → Conv."""
    rng = np.random.default_rng(seed)
    inits = {
        "w1": rng.normal(0, 0.3, (8, 12, 3, 3)).astype(np.float32), "b1": rng.normal(0, 0.1, (8,)).astype(np.float32),
        "w2": rng.normal(0, 0.3, (4, 8, 1, 1)).astype(np.float32), "b2": rng.normal(0, 0.1, (4,)).astype(np.float32),
        "zero": np.array([0], np.int64), "one": np.array([1], np.int64), "end": np.array([1 << 62], np.int64),
        "rows": np.array([2], np.int64), "cols": np.array([3], np.int64), "two": np.array([2], np.int64),
    }
    nodes = []
    for i, (row, col) in enumerate([("zero", "zero"), ("one", "zero"), ("zero", "one"), ("one", "one")]):
        nodes += [helper.make_node("Slice", ["x", row, "end", "rows", "two"], [f"r{i}"]),
                  helper.make_node("Slice", [f"r{i}", col, "end", "cols", "two"], [f"q{i}"])]
    nodes += [
        helper.make_node("Concat", ["q0", "q1", "q2", "q3"], ["focus"], axis=1),
        helper.make_node("Conv", ["focus", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Sigmoid", ["c1"], ["sg"]),
        helper.make_node("Mul", ["c1", "sg"], ["silu"]),
        helper.make_node("Conv", ["silu", "w2", "b2"], ["y"]),
    ]
    return graph_model("focus_silu", nodes, {"x": ["N", 3, 16, 16]}, {"y": onnx.TensorProto.FLOAT}, inits)


def _plan(model, tmp_path, n=32, seed=1):
    path = tmp_path / f"{model.graph.name}.onnx"
    onnx.save(model, path)
    rng = np.random.default_rng(seed)
    feeds = {}
    for i in model.graph.input:
        dims = [d.dim_value or n for d in i.type.tensor_type.shape.dim]
        dims[0] = n
        feeds[i.name] = rng.normal(0, 1, dims).astype(np.float32)
    data = tmp_path / f"{model.graph.name}.npz"
    np.savez(data, **feeds)
    return mpcompile.calibrate(str(path), str(data), progress=False).plan, data


def _lower_and_conform(plan, data, tmp_path):
    target = Target(backend, backend.options())
    stage = tmp_path / "stage"
    stage.mkdir()
    result = lower_target(target, plan, stage, "m")
    assert result.error is None, result.error  # the IR check accepted what convert_model did
    report = check_artifacts(plan, {"openvino": result}, {"openvino": target}, open_data(plan, str(data)),
                             per_layer=True, batch_size=8)
    return result, report


def _fake_quantizes(result):
    model = ov.Core().read_model(str(result.artifact.path))
    return [op for op in model.get_ops() if op.get_type_name() == "FakeQuantize"]


def test_constant_producers_folded_into_the_fakequantize_input_range(tmp_path):
    plan, data = _plan(decomposed_hardswish(), tmp_path)
    result, report = _lower_and_conform(plan, data, tmp_path)
    folded = [op for op in _fake_quantizes(result)
              if not np.array_equal(*(fake_quantize_params(op)["ranges"][i].reshape(-1) for i in (0, 2)))]
    assert folded, "convert_model folded no constant into a FakeQuantize: this test no longer covers the rule"
    assert report.passed, report.format_text()


def test_a_wrong_input_range_is_still_caught(tmp_path):
    """The fold rule accepts the plan's range pulled back through the plan's constants, and nothing else."""
    from mpcompile_openvino.inspect import check_fake_quantize

    plan, _ = _plan(decomposed_hardswish(), tmp_path)
    stage = tmp_path / "stage"
    stage.mkdir()
    result = lower_target(Target(backend, backend.options()), plan, stage, "m")
    model = ov.Core().read_model(str(result.artifact.path))
    tensor_map = result.artifact.metadata["tensor_map"]
    producers = {n: op for op in model.get_ops() for o in op.outputs() for n in o.get_names()}
    fq = producers[tensor_map["hs"]]
    assert fq.get_type_name() == "FakeQuantize"
    from openvino import op

    high = fq.input_value(2).get_node()  # input_high: 1.01x wider, another scale
    fq.input(2).replace_source_output(op.Constant(np.asarray(high.get_data()) * np.float32(1.01)).output(0))
    problems = check_fake_quantize(model, result.plan, tensor_map)
    assert len(problems) == 1 and "'hs'" in problems[0] and "input range" in problems[0], problems


def test_redundant_fakequantize_removed_by_convert_model(tmp_path):
    plan, data = _plan(shared_grid_concat(), tmp_path)
    result, report = _lower_and_conform(plan, data, tmp_path)
    quantized = [t.name for t in result.plan.tensors.values() if t.quant is not None and not t.is_constant]
    unnamed = [n for n in quantized if n not in result.artifact.metadata["tensor_map"]]
    assert unnamed, "convert_model kept every FakeQuantize: this test no longer covers the rule"
    assert report.passed, report.format_text()


def test_lstm_fused_into_an_lstm_sequence(tmp_path):
    plan, data = _plan(recurrent("LSTM", initial=False, batch_first=True), tmp_path)
    result, report = _lower_and_conform(plan, data, tmp_path)
    assert result.artifact.metadata["ops"].get("LSTMSequence") == 1
    assert report.passed, report.format_text()


def test_an_artifact_given_by_path_is_compared_on_the_same_tensors(tmp_path):
    """``conform --artifact openvino=model.xml`` has no lowering metadata: the tensor map comes from the IR's
    rt_info, and a plan name is never matched to a raw tensor of the same name (it was: the graph input, 9 LSB
    on CREPE, because a bare ``frames`` names the Parameter, not its FakeQuantize)."""
    from mpcompile.backends.api import Artifact

    plan, data = _plan(unsqueezed_input(), tmp_path)
    result, lowered = _lower_and_conform(plan, data, tmp_path)
    given = Artifact("openvino", result.artifact.path, [result.artifact.path])
    feeds = {"x": np.linspace(-3, 3, 128, dtype=np.float32).reshape(2, 64)}
    with backend.runner(given, backend.options()) as runner:
        assert runner.tensor_map == result.artifact.metadata["tensor_map"]
        out = runner.run(feeds, intermediates=["x", "u", "c"])
    spec = result.plan.tensors["x"].quant
    on_grid = np.rint(out["x"] / np.float32(spec.scale)) + int(spec.zero_point)  # FakeQuantize dequantizes
    assert np.array_equal(on_grid, spec.quantize(feeds["x"])), "the raw input came back as 'x'"  # up to float ulps
    given_result = dataclasses.replace(result, artifact=given)
    report = check_artifacts(plan, {"openvino": given_result}, {"openvino": Target(backend, backend.options())},
                             open_data(plan, str(data)), per_layer=True, batch_size=8)
    assert report.passed, report.format_text()
    assert set(report.backends[0].per_layer) == set(lowered.backends[0].per_layer) >= {"x", "u1", "u"}


def test_input_data_on_ties_of_the_grid_quantizes_like_onnx(tmp_path):
    """Pixels normalised as ``k/127.5 − 1`` against the scale 2/255 are all ties of the grid: a FakeQuantize
    (reciprocal multiply) rounded 22 % of a real OCR input 1 LSB off; the exact input quantizer makes it 0."""
    rng = np.random.default_rng(4)
    model = small_conv()
    path = tmp_path / "pixels.onnx"
    onnx.save(model, path)
    pixels = rng.integers(0, 256, (32, 3, 8, 8)).astype(np.float32) / np.float32(127.5) - np.float32(1)
    pixels[0, 0, 0, :2] = (-1.0, 1.0)  # the calibrated range is exactly [-1, 1]: scale 2/255
    data = tmp_path / "pixels.npz"
    np.savez(data, x=pixels)
    plan = mpcompile.calibrate(str(path), str(data), progress=False).plan
    assert float(plan.tensors["x"].quant.scale) == pytest.approx(2 / 255)
    _, report = _lower_and_conform(plan, data, tmp_path)
    assert report.backends[0].per_layer["x"].exact_share == 1.0, report.format_text()
    assert report.passed, report.format_text()


def small_conv(seed: int = 0) -> onnx.ModelProto:
    rng = np.random.default_rng(seed)
    inits = {"w": rng.normal(0, 0.3, (4, 3, 3, 3)).astype(np.float32), "b": rng.normal(0, 0.1, (4,)).astype(np.float32)}
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["c"], ["y"])]
    return graph_model("small_conv", nodes, {"x": ["N", 3, 8, 8]}, {"y": onnx.TensorProto.FLOAT}, inits)


def _cut_focus(tmp_path):
    """The focus_silu plan legalized for OpenVINO, and the IR of its cut plan as the kernel certificate lowers it."""
    from mpcompile.conformance.kernels import cut_plan

    plan, data = _plan(focus_silu(), tmp_path)
    target = Target(backend, backend.options())
    stage = tmp_path / "stage"
    stage.mkdir()
    legal = lower_target(target, plan, stage, "m").plan
    cut, _ = cut_plan(legal)
    return target, legal, cut, data


def _unfused(model, names):
    """The tensors of ``names`` that the IR produces by a Multiply (an unfused DequantizeLinear), not a FakeQuantize."""
    producers = {n: op for op in model.get_ops() for o in op.outputs() for n in o.get_names()}
    return [n for n in names if n in producers and producers[n].get_type_name() == "Multiply"]


def test_a_cut_plan_whose_duplicate_slices_keep_an_unfused_qdq_is_certified(tmp_path):
    """ddddocr_det had no kernel certificate: its cut plan's IR was refused ("tensor '467' is produced by Multiply,
    not FakeQuantize"). The chain is the plan's Q/DQ written in OpenVINO ops, so the check holds each of its numbers
    to the plan, and every tensor of the cut plan is then within tolerance of the reference."""
    from mpcompile.conformance.compare import Tolerances
    from mpcompile.conformance.kernels import certify

    target, legal, cut, data = _cut_focus(tmp_path)
    batches = [dict(np.load(data))]
    cert = certify(target, legal, batches, Tolerances(), "onnxruntime", tmp_path / "kernels")
    assert not cert.error, cert.error
    model = ov.Core().read_model(str(tmp_path / "kernels" / "kernels.xml"))
    assert _unfused(model, ["r0", "r1"]), "convert_model fused every Q/DQ of the cut plan: this test no longer covers the rule"
    assert cert.agrees, cert.summary()
    assert cert.tensors["r0"].max_lsb == 0 and cert.tensors["r1"].max_lsb == 0
    assert {"focus", "c1", "sg", "silu"} <= set(cert.tensors)


@pytest.mark.parametrize("part", ["scale", "zero_point", "output_high", "input_high"])
def test_a_wrong_number_in_an_unfused_qdq_is_still_caught(part, tmp_path):
    """Only the plan's Q/DQ is accepted as a Multiply: each of its numbers, changed, is named."""
    from mpcompile_openvino.inspect import check_fake_quantize
    from mpcompile_openvino.lowering import lower_to_qdq, write_ir
    from openvino import op

    target, legal, cut, _ = _cut_focus(tmp_path)
    write_ir(cut, tmp_path, "cut", target.options, ov.__version__)  # the IR check passes
    model = ov.Core().read_model(str(tmp_path / "cut.xml"))
    _, tensor_map = lower_to_qdq(cut)
    names = {n for o in model.get_ops() for out in o.outputs() for n in out.get_names()}
    tensor_map = {k: v for k, v in tensor_map.items() if v in names}
    name = _unfused(model, ["r0", "r1"])[0]
    mul = {n: o for o in model.get_ops() for out in o.outputs() for n in out.get_names()}[name]
    sub = mul.input_value(0).get_node()
    fq = sub.input_value(0).get_node().input_value(0).get_node().input_value(0).get_node()
    node, port = {"scale": (mul, 1), "zero_point": (sub, 1), "output_high": (fq, 4), "input_high": (fq, 2)}[part]
    value = np.asarray(node.input_value(port).get_node().get_data())
    node.input(port).replace_source_output(op.Constant((value + np.float32(1)).astype(value.dtype)).output(0))
    problems = check_fake_quantize(model, cut, tensor_map)
    # convert_model shares the chain up to the Subtract between the two identical slices: both may be named
    said = {"scale": "scale", "zero_point": "zero-point", "output_high": "output_high", "input_high": "input range"}[part]
    assert any(repr(name) in p for p in problems) and all(said in p for p in problems), problems
