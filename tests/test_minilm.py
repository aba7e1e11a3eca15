"""The real transformer (MiniLM-L6 sentence embeddings): uniform INT8, the automatic planner, conformance."""

import pytest

from mpcompile.backends.registry import available_backends
from mpcompile.pipeline import calibrate, conform

pytestmark = pytest.mark.slow
SAMPLES = 64
STATIC = {"input_ids": (1, 32), "attention_mask": (1, 32)}  # shape arithmetic folds away (TFLite needs it)


def test_minilm_uniform_int8_and_auto_plan(minilm, capsys):
    model, data = minilm
    uniform = calibrate(model, data, samples=SAMPLES, progress=False).plan
    report = conform(uniform, ["onnxruntime"], data, samples=SAMPLES)
    cosine_int8 = report.reference_vs_fp32["embedding"].cosine

    auto = calibrate(model, data, precision="auto", metric="cosine", max_accuracy_drop=0.01, samples=SAMPLES,
                     input_shapes=STATIC, progress=False)
    chosen = auto.auto.chosen
    assert chosen.drop <= 0.01
    # Most multiply-accumulates should stay INT8 (the search before the greedy one kept > 50 %). The greedy search
    # first met the budget only by promoting all 107 groups (0 %): 90 groups showed no gain alone in uniform INT8 and
    # were never measured again. With the re-ranking in the current plan: 52.1 % at drop 0.0096 (measured, zoo MiniLM).
    mostly_int8 = chosen.int8_mac_share > 0.5
    backends = [b for b in ("onnxruntime", "tflite") if b in available_backends()]
    report = conform(auto.plan, backends, data, samples=SAMPLES)
    with capsys.disabled():
        print(f"\nMiniLM uniform int8: cosine vs fp32 {cosine_int8:.4f}")
        print(auto.auto.format_table())
        print(report.format_text())
    assert report.reference_vs_fp32["embedding"].cosine >= 0.985
    for backend in report.backends:
        assert backend.error is None, backend.error
        assert backend.vs_fp32["embedding"].cosine >= 0.98, report.format_text()  # the artifact keeps the accuracy
        # Measured: fused kernels round 2 LSB off the plan in the first encoder layer and it cascades (the float
        # rule fails, and so does the integer certificate). The verdict must then name where it starts.
        assert backend.passed or backend.first_divergence is not None, report.format_text()
    if not mostly_int8:
        pytest.xfail(f"the greedy auto search kept {chosen.int8_mac_share:.0%} of MiniLM's MACs in INT8 (was > 50 %): "
                     "the re-ranking no longer finds a mostly-INT8 plan (issue 15)")
