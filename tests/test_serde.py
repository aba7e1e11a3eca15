import glob
import os
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from mpcompile import importer
from mpcompile.errors import ModelLoadError
from mpcompile.ir import serde

LIGHT = sorted(glob.glob(os.path.join(os.path.dirname(onnx.__file__), "backend/test/data/light/*.onnx")))
BIG = {"light_bvlc_alexnet.onnx", "light_vgg19.onnx", "light_zfnet512.onnx", "light_resnet50.onnx", "light_inception_v1.onnx"}


def _light_params():
    for path in LIGHT:
        marks = [pytest.mark.slow] if os.path.basename(path) in BIG else []
        yield pytest.param(path, id=os.path.basename(path), marks=marks)


def _run(model_or_bytes, feeds):
    sess = ort.InferenceSession(model_or_bytes, providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def _feeds(graph, n=1):
    rng = np.random.default_rng(0)
    feeds = {}
    for name in graph.inputs:
        t = graph.tensor(name)
        shape = [d if isinstance(d, int) else n for d in t.shape]
        feeds[name] = rng.normal(size=shape).astype(t.dtype)
    return feeds


@pytest.mark.parametrize("path", list(_light_params()))
def test_light_models_round_trip(path, tmp_path):
    graph = importer.load(path)
    plan_path = tmp_path / "plan.onnx"
    serde.save_plan(graph, plan_path)
    assert serde.load_plan(plan_path) == graph
    feeds = _feeds(graph)
    expected = _run(path, feeds)
    got = _run(serde.onnx_bytes(graph), feeds)
    for e, g in zip(expected, got):
        np.testing.assert_allclose(g, e, atol=1e-5, rtol=1e-5)


def test_generated_models_round_trip_with_annotations(small_cnn_path, small_cnn_data, tmp_path):
    from mpcompile.pipeline import calibrate

    plan = calibrate(small_cnn_path, small_cnn_data, progress=False).plan
    assert plan.quantized_tensors()
    path = serde.save_plan(plan, tmp_path / "plan.onnx")
    back = serde.load_plan(path)
    assert back == plan
    for t in plan.quantized_tensors():
        assert back.tensors[t.name].quant == t.quant
    # the plan file is a standard ONNX model that still runs as the FP32 model
    onnx.checker.check_model(onnx.load(path))
    feeds = _feeds(plan, 2)
    np.testing.assert_allclose(_run(str(path), feeds)[0], _run(str(small_cnn_path), feeds)[0], atol=1e-5)


def test_batchnorm_folded_into_conv(tmp_path):
    from modelgen import small_cnn

    model = small_cnn(with_bn=True)
    path = tmp_path / "bn.onnx"
    onnx.save(model, path)
    graph = importer.load(path)
    assert "BatchNormalization" not in graph.op_counts()
    feeds = _feeds(graph, 3)
    np.testing.assert_allclose(_run(serde.onnx_bytes(graph), feeds)[0], _run(str(path), feeds)[0], atol=1e-4, rtol=1e-4)


def test_old_opset_is_upgraded(tmp_path):
    node = helper.make_node("Relu", ["x"], ["y"])
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 9)])
    model.ir_version = 7
    path = tmp_path / "old.onnx"
    onnx.save(model, path)
    assert importer.load(path).opset_imports[""] >= 13


def test_symbolic_dims_survive(tmp_path, small_cnn_path):
    graph = importer.load(small_cnn_path)
    assert graph.tensor("input").shape[0] == "N"


@pytest.mark.parametrize("content,match", [(b"", "empty"), (b"\x08\x07garbage\xff\xff\xff", "not a valid ONNX|holds no ONNX graph"),
                                           (b"hello, I am a text file", "not a valid ONNX|holds no ONNX graph")])
def test_bad_files_raise_model_load_error(tmp_path, content, match):
    path = tmp_path / "bad.onnx"
    path.write_bytes(content)
    with pytest.raises(ModelLoadError, match=match):
        importer.load(path)


def test_truncated_model(tmp_path, small_cnn_path):
    data = small_cnn_path.read_bytes()
    path = tmp_path / "trunc.onnx"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelLoadError):
        importer.load(path)


