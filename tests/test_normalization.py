"""Decomposed normalizations (mpcompile/planning/normalization.py): their statistics stay float."""

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from mpcompile.ir.types import Precision
from mpcompile.pipeline import calibrate
from mpcompile.reference.fakequant import ReferenceRunner


def _layernorm_model(tmp_path, style: str):
    """MatMul → a LayerNorm written out as elementary ops → MatMul.

    ``jax``: var = E[x·x] - E[x]² with ReduceSum and a reciprocal-n Mul (jax2tf's export);
    ``torch``: var = ReduceMean((x - mean)**2) (older torch exports).
    """
    rng = np.random.default_rng(0)
    n = 64
    inits = [
        numpy_helper.from_array(rng.normal(size=(16, n)).astype(np.float32) / 4, "w_in"),
        numpy_helper.from_array(rng.normal(size=(n, 8)).astype(np.float32) / 8, "w_out"),
        numpy_helper.from_array(np.array([1e-6], np.float32), "eps"),
        numpy_helper.from_array(np.array([-1], np.int64), "axes"),
        numpy_helper.from_array(np.array([1.0 / n], np.float32), "inv_n"),
        numpy_helper.from_array(np.array([2.0], np.float32), "two"),
        numpy_helper.from_array(np.full(n, 10.0, np.float32), "offset"),
    ]
    # rows sit on an offset, as residual streams do: E[x²] and E[x]² are then close, their difference small
    nodes = [helper.make_node("MatMul", ["x", "w_in"], ["z"], name="dense_in"),
             helper.make_node("Add", ["z", "offset"], ["h"], name="shift")]
    if style == "jax":
        nodes += [
            helper.make_node("ReduceSum", ["h", "axes"], ["sum"], name="sum"),
            helper.make_node("Mul", ["h", "h"], ["square"], name="square"),
            helper.make_node("ReduceSum", ["square", "axes"], ["sum_sq"], name="sum_sq"),
            helper.make_node("Mul", ["sum", "inv_n"], ["mean"], name="mean"),
            helper.make_node("Mul", ["sum_sq", "inv_n"], ["mean_sq"], name="mean_sq"),
            helper.make_node("Mul", ["mean", "mean"], ["mean_2"], name="mean_2"),
            helper.make_node("Sub", ["mean_sq", "mean_2"], ["var"], name="var"),
            helper.make_node("Identity", ["mean"], ["mean_b"], name="mean_broadcast"),
            helper.make_node("Sub", ["h", "mean_b"], ["centred"], name="centre"),
        ]
    else:
        nodes += [
            helper.make_node("ReduceMean", ["h", "axes"], ["mean"], name="mean"),
            helper.make_node("Sub", ["h", "mean"], ["centred"], name="centre"),
            helper.make_node("Pow", ["centred", "two"], ["square"], name="square"),
            helper.make_node("ReduceMean", ["square", "axes"], ["var"], name="var"),
        ]
    nodes += [
        helper.make_node("Add", ["var", "eps"], ["var_eps"], name="var_eps"),
        helper.make_node("Sqrt", ["var_eps"], ["std"], name="std"),
        helper.make_node("Reciprocal", ["std"], ["rstd"], name="rstd"),
        helper.make_node("Mul", ["centred", "rstd"], ["normed"], name="normalize"),
        helper.make_node("MatMul", ["normed", "w_out"], ["y"], name="dense_out"),
    ]
    opset = 18 if style == "torch" else 17  # ReduceMean takes its axes as an input from opset 18
    graph = helper.make_graph(
        nodes, "layernorm", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 8])], inits,
    )
    path = tmp_path / f"ln_{style}.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)]), path)
    data = tmp_path / "x.npz"
    x = rng.normal(size=(64, 16)).astype(np.float32) * rng.choice([0.5, 1.0], size=(64, 1)).astype(np.float32)
    np.savez(data, x=x)
    return path, data


def _statistics_reason(node) -> bool:
    return node.precision == Precision.FP32 and "normalization statistics" in node.precision_reason


