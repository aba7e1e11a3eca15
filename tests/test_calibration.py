"""Calibration collection over real ONNX Runtime runs: exact statistics, bounded memory, degenerate data."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from mpcompile import importer
from mpcompile.calibration.collect import CalibrationResult, calibrate_graph, observed_tensors
from mpcompile.data import InputSpec, open_dataset
from mpcompile.errors import DataError
from mpcompile.ir import serde
from mpcompile.ir.types import QType


def _dataset(graph, path):
    specs = [InputSpec(n, graph.tensor(n).shape, graph.tensor(n).dtype) for n in graph.inputs]
    return open_dataset(path, specs)


def _all_intermediates(graph, data):
    exposed = graph.copy()
    names = observed_tensors(graph)
    exposed.outputs = list(dict.fromkeys(exposed.outputs + names))
    for n in names:
        exposed.tensors[n].shape = None
    sess = ort.InferenceSession(serde.onnx_bytes(exposed), providers=["CPUExecutionProvider"])
    outs = sess.run(names, data)
    return dict(zip(names, outs))


def test_minmax_matches_direct_computation(small_cnn_path, small_cnn_data):
    graph = importer.load(small_cnn_path)
    result = calibrate_graph(graph, _dataset(graph, small_cnn_data), batch_size=7, progress=False)
    truth = _all_intermediates(graph, {"input": np.load(small_cnn_data)["input"]})
    assert set(result.observers) | set(result.aliases) == set(truth)
    # max-pool and flatten outputs borrow their inputs' statistics; the convolutions' outputs, read
    # only by a Relu, their Relu's (quantizing them to it changes nothing the Relu outputs)
    assert result.aliases == {"p1": "r1", "f": "g", "c1": "r1", "c2": "r2"}
    for name, value in truth.items():
        s = result.summary(name)
        if name in ("c1", "c2"):
            relu = np.maximum(value, 0)
            assert (s["min"], s["max"]) == (float(relu.min()), float(relu.max()))
            continue
        if name in result.aliases:  # a stand-in range that contains the tensor's own
            assert s["min"] <= float(value.min()) and s["max"] >= float(value.max())
            continue
        assert s["min"] == pytest.approx(float(value.min()), rel=1e-6, abs=1e-7)
        assert s["max"] == pytest.approx(float(value.max()), rel=1e-6, abs=1e-7)
        assert s["count"] == value.size
    assert result.samples == 64


@pytest.mark.parametrize("method", ["minmax", "percentile", "entropy", "mse"])
def test_split_passes_give_the_same_statistics(small_cnn_path, small_cnn_data, method):
    graph = importer.load(small_cnn_path)
    ds = _dataset(graph, small_cnn_data)
    whole = calibrate_graph(graph, ds, method=method, batch_size=16, progress=False)
    split = calibrate_graph(graph, ds, method=method, batch_size=16, progress=False, memory_budget=1)  # one tensor per pass
    for name in whole.observers:
        assert whole.range(name, QType.INT8, False) == pytest.approx(split.range(name, QType.INT8, False), rel=1e-6)


def test_cache_round_trip_and_rederive(tmp_path, small_cnn_path, small_cnn_data):
    graph = importer.load(small_cnn_path)
    result = calibrate_graph(graph, _dataset(graph, small_cnn_data), method="percentile", progress=False)
    result.save(tmp_path / "stats.json")
    back = CalibrationResult.load(tmp_path / "stats.json")
    for name in result.observers:
        assert back.range(name, QType.INT8, False) == result.range(name, QType.INT8, False)
    mse = back.with_method("mse")
    assert mse.method == "mse"
    for name in result.observers:
        lo, hi = mse.range(name, QType.INT8, False)
        assert np.isfinite(lo) and np.isfinite(hi) and lo <= 0 <= hi or lo >= 0


def test_constant_activation_gets_a_valid_scale(tmp_path):
    from mpcompile.pipeline import calibrate

    # y = x * 0: a constant-zero activation
    zero = helper.make_tensor("zero", TensorProto.FLOAT, [], [0.0])
    node = helper.make_node("Mul", ["x", "zero"], ["y"], name="mul")
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])], initializer=[zero])
    path = tmp_path / "zero.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    np.savez(tmp_path / "d.npz", x=np.random.default_rng(0).normal(size=(8, 4)).astype(np.float32))
    plan = calibrate(path, tmp_path / "d.npz", progress=False).plan
    spec = plan.tensors["y"].quant
    assert spec is not None and np.isfinite(spec.scale) and spec.scale > 0


def test_memory_does_not_grow_with_samples(small_cnn_path, tmp_path):
    """Observer state is O(bins): it is identical in size after 10x more samples."""
    import json

    graph = importer.load(small_cnn_path)
    sizes = []
    for n in (32, 320):
        path = tmp_path / f"d{n}.npz"
        np.savez(path, input=np.random.default_rng(n).normal(size=(n, 3, 16, 16)).astype(np.float32))
        result = calibrate_graph(graph, _dataset(graph, path), method="entropy", progress=False)
        sizes.append(len(json.dumps(result.to_json())))
    assert sizes[1] <= sizes[0] * 1.1


def test_wrong_shape_is_a_data_error(small_cnn_path, tmp_path):
    graph = importer.load(small_cnn_path)
    path = tmp_path / "bad.npz"
    np.savez(path, input=np.zeros((4, 16, 16, 3), np.float32))
    with pytest.raises(DataError, match="input"):
        calibrate_graph(graph, _dataset(graph, path), progress=False)


def test_minmax_batches_equal_one_pass(small_cnn_path, small_cnn_data):
    """Min/max streamed in batches equal the extremes of every value seen in one pass."""
    from mpcompile.calibration.collect import observed_tensors
    from mpcompile.ortsession import make_session

    graph = importer.load(small_cnn_path)
    ds = _dataset(graph, small_cnn_data)
    batched = calibrate_graph(graph, ds, batch_size=3, progress=False)
    names = [n for n in observed_tensors(graph) if n in batched.observers]
    feeds = next(iter(ds.batches(10_000)))
    values = make_session(graph, names).run(names, feeds)
    for name, value in zip(names, values):
        s = batched.summary(name)
        assert (s["min"], s["max"], s["count"]) == (float(value.min()), float(value.max()), value.size), name

def test_relu_input_quantized_to_the_relu_range_computes_what_the_fused_pair_does(small_cnn_path, small_cnn_data):
    """A Conv output read only by a Relu borrows the Relu's statistics. When the pair is split across
    precisions, that spec reproduces what the pair computes fused."""
    from mpcompile.planning.config import Override, PlanConfig
    from mpcompile.planning.plan import make_plan
    from mpcompile.reference import ReferenceRunner

    graph = importer.load(small_cnn_path)
    stats = calibrate_graph(graph, _dataset(graph, small_cnn_data), method="percentile", batch_size=16, progress=False)
    feeds = {"input": np.load(small_cnn_data)["input"][:16]}
    fused = make_plan(graph, stats, PlanConfig())
    assert fused.tensors["c1"].quant is None
    r1 = fused.tensors["r1"].quant
    # int8 Conv, FP32 Relu: exactly the fused int8 pair
    relu_float = make_plan(graph, stats, PlanConfig(overrides=(Override.parse("Relu=fp32"),)))
    assert relu_float.tensors["c1"].quant == r1.replace(provenance=relu_float.tensors["c1"].quant.provenance)
    np.testing.assert_array_equal(ReferenceRunner(relu_float).run(feeds, ["r1"])["r1"], ReferenceRunner(fused).run(feeds, ["r1"])["r1"])
    # FP32 Conv, int8 Relu: the FP32 pair's output quantized to the Relu's spec
    conv_float = make_plan(graph, stats, PlanConfig(overrides=(Override.parse("Conv=fp32"),)))
    fp32 = ReferenceRunner(conv_float, float_reference=True).run(feeds, ["r1"])["r1"]
    got = ReferenceRunner(conv_float).run(feeds, ["r1"])["r1"]
    np.testing.assert_allclose(got, conv_float.tensors["r1"].quant.fake_quantize(fp32), rtol=0, atol=1e-6)


@pytest.mark.parametrize("method, options", [("percentile", {}), ("minmax", {}), ("minmax", {"moving_average": 0.5})])
def test_batches_run_in_slices_give_the_same_statistics(small_cnn_path, small_cnn_data, monkeypatch, method, options):
    """Batches are run in slices when their activations exceed ``RUN_BYTES``; the statistics do not change
    (a moving average, which depends on batching, is never sliced)."""
    from mpcompile.calibration import collect

    graph = importer.load(small_cnn_path)
    ds = _dataset(graph, small_cnn_data)
    whole = calibrate_graph(graph, ds, method=method, method_options=options, batch_size=32, progress=False)
    runs = []
    real_run = collect._run
    monkeypatch.setattr(collect, "_run", lambda session, names, feeds, *a: runs.append(len(feeds["input"])) or real_run(session, names, feeds, *a))
    monkeypatch.setattr(collect, "RUN_BYTES", 1)
    sliced = calibrate_graph(graph, ds, method=method, method_options=options, batch_size=32, progress=False)
    assert set(runs) == ({32} if options else {1})
    for name in whole.observers:
        assert sliced.range(name, QType.INT8, False) == whole.range(name, QType.INT8, False), name


def test_integer_plans_observe_only_tensors_next_to_integer_nodes(tmp_path):
    """Tensors between two float nodes are not observed for a uniform integer plan, and the plan is
    exactly the one full statistics give."""
    from mpcompile import pipeline

    rng = np.random.default_rng(0)
    w1, w2 = rng.standard_normal((8, 16)).astype(np.float32), rng.standard_normal((16, 4)).astype(np.float32)
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h"]),
        helper.make_node("Sin", ["h"], ["s"]),
        helper.make_node("Cos", ["s"], ["c"]),
        helper.make_node("MatMul", ["c", "w2"], ["y"]),
    ]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])],
                              initializer=[onnx.numpy_helper.from_array(w1, "w1"), onnx.numpy_helper.from_array(w2, "w2")])
    model = tmp_path / "m.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), model)
    data = tmp_path / "d.npz"
    np.savez(data, x=rng.standard_normal((64, 8)).astype(np.float32))
    pruned = pipeline.calibrate(model, data, method="percentile", progress=False)
    full = pipeline.calibrate(model, data, method="percentile", progress=False, save_stats=tmp_path / "stats.json")
    assert "s" in full.stats.observers and "s" not in pruned.stats.observers
    assert serde.plan_hash(pruned.plan) == serde.plan_hash(full.plan)


@pytest.mark.parametrize("method, options", [("minmax", {}), ("minmax", {"moving_average": 0.3}), ("percentile", {}),
                                             ("entropy", {}), ("mse", {})])
def test_observing_beside_onnx_runtime_gives_the_same_statistics(small_cnn_path, small_cnn_data, monkeypatch, method, options):
    """Observers run in a worker thread while ORT computes the next run (``collect.OVERLAP``); every observer's
    state is identical to observing each run before the next one starts."""
    from mpcompile.calibration import collect

    graph = importer.load(small_cnn_path)
    ds = _dataset(graph, small_cnn_data)
    monkeypatch.setattr(collect, "OVERLAP", False)
    in_turn = calibrate_graph(graph, ds, method=method, method_options=options, batch_size=5, progress=False)
    monkeypatch.setattr(collect, "OVERLAP", True)
    monkeypatch.setattr(collect, "_spare_core", lambda: True)  # a one-core runner would not start the thread
    overlapped = calibrate_graph(graph, ds, method=method, method_options=options, batch_size=5, progress=False)
    assert overlapped.to_json() == in_turn.to_json()
    split = calibrate_graph(graph, ds, method=method, method_options=options, batch_size=5, progress=False, memory_budget=1)
    assert split.to_json()["tensors"] == in_turn.to_json()["tensors"]


def test_graph_inputs_are_observed_in_the_feeds_not_exposed(small_cnn_path, small_cnn_data, monkeypatch):
    """A graph input's statistics come from the fed arrays (exposing it as an output only makes ORT copy it)."""
    from mpcompile.calibration import collect
    from mpcompile.calibration.observers import make_observer

    graph = importer.load(small_cnn_path)
    exposed = []
    real = collect.make_session
    monkeypatch.setattr(collect, "make_session", lambda g, outputs, **kw: exposed.append(list(outputs)) or real(g, outputs, **kw))
    result = calibrate_graph(graph, _dataset(graph, small_cnn_data), method="percentile", batch_size=7, progress=False)
    assert exposed and all("input" not in names for names in exposed)
    data = np.load(small_cnn_data)["input"]
    direct = make_observer("percentile")
    direct.histogram.track_min_abs_nonzero = False
    direct.update(data)
    assert result.observers["input"].to_dict() == direct.to_dict()


