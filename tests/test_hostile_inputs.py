"""Issue 17, classes 2 and 3 for overrides files and calibration caches: validated on load against their
schemas, every violation one line naming the file and the tensor (exit 2), never a traceback."""

from __future__ import annotations

import copy
import json

import numpy as np
import onnx
import pytest
from hostile_kit import assert_user_error, files_under, run_cli, tiny_data, tiny_mlp

from mpcompile.calibration.collect import CalibrationResult
from mpcompile.calibration.histogram import StreamingHistogram
from mpcompile.calibration.observers import EntropyObserver, PercentileObserver
from mpcompile.errors import DataError, PlanError
from mpcompile.ir.schema import HISTOGRAM_MAX_BINS, HISTOGRAM_MAX_EXPONENT, HISTOGRAM_MIN_EXPONENT
from mpcompile.planning.overrides import read_overrides


@pytest.fixture(scope="module")
def mlp(tmp_path_factory):
    folder = tmp_path_factory.mktemp("mlp")
    onnx.save(tiny_mlp(), folder / "mlp.onnx")
    data = tiny_data(folder / "d.npz")
    stats = folder / "stats.json"
    result = run_cli("calibrate", folder / "mlp.onnx", "--data", data, "-o", folder / "plan.onnx", "--quiet",
                     "--method", "percentile", "--save-stats", stats)
    assert result.code in (0, None), result.stderr
    return folder / "mlp.onnx", data, json.loads(stats.read_text())


# ============================================================================ overrides
OVERRIDES = [
    ({"nodes": ["mm1", "fc"]}, "nodes must be an object, got a list"),
    ({"op_types": "Relu"}, "op_types must be an object"),
    ({"tensors": ["x"]}, "tensors must be an object"),
    ({"nodes": {"mm1": "int4"}}, "node pattern 'mm1': unknown precision 'int4'"),
    ({"nodes": {"mm1": 3}}, "precision must be one of"),
    ({"tensors": {"x": {"range": ["a", "b"]}}}, "tensor 'x': range[0] must be a number"),
    ({"tensors": {"x": {"range": [1.0]}}}, "tensor 'x': range[1] is missing"),
    ({"tensors": {"x": {"range": [0, 1, 2]}}}, "tensor 'x': range needs 2 entries"),
    ({"tensors": {"x": {"range": 5}}}, "tensor 'x': range must be a list"),
    ({"tensors": {"x": {"range": [4, -4]}}}, "tensor 'x': range [4.0, -4.0] has lo > hi"),
    ({"tensors": {"x": {"range": [float("nan"), 1]}}}, "tensor 'x': range[0] must be finite"),
    ({"tensors": {"x": {"range": [-1e39, 1e39]}}}, "tensor 'x': range[0] must be >= -3.4028e+38"),
    ({"tensors": {"x": {"range": [True, 2]}}}, "range[0] must be a number, got a boolean"),
    ({"tensors": {"x": {"scale": 0}}}, "tensor 'x': scale 0.0 is not finite and > 0"),
    ({"tensors": {"x": {"scale": -0.5}}}, "tensor 'x': scale -0.5 is not finite and > 0"),
    ({"tensors": {"x": {"scale": float("inf")}}}, "tensor 'x': scale must be finite"),
    ({"tensors": {"x": {"scale": 1e-50}}}, "tensor 'x': scale 1e-50 is 0.0 in float32"),
    ({"tensors": {"x": {"scale": "0.1"}}}, "tensor 'x': scale must be a number"),
    ({"tensors": {"x": {"scale": 0.1, "zero_point": 3.7}}}, "tensor 'x': zero_point must be an integer"),
    ({"tensors": {"x": {"scale": 0.1, "zero_point": 1000}}}, "tensor 'x': zero_point 1000 is outside the int8 range"),
    ({"tensors": {"x": {"range": [0, 1], "zero_point": 0}}}, "tensor 'x': has a 'zero_point' next to 'range'"),
    ({"tensors": {"x": {"range": [0, 1], "scale": 0.1}}}, "tensor 'x': needs either 'range' or 'scale'"),
    ({"tensors": {"x": {}}}, "tensor 'x': needs either 'range' or 'scale'"),
    ({"tensors": {"x": {"rnage": [0, 1]}}}, "tensor 'x': unknown key 'rnage'"),
    ({"tensors": {"nope": {"range": [0, 1]}}}, "no tensor 'nope'"),
    ({"layers": {}}, "unknown key 'layers'"),
    ([1, 2], "expected an object"),
]


