"""Property-based fuzzing of every file mpcompile reads from users (issue 17).

Each property corrupts one kind of input and drives the real CLI (in-process, ``main([...])``, stderr
captured down to file descriptor 2):

* plans: their metadata JSON (``mpcompile.quant``/``precision``/``graph_metadata``: wrong types, unknown
  enums, axes out of range, missing or unknown keys, stale entries, truncated JSON) and their annotation
  initializers (scales 0/negative/NaN/Inf, of another dtype or length; zero-points of a float or another
  integer type, of another length, nonzero where symmetric; missing initializers);
* overrides files (JSON and YAML) and calibration caches: every section and field given a value the
  schema refuses;
* the Q/DQ initializers and axis of a QDQ model;
* the bytes of a model and of a plan (truncation, bit flips).

Every mutation of the first three kinds is invalid by construction, so the property is the contract for
bad input: exit 2, exactly one ``error:`` line, no traceback, no ONNX Runtime log line, and nothing left in
the folder (no output, no staging folder). Corrupted bytes may still be a valid model (a flipped weight
bit): there the property is exit 0 with a loadable plan, or the same clean exit 2.

Derandomized (``derandomize=True``, no example database) so that CI runs the same examples every time.
"""

from __future__ import annotations

import json
import math
import shutil
import tempfile
from pathlib import Path

import numpy as np
import onnx
import pytest
from hostile_kit import assert_user_error, files_under, metadata, run_cli, tiny_data, tiny_mlp, tiny_qdq
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from onnx import numpy_helper

from mpcompile.ir import serde
from mpcompile.ir.types import Precision, QType

