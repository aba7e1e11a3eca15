"""``--objective latency``: of the auto search's plans within the accuracy budget, keep the one that runs fastest.

The search (``planning.auto``) finds the plan with the most INT8 MACs whose drop stays within the budget,
then, for this objective, promotes a few more groups and measures the float plan too. Fewer INT8 MACs can
be faster: an integer convolution with a tiny reduction, a requantization between two cheap ops, or a
model whose float kernels are simply better tuned (the PP-OCR classifier runs its int8 artifact at 0.4-0.8x
FP32 on every backend here). So each plan within budget is lowered for the first target and timed there at
batch 1, interleaved round by round (``bench.measure``, the code ``mpcompile bench`` runs), and the Pareto
table shows the measured p50. A plan other than the most-INT8 one is kept only when it is faster by more
than ``MARGIN``: a smaller difference is within what the rounds of a shared machine disagree by.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mpcompile.backends.targets import Target, lower_target
from mpcompile.bench import Subject, measure, tile_batch
from mpcompile.errors import PlanError
from mpcompile.outputs import scratch_dir

#: groups promoted past the most-INT8 plan within budget, each measured as one more candidate
EXTRA_ROWS = 4
#: seconds timed per candidate (after warm-up) and interleaved rounds
SECONDS, ROUNDS = 0.6, 5
#: a candidate replaces the most-INT8 plan only when its p50 is at least this much lower
MARGIN = 0.05


def fastest_within_budget(auto: Any, targets: list[Target], sample: dict) -> None:
    """Time every plan of ``auto`` (an ``AutoPlanResult``) within budget on ``targets[0]``; choose the fastest."""
    if not targets:
        raise PlanError("--objective latency times the plans on a backend: name one with --backend")
    target = targets[0]
    candidates = [row for row in auto.rows if row.meets_budget]
    timed_rows, subjects = [], []
    with scratch_dir("mpcompile-objective-") as work:
        for i, row in enumerate(candidates):
            lowered = lower_target(target, auto.plan_of(row), Path(work) / f"row{i}", "plan")
            if lowered.artifact is None:
                auto.notes.append(f"objective latency: the plan with {row.promoted} group(s) promoted did not lower for "
                                  f"{target.name} ({(lowered.error or 'no artifact').splitlines()[0]})")
                continue
            timed_rows.append(row)
            subjects.append(Subject(f"{row.promoted} promoted", lowered.artifact, target.backend, target.options))
        report = measure(subjects, lambda batch: tile_batch(sample, batch), batches=[1], seconds=SECONDS, rounds=ROUNDS)
    for row, result in zip(timed_rows, report.results):
        row.latency_ms = result.timings[1].p50_ms if 1 in result.timings else None
    timed = [row for row in timed_rows if row.latency_ms is not None]
    if not timed:
        auto.notes.append(f"objective latency: no plan within budget could be timed on {target.name}; "
                          "the one with the most INT8 MACs is kept")
        return
    most_int8 = auto.chosen
    best = min(timed, key=lambda row: (row.latency_ms, row.promoted))
    base = most_int8.latency_ms
    if best is most_int8 or base is None or best.latency_ms > base * (1 - MARGIN):
        auto.notes.append(f"objective latency on {target.name}: the plan with the most INT8 MACs is also the fastest "
                          f"within budget ({base:.3f} ms at batch 1)" if base is not None else
                          f"objective latency on {target.name}: the plan with the most INT8 MACs could not be timed")
        return
    floats = best.int8_mac_share == 0.0
    what = "the float plan" if floats else f"the plan with {best.promoted} group(s) promoted"
    auto.choose(best, f"objective latency on {target.name}: {what} runs in {best.latency_ms:.3f} ms at batch 1 against "
                      f"{base:.3f} ms for the plan with the most INT8 MACs ({most_int8.int8_mac_share:.1%}), within the "
                      f"same budget" + ("; INT8 does not pay for this model on this backend" if floats else ""))
