"""MiniLM-L6 (a real sentence transformer) lowered to TFLite and run in LiteRT in four modes.

The export is frozen to batch 1 × 32 tokens (``input_shapes``), so the shape arithmetic folds away and
what is left is what a static TFLite model holds: int64 token ids into GATHER, the attention mask
computed in bool (CAST, GATHER, RESHAPE, LOGICAL_AND, SELECT_V2), FULLY_CONNECTED/BATCH_MATMUL, float
LayerNorm and softmax, GELU (one operator where the plan keeps it in one float precision).

fp32, fp16 and 16x8 plans conform to the reference (fake-quant evaluation of the plan) under the
core's rule. The uniform int8 plan does not, and cannot: it is ill-conditioned (4.7 dB SQNR vs FP32),
so rounding a handful of near-tie values the other way — which every integer kernel does (TFLite's
kernels round ties up, the reference half to even) — moves the embedding as far as the plan's own
quantization does. Scaling every activation scale by (1 + 1e-6), which only changes near-tie roundings,
moves the reference itself to ~7 dB from where it was. For int8 the test therefore holds TFLite to
that measured sensitivity and to the plan's accuracy against FP32.
"""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("ai_edge_litert")

from mpcompile_tflite.flatbuffer import read_operators, read_tensors  # noqa: E402

from mpcompile.conformance import Tolerances  # noqa: E402
from mpcompile.pipeline import (
    calibrate,  # noqa: E402
    conform,  # noqa: E402
)

pytestmark = [pytest.mark.slow, pytest.mark.tflite]

STATIC = {"input_ids": (1, 32), "attention_mask": (1, 32)}
CALIBRATION_SAMPLES = 64
CONFORMANCE_SAMPLES = 32
#: embedding cosine vs FP32 the TFLite model must reach (measured: 1.000000, 0.999999, 0.999585)
COSINE = {"fp32": 0.99999, "fp16": 0.9999, "int16": 0.999}
#: 16x8 kernels requantize with a 15-bit multiplier: per layer up to 1 int16 LSB more (see test_tflite.py)
INT16_TOLERANCE = Tolerances(default_lsb=16.0)


@pytest.mark.parametrize("mode", ["fp32", "fp16", "int16", "int8"])
def test_minilm_in_litert(mode, minilm, tmp_path, capsys):
    model, data = minilm
    plan = calibrate(model, data, precision=mode, input_shapes=STATIC, samples=CALIBRATION_SAMPLES, progress=False).plan
    report = conform(plan, ["tflite", "onnxruntime"], data, samples=CONFORMANCE_SAMPLES, out_dir=tmp_path,
                     tolerances=INT16_TOLERANCE if mode == "int16" else None)
    tflite = next(b for b in report.backends if b.backend == "tflite")
    assert tflite.error is None, tflite.error
    artifact = Path(tflite.artifact)
    ops = set(read_operators(artifact.read_bytes()))
    plan_vs_fp32 = report.reference_vs_fp32["embedding"]
    got, vs_fp32 = tflite.outputs["embedding"], tflite.vs_fp32["embedding"]
    with capsys.disabled():
        print(f"\nMiniLM {mode} in LiteRT ({artifact.stat().st_size / 1e6:.1f} MB): vs reference max |diff| "
              f"{got.max_abs_diff:.3g}, SQNR {got.sqnr_db:.1f} dB, cosine {got.cosine:.6f}; vs FP32 cosine "
              f"{vs_fp32.cosine:.6f}, SQNR {vs_fp32.sqnr_db:.1f} dB (plan vs FP32: cosine {plan_vs_fp32.cosine:.6f}, "
              f"SQNR {plan_vs_fp32.sqnr_db:.1f} dB)")
        print(report.format_text())

    # what a static BERT export becomes: int64 ids stay int64, the mask is bool arithmetic
    records = {r.name: r for r in read_tensors(artifact.read_bytes())}
    ids = next(r for r in records.values() if r.name == "input_ids")
    assert ids.dtype == "int64"
    assert {("LOGICAL_AND", 1), ("SELECT_V2", 1), ("GATHER", 3)} <= ops  # GATHER 3: bool data
    gelus = sum(1 for op, _ in ops if op == "GELU")
    assert (gelus > 0) == (mode in ("fp32", "fp16"))  # int plans run the GELU's Mul in integer, as planned

    if mode != "int8":
        assert tflite.passed, report.format_text()
    else:
        # Measured: the uniform int8 plan moves to ~9 dB under a 1e-6 nudge of its scales, and LiteRT's
        # kernels differ from it by 2 LSB from the first encoder layer on, which then cascades. The
        # verdict is FAIL and says where the integers first leave tolerance.
        assert tflite.passed or tflite.first_divergence is not None, report.format_text()
    if mode != "int8":
        assert vs_fp32.cosine >= COSINE[mode]
    else:  # as accurate against FP32 as the plan itself
        assert vs_fp32.cosine >= plan_vs_fp32.cosine - 0.03
