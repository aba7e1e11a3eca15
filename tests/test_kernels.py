"""Kernel by kernel: a backend's every quantized tensor from the plan's exact inputs (conformance/kernels.py).

Two planted ONNX Runtime backends (tests/planted.py) pin the rule from both sides: a real bug
(one scale 1.5x off) is named kernel by kernel and still fails, while a backend that only breaks
near-ties the other way passes by the kernel rule on a plan that amplifies them (a Conv at a
coarse scale read by a Clip(0, 1) at 1/255: one Conv LSB is about 50 LSB of the Clip), with the
end-to-end figures still reported.
"""

from __future__ import annotations

import io
import sys

import numpy as np
import onnx
import pytest
from conftest import MNIST, MNIST_CALIB, MNIST_EVAL
from onnx import TensorProto, helper, numpy_helper
from planted import planted_target, tie_breaking_target

from mpcompile.backends.registry import resolve_targets
from mpcompile.backends.targets import Target, lower_target
from mpcompile.conformance import check_artifacts
from mpcompile.conformance.compare import NUDGE, Tolerances, nudged_scales, rounding_envelope
from mpcompile.conformance.html import render_html
from mpcompile.conformance.kernels import certify, cut_plan
from mpcompile.data import open_data
from mpcompile.pipeline import calibrate
from mpcompile.reference import ReferenceRunner

VICTIM = "/pool1/MaxPool_output_0"


def _check(plan, target, data, tmp_path, **kwargs):
    result = lower_target(target, plan, tmp_path, "m")
    assert result.error is None, result.error
    return check_artifacts(plan, {target.name: result}, {target.name: target}, open_data(plan, str(data)), **kwargs)


@pytest.fixture(scope="module")
def mnist_plan():
    return calibrate(MNIST, MNIST_CALIB, progress=False, samples=200).plan


def test_cut_plan_feeds_every_quantized_activation_from_an_input(mnist_plan):
    cut, given = cut_plan(mnist_plan)
    assert len(cut.nodes) == len(mnist_plan.nodes)
    assert VICTIM in given and given[VICTIM] in cut.inputs and VICTIM in cut.outputs
    consumers = cut.consumers()
    for tensor, feed in given.items():
        assert not consumers.get(tensor), f"{tensor} is still read inside the cut plan"
        assert consumers[feed] and cut.tensors[feed].quant == mnist_plan.tensors[tensor].quant
    # Every consumed, per-tensor quantized activation a node produces is cut; the model's inputs are not.
    producers = mnist_plan.producers()
    expected = {t.name for t in mnist_plan.quantized_tensors() if t.name in producers and t.quant.axis is None
                and mnist_plan.consumers().get(t.name)}
    assert set(given) == expected
    assert not set(given) & set(mnist_plan.inputs)


def test_a_planted_bug_is_named_kernel_by_kernel_and_fails(mnist_plan, tmp_path):
    report = _check(mnist_plan, planted_target(VICTIM), MNIST_EVAL, tmp_path, samples=64)
    backend = report.backends[0]
    assert not backend.passed and backend.verdict_rule == "end to end"
    assert backend.kernels is not None and not backend.kernels.agrees
    assert backend.kernels.failing[0] == VICTIM
    assert any(VICTIM in msg and "kernel by kernel" in msg for msg in backend.failures), backend.failures
    assert backend.to_dict()["kernels"]["failing"][0] == VICTIM


def test_a_healthy_backend_needs_no_kernel_certificate(mnist_plan, tmp_path):
    report = _check(mnist_plan, resolve_targets(["onnxruntime"])[0][0], MNIST_EVAL, tmp_path, samples=64)
    assert report.passed and report.backends[0].kernels is None


def _conv_clip(folder):
    """x → Conv (outputs in about ±20) → Clip(0, 1) → y: a plan whose scale shrinks fifty-fold in one step."""
    rng = np.random.default_rng(0)
    weight = numpy_helper.from_array((rng.standard_normal((8, 4, 3, 3)) * 1.5).astype(np.float32), "w")
    lo, hi = numpy_helper.from_array(np.array(0, np.float32), "lo"), numpy_helper.from_array(np.array(1, np.float32), "hi")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1], name="conv"),
         helper.make_node("Clip", ["c", "lo", "hi"], ["y"], name="clip")],
        "conv_clip", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4, 16, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 8, 16, 16])], [weight, lo, hi])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, folder / "conv_clip.onnx")
    np.savez(folder / "calib.npz", x=rng.standard_normal((64, 4, 16, 16)).astype(np.float32))
    np.savez(folder / "eval.npz", x=rng.standard_normal((256, 4, 16, 16)).astype(np.float32))
    return folder / "conv_clip.onnx", folder / "calib.npz", folder / "eval.npz"


