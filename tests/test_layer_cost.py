"""Per-layer cost: Runner.profile on each backend, the attribution of fused kernels and Q/DQ to plan nodes,
``bench --per-layer``, and the latency objective's candidate order from given per-node costs (nothing timed
is asserted: the costs that decide are injected)."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from mpcompile.backends.profile import Layer, LayerProfile, ProfilingUnavailable, attribute, source_owners
from mpcompile.ir.graph import Graph, Node, Tensor
from mpcompile.ir.serde import read_graph


def _compiled(tmp_path, model_path, data_path, backend, precision="int8"):
    from mpcompile.pipeline import compile as compile_model

    out = tmp_path / f"out-{backend}-{precision}"
    result = compile_model(str(model_path), str(data_path), backends=[backend], out_dir=out, conform=False,
                           progress=False, precision=precision)
    assert backend in result.artifacts, result.failures
    return result.artifacts[backend], read_graph(out / "plan.onnx")


def _runner(artifact):
    from mpcompile.backends.registry import get_backend

    backend = get_backend(artifact.backend)
    return backend.runner(artifact, backend.options())


def _feeds(data_path):
    data = np.load(data_path)
    return {k: data[k][:1] for k in data.files}


# ---------------------------------------------------------------------------- the attribution rule
def _conv_relu_conv_qdq() -> Graph:
    """x → Q/DQ → conv1 (weight DQ) → Q/DQ → relu → Q/DQ → conv2 (weight DQ) → Q/DQ → y, as a QDQ lowering writes it."""
    g = Graph(name="qdq")
    g.inputs, g.outputs = ["x"], ["y"]
    for name in ("x", "x_q", "x_dq", "c1_f", "c1_q", "c1", "r_f", "r_q", "r", "c2_f", "c2_q", "y", "w1", "w2"):
        g.add_tensor(Tensor(name, np.float32, [1, 4, 8, 8]))
    for name in ("w1_quantized", "w2_quantized", "s", "z"):
        g.add_tensor(Tensor(name, value=np.ones((4, 4, 1, 1), np.int8) if "w" in name else np.array(1, np.int8)))
    g.nodes = [
        Node("x_QuantizeLinear", "QuantizeLinear", ["x", "s", "z"], ["x_q"]),
        Node("x_DequantizeLinear", "DequantizeLinear", ["x_q", "s", "z"], ["x_dq"]),
        Node("w1_DequantizeLinear", "DequantizeLinear", ["w1_quantized", "s", "z"], ["w1"]),
        Node("conv1", "Conv", ["x_dq", "w1"], ["c1_f"]),
        Node("c1_QuantizeLinear", "QuantizeLinear", ["c1_f", "s", "z"], ["c1_q"]),
        Node("c1_DequantizeLinear", "DequantizeLinear", ["c1_q", "s", "z"], ["c1"]),
        Node("relu", "Relu", ["c1"], ["r_f"]),
        Node("r_QuantizeLinear", "QuantizeLinear", ["r_f", "s", "z"], ["r_q"]),
        Node("r_DequantizeLinear", "DequantizeLinear", ["r_q", "s", "z"], ["r"]),
        Node("w2_DequantizeLinear", "DequantizeLinear", ["w2_quantized", "s", "z"], ["w2"]),
        Node("conv2", "Conv", ["r", "w2"], ["c2_f"]),
        Node("y_QuantizeLinear", "QuantizeLinear", ["c2_f", "s", "z"], ["c2_q"]),
        Node("y_DequantizeLinear", "DequantizeLinear", ["c2_q", "s", "z"], ["y"]),
    ]
    return g


def test_unfused_qdq_belong_to_the_node_they_feed_or_come_from():
    """A quantizer goes to the node whose output it quantizes, a dequantizer to the node that reads it (a weight's to
    its Conv), the input's pair to the first node, the output's pair to the last."""
    owners = source_owners(_conv_relu_conv_qdq(), ["conv1", "relu", "conv2"])
    assert owners == {
        "x_QuantizeLinear": "conv1", "x_DequantizeLinear": "conv1", "w1_DequantizeLinear": "conv1", "conv1": "conv1",
        "c1_QuantizeLinear": "conv1", "c1_DequantizeLinear": "relu", "relu": "relu",
        "r_QuantizeLinear": "relu", "r_DequantizeLinear": "conv2", "w2_DequantizeLinear": "conv2", "conv2": "conv2",
        "y_QuantizeLinear": "conv2", "y_DequantizeLinear": "conv2",
    }
    # Without the plan's names, every node but a Q/DQ counts as one: the same answer here.
    assert source_owners(_conv_relu_conv_qdq()) == owners


def test_fused_kernels_and_runtime_layers_are_given_to_their_plan_node():
    """ORT-like: QLinearConv keeps the Conv's name plus a suffix, a layout Transpose of its own, the Relu absorbed;
    OpenVINO-like: a FakeQuantize named after the pair's DequantizeLinear is the producer's requantization."""
    source = _conv_relu_conv_qdq()
    executed = [
        Layer("x_QuantizeLinear", "QuantizeLinear", ("x",), ("x_q",)),
        Layer("Transpose", "Transpose", ("x_q",), ("t",)),
        Layer("conv1_token_1", "QLinearConv", ("t", "w1_quantized"), ("r_q",)),
        Layer("c1_DequantizeLinear", "FakeQuantize", ("r_q",), ("fq",)),
        Layer("conv2/WithoutBiases", "Convolution", ("fq",), ("c2_q",), origins=("conv2/WithoutBiases", "y_DequantizeLinear")),
        Layer("y_DequantizeLinear", "DequantizeLinear", ("c2_q",), ("y",)),
        Layer("stray", "Identity", (), ()),
    ]
    times = {layer.name: 10.0 for layer in executed}
    profile = attribute(executed, times, source, ["conv1", "relu", "conv2"], backend="test", artifact="a", repeats=1)
    assert profile.layers == {"x_QuantizeLinear": "conv1", "Transpose": "conv1", "conv1_token_1": "conv1",
                              "c1_DequantizeLinear": "conv1", "conv2/WithoutBiases": "conv2", "y_DequantizeLinear": "conv2"}
    assert profile.nodes == {"conv1": 40.0, "conv2": 20.0}
    assert profile.unmapped == {"stray": 10.0}  # reaches no plan node: reported, not guessed
    assert profile.total_us == 70.0 and profile.cost_of(["conv1", "relu"]) == 40.0


def test_a_kernel_named_after_its_fused_activation_or_bias_is_the_weighted_node():
    """ORT's NCHWc Conv with activation=Relu is named ``<the Relu's output>_nchwc``; OpenVINO's FullyConnected for
    MatMul → Add is named after the Add: both are the weighted node's cost."""
    g = Graph(name="fused")
    g.inputs, g.outputs = ["x"], ["o"]
    for name in ("x", "c", "r", "m", "o"):
        g.add_tensor(Tensor(name, np.float32, [1, 4]))
    g.add_tensor(Tensor("w", value=np.ones((4, 4), np.float32)))
    g.add_tensor(Tensor("b", value=np.ones(4, np.float32)))
    g.nodes = [Node("conv", "Conv", ["x", "w"], ["c"]), Node("act", "Relu", ["c"], ["r"]),
               Node("mm", "MatMul", ["r", "w"], ["m"]), Node("bias", "Add", ["m", "b"], ["o"])]
    executed = [Layer("r_nchwc", "Conv", ("x", "reordered_w"), ("t",)), Layer("bias", "FullyConnected", ("t",), ("o",))]
    profile = attribute(executed, {"r_nchwc": 5.0, "bias": 7.0}, g, ["conv", "act", "mm", "bias"], backend="t",
                        artifact="a", repeats=1)
    assert profile.nodes == {"conv": 5.0, "mm": 7.0}


