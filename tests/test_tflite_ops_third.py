"""onnx2tf's operators, third round (issue 14): masks, one-hot, scatters, selection, reductions and the inverse and
hyperbolic trigonometric family, in the style of ``test_tflite_ops_more.py`` (whose helpers this reuses): one small
generated model per operator, calibrated in every plan (int8, 16x8, fp16, fp32), lowered, run by LiteRT (XNNPACK and
the reference kernels) and compared with the fake-quant reference. Old opset-7/9 Upsample (and Resize-10) models are
checked against ONNX Runtime on the original file, since the importer's version conversion gives their meaning.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto

pytest.importorskip("ai_edge_litert")

from test_tflite import MODES, _lower, _prepare  # noqa: E402
from test_tflite_ops import RUNNERS, _assert_conforms, _errors, _node, _pooled_then, _static_batch  # noqa: E402
from test_tflite_ops_more import _one_node, _scaled, assert_refused  # noqa: E402
from tflite_models import feeds, graph_model  # noqa: E402

import mpcompile  # noqa: E402

pytestmark = pytest.mark.tflite

B, F, I64 = TensorProto.BOOL, TensorProto.FLOAT, TensorProto.INT64
RNG = np.random.default_rng(11)


def _ids_model(name: str, nodes: list, outputs: dict[str, int], inits: dict, opset: int = 18) -> onnx.ModelProto:
    """int64 ids[N, 6] (0..19 in the feeds) and x[N, 4, 5, 5] pooled to "c" → the nodes under test."""
    return graph_model(name, [_node("MaxPool", ["x"], ["c"], kernel_shape=[1, 1]), *nodes],
                       {"x": ["N", 4, 5, 5], "ids": (I64, ["N", 6])}, outputs, inits, opset)


def _unary(op: str, pre: list | None = None, inits: dict | None = None, factor: float = 1.0):  # noqa: ANN202
    """The pooled input (times ``factor``), through ``pre`` (nodes from "s" to "u"), then ``op`` on "u"."""
    source = "u" if pre else "s"
    return lambda: _scaled([*(pre or []), _node(op, [source], ["y"])], op.lower(), {"y": F}, inits, factor=factor)


#: |x| < 1 for the inverse sine, cosine and hyperbolic tangent (and |x| < 1 rad for Tan): k·tanh(s)
INSIDE_UNIT = [_node("Tanh", ["s"], ["t"]), _node("Mul", ["t", "k"], ["u"])]
ABOVE_ONE = [_node("Abs", ["s"], ["a"]), _node("Add", ["a", "k"], ["u"])]  # 1 + |x| for the inverse cosh
SCATTER_UPDATES = RNG.normal(0, 1, (2, 5, 5)).astype(np.float32)
CASES = {
    # masks and constants
    "trilu_upper": lambda: _pooled_then([_node("Trilu", ["c"], ["y"])], "triu", {"y": F}, opset=18),
    "trilu_lower_offset": lambda: _pooled_then([_node("Trilu", ["c", "k"], ["y"], upper=0)], "tril", {"y": F},
                                               {"k": np.array(-1, np.int64)}, opset=18),
    "one_hot_ids": lambda: _ids_model("one_hot", [_node("Sub", ["ids", "ten"], ["signed"]),
                                                  _node("OneHot", ["signed", "depth", "values"], ["y"], axis=-1)],
                                      {"y": F}, {"ten": np.array(10, np.int64), "depth": np.array(8, np.int64),
                                                 "values": np.array([-0.5, 2.0], np.float32)}),
    "one_hot_axis_1": lambda: _ids_model("one_hot_axis", [_node("OneHot", ["ids", "depth", "values"], ["y"], axis=1)],
                                         {"y": I64}, {"depth": np.array(16, np.int64), "values": np.array([0, 1], np.int64)}),
    "trilu_of_ids_and_a_mask": lambda: graph_model(  # raw int64 ids and a bool mask: zeros of their own types
        "trilu_ids", [_node("Trilu", ["ids"], ["y"]), _node("Greater", ["ids", "ten"], ["m"]),
                      _node("Trilu", ["m"], ["z"], upper=0)],
        {"ids": (I64, [3, 6])}, {"y": I64, "z": B}, {"ten": np.array(10, np.int64)}, opset=18),
    "one_hot_computed_values": lambda: _ids_model(
        "one_hot_values", [_node("ReduceMax", ["c"], ["peak"], keepdims=0), _node("Neg", ["peak"], ["low"]),
                           _node("Unsqueeze", ["peak", "zero"], ["hi"]), _node("Unsqueeze", ["low", "zero"], ["lo"]),
                           _node("Concat", ["lo", "hi"], ["values"], axis=0),
                           _node("OneHot", ["ids", "depth", "values"], ["y"])],
        {"y": F}, {"zero": np.array([0], np.int64), "depth": np.array(20, np.int64)}),
    "eye_like_times_input": lambda: graph_model(
        "eye_like", [_node("EyeLike", ["x"], ["eye"], k=1), _node("Mul", ["x", "eye"], ["y"])],
        {"x": [4, 6]}, {"y": F}, {}),
    # scatters (the KV-cache write: replace rows of the cache at positions)
    "scatternd_constant": lambda: _pooled_then(  # rows 3 and -5 (= 0) of [H, N, C, W] replaced by rows 1 and 2
        [_node("Transpose", ["c"], ["t"], perm=[2, 0, 1, 3]), _node("Gather", ["t", "rows"], ["upd"], axis=0),
         _node("ScatterND", ["t", "idx", "upd"], ["y"])],
        "scatter_nd", {"y": F}, {"rows": np.array([1, 2], np.int64), "idx": np.array([[3], [-5]], np.int64)}, opset=18),
    "scatternd_computed_cache_write": lambda: _kv_cache_write(),
    "scatternd_add": lambda: _pooled_then(
        [_node("ScatterND", ["c", "idx", "upd"], ["y"], reduction="add")], "scatter_nd_add", {"y": F},
        {"idx": np.array([[0, 1], [1, 3]], np.int64), "upd": SCATTER_UPDATES}, opset=18),
    "scatterelements_constant": lambda: _pooled_then(
        [_node("ScatterElements", ["c", "idx", "upd"], ["y"], axis=3)], "scatter_el", {"y": F},
        {"idx": np.tile(np.array([4, 0, -3], np.int64), (2, 4, 5, 1)), "upd": RNG.normal(0, 1, (2, 4, 5, 3)).astype(np.float32)},
        opset=18),
    "scatterelements_from_opset9_scatter": lambda: _scatter9(),  # the version converter makes it ScatterElements
    "scatterelements_argmax": lambda: _static_batch(_pooled_then(
        [_node("ArgMax", ["c"], ["am"], axis=1), _node("ScatterElements", ["c", "am", "ten"], ["y"], axis=1)],
        "scatter_argmax", {"y": F}, {"ten": np.full((2, 1, 5, 5), 10.0, np.float32)}, opset=18), 2),
    "compress_constant": lambda: _pooled_then([_node("Compress", ["c", "keep"], ["y"], axis=3)], "compress", {"y": F},
                                              {"keep": np.array([True, False, True, True], bool)}),
    "compress_flat": lambda: graph_model("compress_flat", [_node("Compress", ["x", "keep"], ["y"])], {"x": [3, 4]}, {"y": F},
                                         {"keep": np.arange(12) % 3 == 1}),
    # sequences, selection, reductions
    "reversesequence": lambda: _reverse_sequence(),
    "hardmax": lambda: _pooled_then([_node("Hardmax", ["c"], ["y"], axis=1)], "hardmax", {"y": F}),
    "hardmax_last_axis": lambda: _pooled_then([_node("Hardmax", ["c"], ["y"])], "hardmax_last", {"y": F}),
    "reducelogsum": lambda: _pooled_then([_node("Abs", ["c"], ["a"]), _node("ReduceLogSum", ["a", "ax"], ["y"], keepdims=0)],
                                         "reduce_log_sum", {"y": F}, {"ax": np.array([1], np.int64)}, opset=18),
    "reducelogsumexp": lambda: _scaled([_node("ReduceLogSumExp", ["s", "ax"], ["y"], keepdims=1)], "lse", {"y": F},
                                       {"ax": np.array([2, 3], np.int64)}, factor=40.0),  # e^120: overflows unshifted
    "reducelogsumexp_reduced": lambda: _scaled([_node("ReduceLogSumExp", ["s", "ax"], ["y"], keepdims=0)], "lse_r",
                                               {"y": F}, {"ax": np.array([1], np.int64)}, factor=40.0),
    "meanvariancenormalization": lambda: _pooled_then(  # ONNX's default axes (given: onnx infers no default here)
        [_node("MeanVarianceNormalization", ["c"], ["y"], axes=[0, 2, 3])], "mvn", {"y": F}),
    "mvn_last_axes": lambda: _pooled_then([_node("MeanVarianceNormalization", ["c"], ["y"], axes=[2, 3])], "mvn_hw",
                                          {"y": F}),
    "shrink": lambda: _scaled([_node("Shrink", ["s"], ["y"], lambd=0.7, bias=0.2)], "shrink", {"y": F}),
    "globallppool": lambda: _pooled_then([_node("GlobalLpPool", ["c"], ["y"])], "global_lp", {"y": F}),
    "globallppool_p1": lambda: _pooled_then([_node("GlobalLpPool", ["c"], ["y"], p=1)], "global_l1", {"y": F}),
    "globallppool_p3": lambda: _pooled_then([_node("GlobalLpPool", ["c"], ["y"], p=3)], "global_l3", {"y": F}),
    # trigonometric and hyperbolic, inside their domains
    "tan": _unary("Tan", INSIDE_UNIT, {"k": np.array(1.0, np.float32)}),
    "sinh": _unary("Sinh", factor=3.0),
    "cosh": _unary("Cosh", factor=3.0),
    "asin": _unary("Asin", INSIDE_UNIT, {"k": np.array(0.95, np.float32)}),
    "acos": _unary("Acos", INSIDE_UNIT, {"k": np.array(0.95, np.float32)}),
    "atan": _unary("Atan", factor=3.0),
    "asinh": _unary("Asinh", factor=30.0),
    "acosh": _unary("Acosh", ABOVE_ONE, {"k": np.array(1.0, np.float32)}, factor=3.0),
    "atanh": _unary("Atanh", INSIDE_UNIT, {"k": np.array(0.95, np.float32)}),
}


def _kv_cache_write() -> onnx.ModelProto:
    """A decoder's cache update: cache[N=2, T=6, D=4] ← the new step's keys at position ``pos mod 6 − 3`` (from an
    int64 input: negative positions count from the end) of each sample, indices [[b, pos_b]] computed in the model
    (ScatterND depth 2)."""
    nodes = [_node("Mul", ["cache", "half"], ["kept"]), _node("Mod", ["ids", "six"], ["slot"]),
             _node("Sub", ["slot", "three"], ["pos"]), _node("Unsqueeze", ["pos", "one"], ["col"]),
             _node("Concat", ["batch", "col"], ["idx"], axis=1), _node("ScatterND", ["kept", "idx", "new"], ["y"])]
    return graph_model("kv_cache", nodes, {"cache": [2, 6, 4], "ids": (I64, [2]), "new": [2, 4]}, {"y": F},
                       {"half": np.array(0.5, np.float32), "one": np.array([1], np.int64), "six": np.array(6, np.int64),
                        "three": np.array(3, np.int64),
                        "batch": np.array([[0], [1]], np.int64)}, opset=18)


def _scatter9() -> onnx.ModelProto:
    """An opset-9 Scatter (deprecated in 11) writing channels 3 and 0 of the first sample."""
    idx = np.broadcast_to(np.array([3, 0], np.int64).reshape(1, 2, 1, 1), (1, 2, 5, 5)).copy()
    return _pooled_then([_node("Scatter", ["c", "idx", "upd"], ["y"], axis=1)], "scatter9", {"y": F},
                        {"idx": idx, "upd": np.full((1, 2, 5, 5), 7.0, np.float32)}, opset=9)


def _reverse_sequence() -> onnx.ModelProto:
    """x[N, 4, 5, 5] pooled, seen as [batch 4 (channels), time 5 (rows), ...]: per-channel lengths 5, 1, 3, 4."""
    return _pooled_then([_node("Transpose", ["c"], ["t"], perm=[1, 2, 0, 3]),
                         _node("ReverseSequence", ["t", "lens"], ["y"], time_axis=1, batch_axis=0)], "reverse_sequence",
                        {"y": F}, {"lens": np.array([5, 1, 3, 4], np.int64)})


#: the TFLite operator each case must contain (the name's prefix up to the first "_", upper-cased, when not listed)
OPERATOR = {
    "trilu": "SELECT_V2", "one": "ONE_HOT", "eye": "MUL", "scatternd": "SCATTER_ND", "scatterelements": "SCATTER_ND",
    "compress": "GATHER", "reversesequence": "REVERSE_SEQUENCE", "hardmax": "ONE_HOT", "reducelogsum": "LOG",
    "reducelogsumexp": "REDUCE_MAX",
    "meanvariancenormalization": "SQRT", "mvn": "SQRT", "shrink": "SELECT_V2", "globallppool": "SUM", "tan": "COS",
    "sinh": "EXP", "cosh": "EXP", "asin": "ATAN2", "acos": "ATAN2", "atan": "ATAN2", "asinh": "LOG", "acosh": "LOG",
    "atanh": "LOG",
}


@pytest.mark.parametrize("mode", sorted(MODES))
@pytest.mark.parametrize("case", sorted(CASES))
def test_operator_matches_the_reference(case, mode, tmp_path):
    plan, _, inputs = _prepare(CASES[case](), tmp_path, samples=4, **MODES[mode])
    backend, legal, artifact, _ = _lower(plan, tmp_path, io="int8")  # quantized feeds rounded as the reference does
    wanted = OPERATOR.get(case, OPERATOR.get(case.split("_")[0], case.split("_")[0].upper()))
    assert wanted in artifact.metadata["ops"], artifact.metadata["ops"]
    for runner_options in RUNNERS:
        _assert_conforms(_errors(backend, legal, artifact, inputs, **runner_options), mode)


def test_trilu_zeroes_infinities_without_nan(tmp_path):
    # -inf strictly below the diagonal (an additive mask), Trilu keeping j >= i - 1: the zeroed -inf must become 0,
    # not NaN (-inf·0, a multiplied mask), and the kept ones mask the softmax (-inf, or -FLT_MAX where LiteRT's
    # reference ADD clamps it). FP32 only: calibrating an integer or fp16 plan refuses infinite activations.
    model = _pooled_then(
        [_node("Add", ["c", "below"], ["masked"]), _node("Trilu", ["masked", "minus_one"], ["kept"]),
         _node("Softmax", ["kept"], ["y"], axis=-1)], "trilu_inf", {"y": F},
        {"below": np.tril(np.full((5, 5), -np.inf, np.float32), -1), "minus_one": np.array(-1, np.int64)}, opset=18)
    plan, _, inputs = _prepare(model, tmp_path, samples=4, **MODES["fp32"])
    backend, legal, artifact, _ = _lower(plan, tmp_path)
    assert "SELECT_V2" in artifact.metadata["ops"], artifact.metadata["ops"]
    for runner_options in RUNNERS:
        _assert_conforms(_errors(backend, legal, artifact, inputs, **runner_options), "fp32")


# ============================================================================ shapes computed at run time
#: With a dynamic batch these stay in the plan (the importer folds only static shapes). The pipeline freezes the batch
#: for TFLite before lowering, so there they fold; what still reaches the backend reads a dynamic (spatial) size.
#: Lowered here without that freeze, the artifact computes them for the runner's batch of 4 (its file says 1).
RUNTIME_SHAPES = {
    "shape_of_nhwc": lambda: _pooled_then(  # the pooled tensor is stored NHWC: SHAPE's dims gathered to ONNX order
        [_node("Shape", ["c"], ["sh"]), _node("ConstantOfShape", ["sh"], ["z"], value=_tensor(1.5)),
         _node("Add", ["c", "z"], ["y"])], "shape_fill", {"y": F, "sh": I64}, opset=18),
    "shape_start_end": lambda: _pooled_then([_node("Shape", ["c"], ["sh"], start=-3, end=-1)], "shape_part", {"sh": I64},
                                            opset=18),
    "size": lambda: _pooled_then([_node("Size", ["c"], ["n"]), _node("Cast", ["n"], ["nf"], to=F),
                                  _node("Div", ["c", "nf"], ["y"])], "size", {"y": F, "n": I64}, opset=18),
    "range_over_the_batch": lambda: _pooled_then(
        [_node("Shape", ["c"], ["sh"], end=1), _node("Squeeze", ["sh"], ["n"]), _node("Range", ["zero", "n", "one"], ["r"]),
         _node("Cast", ["r"], ["rf"], to=F), _node("Unsqueeze", ["rf", "axes"], ["col"]), _node("Add", ["c", "col"], ["y"])],
        "range", {"y": F, "r": I64}, {"zero": np.array(0, np.int64), "one": np.array(1, np.int64),
                                      "axes": np.array([1, 2, 3], np.int64)}, opset=18),
}


def _tensor(value: float) -> onnx.TensorProto:
    return onnx.helper.make_tensor("value", F, [1], [value])


@pytest.mark.parametrize("mode", ["int8", "fp32"])
@pytest.mark.parametrize("case", sorted(RUNTIME_SHAPES))
def test_shapes_computed_at_run_time(case, mode, tmp_path):
    plan, _, inputs = _prepare(RUNTIME_SHAPES[case](), tmp_path, samples=4, **MODES[mode])
    assert {"Shape", "Size"} & {n.op_type for n in plan.nodes}  # not folded: the batch is dynamic
    backend, legal, artifact, _ = _lower(plan, tmp_path, io="int8")
    assert ("REDUCE_PROD" if case == "size" else "SHAPE") in artifact.metadata["ops"], artifact.metadata["ops"]
    for runner_options in RUNNERS:
        _assert_conforms(_errors(backend, legal, artifact, inputs, **runner_options), mode)


# ============================================================================ data-dependent sizes
NON_ZERO = {
    "nonzero_of_floats": lambda: _pooled_then([_node("Relu", ["c"], ["r"]), _node("NonZero", ["r"], ["y"])], "nonzero",
                                              {"y": I64}),
    "nonzero_of_a_mask": lambda: _pooled_then([_node("Greater", ["c", "t"], ["m"]), _node("NonZero", ["m"], ["y"])],
                                              "nonzero_mask", {"y": I64}, {"t": np.array(0.5, np.float32)}),
    "nonzero_then_gather_nd": lambda: _pooled_then(  # the selected values: GatherND(x, transpose(NonZero(x > t)))
        [_node("Greater", ["c", "t"], ["m"]), _node("NonZero", ["m"], ["nz"]), _node("Transpose", ["nz"], ["idx"]),
         _node("GatherND", ["c", "idx"], ["y"])], "nonzero_gather", {"y": F}, {"t": np.array(0.5, np.float32)}),
    "compress_computed_condition": lambda: _pooled_then(  # the columns whose first row's value is positive
        [_node("Gather", ["c", "zero"], ["first"], axis=2), _node("ReduceMax", ["first"], ["peak"], axes=[0, 1], keepdims=0),
         _node("Greater", ["peak", "zero_f"], ["keep"]), _node("Compress", ["c", "keep"], ["y"], axis=3)],
        "compress_c", {"y": F}, {"zero": np.array(0, np.int64), "zero_f": np.array(0.0, np.float32)}),
}


@pytest.mark.parametrize("mode", ["int8", "fp16", "fp32"])
@pytest.mark.parametrize("case", sorted(NON_ZERO))
def test_non_zero_sizes_its_output_at_run_time(case, mode, tmp_path):
    plan, _, inputs = _prepare(NON_ZERO[case](), tmp_path, samples=4, **MODES[mode])
    backend, legal, artifact, _ = _lower(plan, tmp_path, io="int8")
    assert "WHERE" in artifact.metadata["ops"], artifact.metadata["ops"]
    for fed in (inputs, {"x": inputs["x"][:1] * -0.5}):  # another count of selected elements
        for runner_options in RUNNERS:
            _assert_conforms(_errors(backend, legal, artifact, fed, **runner_options), mode)


def _nms(center: int = 0, corners: str = "any", score_threshold: float | None = 0.3, classes: int = 2,
         batches: int = 1, iou: float = 0.4) -> onnx.ModelProto:
    """boxes[B, 24, 4] from an input (corners "any": an arbitrary diagonal pair, "sorted": y1 ≤ y2, x1 ≤ x2; or
    centre/size with ``center``), scores from another input [B, classes, 24] (exact in every plan: an integer plan's
    scores are its quantized feed, with ties), then NonMaxSuppression."""
    nodes = [_node("Identity", ["logits"], ["scores"])]
    if center:
        nodes += [_node("Abs", ["raw"], ["boxes"])]  # widths and heights ≥ 0
    elif corners == "sorted":
        nodes += [_node("Split", ["raw"], ["lo", "hi"], axis=2, num_outputs=2), _node("Min", ["lo", "hi"], ["a"]),
                  _node("Max", ["lo", "hi"], ["b"]), _node("Concat", ["a", "b"], ["boxes"], axis=2)]
    else:
        nodes += [_node("Identity", ["raw"], ["boxes"])]
    inputs = ["boxes", "scores", "limit", "iou"] + (["floor"] if score_threshold is not None else [])
    nodes.append(_node("NonMaxSuppression", inputs, ["y"], center_point_box=center))
    inits = {"limit": np.array([5], np.int64), "iou": np.array([iou], np.float32)}
    if score_threshold is not None:
        inits["floor"] = np.array([score_threshold], np.float32)
    return graph_model("nms", nodes, {"raw": [batches, 24, 4], "logits": [batches, classes, 24]}, {"y": I64}, inits, opset=18)


NMS = {
    "any_corners": lambda: _nms(),
    "sorted_corners_no_score_threshold": lambda: _nms(corners="sorted", score_threshold=None),
    "center_point_box": lambda: _nms(center=1),
    "two_batches_three_classes": lambda: _nms(classes=3, batches=2),
    "zero_iou_threshold": lambda: _nms(iou=0.0),  # any overlap suppresses; disjoint boxes (IoU 0) do not
}


@pytest.mark.parametrize("mode", ["int8", "fp16", "fp32"])
@pytest.mark.parametrize("case", sorted(NMS))
def test_non_max_suppression_selects_onnx_runtimes_boxes(case, mode, tmp_path):
    plan, _, inputs = _prepare(NMS[case](), tmp_path, samples=4, **MODES[mode])
    backend, legal, artifact, _ = _lower(plan, tmp_path, io="int8")
    assert "NON_MAX_SUPPRESSION_V4" in artifact.metadata["ops"], artifact.metadata["ops"]
    for seed in range(5):  # other boxes, other counts
        rng = np.random.default_rng(seed)
        fed = {name: rng.normal(0, 1, value.shape).astype(np.float32) for name, value in inputs.items()}
        for runner_options in RUNNERS:
            _assert_conforms(_errors(backend, legal, artifact, fed, **runner_options), mode)


# ============================================================================ Upsample (opsets 7 and 9) and Resize-10
def _upsample(mode: str, scales: list[float], opset: int) -> onnx.ModelProto:
    """The pooled input → Upsample (opset 9: scales as an input; 7: as an attribute) or an opset-10 Resize."""
    if opset == 7:
        node = _node("Upsample", ["c"], ["y"], mode=mode, scales=scales)
        inits = {}
    else:
        node = _node("Upsample" if opset == 9 else "Resize", ["c", "scales"], ["y"], mode=mode)
        inits = {"scales": np.array(scales, np.float32)}
    return _pooled_then([node], f"upsample{opset}_{mode}", {"y": F}, inits, opset=opset)


UPSAMPLE = {
    "yolo_nearest_x2_opset9": ("nearest", [1.0, 1.0, 2.0, 2.0], 9),
    "nearest_x3_opset7": ("nearest", [1.0, 1.0, 3.0, 3.0], 7),
    "nearest_fractional_opset9": ("nearest", [1.0, 1.0, 2.5, 1.5], 9),
    "bilinear_x2_opset9": ("linear", [1.0, 1.0, 2.0, 2.0], 9),
    "bilinear_x2_opset7": ("linear", [1.0, 1.0, 2.0, 2.0], 7),
    "resize10_nearest_downscale": ("nearest", [1.0, 1.0, 0.6, 0.8], 10),  # ceil: no TFLite resize reads those pixels
}


@pytest.mark.parametrize("case", sorted(UPSAMPLE))
def test_old_upsample_keeps_its_meaning_through_import(case, tmp_path):
    # ONNX Runtime on the original opset-7/9/10 file is the meaning; the version converter's Resize-11 defaults
    # (half_pixel) moved a bilinear Upsample ×2 by a quarter pixel (1.16 off) before the importer kept the modes
    import onnxruntime as ort

    from mpcompile.backends.api import ReferenceRunner

    model = _upsample(*UPSAMPLE[case])
    plan, _, inputs = _prepare(model, tmp_path, samples=4, **MODES["fp32"])
    (node,) = [n for n in plan.nodes if n.op_type == "Resize"]
    assert node.attr("coordinate_transformation_mode") == "asymmetric"
    expected = ort.InferenceSession(model.SerializeToString()).run(None, inputs)[0]
    got = ReferenceRunner(plan).run(inputs)["y"]
    assert got.shape == expected.shape and np.max(np.abs(got - expected)) < 1e-6


@pytest.mark.parametrize("mode", sorted(MODES))
@pytest.mark.parametrize("case", sorted(c for c in UPSAMPLE if UPSAMPLE[c][2] < 10))
def test_old_upsample_is_the_resize_lowering(case, mode, tmp_path):
    plan, _, inputs = _prepare(_upsample(*UPSAMPLE[case]), tmp_path, samples=4, **MODES[mode])
    backend, legal, artifact, _ = _lower(plan, tmp_path, io="int8")
    resize = "RESIZE_BILINEAR" if UPSAMPLE[case][0] == "linear" else "RESIZE_NEAREST_NEIGHBOR"
    assert resize in artifact.metadata["ops"], artifact.metadata["ops"]
    for runner_options in RUNNERS:
        _assert_conforms(_errors(backend, legal, artifact, inputs, **runner_options), mode)


# ============================================================================ refusals
def _grid_sample() -> onnx.ModelProto:
    return graph_model("grid_sample", [_node("GridSample", ["x", "grid"], ["y"])], {"x": [1, 2, 4, 4], "grid": [1, 3, 3, 2]},
                       {"y": F}, {}, opset=16)


def _roi_align() -> onnx.ModelProto:
    return graph_model("roi_align", [_node("RoiAlign", ["x", "rois", "batch"], ["y"], output_height=2, output_width=2)],
                       {"x": [1, 2, 6, 6]}, {"y": F},
                       {"rois": np.array([[0, 0, 3, 3]], np.float32), "batch": np.array([0], np.int64)}, opset=16)


def _computed(op: str, outputs: dict[str, int], const: str, value: np.ndarray, **attrs: object) -> onnx.ModelProto:
    """``op``(x, f(ids)) where the second input is computed from an int64 input (so the importer cannot fold it)."""
    nodes = [_node("ReduceMax", ["ids"], ["top"], keepdims=0), _node("Mod", ["top", "base"], ["arg"]),
             _node(op, ["x", "arg", *([const] if const else [])], list(outputs), **attrs)]
    inits = {"base": np.array(2, np.int64), **({const: value} if const else {})}
    return graph_model(op.lower(), nodes, {"x": [4, 5], "ids": (I64, [3])}, outputs, inits, opset=18)


REFUSED = {
    "scatternd_mul": (lambda: _one_node("ScatterND", {"y": F}, {"i": np.array([[1]], np.int64),
                                                               "u": np.ones((1, 4, 5), np.float32)}, reduction="mul"),
                      "reduction='mul'"),
    "scatternd_duplicates": (lambda: _one_node("ScatterND", {"y": F}, {"i": np.array([[0, 1], [0, -3]], np.int64),
                                                                      "u": np.ones((2, 5), np.float32)}), "duplicate"),
    "scatterelements_max": (lambda: _one_node("ScatterElements", {"y": F}, {"i": np.zeros((1, 1, 1), np.int64),
                                                                           "u": np.ones((1, 1, 1), np.float32)},
                                              reduction="max"), "reduction='max'"),
    "trilu_computed_k": (lambda: _computed("Trilu", {"y": F}, "", np.zeros(0)), "constant k"),
    "one_hot_computed_depth": (lambda: graph_model(
        "one_hot_c", [_node("ReduceMax", ["ids"], ["top"], keepdims=1), _node("OneHot", ["ids", "top", "v"], ["y"])],
        {"ids": (I64, [3])}, {"y": F}, {"v": np.array([0.0, 1.0], np.float32)}, opset=18), "constant depth"),
    "eye_like_dynamic": (lambda: graph_model("eye_like_d", [_node("EyeLike", ["x"], ["y"])], {"x": ["N", 4]}, {"y": F}, {}),
                         "static 2-D shape"),
    "grid_sample": (_grid_sample, "no sampling operator"),
    "roi_align": (_roi_align, "region-of-interest"),
}


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_what_tflite_cannot_express_is_refused_with_a_reason(case, tmp_path):
    assert_refused(*REFUSED[case], tmp_path)


def test_reduce_log_sum_exp_of_infinite_rows(tmp_path):
    # the shift is 0 where the row's maximum is infinite: −inf rows give −inf and +inf rows +inf (ONNX Runtime's
    # results), not the NaN of inf − inf; a row of 100s gives 100 + log 2 where e¹⁰⁰ alone overflows float32
    model = graph_model("lse_inf", [_node("ReduceLogSumExp", ["x"], ["y"], axes=[1], keepdims=0)], {"x": ["N", 3]}, {"y": F},
                        {}, opset=17)
    plan, _, _ = _prepare(model, tmp_path, samples=2, **MODES["fp32"])
    backend, legal, artifact, _ = _lower(plan, tmp_path)
    x = np.array([[-np.inf, -np.inf, -np.inf], [np.inf, 1.0, -np.inf], [100.0, 100.0, -np.inf], [1.0, 2.0, 3.0]], np.float32)
    expected = np.array([-np.inf, np.inf, 100.0 + np.log(2.0), np.log(np.exp(1.0) + np.exp(2.0) + np.exp(3.0))], np.float32)
    for runner_options in RUNNERS:
        with backend.runner(artifact, backend.options(runner_options)) as runner:
            np.testing.assert_allclose(runner.run({"x": x})["y"], expected, rtol=1e-6)


@pytest.mark.parametrize("case", ["shape_of_nhwc", "nonzero_then_gather_nd"])
def test_the_pipeline_writes_and_conforms(case, tmp_path):
    # through compile(): the batch is frozen for TFLite, so the Shape folds and its output ('sh') becomes a constant
    # graph output (written by a RESHAPE of its value), while NonZero keeps its data-dependent count. FP32 plans: an
    # integer plan's NonZero may select another count than FP32, which the plan-vs-FP32 metric cannot compare yet.
    model = {**RUNTIME_SHAPES, **NON_ZERO}[case]()
    onnx.save(model, tmp_path / "model.onnx")
    np.savez(tmp_path / "calib.npz", **feeds(model, 8, seed=1))
    np.savez(tmp_path / "eval.npz", **feeds(model, 8, seed=2))
    result = mpcompile.compile(str(tmp_path / "model.onnx"), str(tmp_path / "calib.npz"), backends=["tflite"],
                               eval_data=str(tmp_path / "eval.npz"), conform=True, out_dir=tmp_path / "out",
                               progress=False, precision="fp32")
    assert result.exit_code == 0, (result.failures, result.conformance)


# ============================================================================ integer data movement (imported QDQ models)
def _qdq(op_nodes: list, name: str, inits: dict, int16: bool = False) -> onnx.ModelProto:
    """x[2, 4, 5, 5] → QuantizeLinear/DequantizeLinear → the node under test ("d" → "m") → Q/DQ with the same
    numbers → y: what an exporter writes around data movement. The importer turns the pairs into specs and the
    node into an integer one (every value it reads and writes passes through Q/DQ)."""
    scale, zero = np.array(0.02, np.float32), np.array(0 if int16 else 3, np.int16 if int16 else np.int8)
    nodes = [_node("QuantizeLinear", ["x", "s", "z"], ["q"]), _node("DequantizeLinear", ["q", "s", "z"], ["d"]), *op_nodes,
             _node("QuantizeLinear", ["m", "s", "z"], ["qm"]), _node("DequantizeLinear", ["qm", "s", "z"], ["y"])]
    return graph_model(name, nodes, {"x": [2, 4, 5, 5]}, {"y": F}, {"s": scale, "z": zero, **inits}, opset=21 if int16 else 18)


def _qdq_scatter(update_scale: str) -> list:
    """A cache write in a QDQ model: sample 1 of "d" replaced by 0.613 · sample 0 (no rounding ties), quantized with
    ``update_scale``."""
    return [_node("Gather", ["d", "first"], ["g"], axis=0), _node("QuantizeLinear", ["g", "s", "z"], ["qg"]),
            _node("DequantizeLinear", ["qg", "s", "z"], ["gd"]), _node("Mul", ["gd", "factor"], ["h"]),
            _node("QuantizeLinear", ["h", update_scale, "z"], ["qh"]),
            _node("DequantizeLinear", ["qh", update_scale, "z"], ["upd"]), _node("ScatterND", ["d", "idx", "upd"], ["m"])]


QDQ_SCATTER = {"first": np.array([0], np.int64), "idx": np.array([[1]], np.int64), "factor": np.array(0.613, np.float32),
               "s2": np.array(0.01, np.float32)}
#: (case, plan) -> the reason an integer node of an imported QDQ model runs in FP32 instead
QDQ_IN_FLOAT = {("reverse_sequence", "int8"): "int16 but not int8", ("scatternd", "int16"): "no int16 updates",
                ("scatternd_rescaled_updates", "int16"): "no int16 updates",
                ("scatternd_rescaled_updates", "int8"): "rounds exact ties otherwise"}
QDQ = {
    "trilu": (lambda int16: _qdq([_node("Trilu", ["d"], ["m"], upper=0)], "qdq_trilu", {}, int16), "SELECT_V2"),
    "compress": (lambda int16: _qdq([_node("Compress", ["d", "keep"], ["m"], axis=2)], "qdq_compress",
                                    {"keep": np.array([True, False, True, True, False])}, int16), "GATHER"),
    "scatternd": (lambda int16: _qdq(_qdq_scatter("s"), "qdq_scatter", QDQ_SCATTER, int16), "SCATTER_ND"),
    "scatternd_rescaled_updates": (lambda int16: _qdq(_qdq_scatter("s2"), "qdq_scatter2", QDQ_SCATTER, int16),
                                   "SCATTER_ND"),
    "reverse_sequence": (lambda int16: _qdq([_node("ReverseSequence", ["d", "lens"], ["m"], time_axis=1, batch_axis=0)],
                                            "qdq_reverse", {"lens": np.array([4, 2], np.int64)}, int16), "REVERSE_SEQUENCE"),
}


@pytest.mark.parametrize("mode", ["int8", "int16"])
@pytest.mark.parametrize("case", sorted(QDQ))
def test_data_movement_of_a_qdq_model_stays_integer(case, mode, tmp_path):
    from mpcompile.importer import load

    build, operator = QDQ[case]
    onnx.save(build(mode == "int16"), tmp_path / "model.onnx")
    imported = load(tmp_path / "model.onnx")
    backend, legal, artifact, deviations = _lower(imported, tmp_path, io="int8")
    op_type = {"trilu": "Trilu", "compress": "Compress", "reverse_sequence": "ReverseSequence"}.get(case, "ScatterND")
    (node,) = [n for n in legal.nodes if n.op_type == op_type]
    assert operator in artifact.metadata["ops"], artifact.metadata["ops"]
    if (case, mode) in QDQ_IN_FLOAT:  # float between DEQUANTIZE and QUANTIZE, with the reason
        assert node.precision.value == "fp32" and any(QDQ_IN_FLOAT[case, mode] in d.reason for d in deviations)
    else:
        assert node.precision.value == mode, [str(d) for d in deviations]
        # (the scatter's update is scaled by a float Mul: one DEQUANTIZE for it)
        assert artifact.metadata["ops"].get("DEQUANTIZE", 0) == case.startswith("scatter"), artifact.metadata["ops"]
    inputs = {"x": RNG.normal(0, 1, (2, 4, 5, 5)).astype(np.float32)}
    for runner_options in RUNNERS:
        _assert_conforms(_errors(backend, legal, artifact, inputs, **runner_options), mode, lsb=0.0)
