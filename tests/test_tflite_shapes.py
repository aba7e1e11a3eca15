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
    with pytest.warns(UserWarning, match=r"froze the model's dynamic input dimensions from the calibration data: x=1x4x6"):
        result = compile(path, data, ["tflite"], tmp_path / "out", conform=True, progress=False)
    assert result.exit_code == 0, result.conformance.format_text() if result.conformance else result.results
    assert result.plan.metadata["mpcompile.input_shapes_from_data"] == "x=1x4x6"


def test_a_dynamic_batch_alone_stays_dynamic(tmp_path):
    import warnings

    import onnx

    from mpcompile.data import model_inputs
    from mpcompile.data.shapes import shapes_from_data

    path, data = tmp_path / "relu.onnx", tmp_path / "calib.npz"
    onnx.save(graph_model("relu", [helper.make_node("Relu", ["x"], ["y"])], {"x": ["N", 4, 6]}, {"y": TensorProto.FLOAT}, {}),
              path)
    np.savez(data, x=np.zeros((8, 4, 6), np.float32))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no shape computed at run time, no other dynamic dim: nothing to freeze
        graph = importer.load(path, data=str(data))
    assert graph.tensors["x"].shape[0] == "N" and "mpcompile.input_shapes_from_data" not in graph.metadata
    # asked to, the batch becomes the 1 every runner can feed
    assert shapes_from_data(model_inputs(graph), str(data), freeze_batch=True) == {"x": (1, None, None)}


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
