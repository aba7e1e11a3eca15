"""Real exports compute shapes at run time (Shape → arithmetic → Reshape, stage after stage, as Paddle's
exporter writes them); TFLite needs them static. Each stage's Shape folds only once the stage before it
has folded and shape inference has seen its output, so the import folds until nothing changes."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper

pytest.importorskip("ai_edge_litert")

from test_tflite import _lower  # noqa: E402
from tflite_models import graph_model  # noqa: E402

from mpcompile import importer  # noqa: E402
from mpcompile.pipeline import calibrate  # noqa: E402
from mpcompile.reference import ReferenceRunner  # noqa: E402

pytestmark = pytest.mark.tflite


def staged_shapes(stages: int = 6) -> object:
    """x[N, 4, 6] → ``stages`` × (Relu → Reshape to Max(Shape(y), 1)), a shape computation ONNX's data
    propagation does not see through, so that every stage's output shape is unknown until it folds."""
    nodes, y = [], "x"
    for i in range(stages):
        nodes += [
            helper.make_node("Relu" if i % 2 == 0 else "Neg", [y], [f"a{i}"], name=f"act{i}"),
            helper.make_node("Shape", [y], [f"s{i}"], name=f"shape{i}"),
            helper.make_node("Max", [f"s{i}", "one"], [f"t{i}"], name=f"max{i}"),
            helper.make_node("Reshape", [f"a{i}", f"t{i}"], [f"y{i}"], name=f"reshape{i}"),
        ]
        y = f"y{i}"
    return graph_model("staged_shapes", nodes, {"x": ["N", 4, 6]}, {y: TensorProto.FLOAT}, {"one": np.array([1], np.int64)})


def test_staged_shape_computations_fold_once_the_inputs_are_frozen(tmp_path):
    import onnx

    path = tmp_path / "staged.onnx"
    onnx.save(staged_shapes(), path)
    graph = importer.load(path, {"x": (2, 4, 6)})
    assert not [n.name for n in graph.nodes if n.op_type in ("Shape", "Max")]
    data = tmp_path / "x.npz"
    x = np.random.default_rng(0).normal(0, 1, (8, 4, 6)).astype(np.float32)
    np.savez(data, x=x)
    plan = calibrate(path, data, input_shapes={"x": (2, 4, 6)}, progress=False).plan
    backend, legal, artifact, _ = _lower(plan, tmp_path)
    feeds = {"x": x[:2]}
    with backend.runner(artifact, backend.options()) as runner:
        got = runner.run(feeds)[legal.outputs[0]]
    ref = ReferenceRunner(legal).run(feeds)[legal.outputs[0]]
    spec = legal.tensors[legal.outputs[0]].quant
    assert np.max(np.abs(got - ref)) <= float(spec.scale) * 1.01


def _staged(tmp_path, dims: list) -> tuple:
    import onnx

    model = staged_shapes()
    for d, value in zip(model.graph.input[0].type.tensor_type.shape.dim, dims):
        if isinstance(value, str):
            d.dim_param = value
        else:
            d.dim_value = value
    path, data = tmp_path / "staged.onnx", tmp_path / "calib.npz"
    onnx.save(model, path)
    np.savez(data, x=np.random.default_rng(0).normal(0, 1, (8, 4, 6)).astype(np.float32))
    return path, data


def test_dynamic_dims_are_frozen_from_the_calibration_data_saying_so(tmp_path):
    from mpcompile.pipeline import compile

    path, data = _staged(tmp_path, ["N", 4, "L"])
    # the data fixes L for every backend; the batch stays dynamic in the plan (TFLite's copy freezes it: test_target_shapes)
    with pytest.warns(UserWarning, match=r"froze the model's dynamic input dimensions from the data: x=-1x4x6"):
        result = compile(path, data, ["tflite"], tmp_path / "out", conform=True, progress=False)
    assert result.exit_code == 0, result.conformance.format_text() if result.conformance else result.results
    assert result.plan.metadata["mpcompile.input_shapes_from_data"] == "x=-1x4x6"


def test_a_dynamic_batch_alone_stays_dynamic(tmp_path):
    import warnings

    import onnx

    from mpcompile.data import model_inputs
    from mpcompile.data.shapes import batch_of_one

    path, data = tmp_path / "relu.onnx", tmp_path / "calib.npz"
    onnx.save(graph_model("relu", [helper.make_node("Relu", ["x"], ["y"])], {"x": ["N", 4, 6]}, {"y": TensorProto.FLOAT}, {}),
              path)
    np.savez(data, x=np.zeros((8, 4, 6), np.float32))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no shape computed at run time, no other dynamic dim: nothing to freeze
        graph = importer.load(path, data=str(data))
    assert graph.tensors["x"].shape[0] == "N" and "mpcompile.input_shapes_from_data" not in graph.metadata
    # for a backend with static shapes, the batch becomes the 1 every runner can feed
    assert batch_of_one(model_inputs(graph)) == {"x": (1, None, None)}


def test_samples_that_disagree_leave_the_dimension_dynamic(tmp_path):
    from mpcompile.data import model_inputs
    from mpcompile.data.shapes import shapes_from_data

    path, _ = _staged(tmp_path, ["N", 4, "L"])
    folder = tmp_path / "samples"
    folder.mkdir()
    for i, length in enumerate((6, 6, 9)):
        np.save(folder / f"{i}.npy", np.zeros((4, length), np.float32))
    assert shapes_from_data(model_inputs(importer.load(path)), str(folder)) == {}


