"""``--objective latency``: of the auto search's plans within the accuracy budget, keep the one that runs fastest.

The search (``planning.auto``) finds the plan with the most INT8 MACs whose drop stays within the budget,
then, for this objective, promotes a few more groups and measures the float plan too. Fewer INT8 MACs can
be faster: an integer convolution with a tiny reduction, a requantization between two cheap ops, or a
model whose float kernels are simply better tuned (the PP-OCR classifier runs its int8 artifact at 0.4-0.8x
FP32 on every backend here). So each plan within budget is lowered for the first target and timed there at
batch 1, interleaved round by round (``bench.measure``, the code ``mpcompile bench`` runs), and the Pareto
table shows the measured p50. A plan other than the most-INT8 one is kept only when it is faster by more
than ``MARGIN``: a smaller difference is within what the rounds of a shared machine disagree by.

Which groups the extra rows promote (``LayerCost``, the search's ``propose`` hook): when the first target's runner
can profile (``Runner.profile``), the most-INT8 plan within budget and the float plan are lowered and timed per
layer, interleaved over ``PROFILE_ROUNDS`` rounds; each group's saving is its float cost minus its INT8 cost
(the Q/DQ around it included, ``backends.profile``), and the rows promote the groups whose INT8 cost exceeds
their float cost, largest loss first (``slower_in_int8``). Without a profiler (TFLite/LiteRT) they promote groups
in the search's accuracy order, as before. Either way every row is still timed end to end, which decides: the
per-layer figures only choose the candidates.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from mpcompile.backends.profile import LayerProfile, ProfilingUnavailable
from mpcompile.backends.targets import Target, lower_target
from mpcompile.bench import Subject, measure, median_profile, tile_batch
from mpcompile.errors import MpcompileError, PlanError
from mpcompile.ir.graph import Graph
from mpcompile.outputs import scratch_dir
from mpcompile.planning.auto import Group

#: groups promoted past the most-INT8 plan within budget, each measured as one more candidate
EXTRA_ROWS = 4
#: seconds timed per candidate (after warm-up) and interleaved rounds
SECONDS, ROUNDS = 0.6, 5
#: a candidate replaces the most-INT8 plan only when its p50 is at least this much lower
MARGIN = 0.05
#: per-layer profiles of the most-INT8 and the float plan: interleaved rounds, runs per round
PROFILE_ROUNDS, PROFILE_REPEATS = 3, 30
#: a group counts as slower in INT8 when it loses more than this (µs per run): below is the profilers' resolution
MIN_LOSS_US = 1.0


@dataclasses.dataclass(frozen=True)
class GroupCost:
    """One search group's measured cost per run on a backend, in INT8 (Q/DQ included) and in float."""

    group: Group
    int8_us: float
    float_us: float

    @property
    def saving_us(self) -> float:
        """What keeping the group in INT8 saves per run (negative: INT8 is slower)."""
        return self.float_us - self.int8_us

    def to_dict(self) -> dict[str, Any]:
        return {"nodes": list(self.group.nodes), "int8_us": round(self.int8_us, 3), "float_us": round(self.float_us, 3),
                "saving_us": round(self.saving_us, 3)}


def group_costs(groups: Sequence[Group], int8: LayerProfile, floats: LayerProfile) -> list[GroupCost]:
    """Every group's cost in the INT8 profile and in the float profile (per plan node, summed over the group)."""
    return [GroupCost(g, int8.cost_of(g.nodes), floats.cost_of(g.nodes)) for g in groups]


def slower_in_int8(costs: Sequence[GroupCost], promoted: Sequence[int] = (), min_loss_us: float = MIN_LOSS_US) -> list[GroupCost]:
    """The groups not yet promoted whose INT8 cost exceeds their float cost by more than ``min_loss_us``, largest
    loss first (ties: the search's group order)."""
    done = set(promoted)
    losing = [c for c in costs if c.group.index not in done and -c.saving_us > min_loss_us]
    return sorted(losing, key=lambda c: (c.saving_us, c.group.index))