# ---------------------------------------------------------------------------- the backends
def test_onnxruntime_profile_maps_every_layer_to_a_plan_node(tmp_path, small_cnn_path, small_cnn_data):
    artifact, plan = _compiled(tmp_path, small_cnn_path, small_cnn_data, "onnxruntime")
    runner = _runner(artifact)
    assert runner.supports_profile
    nodes = [n.name for n in plan.nodes]
    profile = runner.profile(_feeds(small_cnn_data), repeats=3, plan_nodes=nodes)
    assert profile.backend == "onnxruntime" and profile.repeats == 3
    assert profile.unmapped == {}, f"layers given to no plan node: {profile.unmapped}"
    assert set(profile.nodes) <= set(nodes) and set(profile.layers.values()) <= set(nodes)
    # the fused integer convolutions and the Gemm run under their plan names, Q/DQ and layout nodes included
    assert {"conv1", "conv2", "fc"} <= set(profile.nodes)
    assert any(layer.endswith("QuantizeLinear") for layer in profile.layers)
    # the FP32 model, profiled against the same plan: its (unquantized) nodes map too
    fp32 = _runner(type(artifact)("onnxruntime", small_cnn_path, [small_cnn_path])).profile(_feeds(small_cnn_data), 3, nodes)
    assert fp32.unmapped == {} and {"conv1", "conv2", "fc"} <= set(fp32.nodes)


