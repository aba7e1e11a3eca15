"""MiniLM-L6 (a real sentence transformer) lowered to OpenVINO IR and run on the CPU plugin (slow).

The uniform int8 plan is ill-conditioned (embedding SQNR ~5 dB vs FP32; a 1e-6 nudge of its scales
moves the plan itself to ~12 dB), so neither OpenVINO nor ONNX Runtime can be proven equal to it at the
float output. Measured here: every OpenVINO integer tensor is within 1 LSB of the plan except where a
near-tie (1 LSB) at a MatMul output is amplified by a following requantization with a finer scale (2 LSB
at ``query/Add`` in layer 0; ONNX Runtime: 2 LSB at ``intermediate/dense/Add``), and the difference
cascades through the six layers (as it does in ONNX Runtime). The test holds OpenVINO
to what is provable: the IR carries the plan (``lower`` checks every FakeQuantize), the artifact keeps
the plan's accuracy against FP32, and the verdict names the first diverging tensor when it fails.
"""

from __future__ import annotations

import pytest

pytest.importorskip("openvino")

from mpcompile_openvino import backend  # noqa: E402

import mpcompile  # noqa: E402
from mpcompile.backends.targets import Target, lower_target  # noqa: E402
from mpcompile.conformance import check_artifacts  # noqa: E402
from mpcompile.data import open_data  # noqa: E402

pytestmark = pytest.mark.slow


def test_minilm_int8_in_openvino(minilm, tmp_path, capsys):
    model, data = minilm
    plan = mpcompile.calibrate(model, data, samples=64, progress=False).plan
    target = Target(backend, backend.options())
    result = lower_target(target, plan, tmp_path, "minilm")
    assert result.error is None, result.error
    assert result.artifact.metadata["ops"]["FakeQuantize"] >= 150
    # Two legalization rules only: the even zero-point rule, and the requantizations of the 12 MatMuls whose
    # outputs only float nodes read (attention output and FFN output: OpenVINO's FullyConnected writes them float).
    removed = [d for d in result.deviations if d.change == "requantization removed"]
    assert len(removed) == 12, [d.subject for d in removed]
    assert all("zero-point" in d.change for d in result.deviations if d not in removed)
    report = check_artifacts(plan, {"openvino": result}, {"openvino": target}, open_data(plan, str(data)), samples=32,
                             per_layer=True)
    ov_report = report.backends[0]
    assert ov_report.error is None, ov_report.error
    plan_cosine = report.reference_vs_fp32["embedding"].cosine
    with capsys.disabled():
        print(f"\nMiniLM int8 in OpenVINO: plan vs FP32 cosine {plan_cosine:.4f}, OpenVINO vs FP32 "
              f"{ov_report.vs_fp32['embedding'].cosine:.4f}; first divergence {ov_report.first_divergence}")
    assert ov_report.vs_fp32["embedding"].cosine >= plan_cosine - 0.03
    # The cascade grows layer by layer (by layer 6 most tensors are several LSB off), so what is held is where it
    # starts: in the first encoder layer, at a requantization after a near-tie, named by the verdict.
    assert ov_report.passed or "/layer.0/" in (ov_report.first_divergence or ""), report.format_text()