def test_a_static_artifact_refuses_another_shape_naming_the_input(tmp_path):
    from mpcompile.errors import DataError

    path, data = _staged(tmp_path, ["N", 4, "L"])
    plan = calibrate(path, data, input_shapes={"x": (1, 4, 6)}, progress=False).plan
    backend, _, artifact, _ = _lower(plan, tmp_path)
    x = np.zeros((3, 4, 6), np.float32)
    with backend.runner(artifact, backend.options()) as runner:
        runner.run({"x": x[:1]})
        with pytest.raises(DataError, match=r"input 'x' of .* has the static shape 1x4x6 .* got 3x4x6"):
            runner.run({"x": x})


def test_recurrent_states_with_the_batch_on_axis_1_are_fed_from_samples_first_data(tmp_path):
    """PyTorch's export of a batch-first LSTM with explicit states: x [N, T, F] (transposed to time-major
    inside), h0/c0 [D, N, H]. The data stores every input samples first (h0 (S, D, H)); batches reach the
    model with the samples on its batch axis, in TFLite and ONNX Runtime alike."""
    import onnx
    from tflite_models import recurrent

    from mpcompile.data import model_inputs, open_data
    from mpcompile.pipeline import conform

    model = recurrent("LSTM", direction="bidirectional", batch_first=False)  # x [5, N, 3], h0/c0 [2, N, 4]
    for node in model.graph.node:
        node.input[:] = ["x_time_major" if i == "x" else i for i in node.input]
    model.graph.node.insert(0, helper.make_node("Transpose", ["x"], ["x_time_major"], perm=[1, 0, 2]))
    model.graph.input[0].CopyFrom(helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 5, 3]))
    path, data = tmp_path / "lstm.onnx", tmp_path / "calib.npz"
    onnx.save(model, path)
    rng = np.random.default_rng(0)
    arrays = {"x": rng.normal(0, 1, (12, 5, 3)), "h0": rng.normal(0, 0.5, (12, 2, 4)), "c0": rng.normal(0, 0.5, (12, 2, 4))}
    np.savez(data, **{k: v.astype(np.float32) for k, v in arrays.items()})
    graph = importer.load(path)
    assert {s.name: (s.sample_axis, s.shape) for s in model_inputs(graph)} == {
        "x": (0, ("N", 5, 3)), "h0": (1, ("N", 2, 4)), "c0": (1, ("N", 2, 4))}
    # the first dim 2 of the states is the directions, not a fixed batch of 2 samples
    first = next(open_data(graph, str(data)).batches(4))
    assert first["x"].shape == (4, 5, 3) and first["h0"].shape == (2, 4, 4)
    assert np.array_equal(first["h0"], np.moveaxis(arrays["h0"][:4].astype(np.float32), 0, 1))
    plan = calibrate(path, data, precision="fp32", progress=False).plan
    report = conform(plan, backends=["tflite", "onnxruntime"], data=data, batch_size=4)
    assert report.passed, report.format_text()


def test_calibration_and_evaluation_data_of_other_sizes_leave_the_dimension_dynamic(tmp_path):
    from mpcompile.data import model_inputs
    from mpcompile.data.shapes import shapes_from_data

    path, calib = _staged(tmp_path, ["N", 4, "L"])
    evaluation = tmp_path / "eval.npz"
    np.savez(evaluation, x=np.zeros((3, 4, 9), np.float32))  # a detector evaluated on larger pages
    inputs = model_inputs(importer.load(path))
    assert shapes_from_data(inputs, [str(calib), str(evaluation)]) == {}
    assert shapes_from_data(inputs, [str(calib), str(calib)]) == {"x": (None, None, 6)}


def test_dims_frozen_from_the_data_cost_one_import(tmp_path, monkeypatch):
    """The data is read against the inputs the file declares, so the model is imported (and folded) once."""
    from mpcompile.ir import serde

    path, data = _staged(tmp_path, ["N", 4, "L"])
    calls = []
    original = serde.import_proto
    monkeypatch.setattr(serde, "import_proto", lambda *a, **k: calls.append(k.get("input_shapes")) or original(*a, **k))
    with pytest.warns(UserWarning, match="froze"):
        graph = importer.load(path, data=data)
    assert calls == [{"x": (None, None, 6)}] and graph.tensors["x"].shape[1:] == (4, 6), calls


def test_bench_times_a_frozen_batch_as_runs_of_it(tmp_path):
    """TFLite freezes the batch of a plan that computes shapes: at a throughput batch the bench times the
    runs such an artifact needs for that many samples, and says so, instead of reporting an error."""
    from mpcompile.backends.registry import get_backend
    from mpcompile.bench import Subject, measure, tile_batch
    from mpcompile.pipeline import compile

    path, data = _staged(tmp_path, ["N", 4, 6])
    result = compile(path, data, ["tflite"], tmp_path / "out", progress=False)
    backend = get_backend("tflite")
    subject = Subject("staged", result.artifacts["tflite"], backend, backend.Options())
    sample = {"x": np.load(data)["x"][:1]}
    report = measure([subject], lambda b: tile_batch(sample, b), batches=(1, 4), seconds=0.05, rounds=2)
    (r,) = report.results
    assert not r.batch_errors and set(r.timings) == {1, 4} and r.split == {4: 1}, (r.batch_errors, r.split)
    assert "batch 4 timed as 4 runs of batch 1" in report.format_table()