def test_jax_style_layernorm_keeps_its_statistics_float_and_its_matmuls_integer(tmp_path):
    path, data = _layernorm_model(tmp_path, "jax")
    plan = calibrate(path, data, progress=False).plan
    nodes = {n.name: n for n in plan.nodes}
    for name in ("square", "mean", "mean_sq", "mean_2", "var", "var_eps", "mean_broadcast"):
        assert _statistics_reason(nodes[name]), (name, nodes[name].precision, nodes[name].precision_reason)
    for name in ("dense_in", "dense_out"):
        assert nodes[name].precision == Precision.INT8, name
    # the row is read in float (normalization input): the offset sum that computes it and x - mean; (x - mean)·rstd
    # then has only float inputs and follows (no integer island)
    for name in ("shift", "centre"):
        assert nodes[name].precision == Precision.FP32 and "normalization input" in nodes[name].precision_reason, name
    assert nodes["normalize"].precision == Precision.FP32
    # the square and the variance are never rounded, nor the mean or the row; the layer quantizes what it reads
    assert plan.tensors["square"].quant is None and plan.tensors["var"].quant is None
    assert plan.tensors["mean"].quant is None and plan.tensors["h"].quant is None
    assert plan.tensors["normed"].quant is not None


def test_torch_style_layernorm_keeps_the_squared_deviation_float(tmp_path):
    path, data = _layernorm_model(tmp_path, "torch")
    plan = calibrate(path, data, progress=False).plan
    nodes = {n.name: n for n in plan.nodes}
    for name in ("var", "var_eps"):
        assert _statistics_reason(nodes[name]), name
    assert nodes["square"].precision == Precision.FP32  # Pow is float-only anyway
    assert plan.tensors["square"].quant is None  # the variance's reduction no longer quantizes its input
    # the mean and x - mean read the row: float as a fused LayerNorm reads it (normalization input); the layers stay integer
    for name in ("mean", "centre", "shift"):
        assert nodes[name].precision == Precision.FP32 and "normalization input" in nodes[name].precision_reason, name
    for name in ("dense_in", "dense_out"):
        assert nodes[name].precision == Precision.INT8, name


def test_float_statistics_keep_the_normalized_output_accurate(tmp_path):
    path, data = _layernorm_model(tmp_path, "jax")
    plan = calibrate(path, data, progress=False).plan
    statistics = ("square", "mean", "mean_sq", "mean_2", "var", "var_eps", "mean_broadcast")
    squared_in_int8 = calibrate(path, data, progress=False, keep=tuple(f"{n}=int8" for n in statistics)).plan
    x = np.load(data)["x"]
    fp32 = ReferenceRunner(plan, float_reference=True).run({"x": x})["y"]

    def error(p):
        return float(np.sqrt(np.mean((ReferenceRunner(p).run({"x": x})["y"] - fp32) ** 2)))

    assert error(plan) * 3 < error(squared_in_int8), (error(plan), error(squared_in_int8))


def test_a_sqrt_above_a_layer_is_no_normalization(tmp_path):
    """A magnitude computed after a MatMul over a ReduceMean: the walk stops at the layer."""
    rng = np.random.default_rng(2)
    inits = [numpy_helper.from_array(rng.normal(size=(1, 16)).astype(np.float32), "w"),
             numpy_helper.from_array(np.array([-1], np.int64), "axes")]
    nodes = [
        helper.make_node("ReduceMean", ["x", "axes"], ["m"], name="pool"),
        helper.make_node("MatMul", ["m", "w"], ["h"], name="dense"),
        helper.make_node("Relu", ["h"], ["r"], name="relu"),
        helper.make_node("Sqrt", ["r"], ["y"], name="root"),
    ]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 16])], inits)
    path = tmp_path / "g.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), path)
    np.savez(tmp_path / "x.npz", x=rng.normal(size=(16, 8)).astype(np.float32))
    plan = calibrate(path, tmp_path / "x.npz", progress=False).plan
    nodes = {n.name: n for n in plan.nodes}
    assert nodes["dense"].precision == Precision.INT8 and nodes["relu"].precision == Precision.INT8
    assert nodes["pool"].precision == Precision.INT8


def test_a_magnitude_is_data_not_a_statistic(tmp_path):
    """sqrt(re² + im²) on its way to a log spectrum scales nothing: it stays an ordinary activation."""
    rng = np.random.default_rng(3)
    inits = [numpy_helper.from_array(rng.normal(size=(8, 2, 1, 1)).astype(np.float32), "w"),
             numpy_helper.from_array(np.array([1], np.int64), "axes"),
             numpy_helper.from_array(np.array([1e-6], np.float32), "eps")]
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["reim"], name="transform"),
        helper.make_node("Mul", ["reim", "reim"], ["power"], name="square"),
        helper.make_node("ReduceSum", ["power", "axes"], ["energy"], keepdims=1, name="energy"),
        helper.make_node("Sqrt", ["energy"], ["magnitude"], name="magnitude"),
        helper.make_node("Transpose", ["magnitude"], ["y"], perm=[0, 1, 3, 2], name="to_frames"),
    ]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 2, 4, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 1, 4, 4])], inits)
    path = tmp_path / "g.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    np.savez(tmp_path / "x.npz", x=rng.normal(size=(8, 2, 4, 4)).astype(np.float32))
    nodes = {n.name: n for n in calibrate(path, tmp_path / "x.npz", progress=False).plan.nodes}
    assert nodes["square"].precision == Precision.INT8 and nodes["to_frames"].precision == Precision.INT8


