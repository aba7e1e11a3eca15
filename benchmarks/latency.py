"""Case 4: inference latency of mpcompile's ONNX Runtime artifacts (static QDQ, and
``onnxruntime.quantization=dynamic``) vs ORT ``quantize_static``'s and ``quantize_dynamic``'s artifacts and
vs the FP32 model, at batch 1 and 32 (p50, p90), all in the same interleaved rounds; and, when
mpcompile's TFLite backend is available, its int8 ``.tflite`` vs its fp32 ``.tflite`` (``--precision fp32``).

Artifacts come from the same calibration data (MNIST: ``models/mnist_cnn.calib.npz``; MiniLM: its
generated calibration set). All ONNX models run in default ``InferenceSession``s (CPU provider,
default graph optimizations and threads) in one process per repeat, interleaved in 20 rounds so that
machine noise hits every artifact alike. Inputs: real evaluation samples.
"""

from __future__ import annotations

from typing import Any

from benchmarks.common import (
    MNIST_EVAL,
    MNIST_MODEL,
    Context,
    Row,
    WorkerError,
    median,
    row,
    safe_div,
    short_error,
    skipped,
)

BATCHES = (1, 32)
STATS = ("p50", "p90")
TARGET = ">= 1"


def metric(stat: str, versus: str) -> str:
    return f"{stat} latency [ms]; ratio = {versus}/mpcompile (speedup)"


def run(ctx: Context) -> list[Row]:
    rows: list[Row] = []
    for key, paths, reason in ctx.models():
        if paths is None:
            for batch in BATCHES:
                for stat in STATS:
                    for suffix, _, label, _, target in PAIRS:
                        rows.append(skipped(f"latency/{key}/b{batch}/{stat}/{suffix}", metric(stat, label), target, reason))
            continue
        rows.extend(_onnx(ctx, key, paths))
    rows.extend(_tflite(ctx))
    return rows


def _collect(ctx: Context, key: str, kind: str, models: dict[str, str], data: str, batch: int, repeats: int) -> tuple[dict[str, dict[str, float | None]], str]:
    runs: list[dict[str, Any]] = []
    errors: list[str] = []
    for r in range(repeats):
        ctx.log(f"latency {key} {kind} batch {batch}: repeat {r + 1}/{repeats}")
        order = dict(models) if r % 2 == 0 else dict(reversed(list(models.items())))
        try:
            res = ctx.job("latency", {"kind": kind, "models": order, "data": data, "batch": batch, "budget": ctx.settings.latency_seconds})
        except WorkerError as exc:
            errors.append(f"crashed: {short_error(str(exc).splitlines()[-1])}")
            continue
        if res.error:
            errors.append(res.error)
            continue
        runs.append(res.data["stats"])
        errors.extend(f"{label}: {e}" for label, e in res.data.get("errors", {}).items())
    out: dict[str, Any] = {
        label: {stat: median(run[label][stat] for run in runs if label in run) for stat in STATS} | {
            "n": median(run[label]["n"] for run in runs if label in run)
        }
        for label in models
    }
    out["_runs"] = runs
    return out, short_error("; ".join(dict.fromkeys(errors)), 300)


def _spread(stats: dict[str, Any], other: str, stat: str, mine: str = "ours") -> str:
    """The ratio other/mine of each repeat, so that a reader can judge noise around 1."""
    ratios = [
        run[other][stat] / run[mine][stat]
        for run in stats.get("_runs", [])
        if other in run and mine in run and run[mine][stat]
    ]
    if len(ratios) < 2:
        return ""
    return f"; ratio per repeat {min(ratios):.3f}–{max(ratios):.3f}"


