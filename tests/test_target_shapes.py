"""Static shapes are a backend's need (``Capabilities.static_shapes``), met when lowering for it.

A model that computes shapes at run time (Shape → Max → Reshape, stage after stage) keeps its batch dynamic
in the plan and in the ONNX Runtime artifact; only TFLite's copy of the plan is frozen to batch 1, so that
its shape computations fold. The dims the data fixes (here L) are frozen at import, for every backend:
the plan is calibrated at them.
"""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from test_cli import run
from test_tflite_shapes import _staged

import mpcompile
from mpcompile.reference import ReferenceRunner

pytest.importorskip("ai_edge_litert")

pytestmark = pytest.mark.tflite


@pytest.fixture(scope="module")
def both(tmp_path_factory):
    """One compile for ONNX Runtime and TFLite of x[N, 4, L] whose shape subgraph needs the batch to fold."""
    tmp = tmp_path_factory.mktemp("both")
    path, data = _staged(tmp, ["N", 4, "L"])
    with pytest.warns(UserWarning, match="x=-1x4x6"):
        result = mpcompile.compile(path, data, ["onnxruntime", "tflite"], tmp / "out", conform=True, progress=False)
    return result


def _input_dims(path) -> list:
    return [d.dim_param or d.dim_value for d in onnx.load(path).graph.input[0].type.tensor_type.shape.dim]


def test_the_onnxruntime_artifact_keeps_a_dynamic_batch_and_runs_at_1_and_8(both):
    assert both.exit_code == 0, both.conformance.format_text()
    assert both.conformance.passed
    assert both.plan.tensors["x"].shape == ("N", 4, 6)
    artifact = both.artifacts["onnxruntime"]
    assert _input_dims(artifact.path) == ["N", 4, 6]
    from mpcompile_onnxruntime import backend

    legal = both.results["onnxruntime"].plan
    reference = ReferenceRunner(legal)
    x = np.random.default_rng(3).normal(0, 1, (8, 4, 6)).astype(np.float32)
    output = legal.outputs[0]
    scale = float(legal.tensors[output].quant.scale)
    with backend.runner(artifact, backend.options()) as runner:
        for batch in (1, 8):
            got = runner.run({"x": x[:batch]})[output]
            assert got.shape[0] == batch
            assert np.max(np.abs(got - reference.run({"x": x[:batch]})[output])) <= scale * 1.01
    assert not [d for d in both.results["onnxruntime"].deviations if d.kind == "shapes"]


def test_the_tflite_artifact_of_the_same_compile_is_static_and_says_why(both):
    from mpcompile_tflite import backend

    from mpcompile.errors import DataError

    result = both.results["tflite"]
    assert result.plan.tensors["x"].shape == (1, 4, 6)
    assert not [n for n in result.plan.nodes if n.op_type == "Shape"]
    [frozen] = [d for d in result.deviations if d.kind == "shapes"]
    assert frozen.subject == "x" and frozen.change == "x=1x4x6 (batch frozen to 1)"
    assert "tflite computes no shapes at run time" in frozen.reason
    manifest = both.manifest["backends"]
    assert [d for d in manifest["tflite"]["deviations"] if d["kind"] == "shapes"] == [frozen.to_dict()]
    assert not [d for d in manifest["onnxruntime"]["deviations"] if d["kind"] == "shapes"]
    with backend.runner(result.artifact, backend.options()) as runner:
        runner.run({"x": np.zeros((1, 4, 6), np.float32)})
        with pytest.raises(DataError, match="static shape 1x4x6"):
            runner.run({"x": np.zeros((8, 4, 6), np.float32)})


def test_a_saved_plan_with_a_dynamic_batch_lowers_for_tflite_without_data(both, tmp_path):
    results = mpcompile.lower(both.plan_path, ["tflite"], tmp_path / "lowered")
    assert results["tflite"].ok, results["tflite"].error
    assert results["tflite"].plan.tensors["x"].shape == (1, 4, 6)


def test_an_explicit_input_shape_wins(tmp_path):
    path, data = _staged(tmp_path, ["N", 4, "L"])
    result = mpcompile.compile(path, data, ["onnxruntime", "tflite"], tmp_path / "out", input_shapes={"x": (2, 4, 6)},
                               conform=True, progress=False)
    assert result.exit_code == 0, result.conformance.format_text()
    for backend_result in result.results.values():
        assert backend_result.plan.tensors["x"].shape == (2, 4, 6)
        assert not [d for d in backend_result.deviations if d.kind == "shapes"]


def test_the_terminal_says_in_one_line_which_dims_were_frozen_for_which_backend(tmp_path):
    path, data = _staged(tmp_path, ["N", 4, 6])
    out = tmp_path / "out"
    result = run("compile", path, "--data", data, "--backend", "onnxruntime", "--backend", "tflite", "-o", out,
                 "--no-conform", "--quiet")
    assert result.returncode == 0, result.stderr
    lines = [line.strip() for line in result.stdout.splitlines() if "batch frozen" in line]
    assert lines == ["shapes x: x=1x4x6 (batch frozen to 1) (tflite computes no shapes at run time and the plan does "
                     "(6 node(s) such as 'shape0'); the plan and the other backends keep the batch dynamic; "
                     "--input-shape chooses another)"], result.stdout
    # printed under the tflite line, not the onnxruntime one
    stdout = result.stdout.splitlines()
    assert stdout[stdout.index(next(s for s in stdout if "batch frozen" in s)) - 2].startswith("tflite:")
    manifest = json.loads((out / "manifest.json").read_text())
    assert _input_dims(out / manifest["backends"]["onnxruntime"]["artifact"])[0] == "N"


@pytest.mark.slow
def test_a_real_export_whose_outputs_have_no_static_rank_lowers_to_tflite_without_input_shapes(tmp_path):
    """PaddleOCR's classifier reshapes to a shape computed at run time: with the batch dynamic, its outputs have no
    known rank, which the ONNX checker refuses on graph outputs; the frozen copy must still be made (it was not)."""
    from models import zoo

    built = zoo.get("ppocr_cls").build()
    result = mpcompile.compile(str(built.model_path), data=str(built.calib_path), backends=["tflite"],
                               out_dir=str(tmp_path / "out"), progress=False)
    assert result.results["tflite"].error is None, result.results["tflite"].error
    assert any(d.kind == "shapes" for d in result.results["tflite"].deviations)