@pytest.mark.parametrize("overlap", [False, True])
def test_a_non_finite_activation_in_a_later_run_names_its_sample(tmp_path, monkeypatch, overlap):
    """Observed in the worker thread or not, a NaN stops calibration with the tensor and the sample named."""
    from mpcompile.calibration import collect

    node = helper.make_node("Log", ["x"], ["y"], name="log")
    g = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])])
    path = tmp_path / "log.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), path)
    data = np.ones((40, 4), np.float32)
    data[29, 1] = -1.0
    np.savez(tmp_path / "d.npz", x=data)
    graph = importer.load(path)
    monkeypatch.setattr(collect, "OVERLAP", overlap)
    monkeypatch.setattr(collect, "_spare_core", lambda: True)
    for method in ("minmax", "percentile"):
        with pytest.raises(DataError, match=r"'y' has NaN values for calibration sample 29"):
            calibrate_graph(graph, _dataset(graph, tmp_path / "d.npz"), method=method, batch_size=4, progress=False)


def test_no_observer_thread_without_a_spare_core(monkeypatch):
    """One core, or an executor worker given one thread (its siblings hold the other cores): observers run in turn."""
    from mpcompile.calibration import collect

    monkeypatch.setattr(collect, "available_cores", lambda: 2)
    monkeypatch.setattr(collect, "worker_threads", lambda: None)
    assert collect._spare_core()
    monkeypatch.setattr(collect, "worker_threads", lambda: 1)
    assert not collect._spare_core()
    monkeypatch.setattr(collect, "worker_threads", lambda: None)
    monkeypatch.setattr(collect, "available_cores", lambda: 1)
    assert not collect._spare_core()
