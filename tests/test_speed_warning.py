"""`compile` says when an integer artifact may be no faster than FP32, on any backend, before anything is timed."""

import json

import pytest
from conftest import MNIST, MNIST_CALIB

from mpcompile.pipeline import compile as compile_model


@pytest.mark.parametrize("float_ops,warned", [({}, False), ({"Conv": "fp32"}, True)])
def test_an_artifact_with_most_macs_in_float_is_flagged(tmp_path, float_ops, warned):
    pytest.importorskip("ai_edge_litert")
    overrides = tmp_path / "overrides.json"
    overrides.write_text(json.dumps({"op_types": float_ops}))
    res = compile_model(str(MNIST), str(MNIST_CALIB), backends=["tflite"], out_dir=str(tmp_path / "out"), conform=False,
                        progress=False, precision="mixed", overrides=str(overrides))
    said = json.loads(res.manifest_path.read_text())["backends"]["tflite"]["speed_warning"]
    assert said == res.results["tflite"].speed_warning()
    assert bool(said) is warned
    if warned:  # names the share and the float ops that carry the MACs
        assert "of the MACs run in integers" in said and "Conv ×2" in said
