"""The conformance test suite, parametrized over backends × model cases × precision modes.

mpcompile runs it on every installed backend (``tests/conformance``); a third-party
backend author runs the very same tests against their backend::

    pytest --pyargs mpcompile.testing.testsuite --mpcompile-backend mybackend

Every backend must match the fake-quant reference of its *legalized* plan within the
default tolerances (1 LSB, 9 LSB at softmax/sigmoid/tanh outputs).
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from mpcompile.testing.cases import CASES, random_inputs

#: precision mode -> calibrate() options
MODES = {
    "int8": {},
    "int8-symmetric": {"symmetric": True},
    "uint8": {"activation_type": "uint8"},
    "int16": {"precision": "int16"},
    "fp32": {"precision": "fp32"},
}


@pytest.fixture(params=sorted(CASES))
def model_case(request, tmp_path_factory):
    path = tmp_path_factory.mktemp("cases") / f"{request.param}.onnx"
    model = CASES[request.param]()
    onnx.save(model, path)
    data = path.with_suffix(".npz")
    np.savez(data, **random_inputs(model, 24, seed=3))
    return path, data


@pytest.mark.parametrize("mode", sorted(MODES))
def test_backend_conforms(mpcompile_backend_name, model_case, mode, tmp_path):
    from mpcompile.pipeline import calibrate, conform

    path, data = model_case
    plan = calibrate(path, data, progress=False, **MODES[mode]).plan
    report = conform(plan, [mpcompile_backend_name], data, out_dir=tmp_path, batch_size=8)
    assert report.passed, report.format_text()