class LayerCost:
    """The search's ``propose`` hook for ``--objective latency``: the groups slower in INT8 on ``target``, measured.

    Called once the most-INT8 plan within budget is known; it lowers that plan and the float plan for the target,
    profiles both per layer (``Runner.profile``) and returns the groups ``slower_in_int8`` orders, or None when the
    target has no profiler or a profile fails (the search then promotes in accuracy order). ``notes`` and ``costs``
    say what it found; ``fastest_within_budget`` adds them to the result."""

    def __init__(self, target: Target, sample: dict, *, rounds: int = PROFILE_ROUNDS, repeats: int = PROFILE_REPEATS,
                 profile: Callable[[Target, Graph, Graph, dict], tuple[LayerProfile, LayerProfile]] | None = None) -> None:
        self.target = target
        self.sample = sample
        self.rounds, self.repeats = rounds, repeats
        self._profile = profile or self.profile_pair
        self.notes: list[str] = []
        self.costs: list[GroupCost] = []
        self.order: list[GroupCost] | None = None

    def __call__(self, plan_for: Callable[[Sequence[int]], Graph], promoted: tuple[int, ...],
                 groups: Sequence[Group]) -> list[int] | None:
        name = self.target.name
        try:
            int8, floats = self._profile(self.target, plan_for(promoted), plan_for([g.index for g in groups]), self.sample)
        except ProfilingUnavailable as exc:
            self.notes.append(f"per-layer cost not available on {name} ({str(exc).splitlines()[0]}): the extra rows "
                              "promote groups in accuracy order")
            return None
        except MpcompileError as exc:
            self.notes.append(f"per-layer cost on {name} failed ({str(exc).splitlines()[0]}): the extra rows promote "
                              "groups in accuracy order")
            return None
        self.costs = group_costs(groups, int8, floats)
        self.order = slower_in_int8(self.costs, promoted)
        if not self.order:
            self.notes.append(f"per-layer cost on {name}: no group of the plan costs more in INT8 than in float "
                              f"(INT8 {int8.total_us:.0f} µs, float {floats.total_us:.0f} µs per run at batch 1); the extra "
                              "rows are the float plan only")
            return []
        worst = ", ".join(f"{c.group.label} {-c.saving_us:+.0f} µs" for c in self.order[:3])
        lost = sum(-c.saving_us for c in self.order)
        self.notes.append(f"per-layer cost on {name}: {len(self.order)} group(s) cost more in INT8 than in float, "
                          f"{lost:.0f} µs per run together (largest: {worst}; INT8 {int8.total_us:.0f} µs, float "
                          f"{floats.total_us:.0f} µs per run at batch 1); the extra rows promote them largest loss first")
        return [c.group.index for c in self.order]

    def profile_pair(self, target: Target, int8_plan: Graph, float_plan: Graph, sample: dict) -> tuple[LayerProfile, LayerProfile]:
        """Lower both plans for ``target`` and profile them per layer, interleaved round by round."""
        feeds = tile_batch(sample, 1)
        with scratch_dir("mpcompile-layer-cost-") as work:
            runners, nodes = [], []
            try:
                for label, plan in (("int8", int8_plan), ("float", float_plan)):
                    lowered = lower_target(target, plan, Path(work) / label, "plan")
                    if lowered.artifact is None:
                        raise ProfilingUnavailable(f"the {label} plan did not lower "
                                                   f"({(lowered.error or 'no artifact').splitlines()[0]})")
                    runner = target.backend.runner(lowered.artifact, target.options)
                    runners.append(runner)
                    if not getattr(runner, "supports_profile", False):
                        raise ProfilingUnavailable(f"{type(runner).__name__} has no per-layer profiler")
                    nodes.append([n.name for n in (lowered.plan or plan).nodes])
                rounds: list[list[LayerProfile]] = [[], []]
                for _ in range(self.rounds):
                    for i, runner in enumerate(runners):
                        rounds[i].append(runner.profile(feeds, self.repeats, nodes[i]))
            finally:
                for runner in runners:
                    runner.close()
        return median_profile(rounds[0]), median_profile(rounds[1])


def fastest_within_budget(auto: Any, targets: list[Target], sample: dict, cost: LayerCost | None = None) -> None:
    """Time every plan of ``auto`` (an ``AutoPlanResult``) within budget on ``targets[0]``; choose the fastest.

    ``cost``: the ``LayerCost`` hook the search was given; its notes and group costs go into the result."""
    if not targets:
        raise PlanError("--objective latency times the plans on a backend: name one with --backend")
    if cost is not None:
        auto.notes.extend(cost.notes)
        auto.layer_costs = [c.to_dict() for c in sorted(cost.costs, key=lambda c: c.saving_us)]
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