def test_openvino_profile_maps_layer_names_to_plan_nodes(tmp_path, small_cnn_path, small_cnn_data):
    pytest.importorskip("openvino")
    artifact, plan = _compiled(tmp_path, small_cnn_path, small_cnn_data, "openvino")
    runner = _runner(artifact)
    assert runner.supports_profile
    nodes = [n.name for n in plan.nodes]
    profile = runner.profile(_feeds(small_cnn_data), repeats=3, plan_nodes=nodes)
    assert profile.backend == "openvino"
    assert profile.unmapped == {}, f"layers given to no plan node: {profile.unmapped}"
    assert set(profile.nodes) <= set(nodes)
    assert {"conv1", "conv2"} <= set(profile.nodes)  # OpenVINO's ``conv1/WithoutBiases`` is the plan's conv1
    # what ran for the input's quantizer (the lowering's Div → Round → Clip → Mul, then a FakeQuantize) is conv1's
    assert all(owner == "conv1" for layer, owner in profile.layers.items() if layer.startswith("input_"))
    runner.close()


def test_tflite_says_per_layer_cost_is_not_available(tmp_path, small_cnn_path, small_cnn_data):
    if importlib.util.find_spec("ai_edge_litert") is None:
        pytest.skip("LiteRT is not installed")
    from mpcompile.bench import Subject, profile_layers

    artifact, _ = _compiled(tmp_path, small_cnn_path, small_cnn_data, "tflite")
    runner = _runner(artifact)
    assert not runner.supports_profile
    with pytest.raises(ProfilingUnavailable, match="no per-layer profiler"):
        runner.profile(_feeds(small_cnn_data))
    runner.close()
    from mpcompile.backends.registry import get_backend

    backend = get_backend("tflite")
    subjects = [Subject("int8", artifact, backend, backend.options()),
                Subject("fp32", artifact, backend, backend.options(), baseline=True)]
    [comparison] = profile_layers(subjects, _feeds(small_cnn_data), repeats=1, rounds=1)
    assert comparison.artifact is None and "no per-layer profiler" in comparison.error
    assert "not available" in comparison.format()


def test_bench_per_layer_lists_the_nodes_slower_than_fp32(tmp_path, small_cnn_path, small_cnn_data):
    from click.testing import CliRunner

    from mpcompile.cli.main import cli
    from mpcompile.pipeline import compile as compile_model

    out = tmp_path / "out"
    compile_model(str(small_cnn_path), str(small_cnn_data), backends=["onnxruntime"], out_dir=out, conform=False,
                  progress=False)
    result = CliRunner().invoke(cli, ["bench", str(out), "--data", str(small_cnn_data), "--batch", "1", "--seconds",
                                      "0.05", "--rounds", "2", "--per-layer", "--json", str(tmp_path / "b.json")])
    assert result.exit_code == 0, result.output
    assert "per-layer cost on onnxruntime at batch 1" in result.output
    assert "FP32 µs" in result.output and "nodes cost more here than in FP32" in result.output
    import json

    [layers] = json.loads((tmp_path / "b.json").read_text())["per_layer"]
    assert layers["error"] is None and layers["artifact"]["unmapped"] == {}
    assert {"conv1", "fc"} <= set(layers["artifact"]["nodes"]) and {"conv1", "fc"} <= set(layers["baseline_profile"]["nodes"])


# ---------------------------------------------------------------------------- the latency objective
def _group(index, *nodes):
    from mpcompile.planning.auto import Group

    return Group(index, tuple(nodes), 0, 0)


def test_slower_in_int8_orders_by_measured_loss():
    from mpcompile.objective import group_costs, slower_in_int8

    groups = [_group(0, "a", "b"), _group(1, "c"), _group(2, "d"), _group(3, "e")]
    int8 = LayerProfile("t", "x", 1, {"a": 5.0, "b": 30.0, "c": 12.0, "d": 50.0, "e": 10.5})
    floats = LayerProfile("t", "y", 1, {"a": 10.0, "b": 10.0, "c": 20.0, "d": 10.0, "e": 10.0})
    costs = group_costs(groups, int8, floats)
    assert [c.saving_us for c in costs] == [-15.0, 8.0, -40.0, -0.5]
    # d loses 40 µs, a+b 15; c saves; e's 0.5 µs is below the profilers' resolution
    assert [c.group.index for c in slower_in_int8(costs)] == [2, 0]
    assert [c.group.index for c in slower_in_int8(costs, promoted=[2])] == [0]  # already float: not proposed again


