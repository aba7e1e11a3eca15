"""The operators of onnx2tf's list added in issue 14 (elementwise float math, indices, selection, scans), against the
reference, in the style of ``test_tflite_ops.py``: one small generated model per operator, calibrated in every
plan (int8, 16x8, fp16, fp32), lowered, run by LiteRT (XNNPACK and the reference kernels) and compared with the
fake-quant reference: float outputs relative to max(1, |reference|) (1e-4, fp16 plans 3e-3), integer and bool
outputs exactly, Tile's int8/int16 outputs within 0 LSB (it copies). Each refusal names its reason.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto

pytest.importorskip("ai_edge_litert")

from mpcompile_tflite import TFLiteBackend  # noqa: E402
from test_tflite import MODES, _lower, _prepare  # noqa: E402
from test_tflite_ops import RUNNERS, _assert_conforms, _errors, _node, _pooled_then, _static_batch  # noqa: E402
from tflite_models import graph_model, single_op  # noqa: E402

from mpcompile.errors import UnsupportedOperatorError  # noqa: E402
from mpcompile.ir.types import Precision  # noqa: E402

pytestmark = pytest.mark.tflite

B, F, I64 = TensorProto.BOOL, TensorProto.FLOAT, TensorProto.INT64


def _scaled(op_nodes: list, name: str, outputs: dict[str, int], inits: dict | None = None, factor: float = 3.0,
            opset: int = 18) -> onnx.ModelProto:
    """The pooled input times ``factor`` ("s", wider than the feeds' normal range), then the nodes under test."""
    return _pooled_then([_node("Mul", ["c", "factor"], ["s"]), *op_nodes], name, outputs,
                        {"factor": np.array(factor, np.float32), **(inits or {})}, opset)


def _unary_case(op: str, opset: int = 18, **attrs: object):  # noqa: ANN202
    return lambda: _scaled([_node(op, ["s"], ["y"], **attrs)], op.lower(), {"y": F}, opset=opset)


RNG = np.random.default_rng(7)
GATHER_ND_INDICES = np.array([[[0, 1], [3, -1]], [[-2, 0], [1, 4]]], np.int64)  # [2, 2, 2] into axes 1, 2 (C, H)
CASES = {
    "elu": _unary_case("Elu"),
    "elu_alpha": _unary_case("Elu", alpha=0.4),
    "selu": _unary_case("Selu"),
    "celu": _unary_case("Celu", opset=18, alpha=2.0),
    "softplus": lambda: _scaled([_node("Softplus", ["s"], ["y"])], "softplus", {"y": F}, factor=30.0),
    "softsign": _unary_case("Softsign"),
    "mish": _unary_case("Mish"),
    "thresholded_relu": _unary_case("ThresholdedRelu", alpha=0.5),
    # (periodic: an fp16 plan's float16 rounding of the argument shows directly; the pooled input keeps it small)
    "sin": lambda: _pooled_then([_node("Sin", ["c"], ["y"])], "sin", {"y": F}),
    "cos": lambda: _pooled_then([_node("Cos", ["c"], ["y"])], "cos", {"y": F}),
    "sign": _unary_case("Sign"),
    "round": _unary_case("Round"),
    "mean_of_three": lambda: _scaled([_node("Abs", ["s"], ["a"]), _node("Mean", ["c", "a", "s"], ["y"])], "mean3", {"y": F}),
    "mean_broadcast": lambda: _scaled([_node("Abs", ["s"], ["a"]), _node("Mean", ["c", "a", "k"], ["y"])], "mean_b", {"y": F},
                                      {"k": RNG.normal(0, 1, (4, 1, 5)).astype(np.float32)}),
    "mean_of_two": lambda: _scaled([_node("Mean", ["c", "s"], ["y"])], "mean2", {"y": F}),
    "tile": lambda: _pooled_then([_node("Tile", ["c", "reps"], ["y"])], "tile", {"y": F},
                                 {"reps": np.array([1, 2, 1, 3], np.int64)}),
    "argmax_keepdims": lambda: _pooled_then([_node("ArgMax", ["c"], ["y"], axis=1)], "argmax", {"y": I64}),
    "argmin_last_axis": lambda: _pooled_then([_node("ArgMin", ["c"], ["y"], axis=-1, keepdims=0)], "argmin", {"y": I64}),
    "topk": lambda: _pooled_then([_node("TopK", ["c", "k"], ["v", "i"])], "topk", {"v": F, "i": I64},
                                 {"k": np.array([3], np.int64)}),
    "cumsum": lambda: _pooled_then([_node("CumSum", ["c", "ax"], ["y"])], "cumsum", {"y": F}, {"ax": np.array(2, np.int64)}),
    "cumsum_exclusive_reverse": lambda: _pooled_then([_node("CumSum", ["c", "ax"], ["y"], exclusive=1, reverse=1)],
                                                     "cumsum_er", {"y": F}, {"ax": np.array(-1, np.int64)}),
    "gather_nd_constant": lambda: _pooled_then([_node("Transpose", ["c"], ["t"], perm=[1, 2, 0, 3]),
                                                _node("GatherND", ["t", "idx"], ["y"])], "gather_nd", {"y": F},
                                               {"idx": GATHER_ND_INDICES}),
    "gather_nd_computed": lambda: _computed_gather_nd(),
    "gather_elements_constant": lambda: _pooled_then(
        [_node("GatherElements", ["c", "idx"], ["y"], axis=2)], "gather_el", {"y": F},
        {"idx": RNG.integers(-5, 5, (2, 4, 3, 5)).astype(np.int64)}),
    "take_along_argmax": lambda: _static_batch(_pooled_then(
        [_node("ArgMax", ["c"], ["am"], axis=1), _node("GatherElements", ["c", "am"], ["y"], axis=1)],
        "take_along", {"y": F, "am": I64}), 8),
    "instance_norm_nhwc": lambda: _pooled_then(
        [_node("InstanceNormalization", ["c", "gamma", "beta"], ["y"], epsilon=1e-3)], "instance_norm", {"y": F},
        {"gamma": RNG.uniform(0.5, 1.5, 4).astype(np.float32), "beta": RNG.normal(0, 0.2, 4).astype(np.float32)}),
    "instance_norm_sequence": lambda: graph_model(
        "instance_norm_1d", [_node("Mul", ["x", "two"], ["s"]), _node("InstanceNormalization", ["s", "gamma", "beta"], ["y"])],
        {"x": ["N", 3, 8]}, {"y": F},
        {"two": np.array(2.0, np.float32), "gamma": np.array([1.0, 0.5, 2.0], np.float32),
         "beta": np.array([0.1, 0.0, -0.3], np.float32)}),
    "fmod_floats": lambda: _scaled([_node("Mod", ["s", "d"], ["y"], fmod=1)], "fmod", {"y": F},
                                   {"d": np.array([0.7, -0.4, 1.3, -2.1], np.float32).reshape(4, 1, 1)}),
}
def _computed_gather_nd() -> onnx.ModelProto:
    """Indices computed from int64 ids (ids mod 4 − 2: negative ones too) into the (C, H) axes of the pooled input."""
    x_shape = ["N", 4, 5, 5]
    nodes = [_node("MaxPool", ["x"], ["c"], kernel_shape=[1, 1]), _node("Transpose", ["c"], ["t"], perm=[1, 2, 0, 3]),
             _node("Mod", ["ids", "four"], ["m"]), _node("Sub", ["m", "two"], ["j"]), _node("GatherND", ["t", "j"], ["y"])]
    return graph_model("gather_nd_c", nodes, {"x": x_shape, "ids": (TensorProto.INT64, ["N", 2])}, {"y": F},
                       {"four": np.array(4, np.int64), "two": np.array(2, np.int64)})


#: the TFLite operator each case must contain (the name's prefix up to the first "_" when not listed)
OPERATOR = {
    "elu": "EXP", "elu_alpha": "EXP", "selu": "EXP", "celu": "EXP", "softplus": "LOG", "round": "FLOOR_MOD", "mean_broadcast": "ADD", "softsign": "DIV", "mish": "TANH",
    "thresholded_relu": "SELECT_V2", "mean_of_three": "ADD_N", "mean_of_two": "DIV", "argmax_keepdims": "ARG_MAX",
    "argmin_last_axis": "ARG_MIN", "topk": "TOPK_V2", "gather_nd_constant": "GATHER_ND", "gather_nd_computed": "FLOOR_MOD",
    "gather_elements_constant": "GATHER_ND", "take_along_argmax": "CONCATENATION", "instance_norm_nhwc": "RSQRT",
    "instance_norm_sequence": "RSQRT", "fmod_floats": "FLOOR_MOD",
}


@pytest.mark.parametrize("mode", sorted(MODES))
@pytest.mark.parametrize("case", sorted(CASES))
def test_operator_matches_the_reference(case, mode, tmp_path):
    plan, _, inputs = _prepare(CASES[case](), tmp_path, samples=8, **MODES[mode])
    backend, legal, artifact, _ = _lower(plan, tmp_path, io="int8")  # quantized feeds rounded as the reference does
    wanted = OPERATOR.get(case, case.split("_")[0].upper())
    assert wanted in artifact.metadata["ops"], artifact.metadata["ops"]
    if case == "instance_norm_nhwc":  # normalized in NHWC where the pool wrote it: only the input's and output's transposes
        assert artifact.metadata["ops"].get("TRANSPOSE", 0) == 2 and "RESHAPE" not in artifact.metadata["ops"]
    for runner_options in RUNNERS:
        _assert_conforms(_errors(backend, legal, artifact, inputs, **runner_options), mode)


@pytest.mark.parametrize("mode", ["int8", "int16"])
def test_tile_copies_integers(mode, tmp_path):
    model = single_op("Tile", (2, 4, 3, 3), {"reps": np.array([1, 1, 2, 3], np.int64)})
    plan, _, inputs = _prepare(model, tmp_path, samples=4, **MODES[mode])
    backend, legal, artifact, deviations = _lower(plan, tmp_path, io="int8")
    assert legal.nodes[0].precision == Precision(mode), [str(d) for d in deviations]
    assert artifact.metadata["ops"] == {"TILE": 1}, artifact.metadata["ops"]
    for runner_options in RUNNERS:
        _assert_conforms(_errors(backend, legal, artifact, inputs, **runner_options), mode, lsb=0.0)


def _feed_and_compare(model: onnx.ModelProto, tmp_path, mode: str, feeds: dict[str, np.ndarray]) -> None:  # noqa: ANN001
    plan, _, _ = _prepare(model, tmp_path, samples=4, **MODES[mode])
    backend, legal, artifact, _ = _lower(plan, tmp_path)
    for runner_options in RUNNERS:
        errors = _errors(backend, legal, artifact, feeds, **runner_options)
        _assert_conforms(errors, mode)


@pytest.mark.parametrize("mode", ["fp32", "fp16"])
def test_round_is_half_to_even(mode, tmp_path):
    # every half from -6.5 to 6.5: half-away-from-zero rounding would differ at 7 of them (by 1, relative ≥ 1/6)
    model = graph_model("round_halves", [_node("Round", ["x"], ["y"])], {"x": ["N", 27]}, {"y": F}, {})
    halves = np.arange(-13, 14, dtype=np.float32) / np.float32(2.0) * np.ones((3, 1), np.float32)
    _feed_and_compare(model, tmp_path, mode, {"x": halves})


@pytest.mark.parametrize("mode", ["fp32", "fp16"])
def test_is_nan_and_is_inf(mode, tmp_path):
    model = graph_model("nan_inf", [_node("IsNaN", ["x"], ["nan"]), _node("IsInf", ["x"], ["inf"]),
                                    _node("IsInf", ["x"], ["pos"], detect_negative=0),
                                    _node("IsInf", ["x"], ["neg"], detect_positive=0)],
                        {"x": ["N", 6]}, {"nan": B, "inf": B, "pos": B, "neg": B}, {})
    x = np.array([[np.nan, np.inf, -np.inf, 1.0, -2.0, 0.0], [7e4, -7e4, 3.0, np.nan, -0.0, 1e-30]], np.float32)
    _feed_and_compare(model, tmp_path, mode, {"x": x})  # ±7e4 overflow to ±inf in float16: an FP16 plan says inf


def test_integer_mod_takes_the_divisors_sign(tmp_path):
    model = graph_model("int_mod", [_node("Sub", ["ids", "ten"], ["centered"]), _node("Mod", ["centered", "d"], ["y"])],
                        {"ids": (TensorProto.INT64, ["N", 6])}, {"y": I64},
                        {"ten": np.array(10, np.int64), "d": np.array([3, -3, 4, -5, 7, 2], np.int64)})
    _feed_and_compare(model, tmp_path, "fp32", {"ids": np.arange(24, dtype=np.int64).reshape(4, 6) - 2})


def _one_node(op: str, outputs: dict[str, int], inits: dict | None = None, **attrs: object) -> onnx.ModelProto:
    inputs = ["x", *(inits or {})]
    return graph_model(op.lower(), [_node(op, inputs, list(outputs), **attrs)], {"x": ["N", 4, 5]}, outputs, inits or {})


K2 = {"k": np.array([2], np.int64)}
REFUSED = {
    "argmax_select_last": (lambda: _one_node("ArgMax", {"y": I64}, axis=1, select_last_index=1), "select_last_index"),
    "topk_smallest": (lambda: _one_node("TopK", {"v": F, "i": I64}, K2, largest=0), "largest=0"),
    "topk_first_axis": (lambda: _one_node("TopK", {"v": F, "i": I64}, K2, axis=1), "last axis"),
    "gather_nd_batch_dims": (lambda: _one_node("GatherND", {"y": F}, {"i": np.zeros((1, 1), np.int64)}, batch_dims=1),
                             "batch_dims"),
    "is_inf_detecting_nothing": (lambda: _one_node("IsInf", {"y": B}, detect_positive=0, detect_negative=0), "neither"),
}


def assert_refused(build, reason: str, tmp_path) -> None:  # noqa: ANN001
    """The model ``build()`` makes, planned in FP32, is refused by legalization with ``reason``."""
    plan, _, _ = _prepare(build(), tmp_path, samples=2, **MODES["fp32"])
    backend = TFLiteBackend()
    with pytest.raises(UnsupportedOperatorError, match=reason):
        backend.legalize(plan, backend.options())


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_what_tflite_cannot_express_is_refused_with_a_reason(case, tmp_path):
    assert_refused(*REFUSED[case], tmp_path)


# ============================================================================ Einsum as one BATCH_MATMUL
W = RNG.normal(0, 0.5, (4, 6)).astype(np.float32)
EINSUM = {
    "attention_scores": lambda: _pooled_then([_node("Einsum", ["c", "c"], ["y"], equation="bhqd,bhkd->bhqk")],
                                             "einsum_qk", {"y": F}, opset=18),
    "pointwise_conv": lambda: _pooled_then([_node("Einsum", ["c", "w"], ["y"], equation="nchw,ck->nkhw")], "einsum_1x1",
                                           {"y": F}, {"w": W}, opset=18),
    "implicit_output": lambda: graph_model("einsum_implicit", [_node("Einsum", ["x", "w"], ["y"], equation="ij,jk")],
                                           {"x": ["N", 4]}, {"y": F}, {"w": W}, opset=18),
    "row_dot": lambda: _pooled_then([_node("Einsum", ["c", "c"], ["y"], equation="nchw,nchw->nh")], "einsum_dot", {"y": F},
                                    opset=18),
}


@pytest.mark.parametrize("mode", sorted(MODES))
@pytest.mark.parametrize("case", sorted(EINSUM))
def test_einsum_is_one_batch_matmul(case, mode, tmp_path):
    plan, _, inputs = _prepare(EINSUM[case](), tmp_path, samples=8, **MODES[mode])
    backend, legal, artifact, _ = _lower(plan, tmp_path, io="int8")
    assert artifact.metadata["ops"]["BATCH_MATMUL"] == 1, artifact.metadata["ops"]
    for runner_options in RUNNERS:
        _assert_conforms(_errors(backend, legal, artifact, inputs, **runner_options), mode)


EINSUM_REFUSED = {
    "diagonal": ("ii,ik->ik", "repeated index"),
    "reduction": ("ij,jk->k", "one operand only"),
    "ellipsis": ("...j,jk->...k", "ellipsis"),
}


@pytest.mark.parametrize("case", sorted(EINSUM_REFUSED))
def test_einsum_outside_batch_matmul_is_refused(case, tmp_path):
    equation, reason = EINSUM_REFUSED[case]
    model = graph_model("einsum_refused", [_node("Einsum", ["x", "w"], ["y"], equation=equation)], {"x": [4, 4]}, {"y": F},
                        {"w": np.ones((4, 3), np.float32)}, opset=18)
    plan, _, _ = _prepare(model, tmp_path, samples=2, **MODES["fp32"])
    backend = TFLiteBackend()
    with pytest.raises(UnsupportedOperatorError, match=reason):
        backend.legalize(plan, backend.options())