#: (row suffix, mpcompile label, other label, what the other is, target): one row per pair, every model
#: timed in the same interleaved rounds (mpcompile static and dynamic, both ORT peers, FP32).
PAIRS = (
    ("vs-ort-quantize_static", "ours", "peer", "ORT quantize_static per-channel QDQ (S8S8, MinMax)", TARGET),
    ("vs-fp32", "ours", "fp32", "the FP32 model", TARGET),
    ("dynamic/vs-ort-quantize_dynamic", "ours_dynamic", "peer_dynamic",
     "ORT quantize_dynamic (QInt8 weights, per tensor) vs mpcompile onnxruntime.quantization=dynamic", TARGET),
    ("dynamic/vs-fp32", "ours_dynamic", "fp32", "the FP32 model, vs mpcompile onnxruntime.quantization=dynamic", TARGET),
    ("ort-quantize_static/vs-fp32", "peer", "fp32", "the FP32 model, vs ORT quantize_static's artifact (informational)", None),
    ("ort-quantize_dynamic/vs-fp32", "peer_dynamic", "fp32", "the FP32 model, vs ORT quantize_dynamic's artifact (informational)", None),
)
LABELS = ("ours", "ours_dynamic", "peer", "peer_dynamic", "fp32")


def _onnx(ctx: Context, key: str, paths: dict[str, Any]) -> list[Row]:
    art = ctx.artifacts(key, paths)
    models = {label: art[label] for label in LABELS if art.get(label)}
    data = str(MNIST_EVAL) if key == "mnist" else paths["eval"]
    repeats = ctx.settings.repeats if key == "mnist" else ctx.settings.repeats_large
    rows = []
    for batch in BATCHES:
        stats, error = _collect(ctx, key, "onnx", models, data, batch, repeats)
        for stat in STATS:
            for suffix, mine, label, what, target in PAIRS:
                ours = stats.get(mine, {}).get(stat)
                other = stats.get(label, {}).get(stat)
                notes = [f"{'peer' if label.startswith('peer') else 'other'}: {what}; {repeats} repeat(s), {_n(stats)} runs "
                         f"each{_spread(stats, label, stat, mine)}"]
                for k in (mine, label):
                    if art.get(f"{k}_error"):
                        notes.append(f"no {k} artifact: {short_error(art[f'{k}_error'])}")
                if error:
                    notes.append(f"errors: {error}")
                versus = "peer" if label.startswith("peer") and mine.startswith("ours") else "FP32"
                rows.append(
                    row(
                        f"latency/{key}/b{batch}/{stat}/{suffix}",
                        metric(stat, versus) if mine.startswith("ours") else f"{stat} latency [ms] (mpcompile column: "
                        f"the ORT peer); ratio = FP32/peer (speedup)",
                        ours,
                        other,
                        safe_div(other, ours),
                        target,
                        "; ".join(notes),
                        ours_failed=ours is None and mine.startswith("ours"),
                    )
                )
    return rows


def _n(stats: dict[str, Any]) -> str:
    counts = [int(v["n"]) for k, v in stats.items() if not k.startswith("_") and v.get("n")]
    if not counts:
        return "0"
    return str(counts[0]) if min(counts) == max(counts) else f"{min(counts)}–{max(counts)}"


def _tflite(ctx: Context) -> list[Row]:
    ok, reason = ctx.tflite()
    names = [(f"latency/mnist/tflite/b{batch}/{stat}/int8-vs-fp32", metric(stat, "fp32 .tflite"), batch, stat) for batch in BATCHES for stat in STATS]
    rows = []
    if not ok:
        return [skipped(name, m, TARGET, reason) for name, m, _, _ in names]
    art = ctx.artifacts("mnist", {"model": str(MNIST_MODEL)})
    models = {label: art[key] for label, key in (("ours", "tflite_int8"), ("fp32", "tflite_fp32")) if art.get(key)}
    problems = "; ".join(art[k] for k in ("tflite_int8_error", "tflite_fp32_error") if art.get(k))
    per_batch = {batch: _collect(ctx, "mnist", "tflite", models, str(MNIST_EVAL), batch, ctx.settings.repeats) for batch in BATCHES}
    for name, m, batch, stat in names:
        stats, error = per_batch[batch]
        ours, fp32 = stats.get("ours", {}).get(stat), stats.get("fp32", {}).get(stat)
        note = "; ".join(filter(None, [
            "mpcompile int8 .tflite vs mpcompile fp32 .tflite (LiteRT Interpreter, num_threads = CPU count); "
            f"{ctx.settings.repeats} repeat(s), {_n(stats)} runs each{_spread(stats, 'fp32', stat)}",
            short_error(problems), error,
        ]))
        rows.append(row(name, m, ours, fp32, safe_div(fp32, ours), TARGET, note, ours_failed=ours is None))
    return rows