def test_tie_rounding_amplified_by_the_plan_passes_by_the_kernel_rule(tmp_path):
    model, calib, evaluation = _conv_clip(tmp_path)
    plan = calibrate(str(model), str(calib), progress=False).plan
    report = _check(plan, tie_breaking_target(), evaluation, tmp_path)
    backend = report.backends[0]
    out = backend.outputs["y"]
    # End to end the backend is far out of tolerance: a tie rounded the other way at the Conv is ~50 LSB of y…
    assert out.quantized and out.max_lsb > 10 * out.tolerance_lsb, out.max_lsb
    # …yet each step is within tolerance from exact inputs, and the plan itself moves that far under the nudge.
    assert backend.kernels.agrees, backend.kernels.summary()
    assert backend.rounding_lsb["y"] > out.tolerance_lsb
    assert backend.passed and backend.verdict_rule == "kernel by kernel"
    text = report.format_text()
    assert "[PASS] onnxruntime (kernel by kernel)" in text and "1e-6 nudge" in text
    assert f"max |diff| {out.max_lsb:.0f} LSB" in text  # the end-to-end figure is still printed
    assert report.to_dict()["backends"][0]["verdict_rule"] == "kernel by kernel"
    page = render_html(report)
    assert "pass (kernel by kernel)" in page and "onnxruntime: kernel by kernel" in page


def _ties_plan(folder):
    """x → Relu → y, calibrated on [-4, 4] (y's scale is half x's), and rows of x on every positive tie of x's grid."""
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"], name="relu")], "ties",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 64])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 64])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), folder / "ties.onnx")
    np.savez(folder / "calib.npz", x=np.linspace(-4, 4, 512, dtype=np.float32).reshape(8, 64))
    plan = calibrate(str(folder / "ties.onnx"), str(folder / "calib.npz"), progress=False).plan
    spec = plan.tensors["x"].quant
    ties = (np.arange(int(spec.zero_point) + 1, 126) + 0.5 - int(spec.zero_point)) * np.float64(spec.scale)
    return plan, np.resize(ties.astype(np.float32), (2, 64))


def test_the_rounding_envelope_breaks_ties_both_ways(tmp_path):
    """A backend may round a tie either way, so the envelope nudges the scales up and down: nudged up only, the ties
    the reference rounds down never moved (basic_pitch's TFLite output: 9 LSB up, 16 down, 18 end to end)."""
    plan, ties = _ties_plan(tmp_path)
    lsb = float(plan.tensors["y"].quant.scale)
    reference, up, down = (np.rint(ReferenceRunner(p).run({"x": ties})["y"] / lsb)
                           for p in (plan, nudged_scales(plan, 1 + NUDGE), nudged_scales(plan, 1 - NUDGE)))
    only_down = (down != reference) & (up == reference)
    assert only_down.sum() >= 8, "no tie the reference rounds down: the test would prove nothing"
    batch = {"x": np.resize(ties[only_down], (1, 64))}
    envelope = rounding_envelope(plan, [batch], [ReferenceRunner(plan).run(batch)], "onnxruntime")
    assert envelope["y"].max_lsb == round(float(plan.tensors["x"].quant.scale) / lsb) == 2  # one LSB of x


# ============================================================================ cut inputs the plan has no shape for
def _dynamic_head(folder):
    """x [N, 4, 8, 8] → Conv → Relu → GlobalAveragePool → Reshape to [N, -1] → MatMul → Add → Softmax, at opset 11.

    The Reshape's target is Paddle2ONNX's: Shape → Cast → Slice → Cast → Concat. ONNX's shape inference does not
    follow an opset-11 Slice, so the plan knows no shape from the Reshape on, as in zoo ppocr_cls with a dynamic batch.
    """
    rng = np.random.default_rng(0)
    consts = [numpy_helper.from_array((rng.standard_normal((8, 4, 3, 3)) * 0.5).astype(np.float32), "w"),
              numpy_helper.from_array((rng.standard_normal((8, 3)) * 0.5).astype(np.float32), "fc"),
              numpy_helper.from_array(np.array([0.1, -0.2, 0.3], np.float32), "b"),
              *(numpy_helper.from_array(np.array([v], np.int64), k) for k, v in (("start", 0), ("stop", 1), ("axis", 0),
                                                                                 ("rest", -1)))]
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1], name="conv"),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("GlobalAveragePool", ["r"], ["p"], name="pool"),
        helper.make_node("Shape", ["p"], ["s"], name="shape"),
        helper.make_node("Cast", ["s"], ["s32"], to=TensorProto.INT32, name="cast32"),
        helper.make_node("Slice", ["s32", "start", "stop", "axis"], ["n32"], name="slice"),
        helper.make_node("Cast", ["n32"], ["n"], to=TensorProto.INT64, name="cast64"),
        helper.make_node("Concat", ["n", "rest"], ["dims"], axis=0, name="concat"),
        helper.make_node("Reshape", ["p", "dims"], ["flat"], name="reshape"),
        helper.make_node("MatMul", ["flat", "fc"], ["mm"], name="matmul"),
        helper.make_node("Add", ["mm", "b"], ["logits"], name="add"),
        helper.make_node("Softmax", ["logits"], ["y"], axis=1, name="softmax"),
    ]
    graph = helper.make_graph(nodes, "dynamic_head", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])], consts)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11)]), folder / "dynamic_head.onnx")
    np.savez(folder / "calib.npz", x=rng.standard_normal((32, 4, 8, 8)).astype(np.float32))
    np.savez(folder / "eval.npz", x=rng.standard_normal((64, 4, 8, 8)).astype(np.float32))
    return folder / "dynamic_head.onnx", folder / "calib.npz", folder / "eval.npz"


