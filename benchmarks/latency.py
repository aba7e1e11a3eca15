"""Case 4: inference latency of mpcompile's ONNX Runtime artifact vs ORT ``quantize_static``'s
artifact and vs the FP32 model, at batch 1 and 32 (p50, p90); and, when mpcompile's TFLite backend
is available, its int8 ``.tflite`` vs its fp32 ``.tflite`` (``--precision fp32``).

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
                    for versus, label in (("vs-ort-quantize_static", "peer"), ("vs-fp32", "fp32")):
                        rows.append(skipped(f"latency/{key}/b{batch}/{stat}/{versus}", metric(stat, label), TARGET, reason))
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


def _spread(stats: dict[str, Any], other: str, stat: str) -> str:
    """The ratio other/ours of each repeat, so that a reader can judge noise around 1."""
    ratios = [
        run[other][stat] / run["ours"][stat]
        for run in stats.get("_runs", [])
        if other in run and "ours" in run and run["ours"][stat]
    ]
    if len(ratios) < 2:
        return ""
    return f"; ratio per repeat {min(ratios):.3f}–{max(ratios):.3f}"


def _onnx(ctx: Context, key: str, paths: dict[str, Any]) -> list[Row]:
    art = ctx.artifacts(key, paths)
    models = {label: art[label] for label in ("ours", "peer", "fp32") if art.get(label)}
    data = str(MNIST_EVAL) if key == "mnist" else paths["eval"]
    repeats = ctx.settings.repeats if key == "mnist" else ctx.settings.repeats_large
    rows = []
    for batch in BATCHES:
        stats, error = _collect(ctx, key, "onnx", models, data, batch, repeats)
        for stat in STATS:
            ours = stats.get("ours", {}).get(stat)
            for versus, label, what in (
                ("vs-ort-quantize_static", "peer", "ORT quantize_static per-channel QDQ (S8S8, MinMax)"),
                ("vs-fp32", "fp32", "the FP32 model"),
            ):
                other = stats.get(label, {}).get(stat)
                notes = [f"peer: {what}; {repeats} repeat(s), {_n(stats)} runs each{_spread(stats, label, stat)}"]
                if art.get("ours_error"):
                    notes.append(f"no mpcompile artifact: {short_error(art['ours_error'])}")
                if label == "peer" and art.get("peer_error"):
                    notes.append(f"no peer artifact: {short_error(art['peer_error'])}")
                if error:
                    notes.append(f"errors: {error}")
                rows.append(
                    row(
                        f"latency/{key}/b{batch}/{stat}/{versus}",
                        metric(stat, "peer" if label == "peer" else "FP32"),
                        ours,
                        other,
                        safe_div(other, ours),
                        TARGET,
                        "; ".join(notes),
                        ours_failed=ours is None,
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