def _residual_block(tmp_path, *, residual: bool = True, fused: bool = True):
    """stream = MatMul(x); f = MatMul(stream) + bias, whose first channel sits at 100 (an outlier channel,
    as transformer residual streams have); row = stream + f (or f alone); LayerNorm(row) → MatMul → y.

    The LayerNorm's scale is small on the outlier channel and 1 elsewhere, so the output rides on
    the ordinary channels, which one 8-bit scale over the whole row leaves a few levels.
    """
    rng = np.random.default_rng(4)
    n = 32
    w_stream = rng.normal(size=(16, n)).astype(np.float32) / 4
    b_f = rng.normal(size=n).astype(np.float32) / 8
    b_f[0] = 100.0
    gamma = np.ones(n, np.float32)
    gamma[0] = 0.01
    inits = [
        numpy_helper.from_array(w_stream, "w_stream"),
        numpy_helper.from_array(rng.normal(size=(n, n)).astype(np.float32) / 8, "w_f"),
        numpy_helper.from_array(b_f, "b_f"),
        numpy_helper.from_array(gamma, "gamma"),
        numpy_helper.from_array(np.zeros(n, np.float32), "beta"),
        numpy_helper.from_array(rng.normal(size=(n, 8)).astype(np.float32) / 4, "w_out"),
        numpy_helper.from_array(np.array([-1], np.int64), "axes"),
        numpy_helper.from_array(np.array([2.0], np.float32), "two"),
        numpy_helper.from_array(np.array([1e-5], np.float32), "eps"),
    ]
    nodes = [
        helper.make_node("MatMul", ["x", "w_stream"], ["stream"], name="dense_in"),
        helper.make_node("MatMul", ["stream", "w_f"], ["f0"], name="dense_f"),
        helper.make_node("Add", ["f0", "b_f"], ["f"], name="bias"),
    ]
    row = "f"
    if residual:
        nodes.append(helper.make_node("Add", ["stream", "f"], ["row"], name="residual"))
        row = "row"
    if fused:
        nodes.append(helper.make_node("LayerNormalization", [row, "gamma", "beta"], ["normed"], axis=-1, name="norm"))
    else:  # torch's ReduceMean((x - mean)²) form
        nodes += [
            helper.make_node("ReduceMean", [row, "axes"], ["mean"], name="mean"),
            helper.make_node("Sub", [row, "mean"], ["centred"], name="centre"),
            helper.make_node("Pow", ["centred", "two"], ["square"], name="square"),
            helper.make_node("ReduceMean", ["square", "axes"], ["var"], name="var"),
            helper.make_node("Add", ["var", "eps"], ["var_eps"], name="var_eps"),
            helper.make_node("Sqrt", ["var_eps"], ["std"], name="std"),
            helper.make_node("Div", ["centred", "std"], ["unit"], name="normalize"),
            helper.make_node("Mul", ["unit", "gamma"], ["normed"], name="scale"),
        ]
    nodes.append(helper.make_node("MatMul", ["normed", "w_out"], ["y"], name="dense_out"))
    graph = helper.make_graph(nodes, "residual", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 8])], inits)
    path = tmp_path / f"residual_{residual}_{fused}.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), path)
    data = tmp_path / "xr.npz"
    x = rng.normal(size=(64, 16)).astype(np.float32)
    np.savez(data, x=x)
    return path, data, x


def _input_reason(node) -> bool:
    return node.precision == Precision.FP32 and "normalization input" in node.precision_reason


