"""Models whose data come in several sizes (issue 14): a detector calibrated on one page size and evaluated on
another keeps its spatial dims dynamic, and the TFLite artifact runs at every size (``shape_signature`` −1,
the runner resizes the inputs). What a kernel computes from a size (padding, TRANSPOSE_CONV's output_shape,
a resize's output size) is either the same for every size or computed by LiteRT when the inputs are sized."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper

pytest.importorskip("ai_edge_litert")

from tflite_models import graph_model  # noqa: E402

pytestmark = pytest.mark.tflite


def fpn(seed: int = 0) -> object:
    """x[N, 3, H, W] (H, W multiples of 4, dynamic): two stride-2 convs (pads 1: the padding TFLite's SAME gives
    only for odd sizes), a hard-swish, a padded max pool, nearest and bilinear ×2 upsampling, a channel Concat with
    the stride-2 branch, a stride-2 ConvTranspose back to H×W, a Sigmoid map, its first channel squeezed
    (a reshape with three dynamic dims) and a global average."""
    rng = np.random.default_rng(seed)

    def w(*shape: int) -> np.ndarray:
        return (rng.normal(0, 1, shape) / np.sqrt(np.prod(shape[1:]))).astype(np.float32)

    inits = {
        "w1": w(8, 3, 3, 3), "b1": rng.normal(0, 0.1, 8).astype(np.float32),
        "w2": w(8, 8, 3, 3), "b2": rng.normal(0, 0.1, 8).astype(np.float32),
        "wt": w(16, 4, 2, 2), "bt": rng.normal(0, 0.1, 4).astype(np.float32),
        "scales": np.array([1, 1, 2, 2], np.float32),
        "zero": np.array([0], np.int64), "one": np.array([1], np.int64),
    }
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", strides=[2, 2], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["a1"], name="relu1"),
        helper.make_node("Conv", ["a1", "w2", "b2"], ["c2"], name="conv2", strides=[2, 2], pads=[1, 1, 1, 1]),
        helper.make_node("HardSigmoid", ["c2"], ["g2"], name="gate2", alpha=1 / 6, beta=0.5),
        helper.make_node("Mul", ["c2", "g2"], ["a2"], name="hswish2"),
        helper.make_node("MaxPool", ["a1"], ["p1"], name="pool1", kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
        helper.make_node("Add", ["a2", "p1"], ["s2"], name="merge2"),
        helper.make_node("Resize", ["s2", "", "scales"], ["u_nearest"], name="up_nearest", mode="nearest",
                         coordinate_transformation_mode="asymmetric", nearest_mode="floor"),
        helper.make_node("Resize", ["s2", "", "scales"], ["u_linear"], name="up_linear", mode="linear",
                         coordinate_transformation_mode="half_pixel"),
        helper.make_node("Add", ["u_nearest", "u_linear"], ["u"], name="merge_up"),
        helper.make_node("Concat", ["u", "a1"], ["cat"], name="cat", axis=1),
        helper.make_node("ConvTranspose", ["cat", "wt", "bt"], ["t"], name="deconv", strides=[2, 2]),
        helper.make_node("Sigmoid", ["t"], ["prob"], name="prob"),
        helper.make_node("GlobalAveragePool", ["t"], ["mean"], name="mean"),
        helper.make_node("Slice", ["prob", "zero", "one", "one"], ["first"], name="first_channel"),
        helper.make_node("Squeeze", ["first", "one"], ["heat"], name="heat"),
    ]
    return graph_model("fpn_dynamic", nodes, {"x": ["N", 3, "H", "W"]}, {"prob": TensorProto.FLOAT, "mean": TensorProto.FLOAT, "heat": TensorProto.FLOAT},
                       inits)


def _data(tmp_path, calib_hw: tuple[int, int], eval_hw: tuple[int, int]) -> tuple:
    import onnx

    rng = np.random.default_rng(1)
    path, calib, evaluation = tmp_path / "fpn.onnx", tmp_path / "calib.npz", tmp_path / "eval.npz"
    onnx.save(fpn(), path)
    np.savez(calib, x=rng.normal(0, 1, (8, 3, *calib_hw)).astype(np.float32))
    np.savez(evaluation, x=rng.normal(0, 1, (4, 3, *eval_hw)).astype(np.float32))
    return path, calib, evaluation


@pytest.mark.parametrize("precision", ["int8", "int16", "fp32"])
def test_data_of_two_sizes_give_one_artifact_that_runs_and_conforms_at_both(tmp_path, precision):
    from mpcompile_tflite.flatbuffer import read_tensors

    from mpcompile.backends.registry import get_backend
    from mpcompile.pipeline import compile
    from mpcompile.reference import ReferenceRunner

    # 36x44 goes through odd sizes (9x11) where 32x48 does not: the stride-2 pads are TFLite's SAME only there
    path, calib, evaluation = _data(tmp_path, (32, 48), (36, 44))
    result = compile(path, calib, ["tflite"], tmp_path / "out", conform=True, eval_data=evaluation, precision=precision,
                     progress=False)
    assert result.exit_code == 0, result.conformance.format_text() if result.conformance else result.results
    lowered = result.results["tflite"]
    artifact, legal = lowered.artifact, lowered.plan
    assert not [d for d in lowered.deviations if d.kind == "shapes"]  # nothing was frozen for TFLite
    records = {r.name: r for r in read_tensors(artifact.path.read_bytes())}
    assert records[artifact.metadata["inputs"][0]["tensor"]].signature == (-1, 3, -1, -1)
    ops = artifact.metadata["ops"]
    assert ops["TRANSPOSE_CONV"] == 1 and ops["RESIZE_NEAREST_NEIGHBOR"] == 1 and ops["RESIZE_BILINEAR"] == 1
    backend = get_backend("tflite")
    rng = np.random.default_rng(2)
    with backend.runner(artifact, backend.options()) as runner:
        for shape in [(2, 3, 32, 48), (3, 3, 36, 44), (1, 3, 64, 20), (2, 3, 32, 48)]:  # and back: resized again
            x = rng.normal(0, 1, shape).astype(np.float32)
            got, ref = runner.run({"x": x}), ReferenceRunner(legal).run({"x": x})
            for name in legal.outputs:
                assert got[name].shape == ref[name].shape, (shape, name)
                spec = legal.tensors[name].quant
                tolerance = 1e-5 if spec is None else float(spec.scale) * (16 if precision == "int16" else 9) * 1.001
                assert np.max(np.abs(got[name] - ref[name])) <= tolerance, (shape, name)


def _why_not(tmp_path, node, inits: dict) -> str | None:
    import onnx
    from mpcompile_tflite.ops import why_not

    from mpcompile import importer

    model = graph_model("one", [node], {"x": ["N", 4, "H", "W"]}, {"y": TensorProto.FLOAT}, inits)
    onnx.save(model, tmp_path / "one.onnx")
    graph = importer.load(tmp_path / "one.onnx")
    return why_not(graph, graph.nodes[0], integer=False)


def test_what_depends_on_a_dynamic_size_is_refused_per_node_saying_why(tmp_path):
    w = np.ones((4, 4, 3, 3), np.float32)
    conv = dict(inputs=["x", "w"], outputs=["y"], name="conv")
    assert _why_not(tmp_path, helper.make_node("Conv", **conv, strides=[2, 2], pads=[1, 1, 1, 1]), {"w": w}) is None
    assert _why_not(tmp_path, helper.make_node("Conv", **conv, strides=[2, 2], auto_pad="SAME_UPPER"), {"w": w}) is None
    assert _why_not(tmp_path, helper.make_node("Conv", **conv, auto_pad="SAME_LOWER"), {"w": w}) is None  # stride 1
    assert "SAME_LOWER padding with stride 2 depends on the dynamic spatial size" in _why_not(
        tmp_path, helper.make_node("Conv", **conv, strides=[2, 2], auto_pad="SAME_LOWER"), {"w": w})
    pool = dict(inputs=["x"], outputs=["y"], name="pool", kernel_shape=[3, 3], strides=[2, 2])
    assert "ceil_mode with stride 2" in _why_not(tmp_path, helper.make_node("MaxPool", **pool, ceil_mode=1), {})
    assert "correction sized by the output" in _why_not(
        tmp_path, helper.make_node("AveragePool", **pool, pads=[1, 1, 1, 1]), {})
    resize = dict(inputs=["x", "", "scales"], outputs=["y"], name="up", mode="nearest")
    assert "constant whole-number scale (got scale 1.5)" in _why_not(
        tmp_path, helper.make_node("Resize", **resize), {"scales": np.array([1, 1, 1.5, 1.5], np.float32)})
    scales = {"scales": np.array([1, 1, 4, 4], np.float32)}
    assert _why_not(tmp_path, helper.make_node("Resize", **resize, coordinate_transformation_mode="asymmetric",
                                               nearest_mode="floor"), scales) is None
    # the index maps are compared at every size: round_prefer_floor reads 3/4 → 1 in ONNX, TFLite's nearest floors
    assert "at input size 2: no TFLite resize samples the same source pixels" in _why_not(
        tmp_path, helper.make_node("Resize", **resize, coordinate_transformation_mode="asymmetric"), scales)
    deconv = dict(inputs=["x", "wt"], outputs=["y"], name="deconv", strides=[2, 2])
    wt = np.ones((4, 4, 3, 3), np.float32)
    assert _why_not(tmp_path, helper.make_node("ConvTranspose", **deconv, pads=[1, 1, 1, 1], output_padding=[1, 1]),
                    {"wt": wt}) is None
    assert "output_padding beyond" in _why_not(
        tmp_path, helper.make_node("ConvTranspose", **deconv, output_padding=[1, 1]), {"wt": wt})
