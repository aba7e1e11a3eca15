"""Case 1: calibration time and peak memory, mpcompile vs ONNX Runtime's calibrators, and the
calibration overhead over plain FP32 inference.

For each model (MNIST CNN on 1,000 images; MiniLM on its generated sentences, and again without
padding, where ORT's histogram calibrators can run: see ``ACTIVATION_OP_TYPES``) and each method
(minmax, entropy, percentile), every repeat runs in fresh processes, interleaved:
mpcompile ``pipeline.calibrate`` ↔ ORT ``create_calibrator`` + ``collect_data`` + ``compute_data``,
plus one plain ``InferenceSession`` pass over the same batches. Medians are reported.
"""

from __future__ import annotations

from typing import Any

from benchmarks.common import (
    MINILM_BATCH,
    MNIST_BATCH,
    Context,
    Row,
    WorkerError,
    median,
    row,
    safe_div,
    short_error,
    skipped,
)

METHODS = ("minmax", "entropy", "percentile")
HISTOGRAM = ("entropy", "percentile")
ORT_SETTINGS = {
    "minmax": "ORT MinMax",
    "entropy": "ORT Entropy (its defaults: 128 bins, 128 quantized bins; mpcompile: 2048 |x| bins)",
    "percentile": "ORT Percentile (its defaults: 2048 bins, 99.999; mpcompile: 2048 bins, 99.999)",
}


def targets(method: str) -> dict[str, str | None]:
    """The latency issue's restatement: at least 3x faster than ORT's calibrators; at most 1.5x one FP32 pass over
    the data for minmax and 3x for the histogram methods (exact binning costs about 2.2 ns per value, so 1.5x lay
    below that floor on activation-heavy models)."""
    if method in HISTOGRAM:
        return {"time": ">= 3", "memory": "<= 0.25", "overhead": "<= 3"}
    return {"time": ">= 3", "memory": None, "overhead": "<= 1.5"}


METRICS = {
    "time": "calibration time [s]; ratio = ORT/mpcompile (speedup)",
    "peak": "peak RSS of the calibrating process [MiB]; ratio = mpcompile/ORT",
    "working": "peak RSS − RSS before calibrating (imports, warm-up excluded) [MiB]; ratio = mpcompile/ORT",
    "overhead": "calibration time / FP32 ORT inference time on the same batches; ratio = mpcompile's",
}


def _measure(ctx: Context, job: str, args: dict[str, Any]) -> dict[str, Any]:
    try:
        res = ctx.job(job, args)
    except WorkerError as exc:
        return {"error": f"crashed: {short_error(str(exc).splitlines()[-1])}"}
    if res.error:
        return {"error": res.error}
    d = res.data
    base = d.get("baseline_mib")
    return {
        "seconds": d["seconds"],
        "peak": res.peak_rss_mib,
        "working": res.peak_rss_mib - base if base is not None else None,
        "note": d.get("note", ""),
    }


#: What ORT's calibrators are given for "minilm-unpadded": the op types whose outputs carry
#: activations. The export builds its attention mask from ConstantOfShape(float32 min) and
#: Where, tensors of -3.4e38 that ORT's histograms cannot bin ("Too many bins for data range")
#: whatever the data; without them, and without padding, ORT's histogram calibrators run.
ACTIVATION_OP_TYPES = ["MatMul", "Add", "Mul", "Div", "Sub", "Softmax", "Erf", "Gather", "Pow", "Sqrt", "ReduceMean",
                       "Tanh", "Transpose", "Reshape"]


def run(ctx: Context) -> list[Row]:
    rows: list[Row] = []
    models = ctx.models()
    minilm = next((paths for key, paths, _ in models if key == "minilm"), None)
    unpadded = (_unpadded(ctx, minilm), "") if minilm is not None else (None, ctx.minilm_error)
    for key, paths, reason in [*models, ("minilm-unpadded", *unpadded)]:
        if paths is None:
            for method in METHODS:
                t = targets(method)
                for kind, target_key in (("time", "time"), ("peak", "memory"), ("working", "memory"), ("overhead", "overhead")):
                    rows.append(skipped(f"calibration/{key}/{method}/{kind}", METRICS[kind], t[target_key], reason))
            continue
        rows.extend(_model(ctx, key, paths))
    return rows