@pytest.mark.parametrize("content,fragment", OVERRIDES, ids=[f[1][:40] for f in OVERRIDES])
def test_overrides_file(tmp_path, mlp, content, fragment):
    model, data, _ = mlp
    path = tmp_path / "overrides.json"
    path.write_text(json.dumps(content))
    out = tmp_path / "plan.onnx"
    assert_user_error(run_cli("calibrate", model, "--data", data, "--overrides", path, "-o", out, "--quiet"),
                      "overrides.json", fragment)
    assert not out.exists()


def test_overrides_null_sections_are_empty(tmp_path):
    path = tmp_path / "o.json"
    path.write_text(json.dumps({"nodes": None, "op_types": {"Relu": "FP32 "}}))
    data = read_overrides(path)
    assert list(data) == ["op_types"] and data["op_types"]["Relu"].value == "fp32"


def test_yaml_errors_are_one_line(tmp_path, mlp):
    pytest.importorskip("yaml")
    model, data, _ = mlp
    for text, fragment in [("nodes:\n  a: [\n   b: c\n", "invalid YAML at line"),
                           ("nodes: " + "[" * 5000 + "]" * 5000 + "\n", "nested too deeply"),
                           ("nodes:\n\tmm1: fp16\n", "invalid YAML at line 2"),
                           ("tensors:\n  x:\n    range: [a, 1]\n", "range[0] must be a number")]:
        path = tmp_path / "o.yaml"
        path.write_text(text)
        assert_user_error(run_cli("calibrate", model, "--data", data, "--overrides", path, "-o", tmp_path / "p.onnx"),
                          "o.yaml", fragment)


def test_valid_overrides_still_apply(tmp_path, mlp):
    model, data, _ = mlp
    path = tmp_path / "o.json"
    path.write_text(json.dumps({"op_types": {"Relu": "fp32"}, "tensors": {"x": {"scale": 0.03125, "zero_point": -3}}}))
    result = run_cli("calibrate", model, "--data", data, "--precision", "mixed", "--overrides", path, "-o", tmp_path / "p.onnx", "--quiet")
    assert result.code in (0, None), result.stderr
    from mpcompile.ir import serde

    plan = serde.load_plan(tmp_path / "p.onnx")
    assert float(plan.tensors["x"].quant.scale) == 0.03125 and int(plan.tensors["x"].quant.zero_point) == -3


# ============================================================================ calibration caches
def _entry(cache, name="x"):
    return cache["tensors"][name]


def _hist(cache, name="x"):
    return cache["tensors"][name]["state"]["histogram"]


CACHES = [
    ("no tensors", lambda c: c.pop("tensors"), "tensors is missing"),
    ("tensors a list", lambda c: c.__setitem__("tensors", []), "tensors must be an object"),
    ("bins 1e11", lambda c: _hist(c).__setitem__("bins", 10**11), "tensor 'x': state.histogram.bins must be <= 65536"),
    ("bins 7", lambda c: _hist(c).__setitem__("bins", 7), "state.histogram.bins must be >= 8"),
    ("option bins 1e11", lambda c: _entry(c)["options"].__setitem__("bins", 10**11), "tensor 'x': options.bins must be <= 65536"),
    ("exponent 100000", lambda c: _hist(c).__setitem__("exponent", 100000), "state.histogram.exponent must be <= 128"),
    ("exponent -100000", lambda c: _hist(c).__setitem__("exponent", -100000), "state.histogram.exponent must be >= -1000"),
    ("exponent 1.5", lambda c: _hist(c).__setitem__("exponent", 1.5), "state.histogram.exponent must be an integer"),
    ("exponent shifted", lambda c: _hist(c).__setitem__("exponent", _hist(c)["exponent"] - 3), "does not cover"),
    ("start shifted", lambda c: _hist(c).__setitem__("start", _hist(c)["start"] + 1), "does not cover"),
    ("count 2**70", lambda c: _hist(c)["counts"].__setitem__(0, 2**70), "counts[0] must be <="),
    ("count negative", lambda c: _hist(c)["counts"].__setitem__(0, -5), "counts[0] must be >= 0"),
    ("counts all zero", lambda c: _hist(c).__setitem__("counts", [0] * _hist(c)["bins"]), "counts sum to 0"),
    ("counts short", lambda c: _hist(c)["counts"].pop(), "counts for 2048 bins"),
    ("min NaN", lambda c: _hist(c)["stats"].__setitem__("min", float("nan")), "stats.min must be finite"),
    ("min beyond float32", lambda c: _hist(c)["stats"].__setitem__("min", -1e300), "stats.min must be >= -3.4028e+38"),
    ("min above max", lambda c: _hist(c)["stats"].__setitem__("min", 1e30), "above max"),
    ("count -1", lambda c: _hist(c)["stats"].__setitem__("count", -1), "stats.count must be >= 0"),
    ("method bogus", lambda c: _entry(c).__setitem__("method", "bogus"), "tensor 'x': unknown method 'bogus'"),
    ("mixed methods", lambda c: _entry(c).update(method="mse", options={}), "tensor 'x' has a mse observer in a percentile cache"),
    ("option of another method", lambda c: _entry(c).__setitem__("method", "mse"), "tensor 'x': options: unknown key 'percentile'"),
    ("percentile 200", lambda c: _entry(c)["options"].__setitem__("percentile", 200), "options.percentile must be <= 100"),
    ("bins option mismatch", lambda c: _entry(c)["options"].__setitem__("bins", 512), "percentile bins=512 needs 512"),
    ("dangling alias", lambda c: c["aliases"].__setitem__("m1", "nosuch"), "alias 'm1' stands for tensor 'nosuch'"),
    ("samples text", lambda c: c.__setitem__("samples", "many"), "samples must be an integer"),
    ("entry a list", lambda c: c["tensors"].__setitem__("x", [1]), "tensor 'x': must be an object"),
    ("unknown key", lambda c: c.__setitem__("extra", 1), "unknown key 'extra'"),
    ("wrong format", lambda c: c.__setitem__("format", "something/2"), "not an mpcompile calibration cache"),
]


