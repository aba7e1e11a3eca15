"""The plan-overrides file: precisions per node and op type, pinned tensor numbers, and its errors."""

import json

import numpy as np
import pytest
from conftest import MNIST, MNIST_CALIB

from mpcompile.errors import PlanError
from mpcompile.ir.types import Precision
from mpcompile.pipeline import calibrate


def test_overrides_file_sets_precisions_and_pins_numbers(tmp_path):
    path = tmp_path / "overrides.json"
    path.write_text(json.dumps({
        "op_types": {"MaxPool": "fp32"},
        "nodes": {"/fc2/*": "fp16"},
        "tensors": {"/relu1/Relu_output_0": {"range": [0.0, 25.5]}, "input": {"scale": 1 / 255, "zero_point": -128}},
    }))
    plan = calibrate(MNIST, MNIST_CALIB, precision="mixed", overrides=path, progress=False).plan
    assert all(n.precision == Precision.FP32 for n in plan.nodes if n.op_type == "MaxPool")
    assert plan.node("/fc2/Gemm").precision == Precision.FP16
    assert float(plan.tensors["input"].quant.scale) == np.float32(1 / 255)
    assert int(plan.tensors["input"].quant.zero_point) == -128
    assert plan.tensors["input"].quant.provenance["pinned"] == str(path)
    assert float(plan.tensors["/relu1/Relu_output_0"].quant.scale) == np.float32(0.1)
    # the conv's bias follows the pinned input scale
    bias = plan.tensors["conv1.bias"].quant
    np.testing.assert_array_equal(bias.scale, (np.float32(1 / 255) * plan.tensors["conv1.weight"].quant.scale).astype(np.float32))


@pytest.mark.parametrize("content,match", [
    ({"tensors": {"no_such_tensor": {"range": [0, 1]}}}, "no_such_tensor"),
    ({"nodes": {"nosuch*": "fp16"}}, "matches no node"),
    ({"nodes": {"/fc2/Gemm": "int4"}}, "unknown precision"),
    ({"layers": {}}, "expected an object"),
])
def test_overrides_file_errors_name_the_culprit(tmp_path, content, match):
    path = tmp_path / "overrides.json"
    path.write_text(json.dumps(content))
    with pytest.raises(PlanError, match=match):
        calibrate(MNIST, MNIST_CALIB, precision="mixed", overrides=path, progress=False)


def test_yaml_overrides(tmp_path):
    pytest.importorskip("yaml")
    path = tmp_path / "overrides.yaml"
    path.write_text("op_types:\n  Relu: fp32\n")
    plan = calibrate(MNIST, MNIST_CALIB, precision="mixed", overrides=path, progress=False).plan
    assert all(n.precision == Precision.FP32 for n in plan.nodes if n.op_type == "Relu")