FUZZ = settings(deadline=None, derandomize=True, database=None, print_blob=False,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

F32_MAX = float(np.finfo(np.float32).max)
QTYPES = [q.value for q in QType]
PRECISIONS = [p.value for p in Precision]


# ============================================================================ shared inputs
class Kit(dict):
    """The shared inputs (paths, bytes, the cache); a short repr keeps hypothesis' reports readable."""

    def __repr__(self) -> str:
        return "<fuzz inputs>"


@pytest.fixture(scope="module")
def kit(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fuzz")
    model, qdq = folder / "mlp.onnx", folder / "qdq.onnx"
    onnx.save(tiny_mlp(), model)
    onnx.save(tiny_qdq(), qdq)
    data = tiny_data(folder / "d.npz")
    plan, stats = folder / "plan.onnx", folder / "stats.json"
    result = run_cli("calibrate", model, "--data", data, "-o", plan, "--quiet", "--method", "percentile", "--save-stats", stats)
    assert result.code in (0, None), result.stderr
    kit = Kit(model=model, qdq=qdq, data=data, plan=plan, plan_bytes=plan.read_bytes(),
              model_bytes=model.read_bytes(), cache=json.loads(stats.read_text()))
    kit["tables"] = _plan_tables(kit)
    kit["shapes"] = _shapes(kit)
    return kit


def _refused(args_for, write, *fragments) -> None:
    """Write the corrupt input into a fresh folder, run the CLI on it: the bad-input contract holds."""
    with tempfile.TemporaryDirectory(prefix="mpcompile-fuzz-") as name:
        folder = Path(name)
        write(folder)
        before = files_under(folder)
        assert_user_error(run_cli(*args_for(folder)), *fragments)
        assert files_under(folder) == before, "an output or staging file was left behind"


# ============================================================================ value strategies
non_null = st.one_of(st.booleans(), st.integers(-10**6, 10**6), st.floats(allow_nan=False, width=32), st.text(max_size=6))
scalars = st.one_of(st.none(), non_null)
containers = st.one_of(st.lists(st.integers(0, 9), max_size=3), st.dictionaries(st.text(max_size=3), st.integers(0, 9), max_size=2))
json_values = st.one_of(scalars, containers)
not_bool = st.one_of(st.none(), st.integers(-10**6, 10**6), st.floats(allow_nan=False, width=32), st.text(max_size=6), containers)
not_int = st.one_of(st.booleans(), st.floats(allow_nan=False, width=32), st.text(max_size=6), containers)  # strict: 1.0 is no int
not_number = st.one_of(st.text(max_size=6), st.booleans(), st.none(), containers)
not_object = st.one_of(non_null, st.lists(st.integers(0, 9), max_size=3))
bad_scale_values = st.one_of(st.sampled_from([0.0, -0.0, math.nan, math.inf, -math.inf]),
                             st.floats(min_value=-1e30, max_value=-1e-30))
bad_pin_scale = st.one_of(st.sampled_from([0.0, math.nan, math.inf, -math.inf, 1e-50, 1e39]),
                          st.floats(max_value=0.0, allow_nan=False), st.floats(min_value=3.5e38, allow_infinity=False),
                          st.floats(min_value=1e-300, max_value=7e-46))


# ============================================================================ plans: metadata
def _plan_tables(kit):
    model = onnx.load(kit["plan"])
    return {key: json.loads(metadata(model, key).value) for key in ("mpcompile.quant", "mpcompile.precision", "mpcompile.graph_metadata")}


def _shapes(kit):
    graph = serde.load_plan(kit["plan"])
    return {t.name: (t.shape, t.quant) for t in graph.quantized_tensors()}


@st.composite
def quant_mutation(draw, table, shapes):
    """A change to the ``mpcompile.quant`` table that no valid plan has."""
    table = json.loads(json.dumps(table))
    name = draw(st.sampled_from(sorted(table)))
    entry = table[name]
    shape, spec = shapes[name]
    kind = draw(st.sampled_from(["qtype", "axis", "symmetric", "narrow_range", "provenance", "missing", "unknown",
                                 "entry", "stale", "top"]))
    if kind == "qtype":  # any other qtype mismatches the zero-point initializer's type
        entry["qtype"] = draw(st.one_of(st.sampled_from([q for q in QTYPES if q != entry["qtype"]]),
                                        st.text(max_size=8).filter(lambda t: t != entry["qtype"]), not_number))
    elif kind == "axis":
        rank = len(shape)
        channels = None if spec.axis is None else spec.scale.shape[0]

        def invalid(axis):
            if axis is None:
                return spec.axis is not None
            if isinstance(axis, bool) or not isinstance(axis, int) or spec.axis is None:
                return True
            return not -rank <= axis < rank or shape[axis] != channels

        if spec.axis is None:  # per-tensor: any axis makes it per-channel with scalar numbers
            entry["axis"] = draw(st.one_of(not_int, st.integers(-8, 8)))
        else:
            entry["axis"] = draw(st.one_of(not_int, st.none(), st.integers(-8, 8).filter(invalid)))
    elif kind in ("symmetric", "narrow_range"):
        entry[kind] = draw(not_bool)
    elif kind == "provenance":
        entry["provenance"] = draw(st.one_of(st.lists(st.integers(), max_size=2), st.text(max_size=4),
                                             st.integers(), st.booleans(), st.none()))
    elif kind == "missing":
        del entry[draw(st.sampled_from(["qtype", "axis", "symmetric", "narrow_range"]))]
    elif kind == "unknown":
        entry[draw(st.text(min_size=1, max_size=6).filter(lambda k: k not in entry))] = draw(json_values)
    elif kind == "entry":
        table[name] = draw(not_object)
    elif kind == "stale":
        table[draw(st.text(min_size=1, max_size=6).filter(lambda k: k not in table))] = dict(entry)
    else:
        return draw(not_object)
    return table


@st.composite
def precision_mutation(draw, table):
    table = json.loads(json.dumps(table))
    name = draw(st.sampled_from(sorted(table)))
    kind = draw(st.sampled_from(["precision", "reason", "missing", "unknown-node", "entry", "top"]))
    if kind == "precision":
        table[name]["precision"] = draw(st.one_of(
            st.text(max_size=6).filter(lambda t: t.strip().lower() not in PRECISIONS), not_number))
    elif kind == "reason":
        table[name]["reason"] = draw(st.one_of(st.integers(), st.booleans(), containers))
    elif kind == "missing":
        del table[name]["precision"]
    elif kind == "unknown-node":
        table[draw(st.text(min_size=1, max_size=6).filter(lambda k: k not in table))] = {"precision": "fp32", "reason": ""}
    elif kind == "entry":
        table[name] = draw(not_object)
    else:
        return draw(not_object)
    return table


@given(data=st.data())
@settings(FUZZ, max_examples=200)
def test_fuzz_plan_metadata(kit, data):
    tables = kit["tables"]
    key = data.draw(st.sampled_from(sorted(tables)), label="key")
    how = data.draw(st.sampled_from(["value", "truncate"]), label="how")
    if how == "truncate":
        text = json.dumps(tables[key])
        value = text[: data.draw(st.integers(0, len(text) - 1), label="cut")]
    elif key == "mpcompile.quant":
        value = json.dumps(data.draw(quant_mutation(tables[key], kit["shapes"]), label="quant"))
    elif key == "mpcompile.precision":
        value = json.dumps(data.draw(precision_mutation(tables[key]), label="precision"))
    else:
        value = json.dumps(data.draw(st.one_of(not_object, st.dictionaries(
            st.text(max_size=4), containers, min_size=1, max_size=2)), label="graph"))

    def write(folder):
        model = onnx.load(kit["plan"])
        metadata(model, key).value = value
        onnx.save(model, folder / "plan.onnx")

    _refused(lambda f: ("lower", f / "plan.onnx", "--backend", "onnxruntime", "-o", f / "out"), write, "plan.onnx")


# ============================================================================ plans: annotation initializers
def _params(model):
    return {ann.tensor_name: {kv.key: kv.value for kv in ann.quant_parameter_tensor_names}
            for ann in model.graph.quantization_annotation}


@given(data=st.data())
@settings(FUZZ, max_examples=150)
def test_fuzz_plan_annotations(kit, data):
    shapes = kit["shapes"]
    tensor = data.draw(st.sampled_from(sorted(shapes)), label="tensor")
    _, spec = shapes[tensor]
    which = data.draw(st.sampled_from(["scale", "zero_point", "remove", "rename"]), label="which")

    def mutated_value(scale, zp):
        if which == "scale":
            kind = data.draw(st.sampled_from(["value", "dtype", "length"]), label="scale change")
            if kind == "value":
                bad = scale.astype(np.float32).copy().reshape(-1)
                bad[data.draw(st.integers(0, bad.size - 1), label="index")] = data.draw(bad_scale_values, label="bad")
                return bad.reshape(scale.shape), zp
            if kind == "dtype":
                return scale.astype(data.draw(st.sampled_from([np.float64, np.float16, np.int32, np.uint8]), label="dtype")), zp
            lengths = st.integers(1, 12).filter(lambda n: spec.axis is None or n != scale.shape[0])
            shape = data.draw(st.one_of(lengths.map(lambda n: (n,)), st.just((2, 2))), label="shape")
            return np.full(shape, 0.1, np.float32), zp
        kind = data.draw(st.sampled_from(["float", "integer type", "length"] + (["nonzero"] if spec.symmetric else [])),
                         label="zero-point change")
        if kind == "float":
            return scale, zp.astype(data.draw(st.sampled_from([np.float32, np.float64, np.float16]), label="dtype"))
        if kind == "integer type":
            others = [d for d in (np.int8, np.uint8, np.int16, np.int32, np.int64) if np.dtype(d) != zp.dtype]
            return scale, zp.astype(data.draw(st.sampled_from(others), label="dtype"))
        if kind == "length":
            n = data.draw(st.integers(1, 12).filter(lambda n: spec.axis is None or n != zp.shape[0]), label="length")
            return scale, np.zeros(n, zp.dtype)
        bad = zp.copy().reshape(-1)
        bad[data.draw(st.integers(0, bad.size - 1), label="index")] = data.draw(st.integers(1, 100), label="value")
        return scale, bad.reshape(zp.shape)

    def write(folder):
        model = onnx.load(kit["plan"])
        names = _params(model)[tensor]
        scale_name, zp_name = names["SCALE_TENSOR"], names["ZERO_POINT_TENSOR"]
        inits = {i.name: i for i in model.graph.initializer}
        if which == "remove":
            gone = data.draw(st.sampled_from([scale_name, zp_name]), label="removed")
            model.graph.initializer.remove(inits[gone])
        elif which == "rename":
            ann = next(a for a in model.graph.quantization_annotation if a.tensor_name == tensor)
            ann.tensor_name = data.draw(st.text(min_size=1, max_size=6).filter(lambda t: t not in shapes), label="name")
        else:
            scale, zp = mutated_value(numpy_helper.to_array(inits[scale_name]), numpy_helper.to_array(inits[zp_name]))
            inits[scale_name].CopyFrom(numpy_helper.from_array(np.asarray(scale), scale_name))
            inits[zp_name].CopyFrom(numpy_helper.from_array(np.asarray(zp), zp_name))
        onnx.save(model, folder / "plan.onnx")

    _refused(lambda f: ("lower", f / "plan.onnx", "--backend", "onnxruntime", "-o", f / "out"), write, "plan.onnx")


# ============================================================================ overrides files
@st.composite
def bad_pin(draw):
    kind = draw(st.sampled_from(["not object", "empty", "both", "range length", "range element", "range order",
                                 "range beyond float32", "range non-finite", "scale", "scale type", "zp type", "zp range",
                                 "zp with range", "unknown key"]))
    finite = st.floats(-1e3, 1e3)
    if kind == "not object":
        return draw(not_object)
    if kind == "empty":
        return {}
    if kind == "both":
        return {"range": [0.0, 1.0], "scale": 0.1}
    if kind == "range length":
        return {"range": draw(st.lists(finite, max_size=5).filter(lambda v: len(v) != 2))}
    if kind == "range element":
        return {"range": draw(st.permutations([draw(not_number), draw(finite)]))}
    if kind == "range order":
        lo, hi = sorted(draw(st.lists(finite, min_size=2, max_size=2, unique=True)))
        return {"range": [hi, lo]}
    if kind == "range beyond float32":
        return {"range": [draw(st.floats(max_value=-3.5e38, allow_infinity=False)), 1.0]}
    if kind == "range non-finite":
        return {"range": [0.0, draw(st.sampled_from([math.nan, math.inf, -math.inf]))]}
    if kind == "scale":
        return {"scale": draw(bad_pin_scale)}
    if kind == "scale type":
        return {"scale": draw(not_number)}
    if kind == "zp type":
        return {"scale": 0.1, "zero_point": draw(st.one_of(st.integers(-200, 200).map(lambda i: i + 0.5), st.just(3.0),
                                                           st.text(max_size=4), st.booleans(), containers))}
    if kind == "zp range":
        return {"scale": 0.1, "zero_point": draw(st.one_of(st.integers(max_value=-129), st.integers(min_value=128)))}
    if kind == "zp with range":
        return {"range": [0.0, 1.0], "zero_point": draw(st.integers(-128, 127))}
    return {"range": [0.0, 1.0], draw(st.text(min_size=1, max_size=6).filter(lambda k: k not in ("range", "scale", "zero_point"))): 1}


@st.composite
def bad_overrides(draw):
    kind = draw(st.sampled_from(["top", "unknown section", "section", "precision", "pin", "unknown tensor"]))
    if kind == "top":
        return draw(st.one_of(not_object, st.none()))
    if kind == "unknown section":
        return {draw(st.text(min_size=1, max_size=8).filter(lambda k: k not in ("nodes", "op_types", "tensors"))): {}}
    section = draw(st.sampled_from(["nodes", "op_types", "tensors"]))
    if kind == "section":
        return {section: draw(not_object)}
    if kind == "precision":
        key = draw(st.sampled_from(["mm1", "fc"] if section == "nodes" else ["Relu", "Gemm"]))
        value = draw(st.one_of(st.text(max_size=6).filter(lambda t: t.strip().lower() not in PRECISIONS), not_number))
        return {"nodes" if section == "tensors" else section: {key: value}}
    if kind == "pin":
        return {"tensors": {"x": draw(bad_pin())}}
    return {"tensors": {draw(st.text(min_size=1, max_size=8).filter(lambda t: t not in ("x", "m1", "a1", "r1", "y", "w1", "b1", "w2", "b2"))):
                        {"range": [0.0, 1.0]}}}


@given(content=bad_overrides(), fmt=st.sampled_from(["json", "yaml"]))
@settings(FUZZ, max_examples=200)
def test_fuzz_overrides(kit, content, fmt):
    if fmt == "yaml":
        yaml = pytest.importorskip("yaml")
        text = yaml.safe_dump(content)
    else:
        text = json.dumps(content)

    def write(folder):
        (folder / f"overrides.{fmt}").write_text(text)

    _refused(lambda f: ("calibrate", kit["model"], "--data", kit["data"], "--precision", "mixed",
                        "--overrides", f / f"overrides.{fmt}", "-o", f / "plan.onnx", "--quiet"), write, f"overrides.{fmt}")


# ============================================================================ calibration caches
@st.composite
def bad_cache(draw, base):
    cache = json.loads(json.dumps(base))
    name = draw(st.sampled_from(sorted(cache["tensors"])))
    entry = cache["tensors"][name]
    hist = entry["state"]["histogram"]
    stats = hist["stats"]
    kind = draw(st.sampled_from([
        "drop top key", "format", "method", "samples", "tensors", "alias", "entry", "entry method", "options",
        "bins", "exponent", "start", "counts", "stats", "unknown key",
    ]))
    if kind == "drop top key":
        del cache[draw(st.sampled_from(["format", "method", "samples", "tensors"]))]
    elif kind == "format":
        cache["format"] = draw(json_values.filter(lambda v: v != base["format"]))
    elif kind == "method":
        cache["method"] = draw(json_values.filter(lambda v: v != base["method"]))
    elif kind == "samples":
        cache["samples"] = draw(st.one_of(not_int, st.integers(max_value=-1)))
    elif kind == "tensors":
        cache["tensors"] = draw(not_object)
    elif kind == "alias":
        cache["aliases"][draw(st.text(max_size=6))] = draw(st.text(max_size=6).filter(lambda t: t not in cache["tensors"]))
    elif kind == "entry":
        cache["tensors"][name] = draw(not_object)
    elif kind == "entry method":
        entry["method"] = draw(json_values.filter(lambda v: v != entry["method"]))
    elif kind == "options":
        option = draw(st.sampled_from(["percentile", "bins", "unknown"]))
        if option == "percentile":
            entry["options"]["percentile"] = draw(st.one_of(st.floats(max_value=49.99), st.floats(min_value=100.01),
                                                            st.just(math.nan), st.text(max_size=6), st.booleans(), containers))
        elif option == "bins":
            entry["options"]["bins"] = draw(st.one_of(st.integers(max_value=7), st.integers(min_value=2**16 + 1),
                                                      st.integers(8, 2**16).filter(lambda b: b != hist["bins"]), not_int))
        else:
            entry["options"][draw(st.text(min_size=1, max_size=6).filter(lambda k: k not in ("percentile", "bins")))] = 1
    elif kind == "bins":
        hist["bins"] = draw(st.one_of(st.integers(max_value=7), st.integers(min_value=2**16 + 1), st.just(10**11),
                                      st.integers(8, 2**16).filter(lambda b: b != len(hist["counts"])), not_int))
    elif kind == "exponent":
        hist["exponent"] = draw(st.one_of(st.integers(max_value=-1001), st.integers(min_value=129), st.just(100000),
                                          st.integers(-1000, hist["exponent"] - 1), not_int))
    elif kind == "start":
        hist["start"] = draw(st.one_of(st.integers().filter(lambda s: s != hist["start"]), not_int, st.just(10**30)))
    elif kind == "counts":
        change = draw(st.sampled_from(["element", "sum", "length", "type"]))
        if change == "element":
            hist["counts"][draw(st.integers(0, hist["bins"] - 1))] = draw(st.one_of(st.integers(max_value=-1), st.just(2**70), not_int))
        elif change == "sum":
            hist["counts"][draw(st.integers(0, hist["bins"] - 1))] += draw(st.integers(1, 10**6))
        elif change == "length":
            hist["counts"] = hist["counts"][: draw(st.integers(0, hist["bins"] - 1))]
        else:
            hist["counts"] = draw(not_object.filter(lambda v: not isinstance(v, list)))
    elif kind == "stats":
        field = draw(st.sampled_from(["count", "min", "max", "swap", "min_abs_nonzero"]))
        if field == "count":
            stats["count"] = draw(st.one_of(st.integers(max_value=-1), st.integers(0, 10**9).filter(lambda c: c != stats["count"]), not_int))
        elif field in ("min", "max"):
            stats[field] = draw(st.one_of(st.sampled_from([math.nan, math.inf, -math.inf, 1e300, -1e300]), not_number))
        elif field == "swap":
            stats["min"], stats["max"] = stats["max"] + 1.0, stats["min"] - 1.0
        else:
            stats["min_abs_nonzero"] = draw(st.one_of(st.floats(max_value=0.0), st.sampled_from([math.nan, math.inf]),
                                                      st.text(max_size=6), st.booleans(), containers))
    else:
        target = draw(st.sampled_from([cache, entry, hist, stats]))
        target[draw(st.text(min_size=1, max_size=6).filter(lambda k: k not in target))] = 1
    return cache


@given(data=st.data())
@settings(FUZZ, max_examples=200)
def test_fuzz_calibration_cache(kit, data):
    base = kit["cache"]
    if data.draw(st.booleans(), label="truncate"):
        text = json.dumps(base)
        text = text[: data.draw(st.integers(0, len(text) - 1), label="cut")]
    else:
        text = json.dumps(data.draw(bad_cache(base), label="cache"))

    def write(folder):
        (folder / "stats.json").write_text(text)

    _refused(lambda f: ("calibrate", kit["model"], "--stats", f / "stats.json", "--method", "percentile",
                        "-o", f / "plan.onnx", "--quiet"), write, "stats.json")


# ============================================================================ QDQ models
@given(data=st.data())
@settings(FUZZ, max_examples=100)
def test_fuzz_qdq_parameters(kit, data):
    model = tiny_qdq()
    inits = {i.name: i for i in model.graph.initializer}
    kind = data.draw(st.sampled_from(["scale", "zero-point dtype", "zero-point size", "axis"]), label="kind")
    if kind == "scale":
        name = data.draw(st.sampled_from(["x_scale", "w_scale", "b_scale", "y_scale"]), label="scale")
        value = numpy_helper.to_array(inits[name]).astype(np.float32).copy().reshape(-1)
        value[data.draw(st.integers(0, value.size - 1), label="index")] = data.draw(bad_scale_values, label="bad")
        inits[name].CopyFrom(numpy_helper.from_array(value.reshape(numpy_helper.to_array(inits[name]).shape), name))
    elif kind == "zero-point dtype":
        name = data.draw(st.sampled_from(["x_zp", "w_zp", "b_zp", "y_zp"]), label="zero-point")
        value = numpy_helper.to_array(inits[name]).astype(data.draw(st.sampled_from([np.float32, np.float16, np.float64]), label="dtype"))
        inits[name].CopyFrom(numpy_helper.from_array(value, name))
    elif kind == "zero-point size":
        name = data.draw(st.sampled_from(["w_zp", "b_zp"]), label="zero-point")
        dtype = numpy_helper.to_array(inits[name]).dtype
        inits[name].CopyFrom(numpy_helper.from_array(np.zeros(data.draw(st.integers(0, 9).filter(lambda n: n != 4)), dtype), name))
    else:
        node = next(n for n in model.graph.node if n.name == "w_DQ")
        next(a for a in node.attribute if a.name == "axis").i = data.draw(
            st.one_of(st.integers(-100, -3), st.integers(2, 100), st.just(0)), label="axis")

    def write(folder):
        onnx.save(model, folder / "qdq.onnx")

    _refused(lambda f: ("calibrate", f / "qdq.onnx", "-o", f / "plan.onnx", "--quiet"), write, "qdq.onnx")


# ============================================================================ bytes: models and plans
@st.composite
def corrupted(draw, original: bytes) -> bytes:
    """Truncated, or 1-6 bits flipped anywhere, or 1-6 bits flipped inside one initializer's raw data
    (a protobuf that still parses, with weights, scales or zero-points that may now be NaN, Inf, 0...)."""
    how = draw(st.sampled_from(["truncate", "flip", "flip in a tensor"]))
    if how == "truncate":
        return original[: draw(st.integers(0, len(original) - 1))]
    if how == "flip":
        data = bytearray(original)
        for position in draw(st.sets(st.integers(0, 8 * len(data) - 1), min_size=1, max_size=6)):
            data[position // 8] ^= 1 << (position % 8)
        return bytes(data)
    model = onnx.ModelProto.FromString(original)
    tensors = [t for t in model.graph.initializer if t.raw_data]
    tensor = tensors[draw(st.integers(0, len(tensors) - 1))]
    raw = bytearray(tensor.raw_data)
    for position in draw(st.sets(st.integers(0, 8 * len(raw) - 1), min_size=1, max_size=6)):
        raw[position // 8] ^= 1 << (position % 8)
    tensor.raw_data = bytes(raw)
    return model.SerializeToString()


def _kind_of_error(line: str) -> str:
    """``error: FILE: what went wrong (fix)`` → a few words of what went wrong, for hypothesis' statistics."""
    text = line.removeprefix("error: ")
    text = text.split(": ", 1)[1] if ": " in text and "/" in text.split(": ", 1)[0] else text
    return " ".join(text.split("(")[0].split()[:6])


def _clean_or_valid(run, folder: Path, before: set[str], output: Path) -> None:
    """A corrupt file that is still a valid model may succeed; anything else is the clean bad-input exit."""
    event(f"exit {0 if run.code is None else run.code}" + (f": {_kind_of_error(run.error_lines[0])}" if run.error_lines else ""))
    if run.code in (0, None):
        assert output.exists(), run.stderr
        assert "Traceback" not in run.stderr and ":onnxruntime:" not in run.stderr, run.stderr
        (shutil.rmtree if output.is_dir() else Path.unlink)(output)
        assert files_under(folder) == before
        return
    assert_user_error(run)
    assert files_under(folder) == before, "an output or staging file was left behind"


@given(payload=st.data())
@settings(FUZZ, max_examples=200)
def test_fuzz_model_bytes(kit, payload):
    blob = payload.draw(corrupted(kit["model_bytes"]), label="model bytes")
    with tempfile.TemporaryDirectory(prefix="mpcompile-fuzz-") as name:
        folder = Path(name)
        (folder / "model.onnx").write_bytes(blob)
        before = files_under(folder)
        run = run_cli("calibrate", folder / "model.onnx", "--data", kit["data"], "-o", folder / "plan.onnx", "--quiet")
        _clean_or_valid(run, folder, before, folder / "plan.onnx")


@given(payload=st.data())
@settings(FUZZ, max_examples=150)
def test_fuzz_plan_bytes(kit, payload):
    blob = payload.draw(corrupted(kit["plan_bytes"]), label="plan bytes")
    with tempfile.TemporaryDirectory(prefix="mpcompile-fuzz-") as name:
        folder = Path(name)
        (folder / "plan.onnx").write_bytes(blob)
        before = files_under(folder)
        run = run_cli("lower", folder / "plan.onnx", "--backend", "onnxruntime", "-o", folder / "out")
        _clean_or_valid(run, folder, before, folder / "out")