@pytest.mark.parametrize("label,mutate,fragment", CACHES, ids=[c[0] for c in CACHES])
def test_calibration_cache(tmp_path, mlp, label, mutate, fragment):
    model, _, cache = mlp
    cache = copy.deepcopy(cache)
    mutate(cache)
    path = tmp_path / "stats.json"
    path.write_text(json.dumps(cache))
    out = tmp_path / "plan.onnx"
    assert_user_error(run_cli("calibrate", model, "--stats", path, "--method", "percentile", "-o", out, "--quiet"),
                      "stats.json", fragment)
    assert files_under(tmp_path) == {"stats.json"}
    with pytest.raises(DataError):
        CalibrationResult.load(path)


@pytest.mark.parametrize("text,fragment", [("", "not valid JSON"), ('{"format": ', "not valid JSON"), ("[]", "format None"),
                                           ("[" * 100000, "not valid JSON")])
def test_calibration_cache_that_is_not_json(tmp_path, mlp, text, fragment):
    path = tmp_path / "stats.json"
    path.write_text(text)
    assert_user_error(run_cli("calibrate", mlp[0], "--stats", path, "-o", tmp_path / "p.onnx"), "stats.json", fragment)


def test_the_cache_reads_back_with_every_method(tmp_path, mlp):
    model, _, cache = mlp
    path = tmp_path / "stats.json"
    path.write_text(json.dumps(cache))
    for method in ("percentile", "entropy", "mse", "minmax"):
        result = run_cli("calibrate", model, "--stats", path, "--method", method, "-o", tmp_path / f"{method}.onnx", "--quiet")
        assert result.code in (0, None), result.stderr


def test_histogram_bounds_are_enforced_where_histograms_are_made():
    with pytest.raises(ValueError, match="65536"):
        StreamingHistogram(HISTOGRAM_MAX_BINS + 1)
    StreamingHistogram(HISTOGRAM_MAX_BINS)
    with pytest.raises(PlanError, match=r"\[8, 65536\]"):
        PercentileObserver(bins=10**11)
    with pytest.raises(PlanError, match=r"\[8, 32768\]"):
        EntropyObserver(bins=HISTOGRAM_MAX_BINS)  # entropy keeps 2 x bins signed bins
    with pytest.raises(PlanError, match="quant_bins"):
        EntropyObserver(quant_bins=10**9)


def test_extreme_but_valid_histograms_round_trip():
    """Subnormal, all-zero and float32-max data: the exponents they reach are inside the bounds and reload."""
    tiny = np.float32(np.finfo(np.float32).smallest_subnormal)
    for values in (np.zeros(10, np.float32), np.array([tiny, 3 * tiny], np.float32),
                   np.array([-np.finfo(np.float32).max, np.finfo(np.float32).max], np.float32)):
        for bins in (8, 2048, HISTOGRAM_MAX_BINS):
            hist = StreamingHistogram(bins)
            hist.update(values)
            assert HISTOGRAM_MIN_EXPONENT <= hist.exponent <= HISTOGRAM_MAX_EXPONENT
            back = StreamingHistogram.from_dict(json.loads(json.dumps(hist.to_dict())))
            assert back.exponent == hist.exponent and np.array_equal(back.counts, hist.counts)
