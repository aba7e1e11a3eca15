"""Kernel by kernel: a backend's every quantized tensor from the plan's exact inputs (conformance/kernels.py).

Two planted ONNX Runtime backends (tests/planted.py) pin the rule from both sides: a real bug
(one scale 1.5x off) is named kernel by kernel and still fails, while a backend that only breaks
near-ties the other way passes by the kernel rule on a plan that amplifies them (a Conv at a
coarse scale read by a Clip(0, 1) at 1/255: one Conv LSB is about 50 LSB of the Clip), with the
end-to-end figures still reported.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from conftest import MNIST, MNIST_CALIB, MNIST_EVAL
from onnx import TensorProto, helper, numpy_helper
from planted import planted_target, tie_breaking_target

from mpcompile.backends.registry import resolve_targets
from mpcompile.backends.targets import lower_target
from mpcompile.conformance import check_artifacts
from mpcompile.conformance.html import render_html
from mpcompile.conformance.kernels import cut_plan
from mpcompile.data import open_data
from mpcompile.pipeline import calibrate

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
