"""Accuracy recovery (mpcompile/recovery): each transform's invariant on small generated models."""

import json
import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from mpcompile.errors import PlanError
from mpcompile.pipeline import as_graph, calibrate, compile
from mpcompile.recovery import parse_recover
from mpcompile.recovery.bias_correction import weight_error_shift
from mpcompile.recovery.equalize import equalize
from mpcompile.recovery.fold_scalars import fold_scalars
from mpcompile.recovery.layers import input_means, integer_layers
from mpcompile.reference.fakequant import ReferenceRunner


def _save(tmp_path, name, nodes, inits, x_shape, y_shape, data):
    graph = helper.make_graph(
        nodes, name, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", *x_shape])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", *y_shape])],
        [numpy_helper.from_array(np.asarray(v, np.float32), k) for k, v in inits.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path / f"{name}.onnx"
    onnx.save(model, path)
    npz = tmp_path / f"{name}.npz"
    np.savez(npz, x=data.astype(np.float32))
    return path, npz


def _fp32(graph, x):
    return ReferenceRunner(graph, float_reference=True).run({"x": x})["y"]


# ---------------------------------------------------------------------------- fold_scalars
def test_fold_scalars_removes_the_scaling_and_keeps_fp32(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4, 3, 6, 6))
    inits = {"s0": 0.5, "w": rng.normal(size=(5, 3, 3, 3)), "b": rng.normal(size=5), "s1": 3.0,
             "c": rng.normal(size=(5, 1, 1)), "d": 4.0}
    nodes = [
        helper.make_node("Mul", ["x", "s0"], ["xs"], name="prescale"),
        helper.make_node("Conv", ["xs", "w", "b"], ["c0"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("Mul", ["c0", "s1"], ["c1"], name="gain"),
        helper.make_node("Add", ["c1", "c"], ["c2"], name="shift"),
        helper.make_node("Div", ["c2", "d"], ["c3"], name="divide"),
        helper.make_node("Relu", ["c3"], ["y"], name="relu"),
    ]
    path, _ = _save(tmp_path, "scaled", nodes, inits, (3, 6, 6), (5, 6, 6), x)
    graph = as_graph(str(path))
    before = _fp32(graph, x.astype(np.float32))
    report = fold_scalars(graph)
    assert report["changed"] == 4
    assert [n.op_type for n in graph.nodes] == ["Conv", "Relu"]
    np.testing.assert_allclose(_fp32(graph, x.astype(np.float32)), before, rtol=1e-5, atol=1e-5)


def test_fold_scalars_leaves_an_offset_before_a_padded_conv(tmp_path):
    rng = np.random.default_rng(1)
    nodes = [helper.make_node("Add", ["x", "o"], ["xo"], name="offset"),
             helper.make_node("Conv", ["xo", "w"], ["y"], name="conv", pads=[1, 1, 1, 1])]
    path, _ = _save(tmp_path, "offset", nodes, {"o": 1.0, "w": rng.normal(size=(2, 3, 3, 3))}, (3, 4, 4), (2, 4, 4),
                    rng.normal(size=(2, 3, 4, 4)))
    graph = as_graph(str(path))
    assert fold_scalars(graph)["changed"] == 0 and len(graph.nodes) == 2


# ---------------------------------------------------------------------------- equalize
def _separable(tmp_path, rng):
    """Conv → Relu → depthwise Conv → Relu → pointwise Conv, with depthwise channels of very different ranges."""
    gains = np.array([0.01, 0.1, 1.0, 10.0, 50.0, 0.5])[:, None, None, None]
    inits = {"w1": rng.normal(size=(6, 3, 1, 1)), "b1": rng.normal(size=6),
             "w2": rng.normal(size=(6, 1, 3, 3)) * gains, "b2": rng.normal(size=6) * gains.reshape(6),
             "w3": rng.normal(size=(4, 6, 1, 1)), "b3": rng.normal(size=4)}
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="expand"),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], name="depthwise", group=6, pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
        helper.make_node("Conv", ["r2", "w3", "b3"], ["y"], name="project"),
    ]
    return _save(tmp_path, "separable", nodes, inits, (3, 8, 8), (4, 8, 8), rng.normal(size=(32, 3, 8, 8)))