def _unpadded(ctx: Context, minilm: dict[str, Any]) -> dict[str, Any]:
    """MiniLM's calibration sentences with an all-ones attention mask (no padding), for ORT's
    histogram calibrators, which fail on the padded data (see ``ACTIVATION_OP_TYPES``)."""
    import numpy as np

    path = ctx.workdir / "minilm_calib_unpadded.npz"
    with np.load(minilm["calib"]) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["attention_mask"] = np.ones_like(arrays["attention_mask"])
    np.savez(path, **arrays)
    return {**minilm, "calib": str(path), "peer_op_types": ACTIVATION_OP_TYPES}


def _model(ctx: Context, key: str, paths: dict[str, Any]) -> list[Row]:
    batch = MNIST_BATCH if key == "mnist" else MINILM_BATCH
    repeats = ctx.settings.repeats if key == "mnist" else ctx.settings.repeats_large
    common = {"model": paths["model"], "data": paths["calib"], "batch": batch}
    peer_args = {"op_types": paths["peer_op_types"]} if paths.get("peer_op_types") else {}
    ours: dict[str, list[dict[str, Any]]] = {m: [] for m in METHODS}
    peer: dict[str, list[dict[str, Any]]] = {m: [] for m in METHODS}
    fp32: list[dict[str, Any]] = []
    for r in range(repeats):
        ctx.log(f"calibration {key}: repeat {r + 1}/{repeats}")
        fp32.append(_measure(ctx, "fp32_infer", common))
        for method in METHODS:
            pair = [("ours", "calib_ours"), ("peer", "calib_ort")]
            for who, job in pair if r % 2 == 0 else reversed(pair):
                extra = peer_args if who == "peer" else {}
                (ours if who == "ours" else peer)[method].append(_measure(ctx, job, {**common, "method": method, **extra}))
    fp32_s = median(m.get("seconds") for m in fp32)
    rows = []
    samples = paths["samples"]
    for method in METHODS:
        t = targets(method)
        o = _summarize(ours[method])
        p = _summarize(peer[method])
        base_note = f"{samples} samples, batch {batch}, {repeats} repeat(s); peer: {ORT_SETTINGS[method]}"
        if peer_args:
            base_note += ("; attention mask all ones, ORT given only the outputs of "
                          f"{len(peer_args['op_types'])} activation op types (mpcompile: every float activation)")
        notes = [base_note]
        if o["note"]:
            notes.append(f"mpcompile: {o['note']}; timed import + calibrate_graph + int8 range of every tensor instead")
        if o["error"]:
            notes.append(f"mpcompile failed: {o['error']}")
        if p["error"]:
            notes.append(f"peer failed: {p['error']}")
        note = "; ".join(notes)
        failed = o["seconds"] is None
        name = f"calibration/{key}/{method}"
        rows.append(row(f"{name}/time", METRICS["time"], o["seconds"], p["seconds"], safe_div(p["seconds"], o["seconds"]), t["time"], note, ours_failed=failed))
        rows.append(row(f"{name}/peak-rss", METRICS["peak"], o["peak"], p["peak"], safe_div(o["peak"], p["peak"]), t["memory"], note, ours_failed=failed))
        rows.append(row(f"{name}/working-mem", METRICS["working"], o["working"], p["working"], safe_div(o["working"], p["working"]), t["memory"], note, ours_failed=failed))
        over_o, over_p = safe_div(o["seconds"], fp32_s), safe_div(p["seconds"], fp32_s)
        fp32_note = f"FP32 inference (InferenceSession creation + all batches): {fp32_s:.4g} s" if fp32_s else "FP32 inference failed"
        rows.append(row(f"{name}/overhead", METRICS["overhead"], over_o, over_p, over_o, t["overhead"], f"{note}; {fp32_note}", ours_failed=failed))
    return rows


def _summarize(results: list[dict[str, Any]]) -> dict[str, Any]:
    errors = [r["error"] for r in results if "error" in r]
    ok = [r for r in results if "error" not in r]
    notes = sorted({r["note"] for r in ok if r.get("note")})
    return {
        "seconds": median(r["seconds"] for r in ok),
        "peak": median(r["peak"] for r in ok),
        "working": median(r["working"] for r in ok),
        "error": short_error(errors[0]) if errors else "",
        "note": short_error("; ".join(notes), 300),
    }
