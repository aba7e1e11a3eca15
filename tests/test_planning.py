"""What the planner writes onto the IR: the numerics contract, overrides and half-precision safety."""

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from mpcompile.errors import PlanError
from mpcompile.ir.types import Precision, QType
from mpcompile.pipeline import calibrate


def test_int8_plan_follows_the_numerics_contract(small_cnn_path, small_cnn_data):
    plan = calibrate(small_cnn_path, small_cnn_data, progress=False).plan
    t = plan.tensors
    # weights: symmetric narrow range per output channel, axis explicit
    w1 = t["w1"].quant
    assert w1.axis == 0 and w1.symmetric and w1.narrow_range and w1.scale.shape == (8,)
    assert t["wfc"].quant.axis == 0  # Gemm transB=1: output channels are rows
    # bias: int32 at s_in * s_w per channel, zero-point 0
    b1 = t["b1"].quant
    assert b1.qtype == QType.INT32 and b1.axis == 0
    np.testing.assert_array_equal(b1.scale, (np.float32(t["input"].quant.scale) * w1.scale).astype(np.float32))
    # conv output feeding only a Relu is fused: the relu output carries the spec
    assert t["c1"].quant is None and t["r1"].quant is not None
    # max-pool shares its input's quantization
    assert t["p1"].quant.scale == t["r1"].quant.scale and t["p1"].quant.zero_point == t["r1"].quant.zero_point
    # asymmetric activations contain zero
    lo, hi = t["r2"].quant.representable_range()
    assert lo <= 0 <= hi
    assert all(n.precision == Precision.INT8 for n in plan.nodes)


def test_softmax_output_is_fixed(tmp_path):
    from modelgen import small_cnn

    path = tmp_path / "sm.onnx"
    onnx.save(small_cnn(softmax=True), path)
    data = tmp_path / "d.npz"
    np.savez(data, input=np.random.default_rng(0).normal(size=(16, 3, 16, 16)).astype(np.float32))
    spec = calibrate(path, data, progress=False).plan.tensors["probs"].quant
    assert float(spec.scale) == np.float32(1 / 256) and int(spec.zero_point) == -128
    spec16 = calibrate(path, data, precision="int16", progress=False).plan.tensors["probs"].quant
    assert spec16.qtype == QType.INT16 and int(spec16.zero_point) == 0


def test_int16_activations_are_symmetric(small_cnn_path, small_cnn_data):
    plan = calibrate(small_cnn_path, small_cnn_data, precision="int16", progress=False).plan
    acts = [t.quant for t in plan.quantized_tensors() if not t.is_constant]
    assert acts and all(q.qtype == QType.INT16 and int(q.zero_point) == 0 for q in acts)
    assert plan.tensors["w1"].quant.qtype == QType.INT8


def test_keep_override_and_unknown_pattern(small_cnn_path, small_cnn_data):
    plan = calibrate(small_cnn_path, small_cnn_data, precision="mixed", keep=["fc=fp32"], progress=False).plan
    fc = plan.node("fc")
    assert fc.precision == Precision.FP32 and "override" in fc.precision_reason
    assert plan.tensors["wfc"].quant is None
    with pytest.raises(PlanError, match="matches no node"):
        calibrate(small_cnn_path, small_cnn_data, keep=["nosuch*=fp16"], progress=False)
    with pytest.raises(PlanError, match="PATTERN=PRECISION"):
        calibrate(small_cnn_path, small_cnn_data, keep=["fc"], progress=False)


def test_fp16_plan_keeps_overflowing_nodes_in_fp32(tmp_path):
    """A planted model whose activations exceed the FP16 range: those nodes stay FP32, with the reason."""
    big = helper.make_tensor("big", TensorProto.FLOAT, [], [1e5])
    nodes = [
        helper.make_node("Relu", ["x"], ["r"], name="small_relu"),
        helper.make_node("Mul", ["r", "big"], ["huge"], name="scale_up"),
        helper.make_node("Sigmoid", ["huge"], ["y"], name="squash"),
    ]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 8])], initializer=[big])
    path = tmp_path / "overflow.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    data = tmp_path / "d.npz"
    np.savez(data, x=np.random.default_rng(0).uniform(0.5, 2, (16, 8)).astype(np.float32))
    plan = calibrate(path, data, precision="fp16", progress=False).plan
    assert plan.node("small_relu").precision == Precision.FP16
    for name in ("scale_up", "squash"):
        node = plan.node(name)
        assert node.precision == Precision.FP32
        assert "fp16 maximum" in node.precision_reason
    from click.testing import CliRunner

    from mpcompile.cli.main import cli
    from mpcompile.ir import serde

    serde.save_plan(plan, tmp_path / "plan.onnx")
    out = CliRunner().invoke(cli, ["inspect", str(tmp_path / "plan.onnx"), "--explain"], terminal_width=200)
    assert out.exit_code == 0
    assert "fp16 maximum" in out.output.replace("\n", " ").replace("│", " ") or "fp16" in out.output


def test_plan_is_deterministic(small_cnn_path, small_cnn_data, tmp_path):
    from mpcompile.ir import serde

    a = serde.plan_hash(calibrate(small_cnn_path, small_cnn_data, method="entropy", progress=False).plan)
    b = serde.plan_hash(calibrate(small_cnn_path, small_cnn_data, method="entropy", progress=False).plan)
    assert a == b