def test_equalize_keeps_fp32_and_evens_the_channel_ranges(tmp_path):
    rng = np.random.default_rng(2)
    path, data = _separable(tmp_path, rng)
    x = np.load(data)["x"][:4]
    graph = as_graph(str(path))
    before = _fp32(graph, x)
    report = equalize(graph)
    assert report["changed"] == 2  # expand -> depthwise, depthwise -> project
    assert report["max_channel_spread_after"] < report["max_channel_spread_before"] / 10
    np.testing.assert_allclose(_fp32(graph, x), before, rtol=1e-4, atol=1e-4)


def test_equalize_helps_per_tensor_weights(tmp_path):
    rng = np.random.default_rng(3)
    path, data = _separable(tmp_path, rng)
    x = np.load(data)["x"]

    def noise(plan):
        ref = _fp32(plan, x)
        return float(np.mean((ReferenceRunner(plan).run({"x": x})["y"] - ref) ** 2) / np.mean(ref ** 2))

    from mpcompile.calibration.guards import CalibrationWarning

    with pytest.warns(CalibrationWarning, match="'w2'"):  # the guard that points at this fix
        plain = calibrate(path, data, per_channel=False, progress=False)
    equalized = calibrate(path, data, per_channel=False, recover="equalize", progress=False)
    assert not equalized.warnings
    assert [s.name for s in equalized.recovery] == ["equalize"] and equalized.recovery[0].changed == 2
    assert noise(equalized.plan) < noise(plain.plan) / 1.5  # measured: 2.2× less noise


# ---------------------------------------------------------------------------- bias correction
def _biased_conv(tmp_path, rng):
    """A 1×1 conv on inputs with a large mean: per-tensor weight rounding shifts its output mean."""
    inits = {"w": rng.normal(size=(8, 6, 1, 1)) * np.array([1, 20, 1, 1, 1, 1])[None, :, None, None],
             "b": rng.normal(size=8)}
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["y"], name="conv")]
    return _save(tmp_path, "biased", nodes, inits, (6, 4, 4), (8, 4, 4), 3.0 + 0.3 * rng.normal(size=(64, 6, 4, 4)))


def test_bias_correction_removes_the_measured_mean_error(tmp_path):
    rng = np.random.default_rng(4)
    path, data = _biased_conv(tmp_path, rng)
    x = np.load(data)["x"]
    plain = calibrate(path, data, per_channel=False, progress=False).plan
    layer = integer_layers(plain, need_bias=True)[0]
    shift = weight_error_shift(plain, layer, input_means(plain, [layer], [{"x": x}])[layer.data])
    assert np.abs(shift).max() > 0.05  # the weight rounding does move the output mean

    def mean_error(plan):
        return np.abs((ReferenceRunner(plan).run({"x": x})["y"] - _fp32(plain, x)).mean(axis=(0, 2, 3)))

    corrected = calibrate(path, data, per_channel=False, recover="bias_correction", progress=False)
    step = corrected.recovery[0]
    assert step.name == "bias_correction" and step.kept and step.sqnr_after_db > step.sqnr_before_db
    assert mean_error(corrected.plan).max() < 0.25 * mean_error(plain).max()
    # only the bias changed, and it is still an int32 bias at s_in·s_w
    assert np.array_equal(corrected.plan.tensors["w"].value, plain.tensors["w"].value)
    assert corrected.plan.tensors["b"].quant == plain.tensors["b"].quant