def test_the_sums_a_layernorm_reads_run_in_float_and_the_layers_stay_integer(tmp_path):
    path, data, x = _residual_block(tmp_path)
    plan = calibrate(path, data, progress=False).plan
    nodes = {n.name: n for n in plan.nodes}
    for name in ("residual", "bias"):
        assert _input_reason(nodes[name]), (name, nodes[name].precision, nodes[name].precision_reason)
        assert "'norm'" in nodes[name].precision_reason
    assert plan.tensors["row"].quant is None and plan.tensors["f"].quant is None
    for name in ("dense_in", "dense_f", "dense_out"):
        assert nodes[name].precision == Precision.INT8, name
    fp32 = ReferenceRunner(plan, float_reference=True).run({"x": x})["y"]
    sums_int8 = calibrate(path, data, progress=False, keep=("residual=int8", "bias=int8")).plan

    def error(p):
        return float(np.sqrt(np.mean((ReferenceRunner(p).run({"x": x})["y"] - fp32) ** 2)))

    assert error(plan) * 3 < error(sums_int8), (error(plan), error(sums_int8))


def test_a_decomposed_layernorm_reads_its_row_in_float(tmp_path):
    path, data, _ = _residual_block(tmp_path, fused=False)
    plan = calibrate(path, data, progress=False).plan
    nodes = {n.name: n for n in plan.nodes}
    for name in ("residual", "bias", "mean", "centre"):
        assert _input_reason(nodes[name]), (name, nodes[name].precision, nodes[name].precision_reason)
    assert plan.tensors["row"].quant is None
    assert nodes["dense_f"].precision == Precision.INT8 and nodes["dense_out"].precision == Precision.INT8


def test_a_layer_read_by_a_layernorm_directly_stays_integer(tmp_path):
    """No sum between the layer and the normalization: nothing to keep float (the bias is the only sum)."""
    path, data, _ = _residual_block(tmp_path, residual=False)
    plan = calibrate(path, data, progress=False).plan
    nodes = {n.name: n for n in plan.nodes}
    assert _input_reason(nodes["bias"])
    assert nodes["dense_f"].precision == Precision.INT8 and plan.tensors["f0"].quant is not None


def test_a_sum_no_normalization_reads_stays_integer(tmp_path):
    path, data = _head_residual_without_norm(tmp_path)
    nodes = {n.name: n for n in calibrate(path, data, progress=False).plan.nodes}
    assert nodes["residual"].precision == Precision.INT8 and nodes["bias"].precision == Precision.INT8


def _head_residual_without_norm(tmp_path):
    rng = np.random.default_rng(5)
    inits = [numpy_helper.from_array(rng.normal(size=(16, 16)).astype(np.float32), "w"),
             numpy_helper.from_array(rng.normal(size=16).astype(np.float32), "b")]
    nodes = [helper.make_node("MatMul", ["x", "w"], ["f0"], name="dense"),
             helper.make_node("Add", ["f0", "b"], ["f"], name="bias"),
             helper.make_node("Add", ["x", "f"], ["r"], name="residual"),
             helper.make_node("Relu", ["r"], ["y"], name="relu")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 16])], inits)
    path = tmp_path / "plain_residual.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    np.savez(tmp_path / "xp.npz", x=rng.normal(size=(16, 16)).astype(np.float32))
    return path, tmp_path / "xp.npz"


def test_the_product_of_a_gated_activation_a_layernorm_reads_runs_in_float(tmp_path):
    """h · σ(h) (SiLU written out; GELU's x · Φ(x) alike) → LayerNorm: the product is the row, the gate stays integer."""
    rng = np.random.default_rng(6)
    inits = [numpy_helper.from_array(rng.normal(size=(16, 32)).astype(np.float32), "w"),
             numpy_helper.from_array(np.ones(32, np.float32), "gamma"),
             numpy_helper.from_array(np.zeros(32, np.float32), "beta"),
             numpy_helper.from_array(rng.normal(size=(32, 8)).astype(np.float32), "w_out")]
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"], name="dense"),
             helper.make_node("Sigmoid", ["h"], ["gate"], name="gate"),
             helper.make_node("Mul", ["h", "gate"], ["act"], name="product"),
             helper.make_node("LayerNormalization", ["act", "gamma", "beta"], ["normed"], axis=-1, name="norm"),
             helper.make_node("MatMul", ["normed", "w_out"], ["y"], name="dense_out")]
    graph = helper.make_graph(nodes, "gated", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 8])], inits)
    path = tmp_path / "gated.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    np.savez(tmp_path / "xg.npz", x=rng.normal(size=(16, 16)).astype(np.float32))
    plan = calibrate(path, tmp_path / "xg.npz", progress=False).plan
    nodes = {n.name: n for n in plan.nodes}
    assert _input_reason(nodes["product"]) and plan.tensors["act"].quant is None
    for name in ("dense", "gate", "dense_out"):
        assert nodes[name].precision == Precision.INT8, name
