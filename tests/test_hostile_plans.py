"""Issue 17, classes 1 and 3 for plans: a corrupt plan is refused on load, one line naming the file and
the tensor, before any backend sees it (never lowered differently per backend, never a traceback)."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from hostile_kit import (
    assert_user_error,
    files_under,
    get_initializer,
    metadata,
    run_cli,
    set_initializer,
    tiny_data,
    tiny_mlp,
)

from mpcompile.errors import PlanError
from mpcompile.ir import serde


@pytest.fixture(scope="module")
def plan_path(tmp_path_factory):
    folder = tmp_path_factory.mktemp("plan")
    onnx.save(tiny_mlp(), folder / "mlp.onnx")
    data = tiny_data(folder / "d.npz")
    result = run_cli("calibrate", folder / "mlp.onnx", "--data", data, "-o", folder / "plan.onnx", "--quiet")
    assert result.code in (0, None), result.stderr
    return folder / "plan.onnx"


def _quant(model):
    return json.loads(metadata(model, "mpcompile.quant").value)


def _set_quant(model, table):
    metadata(model, "mpcompile.quant").value = json.dumps(table)


def _lower_refuses(tmp_path, plan_path, mutate, *fragments):
    model = onnx.load(plan_path)
    mutate(model)
    bad = tmp_path / "bad.onnx"
    onnx.save(model, bad)
    before = files_under(tmp_path)
    line = assert_user_error(run_cli("lower", bad, "--backend", "onnxruntime", "-o", tmp_path / "out"), "bad.onnx", *fragments)
    assert files_under(tmp_path) == before  # no output folder, no staging folder
    with pytest.raises(PlanError):
        serde.load_plan(bad)
    return line


def test_the_plan_itself_loads(plan_path):
    graph = serde.load_plan(plan_path)
    assert graph.tensors["w1"].quant.axis == 1 and graph.tensors["w1"].quant.scale.shape == (8,)


def test_per_channel_scale_of_the_wrong_length(tmp_path, plan_path):
    def mutate(m):
        names = _names(m, "w1")
        set_initializer(m, names[0], get_initializer(m, names[0])[:3])
        set_initializer(m, names[1], get_initializer(m, names[1])[:3])

    line = _lower_refuses(tmp_path, plan_path, mutate, "tensor 'w1'", "3 entries", "size 8")
    assert line.endswith("(the plan was edited or damaged; re-create it with `mpcompile calibrate`)")


def test_float_zero_point_is_refused_not_truncated(tmp_path, plan_path):
    _lower_refuses(tmp_path, plan_path, lambda m: set_initializer(m, _names(m, "x")[1], np.float32(0.3)),
                   "tensor 'x'", "zero-point", "float")


@pytest.mark.parametrize("field,value,fragment", [
    ("qtype", "int4", "qtype 'int4' is unknown"),
    ("qtype", 8, "qtype must be one of"),
    ("axis", 7, "axis 7 is out of range for its rank 2"),
    ("axis", -3, "axis -3 is out of range"),
    ("axis", "1", "axis must be an integer"),
    ("axis", 1.0, "axis must be an integer"),
    ("symmetric", "yes", "symmetric must be true or false"),
    ("narrow_range", 1, "narrow_range must be true or false"),
    ("provenance", [1], "provenance must be an object"),
])
def test_metadata_fields(tmp_path, plan_path, field, value, fragment):
    def mutate(m):
        table = _quant(m)
        table["w1"][field] = value
        _set_quant(m, table)

    _lower_refuses(tmp_path, plan_path, mutate, "tensor 'w1'", fragment)


def test_unknown_precision(tmp_path, plan_path):
    def mutate(m):
        prop = metadata(m, "mpcompile.precision")
        table = json.loads(prop.value)
        table["mm1"]["precision"] = "int3"
        prop.value = json.dumps(table)

    _lower_refuses(tmp_path, plan_path, mutate, "node 'mm1'", "unknown precision 'int3'")


@pytest.mark.parametrize("key", ["mpcompile.quant", "mpcompile.precision", "mpcompile.graph_metadata"])
@pytest.mark.parametrize("text,fragment", [("[1, 2]", "must be an object"), ('{"a": ', "not valid JSON"),
                                           ("[" * 100000, "nested too deeply")])
def test_metadata_that_is_not_an_object(tmp_path, plan_path, key, text, fragment):
    def mutate(m):
        metadata(m, key).value = text

    _lower_refuses(tmp_path, plan_path, mutate, key, fragment)


@pytest.mark.parametrize("value,fragment", [
    (0.0, "scale 0.0"), (-1.0, "scale -1.0"), (np.nan, "scale nan"), (np.inf, "scale inf"), (-np.inf, "scale -inf"),
])
def test_invalid_activation_scale(tmp_path, plan_path, value, fragment):
    _lower_refuses(tmp_path, plan_path, lambda m: set_initializer(m, _names(m, "x")[0], np.float32(value)),
                   "tensor 'x'", fragment, "not finite and > 0")


def test_invalid_per_channel_scale_names_the_value(tmp_path, plan_path):
    def mutate(m):
        name = _names(m, "w1")[0]
        scale = get_initializer(m, name).copy()
        scale[5] = -2.0
        set_initializer(m, name, scale)

    _lower_refuses(tmp_path, plan_path, mutate, "tensor 'w1'", "scale -2.0")


@pytest.mark.parametrize("dtype", [np.int16, np.uint8, np.int32])
def test_zero_point_of_another_integer_type(tmp_path, plan_path, dtype):
    _lower_refuses(tmp_path, plan_path, lambda m: set_initializer(m, _names(m, "x")[1], np.array(3, dtype)),
                   "tensor 'x'", f"is {np.dtype(dtype)}, not the qtype's int8")


def test_symmetric_weight_with_a_nonzero_zero_point(tmp_path, plan_path):
    def mutate(m):
        name = _names(m, "w1")[1]
        zp = get_initializer(m, name).copy()
        zp[2] = 4
        set_initializer(m, name, zp)

    _lower_refuses(tmp_path, plan_path, mutate, "tensor 'w1'", "symmetric", "zero-point 4")


def test_scale_of_another_float_type(tmp_path, plan_path):
    _lower_refuses(tmp_path, plan_path, lambda m: set_initializer(m, _names(m, "x")[0], np.float64(0.1)),
                   "tensor 'x'", "float64, not float32")


def test_per_tensor_entry_with_a_vector_scale(tmp_path, plan_path):
    _lower_refuses(tmp_path, plan_path, lambda m: set_initializer(m, _names(m, "x")[0], np.ones(2, np.float32)),
                   "tensor 'x'", "per-tensor")


def test_int32_on_an_activation(tmp_path, plan_path):
    def mutate(m):
        table = _quant(m)
        table["x"]["qtype"] = "int32"
        _set_quant(m, table)
        set_initializer(m, _names(m, "x")[1], np.array(0, np.int32))

    _lower_refuses(tmp_path, plan_path, mutate, "tensor 'x'", "qtype int32 is for biases")


def test_nan_in_a_quantized_weight(tmp_path, plan_path):
    def mutate(m):
        w = get_initializer(m, "w1").copy()
        w[0, 0] = np.nan
        set_initializer(m, "w1", w)

    _lower_refuses(tmp_path, plan_path, mutate, "tensor 'w1'", "NaN or infinite")


def test_annotation_and_metadata_disagree(tmp_path, plan_path):
    def drop_annotation(m):
        kept = [a for a in m.graph.quantization_annotation if a.tensor_name != "x"]
        del m.graph.quantization_annotation[:]
        m.graph.quantization_annotation.extend(kept)

    _lower_refuses(tmp_path, plan_path, drop_annotation, "tensor 'x'", "metadata but no annotation")

    def drop_metadata(m):
        table = _quant(m)
        del table["x"]
        _set_quant(m, table)

    _lower_refuses(tmp_path, plan_path, drop_metadata, "tensor 'x'", "no mpcompile metadata")


def test_annotation_pointing_at_a_graph_tensor(tmp_path, plan_path):
    def mutate(m):
        for ann in m.graph.quantization_annotation:
            if ann.tensor_name == "x":
                ann.quant_parameter_tensor_names[0].value = "w1"

    _lower_refuses(tmp_path, plan_path, mutate, "tensor 'x'", "'w1' is a tensor of the graph")


def test_missing_parameter_initializer(tmp_path, plan_path):
    def mutate(m):
        name = _names(m, "x")[0]
        kept = [i for i in m.graph.initializer if i.name != name]
        del m.graph.initializer[:]
        m.graph.initializer.extend(kept)

    _lower_refuses(tmp_path, plan_path, mutate, "tensor 'x'", "missing initializer")


def test_damaged_graph_is_refused_by_the_checker(tmp_path, plan_path):
    def mutate(m):
        m.graph.node[1].input[0] = "nowhere"

    _lower_refuses(tmp_path, plan_path, mutate, "checker")


def _names(model, tensor):
    for ann in model.graph.quantization_annotation:
        if ann.tensor_name == tensor:
            keys = {kv.key: kv.value for kv in ann.quant_parameter_tensor_names}
            return keys["SCALE_TENSOR"], keys["ZERO_POINT_TENSOR"]
    raise KeyError(tensor)


def test_deeply_nested_provenance(tmp_path, plan_path):
    def mutate(m):
        table = _quant(m)
        table["x"]["provenance"] = {"deep": json.loads("[" * 900 + "]" * 900)}
        _set_quant(m, table)

    line = _lower_refuses(tmp_path, plan_path, mutate, "tensor 'x'", "provenance.deep")
    assert len(line) < 400