def test_missing_file():
    with pytest.raises(ModelLoadError, match="no such file"):
        importer.load("/nonexistent/model.onnx")


def test_external_data_escaping_the_model_folder_is_refused(tmp_path):
    from modelgen import small_cnn

    model = small_cnn()
    inner = tmp_path / "inner"
    inner.mkdir()
    onnx.save(model, inner / "m.onnx", save_as_external_data=True, all_tensors_to_one_file=True,
              location="weights.bin", size_threshold=0)
    assert importer.load(inner / "m.onnx").parameter_count() > 0  # a legitimate external-data model loads
    m = onnx.load(inner / "m.onnx", load_external_data=False)
    for init in m.graph.initializer:
        for entry in init.external_data:
            if entry.key == "location":
                entry.value = "../../etc/passwd"
    onnx.save(m, inner / "evil.onnx")
    with pytest.raises(ModelLoadError, match="outside the model's folder"):
        importer.load(inner / "evil.onnx")


def test_write_atomic_leaves_nothing_on_failure(tmp_path):
    class Boom(bytes):
        pass

    target = tmp_path / "x.bin"
    with pytest.raises(TypeError):
        serde.write_atomic(target, object())  # type: ignore[arg-type]
    assert list(tmp_path.iterdir()) == []
    serde.write_atomic(target, b"ok")
    assert Path(target).read_bytes() == b"ok"


def test_weights_handed_to_ort_in_memory_give_the_same_outputs(small_cnn_path):
    """A session on in-memory weights (no protobuf copy) computes exactly what the serialized model does."""
    from mpcompile.ortsession import inference_session

    graph = importer.load(small_cnn_path)
    payload, weights = serde.onnx_bytes_and_weights(graph)
    assert weights and len(payload) < sum(w.nbytes for w in weights.values())
    feeds = _feeds(graph, 3)
    in_memory = inference_session(graph).run(None, feeds)[0]
    np.testing.assert_array_equal(in_memory, _run(serde.onnx_bytes(graph), feeds)[0])


def test_weights_with_only_constant_consumers_still_fold(tmp_path):
    """Import lifts large weights out of the protobuf; one that folding needs (a transposed weight) still folds."""
    w = np.arange(64 * 32, dtype=np.float32).reshape(32, 64) / 100
    nodes = [helper.make_node("Transpose", ["w"], ["wt"], perm=[1, 0]), helper.make_node("MatMul", ["x", "wt"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 64])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 32])],
                              initializer=[onnx.numpy_helper.from_array(w, "w")])
    path = tmp_path / "t.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    imported = importer.load(path)
    assert imported.op_counts() == {"MatMul": 1}
    assert imported.inputs == ["x"]
    x = np.ones((2, 64), np.float32)
    np.testing.assert_allclose(_run(serde.onnx_bytes(imported), {"x": x})[0], x @ w.T, rtol=1e-5)


def test_nodes_no_output_depends_on_are_dropped(tmp_path):
    nodes = [helper.make_node("Relu", ["x"], ["y"]), helper.make_node("Sigmoid", ["x"], ["unused"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
    path = tmp_path / "dead.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    assert importer.load(path).op_counts() == {"Relu": 1}


def test_plan_with_tensors_of_unknown_rank_reloads(tmp_path):
    """A Reshape to a run-time shape (a Paddle export with a dynamic batch) leaves its output's rank
    unknown; ONNX allows that, the checker does not on value infos. The plan must still reload."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])
    nodes = [helper.make_node("Relu", ["x"], ["h"]), helper.make_node("Neg", ["h"], ["y"])]
    model = helper.make_model(helper.make_graph(nodes, "g", [x], [y]), opset_imports=[helper.make_opsetid("", 17)])
    graph = serde.import_proto(model)
    for name in ("h", "y"):
        graph.tensors[name].shape = None
    path = serde.save_plan(graph, tmp_path / "plan.onnx")
    back = serde.load_plan(path)
    assert back.tensors["y"].shape is None and back.tensors["y"].dtype == np.float32
    assert back == graph
