"""Range-aware planning (mpcompile/planning/ranges.py): a join of very different ranges stays float."""

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from mpcompile.ir.types import Precision
from mpcompile.pipeline import calibrate
from mpcompile.reference.fakequant import ReferenceRunner


def _head(tmp_path, box_gain: float):
    """A detector-like head: one conv gives box offsets scaled by ``box_gain``, another class
    probabilities (sigmoid); both are joined on the channel axis, reshaped and transposed."""
    rng = np.random.default_rng(0)
    w_box = numpy_helper.from_array(rng.normal(size=(4, 3, 1, 1)).astype(np.float32) * box_gain, "w_box")
    w_cls = numpy_helper.from_array(rng.normal(size=(5, 3, 1, 1)).astype(np.float32), "w_cls")
    shape = numpy_helper.from_array(np.array([0, 9, -1], np.int64), "shape")
    nodes = [
        helper.make_node("Conv", ["x", "w_box"], ["box"], name="box_conv"),
        helper.make_node("Conv", ["x", "w_cls"], ["logits"], name="cls_conv"),
        helper.make_node("Sigmoid", ["logits"], ["cls"], name="cls_sigmoid"),
        helper.make_node("Concat", ["box", "cls"], ["joined"], axis=1, name="join"),
        helper.make_node("Reshape", ["joined", "shape"], ["flat"], name="flatten"),
        helper.make_node("Transpose", ["flat"], ["y"], perm=[0, 2, 1], name="to_rows"),
    ]
    graph = helper.make_graph(
        nodes, "head", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 64, 9])], [w_box, w_cls, shape],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    path = tmp_path / f"head{box_gain:g}.onnx"
    onnx.save(model, path)
    data = tmp_path / "x.npz"
    np.savez(data, x=rng.normal(size=(16, 3, 8, 8)).astype(np.float32))
    return path, data


def test_join_of_boxes_and_probabilities_stays_float_and_keeps_the_scores(tmp_path):
    path, data = _head(tmp_path, box_gain=100.0)
    plan = calibrate(path, data, progress=False).plan
    nodes = {n.name: n for n in plan.nodes}
    assert nodes["join"].precision == Precision.FP32
    assert "float join" in nodes["join"].precision_reason and "'cls'" in nodes["join"].precision_reason
    # what follows the join moves data only: it follows into float instead of re-quantizing the joined tensor
    assert nodes["flatten"].precision == Precision.FP32 and nodes["to_rows"].precision == Precision.FP32
    assert plan.tensors["joined"].quant is None and plan.tensors["y"].quant is None
    # each part keeps its own scale: the producers stay integer
    assert nodes["box_conv"].precision == Precision.INT8 and plan.tensors["cls"].quant is not None
    # the class scores keep their resolution (the sigmoid's 1/256 grid), not the box range's
    x = np.load(data)["x"]
    fp32 = ReferenceRunner(plan, float_reference=True).run({"x": x})["y"][..., 4:]
    split = np.abs(ReferenceRunner(plan).run({"x": x})["y"][..., 4:] - fp32).max()
    one_scale = calibrate(path, data, progress=False, keep=("join=int8", "flatten=int8", "to_rows=int8")).plan
    joined = np.abs(ReferenceRunner(one_scale).run({"x": x})["y"][..., 4:] - fp32).max()
    assert split < 0.03 and joined > 10 * split, (split, joined)


def test_join_of_similar_ranges_stays_integer(tmp_path):
    path, data = _head(tmp_path, box_gain=1.0)
    plan = calibrate(path, data, progress=False).plan
    nodes = {n.name: n for n in plan.nodes}
    assert nodes["join"].precision == Precision.INT8
    assert plan.tensors["joined"].quant is not None


def test_an_override_beats_the_range_rule(tmp_path):
    path, data = _head(tmp_path, box_gain=100.0)
    plan = calibrate(path, data, progress=False, keep=("join=int8",)).plan
    assert {n.name: n for n in plan.nodes}["join"].precision == Precision.INT8


def test_a_tensor_split_into_parts_of_different_ranges_is_never_quantized_whole(tmp_path):
    """A head conv whose output channels are box values (×100) and class logits, split apart."""
    rng = np.random.default_rng(1)
    w = rng.normal(size=(9, 3, 1, 1)).astype(np.float32)
    w[:4] *= 100.0
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["head"], name="head_conv"),
        helper.make_node("Split", ["head", "sizes"], ["box", "logits"], axis=1, name="split"),
        helper.make_node("Sigmoid", ["logits"], ["cls"], name="cls_sigmoid"),
        helper.make_node("Relu", ["box"], ["box_pos"], name="box_relu"),
    ]
    graph = helper.make_graph(
        nodes, "split_head", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 3, 8, 8])],
        [helper.make_tensor_value_info("cls", TensorProto.FLOAT, [None, 5, 8, 8]),
         helper.make_tensor_value_info("box_pos", TensorProto.FLOAT, [None, 4, 8, 8])],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(np.array([4, 5], np.int64), "sizes")],
    )
    path = tmp_path / "split_head.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    data = tmp_path / "x.npz"
    x = rng.normal(size=(16, 3, 8, 8)).astype(np.float32)
    np.savez(data, x=x)
    plan = calibrate(path, data, progress=False).plan
    nodes = {n.name: n for n in plan.nodes}
    assert nodes["head_conv"].precision == Precision.FP32 and "split into parts" in nodes["head_conv"].precision_reason
    assert nodes["split"].precision == Precision.FP32 and plan.tensors["head"].quant is None
    # each part is quantized at its own range by the integer op that reads it
    assert nodes["cls_sigmoid"].precision == Precision.INT8
    logits, box = plan.tensors["logits"].quant, plan.tensors["box"].quant
    assert logits is not None and box is not None and float(box.scale) > 16 * float(logits.scale)
    fp32 = ReferenceRunner(plan, float_reference=True).run({"x": x})["cls"]
    assert np.abs(ReferenceRunner(plan).run({"x": x})["cls"] - fp32).max() < 0.03
