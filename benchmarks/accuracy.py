"""Case 5: accuracy of the int8 artifacts.

- MNIST: top-1 on ``models/mnist_cnn.eval.npz`` (1,000 held-out images) of mpcompile's ONNX Runtime
  artifact, ORT ``quantize_static``'s (per-channel QDQ, same calibration data) and the FP32 model.
- MiniLM: cosine similarity of each int8 artifact's embedding with the FP32 embedding, on held-out
  generated sentences (``export_minilm.make_sentences``, seed 1000; not the calibration sentences).

Deterministic: one run each. Every model runs in a default ``InferenceSession``.
"""

from __future__ import annotations

from typing import Any

from benchmarks.common import MNIST_EVAL, Context, Row, WorkerError, row, safe_div, short_error, skipped

TOP1_VS_PEER = ">= 0.998"  # within 2 of 1,000 images (~98 % accuracy) of the peer
TOP1_VS_FP32 = ">= 0.99"  # int8 keeps at least 99 % of FP32's top-1
COSINE_VS_PEER = ">= 1"  # at least as close to FP32 as the peer's artifact


def run(ctx: Context) -> list[Row]:
    rows: list[Row] = []
    for key, paths, reason in ctx.models():
        if key == "mnist":
            rows.extend(_mnist(ctx, paths))
        elif paths is None:
            rows.append(skipped("accuracy/minilm/cosine-mean", _COS_METRIC, COSINE_VS_PEER, reason))
            rows.append(skipped("accuracy/minilm/cosine-min", _COS_MIN_METRIC, None, reason))
        else:
            rows.extend(_minilm(ctx, paths))
    return rows


def _evaluate(ctx: Context, task: str, art: dict[str, Any], data: str) -> tuple[dict[str, dict[str, float]], list[str], int]:
    models = {label: art[label] for label in ("fp32", "ours", "peer") if art.get(label)}
    problems = [short_error(art[k]) for k in ("ours_error", "peer_error") if art.get(k)]
    ctx.log(f"accuracy ({task}) on {data}")
    try:
        res = ctx.job("accuracy", {"task": task, "models": models, "data": data})
    except WorkerError as exc:
        return {}, [*problems, f"crashed: {short_error(str(exc).splitlines()[-1])}"], 0
    if res.error:
        return {}, [*problems, res.error], 0
    problems += [f"{label}: {e}" for label, e in res.data.get("errors", {}).items()]
    return res.data["metrics"], problems, res.data.get("samples", 0)


def _mnist(ctx: Context, paths: dict[str, Any]) -> list[Row]:
    art = ctx.artifacts("mnist", paths)
    metrics, problems, n = _evaluate(ctx, "top1", art, str(MNIST_EVAL))
    ours = metrics.get("ours", {}).get("top1")
    peer = metrics.get("peer", {}).get("top1")
    fp32 = metrics.get("fp32", {}).get("top1")
    base = f"{n} held-out images; calibration: models/mnist_cnn.calib.npz (500)"
    note = "; ".join([base, *problems])
    return [
        row(
            "accuracy/mnist/top1/vs-ort-quantize_static",
            "top-1 accuracy; ratio = mpcompile/peer (ORT quantize_static per-channel QDQ)",
            ours, peer, safe_div(ours, peer), TOP1_VS_PEER, note, ours_failed=ours is None,
        ),
        row(
            "accuracy/mnist/top1/vs-fp32",
            "top-1 accuracy; ratio = mpcompile/FP32",
            ours, fp32, safe_div(ours, fp32), TOP1_VS_FP32, note, ours_failed=ours is None,
        ),
    ]


_COS_METRIC = "mean cosine(int8 embedding, FP32 embedding); ratio = mpcompile/peer (ORT quantize_static)"
_COS_MIN_METRIC = "worst-sample cosine with FP32; ratio = mpcompile/peer"


def _minilm(ctx: Context, paths: dict[str, Any]) -> list[Row]:
    art = ctx.artifacts("minilm", paths)
    metrics, problems, n = _evaluate(ctx, "cosine", art, paths["eval"])
    ours, peer = metrics.get("ours", {}), metrics.get("peer", {})
    note = "; ".join([f"{n} held-out sentences (seed 1000), 32 tokens; calibration: {paths['samples']} generated sentences", *problems])
    rows = []
    for name, m, stat, target in (
        ("accuracy/minilm/cosine-mean", _COS_METRIC, "cosine_mean", COSINE_VS_PEER),
        ("accuracy/minilm/cosine-min", _COS_MIN_METRIC, "cosine_min", None),
    ):
        o, p = ours.get(stat), peer.get(stat)
        rows.append(row(name, m, o, p, safe_div(o, p), target, note, ours_failed=o is None))
    return rows
