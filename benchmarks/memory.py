"""Case 2: peak memory of calibration with 10x more samples (MNIST, 1,000 vs 10,000, entropy).

mpcompile's observers keep O(bins) state, so its peak RSS should not grow with the data; ORT's
histogram calibrators keep every batch's activations until ``compute_data``. Both data formats
mpcompile reads are measured: a stored (uncompressed) ``.npz``, which mpcompile memory-maps, and a
compressed one, which it decompresses as a stream. ORT's reader loads the array (as user code does).
"""

from __future__ import annotations

import math
from typing import Any

from benchmarks.calibration import _measure
from benchmarks.common import MNIST_BATCH, MNIST_MODEL, Context, Row, median, row, safe_div, short_error

GROWTH_TARGET = "<= 1.1"
METHOD = "entropy"


def run(ctx: Context) -> list[Row]:
    repeats = ctx.settings.repeats
    peer_repeats = ctx.settings.repeats_large  # ORT at 10x: ~15 s and ~3 GB per run
    model = str(MNIST_MODEL)
    data = {
        (fmt, scale): str(ctx.mnist_data(1000 * scale, compressed=(fmt == "compressed")))
        for fmt in ("stored", "compressed")
        for scale in (1, 10)
    }
    ours: dict[tuple[str, int], list[dict[str, Any]]] = {k: [] for k in data}
    peer: dict[int, list[dict[str, Any]]] = {1: [], 10: []}
    for r in range(repeats):
        ctx.log(f"memory growth: repeat {r + 1}/{repeats}")
        keys = list(data) if r % 2 == 0 else list(reversed(list(data)))
        for k in keys:
            ours[k].append(_measure(ctx, "calib_ours", {"model": model, "data": data[k], "method": METHOD, "batch": MNIST_BATCH}))
        if r < peer_repeats:
            for scale in (10, 1) if r % 2 else (1, 10):
                args = {"model": model, "data": data[("stored", scale)], "method": METHOD, "batch": MNIST_BATCH}
                peer[scale].append(_measure(ctx, "calib_ort", args))

    def med(results: list[dict[str, Any]], field: str) -> float | None:
        return median(x.get(field) for x in results if "error" not in x)

    def err(results: list[dict[str, Any]]) -> str:
        errors = [x["error"] for x in results if "error" in x]
        return short_error(errors[0]) if errors else ""

    peer_growth = safe_div(med(peer[10], "peak"), med(peer[1], "peak"))
    rows = []
    for fmt in ("stored", "compressed"):
        o1, o10 = med(ours[(fmt, 1)], "peak"), med(ours[(fmt, 10)], "peak")
        growth = safe_div(o10, o1)
        how = "memory-mapped by mpcompile" if fmt == "stored" else "decompressed as a stream by mpcompile"
        note = (
            f"{fmt} .npz ({how}); mpcompile peak RSS {_mib(o1)} → {_mib(o10)} MiB, ORT {_mib(med(peer[1], 'peak'))} → "
            f"{_mib(med(peer[10], 'peak'))} MiB; {repeats} repeat(s) (ORT: {peer_repeats}); ORT reads the stored file"
        )
        problems = "; ".join(filter(None, [err(ours[(fmt, 1)] + ours[(fmt, 10)]), err(peer[1] + peer[10])]))
        if problems:
            note += f"; errors: {problems}"
        rows.append(
            row(
                f"memory/mnist/{METHOD}/10x-samples-growth-{fmt}",
                "peak RSS at 10,000 samples / at 1,000 (each tool); ratio = mpcompile's",
                growth,
                peer_growth,
                growth,
                GROWTH_TARGET,
                note,
                ours_failed=growth is None,
            )
        )
    o10, p10 = med(ours[("stored", 10)], "peak"), med(peer[10], "peak")
    rows.append(
        row(
            f"memory/mnist/{METHOD}/peak-rss-10x",
            "peak RSS at 10,000 samples [MiB]; ratio = mpcompile/ORT",
            o10,
            p10,
            safe_div(o10, p10),
            "<= 0.25",
            "stored .npz; same target as the histogram methods in case 1",
            ours_failed=o10 is None,
        )
    )
    t10, pt10 = med(ours[("stored", 10)], "seconds"), med(peer[10], "seconds")
    rows.append(
        row(
            f"memory/mnist/{METHOD}/time-10x",
            "calibration time at 10,000 samples [s]; ratio = ORT/mpcompile (speedup)",
            t10,
            pt10,
            safe_div(pt10, t10),
            ">= 3",
            "stored .npz; same target as the histogram methods in case 1",
            ours_failed=t10 is None,
        )
    )
    return rows


def _mib(value: float | None) -> str:
    return "?" if value is None or not math.isfinite(value) else f"{value:.0f}"