def test_proposed_sizes():
    from mpcompile.planning.auto import proposed_sizes

    assert proposed_sizes(0, 4) == []
    assert proposed_sizes(1, 4) == [1]
    assert proposed_sizes(3, 4) == [1, 2, 3]
    assert proposed_sizes(20, 4) == [1, 2, 4, 20]
    assert proposed_sizes(20, 1) == [20]


def _latency_objective(monkeypatch, small_cnn_path, small_cnn_data, profile_pair):
    """--objective latency with the per-layer profiles given and the end-to-end timing left out (nothing timed)."""
    from mpcompile import objective
    from mpcompile.backends.registry import resolve_targets
    from mpcompile.pipeline import calibrate

    if profile_pair is not None:
        monkeypatch.setattr(objective.LayerCost, "profile_pair", lambda self, *args: profile_pair(*args))
    kept = {}

    def untimed(auto, targets, sample, cost=None):
        kept["cost"] = cost
        auto.notes.extend(cost.notes)

    monkeypatch.setattr(objective, "fastest_within_budget", untimed)
    ort = resolve_targets(["onnxruntime"])[0][0]
    result = calibrate(small_cnn_path, small_cnn_data, precision="auto", metric="cosine", max_accuracy_drop=0.5,
                       eval_data=small_cnn_data, samples=32, progress=False, targets=[ort], objective="latency")
    return result.auto, kept["cost"]


def _float_nodes(plan):
    return {n.name for n in plan.nodes if n.precision_reason.startswith("auto:")}


def test_latency_objective_promotes_the_groups_slower_in_int8_largest_loss_first(monkeypatch, small_cnn_path,
                                                                                 small_cnn_data):
    """Injected costs: fc loses 40 µs in INT8, conv2 20 µs, everything else is faster in INT8. The extra rows promote
    fc's group, then fc's and conv2's, then the float plan; the notes say so."""
    loss = {"fc": 40.0, "conv2": 20.0}

    def given(target, int8_plan, float_plan, sample):
        int8 = LayerProfile("onnxruntime", "i", 1, {n.name: 10.0 + loss.get(n.name, -5.0) for n in int8_plan.nodes})
        floats = LayerProfile("onnxruntime", "f", 1, {n.name: 10.0 for n in float_plan.nodes})
        return int8, floats

    auto, cost = _latency_objective(monkeypatch, small_cnn_path, small_cnn_data, given)
    assert auto.chosen.promoted == 0  # the budget is loose: uniform INT8 is the most-INT8 plan
    fc, conv2 = (next(c.group for c in cost.costs if name in c.group.nodes) for name in ("fc", "conv2"))
    extra = [_float_nodes(auto.plan_of(row)) for row in auto.rows[1:]]
    assert extra[0] == set(fc.nodes)
    assert extra[1] == set(fc.nodes) | set(conv2.nodes)
    assert auto.rows[-1].int8_mac_share == 0.0 and len(auto.rows) == 4  # then the float plan, nothing else
    assert any("per-layer cost on onnxruntime: 2 group(s) cost more in INT8" in n for n in auto.notes)
    assert [c.group.index for c in cost.order] == [fc.index, conv2.index]


def test_latency_objective_falls_back_to_accuracy_order_without_a_profiler(monkeypatch, small_cnn_path, small_cnn_data):
    def unavailable(*args):
        raise ProfilingUnavailable("TestRunner has no per-layer profiler")

    auto, cost = _latency_objective(monkeypatch, small_cnn_path, small_cnn_data, unavailable)
    assert cost.order is None
    assert any("per-layer cost not available on onnxruntime" in n and "accuracy order" in n for n in auto.notes)
    assert len(auto.rows) > 2  # the greedy accuracy-order rows past the answer, then the float plan
    assert auto.rows[-1].int8_mac_share == 0.0


def test_latency_objective_profiles_on_onnxruntime(monkeypatch, small_cnn_path, small_cnn_data):
    """The real profiles of the small CNN on ORT: every group has a measured cost and a note says what was found."""
    auto, cost = _latency_objective(monkeypatch, small_cnn_path, small_cnn_data, None)
    assert cost.costs and all(c.int8_us >= 0 and c.float_us >= 0 for c in cost.costs)
    assert sum(c.int8_us for c in cost.costs) > 0
    assert any(n.startswith("per-layer cost on onnxruntime") for n in auto.notes)

