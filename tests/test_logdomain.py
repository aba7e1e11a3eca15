"""Log-domain front-ends (mpcompile/planning/logdomain.py): the linear chain into a wide-span log stays float."""

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from mpcompile.ir.types import Precision
from mpcompile.pipeline import calibrate
from mpcompile.reference.fakequant import ReferenceRunner


def _log_spectrum(tmp_path, decades: float, eps: float):
    """Frames → filter-bank Conv → power (x·x) → + eps → Log → dense layer.

    Each frame's loudness is drawn log-uniformly over ``decades`` decades of amplitude, as quiet and
    loud passages of audio are; the log of the power then spans twice that (floored by ``eps``).
    """
    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(rng.normal(size=(8, 1, 16)).astype(np.float32) / 4, "bank"),
        numpy_helper.from_array(np.array([eps], np.float32), "eps"),
        numpy_helper.from_array(rng.normal(size=(8, 4)).astype(np.float32) / 4, "w_out"),
        numpy_helper.from_array(np.array([0, 2, 1], np.int64), "perm_shape"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "bank"], ["bins"], strides=[16], name="filter_bank"),
        helper.make_node("Mul", ["bins", "bins"], ["power"], name="power"),
        helper.make_node("Add", ["power", "eps"], ["floored"], name="floor"),
        helper.make_node("Log", ["floored"], ["log_power"], name="log"),
        helper.make_node("Transpose", ["log_power"], ["frames"], perm=[0, 2, 1], name="to_frames"),
        helper.make_node("MatMul", ["frames", "w_out"], ["y"], name="dense"),
    ]
    graph = helper.make_graph(
        nodes, "log_spectrum", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 1, 256])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 16, 4])], inits,
    )
    path = tmp_path / f"logspec{decades:g}.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    gain = 10.0 ** rng.uniform(-decades, 0, size=(48, 1, 16))
    x = (rng.normal(size=(48, 1, 16, 16)) * gain[..., None]).reshape(48, 1, 256).astype(np.float32)
    data = tmp_path / f"x{decades:g}.npz"
    np.savez(data, x=x)
    return path, data, x


def test_the_chain_into_a_wide_span_log_runs_in_float_and_what_follows_stays_integer(tmp_path):
    path, data, x = _log_spectrum(tmp_path, decades=4, eps=1e-10)
    plan = calibrate(path, data, progress=False).plan
    nodes = {n.name: n for n in plan.nodes}
    for name in ("filter_bank", "power", "floor"):
        assert nodes[name].precision == Precision.FP32, (name, nodes[name].precision_reason)
        assert "log-domain input" in nodes[name].precision_reason and "'log'" in nodes[name].precision_reason
    assert "decades" in nodes["floor"].precision_reason
    assert plan.tensors["floored"].quant is None and plan.tensors["bins"].quant is None
    # the log's values span a few tens of units: the layer after it stays integer
    assert nodes["dense"].precision == Precision.INT8 and plan.tensors["frames"].quant is not None
    fp32 = ReferenceRunner(plan, float_reference=True).run({"x": x})["y"]
    names = ("filter_bank", "power", "floor")
    linear_int8 = calibrate(path, data, progress=False, keep=tuple(f"{n}=int8" for n in names)).plan

    def error(p):
        return float(np.sqrt(np.mean((ReferenceRunner(p).run({"x": x})["y"] - fp32) ** 2)))

    assert error(plan) * 5 < error(linear_int8), (error(plan), error(linear_int8))


def test_a_log_of_a_narrow_span_stays_integer(tmp_path):
    """Loudness within a factor of 2 and a large floor: the log's input spans less than the grid's 255 levels."""
    path, data, _ = _log_spectrum(tmp_path, decades=0.3, eps=1.0)
    plan = calibrate(path, data, progress=False).plan
    nodes = {n.name: n for n in plan.nodes}
    for name in ("filter_bank", "power", "floor", "dense"):
        assert nodes[name].precision == Precision.INT8, (name, nodes[name].precision_reason)


def test_an_override_beats_the_log_domain_rule(tmp_path):
    path, data, _ = _log_spectrum(tmp_path, decades=4, eps=1e-10)
    plan = calibrate(path, data, progress=False, keep=("filter_bank=int8",)).plan
    nodes = {n.name: n for n in plan.nodes}
    assert nodes["filter_bank"].precision == Precision.INT8
    assert nodes["power"].precision == Precision.FP32