# ---------------------------------------------------------------------------- learned rounding
def test_rounding_puts_weights_on_the_plans_grid_and_lowers_the_output_error(tmp_path):
    rng = np.random.default_rng(5)
    # correlated inputs: where nearest rounding is furthest from the best output
    mix = rng.normal(size=(16, 16))
    data = rng.normal(size=(256, 16)) @ mix
    inits = {"w": rng.normal(size=(16, 12)), "b": rng.normal(size=12)}
    nodes = [helper.make_node("Gemm", ["x", "w", "b"], ["y"], name="fc")]
    path, npz = _save(tmp_path, "fc", nodes, inits, (16,), (12,), data)
    # 16-bit activations: the 8-bit weights' rounding is then what limits the output
    plain = calibrate(path, npz, precision="int16", progress=False).plan
    rounded = calibrate(path, npz, precision="int16", recover="rounding", progress=False)
    step = rounded.recovery[0]
    assert step.name == "rounding" and step.kept and step.sqnr_after_db > step.sqnr_before_db + 0.5
    w = rounded.plan.tensors["w"]
    assert w.quant == plain.tensors["w"].quant
    np.testing.assert_array_equal(w.quant.fake_quantize(w.value), w.value)  # exactly on the grid


# ---------------------------------------------------------------------------- options, manifest, CLI
def test_parse_recover():
    assert parse_recover(None) == parse_recover("none") == ()
    assert parse_recover("bias_correction+fold-scalars") == ("fold_scalars", "bias_correction")
    assert parse_recover("all") == ("fold_scalars", "equalize", "rounding", "bias_correction")
    with pytest.raises(PlanError, match="unknown recovery 'adarond'.*valid: fold_scalars"):
        parse_recover("adarond")


def test_manifest_records_each_transform_and_the_cli_refuses_a_bad_name(tmp_path):
    rng = np.random.default_rng(6)
    path, data = _biased_conv(tmp_path, rng)
    res = compile(str(path), str(data), ["onnxruntime"], tmp_path / "out", recover="all", per_channel=False,
                  progress=False, conform=True, eval_data=str(data))
    assert res.exit_code == 0
    manifest = json.loads(res.manifest_path.read_text())
    names = [s["name"] for s in manifest["recovery"]]
    assert names == ["fold_scalars", "equalize", "rounding", "bias_correction"]
    assert all("sqnr_after_db" in s and "kept" in s for s in manifest["recovery"])
    out = subprocess.run([sys.executable, "-m", "mpcompile", "compile", str(path), "--data", str(data), "--recover", "nope",
                          "-o", str(tmp_path / "bad")], capture_output=True, text=True)
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
    assert [ln for ln in out.stderr.splitlines() if ln.startswith("error:")] == [
        "error: unknown recovery 'nope'; valid: fold_scalars, equalize, rounding, bias_correction, all, none "
        "(e.g. --recover bias_correction+rounding)"]
    assert not (tmp_path / "bad").exists()


# ---------------------------------------------------------------------------- calibration guards
def test_guards_warn_about_channel_spread_clipping_and_a_wasted_sign(tmp_path):
    from mpcompile.calibration.guards import CalibrationWarning

    rng = np.random.default_rng(7)
    path, data = _separable(tmp_path, rng)
    with pytest.warns(CalibrationWarning, match=r"per-tensor weight\(s\) have output channels.*'w2'.*--per-channel"):
        per_tensor = calibrate(path, data, per_channel=False, progress=False)
    assert any("'w2'" in w for w in per_tensor.warnings)
    with pytest.warns(CalibrationWarning, match=r"symmetric activation range\(s\) are on tensors that are never negative"):
        calibrate(path, data, symmetric=True, progress=False)
    # a histogram range that clips most values: the lowest percentile allowed (entropy can clip like this too)
    with pytest.warns(CalibrationWarning, match=r"percentile ranges of \d+ tensor\(s\) clip most of their calibration values"):
        calibrate(path, data, method="percentile", method_options={"percentile": 50.0}, progress=False)
    assert not any("clip most" in w for w in calibrate(path, data, method="entropy", progress=False).warnings)


def test_a_default_plan_of_a_plain_model_has_no_guard_warnings(tmp_path, recwarn):
    rng = np.random.default_rng(8)
    path, data = _biased_conv(tmp_path, rng)
    assert calibrate(path, data, progress=False).warnings == []