@pytest.fixture(scope="module")
def dynamic_head(tmp_path_factory):
    model, calib, evaluation = _dynamic_head(tmp_path_factory.mktemp("dynamic_head"))
    return calibrate(str(model), str(calib), progress=False).plan, evaluation


def test_a_cut_input_the_plan_has_no_shape_for_gets_the_one_its_values_have(dynamic_head):
    plan, evaluation = dynamic_head
    unknown = {t.name for t in plan.quantized_tensors() if t.shape is None}
    assert {"flat", "mm", "logits"} <= unknown  # the premise: ONNX's inference lost them
    cut, given = cut_plan(plan)
    assert cut.tensors[given["flat"]].shape is None  # what OpenVINO could not compile
    from mpcompile.conformance.kernels import observed_shapes
    from mpcompile.reference import ReferenceRunner

    x = np.load(evaluation)["x"]
    inter = tuple(given)
    reference = ReferenceRunner(plan)
    one, two = reference.run({"x": x[:1]}, inter), reference.run({"x": x[:2]}, inter)
    # Rank and every dim that does not follow the batch, as observed; the batch dynamic; the plan's own shapes kept.
    shapes = observed_shapes(plan, one, two)
    assert shapes["flat"] == (None, 8) and shapes["mm"] == (None, 3) and shapes["logits"] == (None, 3)
    assert set(shapes) == {n for n in given if plan.tensors[n].shape is None}
    assert observed_shapes(plan, one, None)["flat"] == (None, 8)  # one-sample data: the plan's batch stays dynamic
    cut, given = cut_plan(plan, shapes)
    assert cut.tensors[given["flat"]].shape == (None, 8)
    assert cut.tensors[given["r"]].shape == plan.tensors["r"].shape


def _target(name: str) -> Target:
    if name == "openvino":
        pytest.importorskip("openvino", reason="needs OpenVINO (pip install 'mpcompile[openvino]')")
        from mpcompile_openvino import backend

        return Target(backend, backend.options({}))
    if name == "tflite":
        pytest.importorskip("ai_edge_litert")
    return resolve_targets([name])[0][0]


@pytest.mark.parametrize("backend", ["onnxruntime", "tflite", "openvino"])
def test_a_plan_whose_tensor_shapes_are_unknown_gets_a_kernel_certificate(dynamic_head, backend, tmp_path):
    plan, evaluation = dynamic_head
    target = _target(backend)
    result = lower_target(target, plan, tmp_path, "m")
    assert result.error is None, result.error
    batches = list(open_data(result.plan, str(evaluation)).batches(8 if backend != "tflite" else 1))
    cert = certify(target, result.plan, batches, Tolerances(), "onnxruntime", tmp_path / "kernels")
    assert not cert.error, cert.error
    assert cert.agrees and cert.samples == 64 and {"flat", "mm", "logits"} <= set(cert.tensors), cert.summary()


# ============================================================================ progress
class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_the_kernel_certificate_shows_a_bar_inside_conformance_and_is_silent_without_progress(tmp_path, monkeypatch):
    model, calib, evaluation = _conv_clip(tmp_path)
    plan = calibrate(str(model), str(calib), progress=False).plan
    shown = {}
    for progress in (False, True):
        monkeypatch.setattr(sys, "stderr", _Terminal())
        report = _check(plan, tie_breaking_target(), evaluation, tmp_path / str(progress), progress=progress)
        shown[progress] = sys.stderr.getvalue()
        monkeypatch.undo()
        assert report.backends[0].kernels is not None and report.backends[0].kernels.agrees
    assert "kernel certificate" not in shown[False] and "conformance" not in shown[False]
    # One display: the certificate is a line of conformance's own bar (rich allows one live display at a time).
    assert "kernel certificate (onnxruntime)" in shown[True] and "conformance" in shown[True]
    assert "64/64" in shown[True]


def test_a_bar_opened_inside_another_is_a_line_of_the_same_display(monkeypatch):
    from mpcompile.progress import progress_bar

    monkeypatch.setattr(sys, "stderr", _Terminal())
    with progress_bar(True, 2, "conformance") as outer, progress_bar(True, 3, "kernel certificate (x)") as inner:
        # Two rich displays on one terminal would each redraw their own lines over the other's.
        assert inner._progress is outer._progress
        inner.advance(3)
    with progress_bar(False, 2, "conformance") as outer, progress_bar(True, 3, "kernel certificate (x)") as inner:
        assert not hasattr(outer, "_progress") and hasattr(inner, "_progress")  # a bar alone when the outer is off
