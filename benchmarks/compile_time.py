"""Case 3: end-to-end compile time, ``mpcompile.compile`` vs ORT ``quantize_static``.

mpcompile: import → calibrate (minmax) → plan → legalize → lower to ONNX Runtime, writing plan,
artifact and manifest (``conform=False``). Peer: ``quantize_static`` (QDQ, per-channel, int8
activations and weights, MinMax) on the same model and data. When mpcompile's TFLite backend is
available, mpcompile's ORT + TFLite compile is timed too (informational: its peer, the TFLite
converter, needs TensorFlow and a TensorFlow model, and is reported as skipped).
"""

from __future__ import annotations

from typing import Any

from benchmarks.calibration import _measure
from benchmarks.common import MINILM_BATCH, MNIST_BATCH, Context, Row, median, row, safe_div, short_error, skipped

METRIC = "compile time end to end [s]; ratio = peer/mpcompile (speedup)"
TARGET = ">= 1"
PEER = "ORT quantize_static (QDQ, per-channel, S8S8, MinMax)"


def run(ctx: Context) -> list[Row]:
    rows: list[Row] = []
    tflite_ok, tflite_reason = ctx.tflite()
    tf_ok, tf_reason = ctx.tensorflow()
    for key, paths, reason in ctx.models():
        if paths is None:
            rows.append(skipped(f"compile/{key}/onnxruntime", METRIC, TARGET, reason))
            rows.append(skipped(f"compile/{key}/onnxruntime+tflite", METRIC, None, reason))
            continue
        rows.extend(_model(ctx, key, paths, tflite_ok, tflite_reason))
    converter_reason = tf_reason if not tf_ok else (
        "the TFLite converter takes TensorFlow/Keras models; converting these ONNX models to TensorFlow needs "
        "onnx2tf, which docs/design.md rules out (wrong numbers on QDQ models)"
    )
    rows.append(skipped("compile/mnist/tflite-converter", "TFLite converter (int8) compile time [s]", None, converter_reason))
    return rows


#: TFLite needs static shapes: MiniLM is compiled for it frozen to one sequence of 32 tokens, fed one at a time.
MINILM_STATIC = {"input_shapes": {"input_ids": [1, 32], "attention_mask": [1, 32]}, "batch": 1}


def _model(ctx: Context, key: str, paths: dict[str, Any], tflite_ok: bool, tflite_reason: str) -> list[Row]:
    batch = MNIST_BATCH if key == "mnist" else MINILM_BATCH
    repeats = ctx.settings.repeats if key == "mnist" else ctx.settings.repeats_large
    common = {"model": paths["model"], "data": paths["calib"], "batch": batch}
    variants = {"onnxruntime": ["onnxruntime"]}
    if tflite_ok:
        variants["onnxruntime+tflite"] = ["onnxruntime", "tflite"]
    ours: dict[str, list[dict[str, Any]]] = {v: [] for v in variants}
    peer: list[dict[str, Any]] = []
    for r in range(repeats):
        ctx.log(f"compile {key}: repeat {r + 1}/{repeats}")
        jobs = [("peer", "")] + [("ours", v) for v in variants]
        for who, variant in jobs if r % 2 else list(reversed(jobs)):
            out = str(ctx.workdir / f"compile_{key}_{who}{variant}_{r}")
            if who == "peer":
                peer.append(_measure(ctx, "compile_ort", {**common, "out": out}))
            else:
                args = {**common, "backends": variants[variant], "out": out}
                if "tflite" in variants[variant] and key == "minilm":
                    args.update(MINILM_STATIC)
                ours[variant].append(_measure(ctx, "compile_ours", args))
    p_s = median(x.get("seconds") for x in peer if "error" not in x)
    p_err = next((x["error"] for x in peer if "error" in x), "")
    rows = []
    for variant in ("onnxruntime", "onnxruntime+tflite"):
        name = f"compile/{key}/{variant}"
        if variant not in variants:
            rows.append(skipped(name, METRIC, None, tflite_reason))
            continue
        o_s = median(x.get("seconds") for x in ours[variant] if "error" not in x)
        o_err = next((x["error"] for x in ours[variant] if "error" in x), "")
        static = "tflite" in variant and key == "minilm"
        notes = [f"{paths['samples']} samples, batch {MINILM_STATIC['batch'] if static else batch}, {repeats} repeat(s)"]
        if static:
            notes.append("input frozen to 1x32 tokens (LiteRT needs static shapes: --input-shape)")
        if o_err:
            notes.append(f"mpcompile failed: {short_error(o_err)}")
        if variant != "onnxruntime":
            notes.append("no peer: the TFLite converter is not available here (see compile/mnist/tflite-converter)")
            rows.append(row(name, METRIC, o_s, None, None, None, "; ".join(notes), ours_failed=o_s is None))
            continue
        notes.append(f"peer: {PEER}")
        if p_err:
            notes.append(f"peer failed: {short_error(p_err)}")
        rows.append(row(name, METRIC, o_s, p_s, safe_div(p_s, o_s), TARGET, "; ".join(notes), ours_failed=o_s is None))
    return rows
