"""The automatic mixed-precision planner: as much INT8 as the accuracy budget allows, for the targets.

1. Plan everything INT8 under the targets' constraints (symmetric activations where a target
   demands them) and measure every candidate on each target's *legalized* plan with the
   fake-quant reference, one metric per output (``planning.metrics``), against FP32 on the
   evaluation data. The drop of a candidate is its worst output on its worst target.
2. Decide on tensor groups, not nodes: nodes that share a quantized tensor (a producer and the
   activation fused into it, a data-movement op and the producer whose scale it reuses, the
   weighted consumers of one input such as Q/K/V) are promoted together, so a promotion
   removes quantization points instead of moving them.
3. Rank the groups by their effect on the model's outputs: each group alone promoted, the
   output noise (per output, per channel, relative to uniform INT8) measured on the first
   ``rank_samples`` samples. Gain per real MAC (shapes observed on real data; recurrent ops
   counted) orders them.
4. Greedy promotion with re-evaluation: the best ``RECHECK`` groups by their last known score
   are measured again in the current plan, the best of them is promoted, and the task metric
   on all the evaluation data decides whether the budget is met. Groups that stop helping
   (the curve is not monotone) are passed over. When no score left is positive, every remaining
   group is measured once more in the current plan (re-ranked: what looked useless beside the
   dominant culprits may matter once they are gone). If no single group helps even then, the
   remaining ones are promoted cheapest first, in doubling blocks.

Promotions are FP16 only where every target runs FP16, else FP32. Every evaluation is a task of
``executor``: the tasks of one step are fixed by the step alone, so the plan, the rows and the
ranking are the same on any executor and any number of workers. Memory: the FP32 outputs of
the evaluation data once; candidates' outputs are reduced to sums batch by batch.
"""

from __future__ import annotations

import dataclasses
import importlib
import time
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from mpcompile.backends.targets import Target
from mpcompile.data import Dataset
from mpcompile.errors import PlanError
from mpcompile.execution import Executor, SequentialExecutor
from mpcompile.ir import ops
from mpcompile.ir.cost import RECURRENT_GATES, Shapes, node_cost
from mpcompile.ir.graph import Graph
from mpcompile.planning import metrics as m
from mpcompile.planning.config import Override, PlanConfig
from mpcompile.planning.constraints import TargetConstraints, constraints_of
from mpcompile.planning.plan import make_plan
from mpcompile.planning.stats import TensorStatistics
from mpcompile.progress import progress_bar
from mpcompile.reference import ReferenceRunner

METRICS = m.METRICS
MetricFn = Callable[[dict[str, np.ndarray], dict[str, np.ndarray]], float]
#: ``propose(plan_for, promoted, groups)`` -> groups to promote next, in order, or None (see ``auto_plan``)
Propose = Callable[[Callable[[Sequence[int]], Graph], tuple[int, ...], Sequence["Group"]], "Sequence[int] | None"]
#: Groups re-measured in the current plan before each promotion (fixed: the result never depends on workers).
RECHECK = 4
#: A group's cost is its MACs plus this share of the model's: keeps a MAC-free group with a tiny gain
#: from outranking a convolution that removes most of the noise.
MAC_FLOOR = 0.002


def load_metric_fn(spec: str) -> MetricFn:
    module, _, attr = spec.partition(":")
    if not attr:
        raise PlanError(f"--metric-fn {spec!r} must look like module:function")
    try:
        return getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as exc:
        raise PlanError(f"--metric-fn {spec!r}: cannot import it ({exc})") from None


# ============================================================================ results
@dataclasses.dataclass
class ParetoRow:
    """One plan the greedy path measured on all the evaluation data."""

    promoted: int  # groups promoted
    nodes_in_float: int
    drop: float  # worst output on the worst target
    int8_mac_share: float  # of real MACs, worst target's legalized plan
    int8_weight_share: float
    meets_budget: bool
    drops: dict[str, float] = dataclasses.field(default_factory=dict)  # "target:output" -> drop
    #: ``--objective latency``: p50 at batch 1 of the row's artifact on the timed backend (None: not timed)
    latency_ms: float | None = None

    def to_dict(self) -> dict[str, Any]:
        out = {k: (round(v, 6) if isinstance(v, float) else v) for k, v in dataclasses.asdict(self).items()}
        out["drops"] = {k: round(v, 6) for k, v in self.drops.items()}
        return out


@dataclasses.dataclass(frozen=True)
class Group:
    """Nodes decided together: they share a quantized tensor."""

    index: int
    nodes: tuple[str, ...]
    macs: int
    weights: int

    @property
    def label(self) -> str:
        return self.nodes[0] + (f" (+{len(self.nodes) - 1})" if len(self.nodes) > 1 else "")


@dataclasses.dataclass(frozen=True)
class RankedGroup:
    group: Group
    gain: float  # reduction of the relative output noise when promoted alone
    score: float  # gain per MAC (with the floor)

    def to_dict(self) -> dict[str, Any]:
        return {"nodes": list(self.group.nodes), "macs": self.group.macs, "gain": round(self.gain, 6),
                "score": float(f"{self.score:.6g}")}


@dataclasses.dataclass
class SearchCost:
    evaluations: int  # candidate plans run (each on every distinct legalization of the targets)
    seconds: float
    samples: int
    rank_samples: int
    groups: int
    ranked: int  # groups measured alone (0 when uniform INT8 already met the budget)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self) | {"seconds": round(self.seconds, 3)}


#: Groups listed (and charted in the report) by their measured sensitivity.
SENSITIVITY_SHOWN = 40


@dataclasses.dataclass
class AutoPlanResult:
    plan: Graph
    metric: str
    budget: float
    rows: list[ParetoRow]
    chosen: ParetoRow
    ranking: list[RankedGroup]
    metrics: list[m.OutputMetric]
    constraints: str
    promotion: str
    cost: SearchCost
    notes: list[str] = dataclasses.field(default_factory=list)
    #: builds the plan of a row (its promoted groups marked with why); see ``plan_of``
    builder: Callable[[ParetoRow], Graph] | None = None
    #: ``--objective latency`` with a profiler: each group's measured µs per run in INT8 and in float, largest loss first
    layer_costs: list[dict[str, Any]] = dataclasses.field(default_factory=list)

    def plan_of(self, row: ParetoRow) -> Graph:
        """The plan the search measured as ``row`` (a fresh graph, its promoted nodes saying why)."""
        if self.builder is None:
            raise PlanError("this auto plan result cannot rebuild its rows")
        return self.builder(row)

    def choose(self, row: ParetoRow, why: str) -> None:
        """Make ``row`` the chosen plan (``--objective latency``), with the reason as a note."""
        self.chosen, self.plan = row, self.plan_of(row)
        self.notes.append(why)

    def format_table(self) -> str:
        lines = [f"automatic mixed precision, max drop {self.budget:g} per output, {self.constraints}"]
        lines += [f"  metric {d.describe()}" for d in self.metrics] or [f"  metric {self.metric}"]
        timed = any(r.latency_ms is not None for r in self.rows)
        lines.append("  promoted groups  nodes in float  drop        INT8 MACs  INT8 weights  within budget"
                     + ("  b1 p50 ms" if timed else ""))
        for r in self.rows:
            mark = " ← chosen" if r is self.chosen else ""
            latency = (f"  {r.latency_ms:9.3f}" if r.latency_ms is not None else f"  {'—':>9}") if timed else ""
            lines.append(f"  {r.promoted:15d}  {r.nodes_in_float:14d}  {r.drop:<10.5g}  {r.int8_mac_share:8.1%}  "
                         f"{r.int8_weight_share:11.1%}  {'yes' if r.meets_budget else 'no':>13}{latency}{mark}")
        c = self.cost
        ranked = f"{c.ranked} of {c.groups} groups ranked on {c.rank_samples} samples, " if c.ranked else \
            f"{c.groups} groups, none ranked: "
        lines.append(f"  search cost: {c.evaluations} evaluations, {c.seconds:.1f}s ({ranked}the metric on {c.samples} samples)")
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)

    def summary(self) -> dict[str, Any]:
        """What the manifest records."""
        return {
            "metric": self.metric,
            "metrics": {d.output: {"metric": d.metric, "reason": d.reason} for d in self.metrics},
            "max_accuracy_drop": self.budget,
            "constraints": self.constraints,
            "promotion": self.promotion,
            "chosen": self.chosen.to_dict(),
            "pareto": [row.to_dict() for row in self.rows],
            "promoted": [g.to_dict() for g in self.ranking if set(g.group.nodes) <= self._float_nodes()],
            # the sensitivity the search measured: each group's gain when promoted alone, largest first
            "sensitivity": [g.to_dict() for g in sorted(self.ranking, key=lambda g: -g.gain)[:SENSITIVITY_SHOWN]],
            "cost": self.cost.to_dict(),
            "notes": list(self.notes),
        } | ({"layer_cost": self.layer_costs} if self.layer_costs else {})

    def _float_nodes(self) -> set[str]:
        return {n.name for n in self.plan.nodes if n.precision_reason.startswith("auto:")}


# ============================================================================ groups and shapes
def observed_shapes(graph: Graph, batch: dict[str, np.ndarray]) -> dict[str, tuple[int, ...]]:
    """Concrete shapes of the tensors MAC counts need and the IR leaves symbolic, from one FP32 run."""
    from mpcompile.ortsession import make_session

    wanted = []
    for node in graph.nodes:
        if node.op_type in ops.WEIGHTED or node.op_type in RECURRENT_GATES:
            for name in node.inputs[:3] + node.outputs[:1]:
                t = graph.tensors.get(name) if name else None
                if t is not None and not t.is_constant and not (t.shape and all(isinstance(d, int) for d in t.shape)):
                    wanted.append(name)
    wanted = list(dict.fromkeys(wanted))
    if not wanted:
        return {}
    session = make_session(graph, wanted)
    names = [o.name for o in session.get_outputs()]
    values = session.run(names, batch)
    return {n: tuple(v.shape) for n, v in zip(names, values) if n in wanted}


def tensor_groups(plan: Graph, shapes: Shapes | None = None) -> list[Group]:
    """The integer nodes of ``plan`` in groups that share a quantized tensor, in topological order."""
    integer = [n for n in plan.nodes if n.precision is not None and n.precision.is_integer]
    parent = {n.name: n.name for n in integer}

    def find(x: str) -> str:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    def union(a: str, b: str) -> None:
        ra, rb = find(a), find(b)
        if ra != rb:
            first, second = sorted((ra, rb), key=order.__getitem__)
            parent[second] = first

    order = {n.name: i for i, n in enumerate(integer)}
    producers = plan.producers()
    consumers = plan.consumers()
    for node in integer:
        # A data-movement op reuses its input's spec: it and the producer of that input are one tensor.
        if node.op_type in ops.SCALE_PRESERVING and node.inputs and node.inputs[0] in producers:
            src = producers[node.inputs[0]]
            if src.name in parent:
                union(node.name, src.name)
        # A producer's output fused into its activation is never quantized: promoting one alone would add a Q/DQ.
        out = node.outputs[0] if node.outputs else ""
        users = [u for u in consumers.get(out, []) if u.name in parent]
        if node.op_type in ops.FUSING_PRODUCERS and len(consumers.get(out, [])) == 1 and users \
                and users[0].op_type in ops.FUSABLE_ACTIVATIONS and out not in plan.outputs:
            union(node.name, users[0].name)
    for name, tensor in plan.tensors.items():
        if tensor.is_constant or tensor.quant is None:
            continue
        # The weighted readers of one tensor (Q/K/V, parallel branches): one keeps it quantized for the others.
        readers = [u.name for u in consumers.get(name, []) if u.name in parent and u.op_type in ops.WEIGHTED]
        for other in readers[1:]:
            union(readers[0], other)
    members: dict[str, list[str]] = {}
    for node in integer:
        members.setdefault(find(node.name), []).append(node.name)
    groups = []
    for i, root in enumerate(sorted(members, key=order.__getitem__)):
        names = tuple(members[root])
        costs = [node_cost(plan, plan.node(n), shapes) for n in names]
        groups.append(Group(i, names, sum(c[0] for c in costs), sum(c[1] for c in costs)))
    return groups


def _shares(plan: Graph, shapes: Shapes | None) -> tuple[float, float]:
    macs = weights = int8_macs = int8_weights = 0
    for node in plan.nodes:
        mac, w = node_cost(plan, node, shapes)
        macs += mac
        weights += w
        if node.precision is not None and node.precision.is_integer:
            int8_macs += mac
            int8_weights += w
    return (int8_macs / macs if macs else 1.0, int8_weights / weights if weights else 1.0)


# ============================================================================ evaluation tasks
@dataclasses.dataclass(frozen=True)
class _Context:
    """What every evaluation task needs: sent to each worker once."""

    graph: Graph
    stats: TensorStatistics
    config: PlanConfig
    constraints: TargetConstraints
    groups: tuple[Group, ...]
    metrics: tuple[m.OutputMetric, ...]
    metric_fn: MetricFn | str | None
    batches: list[dict[str, np.ndarray]]
    fp32: list[dict[str, np.ndarray]]
    shapes: dict[str, tuple[int, ...]]


@dataclasses.dataclass
class _Measured:
    """One candidate on each distinct legalization: per "target:output", the drop and the output noise."""

    drops: dict[str, float]
    noise: dict[str, float]
    shares: tuple[float, float]

    @property
    def drop(self) -> float:
        return max(self.drops.values()) if self.drops else 0.0


def _candidate_config(ctx: _Context, promoted: Sequence[int]) -> PlanConfig:
    precision = ctx.constraints.promotion
    extra = tuple(Override(name, precision) for g in sorted(promoted) for name in ctx.groups[g].nodes)
    return dataclasses.replace(ctx.config, overrides=tuple(ctx.config.overrides) + extra, precision="mixed")


def _evaluate(ctx: _Context, item: tuple[tuple[int, ...], int]) -> _Measured:
    """The candidate with groups ``item[0]`` promoted, on the first ``item[1]`` batches: one executor task."""
    promoted, n_batches = item
    plan = make_plan(ctx.graph, ctx.stats, _candidate_config(ctx, promoted))
    drops: dict[str, float] = {}
    noise: dict[str, float] = {}
    worst_shares = (1.0, 1.0)
    fn = load_metric_fn(ctx.metric_fn) if isinstance(ctx.metric_fn, str) else ctx.metric_fn
    for names, legal in ctx.constraints.legalized(plan):
        runner = ReferenceRunner(legal)
        metric_sums = {d.output: None for d in ctx.metrics}
        noise_sums = {d.output: None for d in ctx.metrics}
        kept: list[dict[str, np.ndarray]] = []
        for batch, ref in zip(ctx.batches[:n_batches], ctx.fp32[:n_batches]):
            out = runner.run(batch)
            for d in ctx.metrics:
                s = m.batch_sums(d, ref[d.output], out[d.output]) if fn is None else None
                metric_sums[d.output] = s if metric_sums[d.output] is None or s is None else metric_sums[d.output] + s
                ns = m.noise_sums(ref[d.output], out[d.output])
                noise_sums[d.output] = ns if noise_sums[d.output] is None else noise_sums[d.output] + ns
            if fn is not None:
                kept.append(out)
        if fn is not None:
            f_all = {k: np.concatenate([o[k] for o in ctx.fp32[:n_batches]]) for k in ctx.graph.outputs}
            q_all = {k: np.concatenate([o[k] for o in kept]) for k in ctx.graph.outputs}
            value = float(fn(f_all, f_all)) - float(fn(f_all, q_all))
            if not np.isfinite(value):
                raise PlanError(f"--metric-fn {ctx.metric_fn!r} returned a non-finite score ({value}) on the plan for {names}")
            drops[f"{names}:metric-fn"] = value
        else:
            for d in ctx.metrics:
                drops[f"{names}:{d.output}"] = m.drop_of_sums(d, metric_sums[d.output])
        for d in ctx.metrics:
            noise[f"{names}:{d.output}"] = m.noise_of_sums(noise_sums[d.output])
        shares = _shares(legal, ctx.shapes)
        worst_shares = min(worst_shares, shares)
    return _Measured(drops, noise, worst_shares)


# ============================================================================ the search
def auto_plan(
    graph: Graph,
    stats: TensorStatistics,
    config: PlanConfig,
    eval_data: Dataset,
    *,
    metric: str = "auto",
    max_drop: float = 0.01,
    metric_fn: MetricFn | str | None = None,
    samples: int | None = 256,
    rank_samples: int = 16,
    batch_size: int = 32,
    targets: Sequence[Target] | None = None,
    max_evaluations: int = 2000,
    progress: bool = False,
    executor: Executor | None = None,
    extra_rows: int = 0,
    propose: Propose | None = None,
) -> AutoPlanResult:
    """The plan with the fewest MACs promoted to float whose drop stays within ``max_drop`` on every output.

    ``extra_rows``: after that plan, promote this many more groups greedily and measure each (candidates with
    more float for ``--objective latency``, which times the rows within budget and keeps the fastest), then
    the plan with every group promoted (the float plan).

    ``propose``: called once the plan within budget is found, with a builder of the plan for any set of promoted
    groups, the groups promoted in it and every group; it returns the groups to promote next, in order (``None``:
    no opinion, the extra rows then follow the accuracy ranking as above). ``--objective latency`` passes one that
    profiles the plan and the float plan per layer on the first target and orders the groups that run slower in
    INT8 than in float, largest loss first (``objective.slower_in_int8``). The extra rows are then cumulative
    promotions of that order (``proposed_sizes``: at most ``extra_rows`` of them, the last with all), each measured
    on all the evaluation data like every row.

    ``targets`` are the backends the plan will be lowered to: the plan is searched under their
    constraints and measured after their legalization. ``metric`` is a ``planning.metrics``
    spec (``auto`` by default); ``metric_fn`` (a callable or ``module:function``) replaces it
    with ``fn(fp32_outputs, outputs) -> score``, higher is better.
    """
    started = time.perf_counter()
    if max_drop < 0:
        raise PlanError(f"--max-accuracy-drop must be ≥ 0, got {max_drop}")
    m.parse_spec(metric)  # a bad spec fails before any work
    if isinstance(metric_fn, str):
        load_metric_fn(metric_fn)
    batches = list(eval_data.batches(batch_size, limit=samples))
    if not batches:
        raise PlanError(f"evaluation data {eval_data.source} contains no samples")
    executor = executor if executor is not None else SequentialExecutor()
    constraints = constraints_of(targets)
    int_config = constraints.plan_config(
        dataclasses.replace(config, precision="int8" if config.activation_type.value != "int16" else "int16"))

    fp32_runner = ReferenceRunner(graph, float_reference=True)
    fp32 = [fp32_runner.run(b) for b in batches]
    del fp32_runner
    joined = {k: np.concatenate([o[k] for o in fp32]) for k in graph.outputs}
    chosen_metrics = m.resolve(metric, list(graph.outputs), joined) if metric_fn is None else \
        [m.OutputMetric(k, "metric-fn", "user score") for k in graph.outputs]
    del joined
    shapes = observed_shapes(graph, batches[0])
    base = make_plan(graph, stats, int_config)
    groups = tuple(tensor_groups(base, shapes))
    del base
    n_samples = sum(next(iter(b.values())).shape[0] for b in batches)
    rank_batches, seen = 0, 0
    while rank_batches < len(batches) and seen < rank_samples:
        seen += next(iter(batches[rank_batches].values())).shape[0]
        rank_batches += 1
    ctx = _Context(graph, stats, int_config, constraints, groups, tuple(chosen_metrics),
                   metric_fn, batches, fp32, shapes)
    search = _Greedy(executor, ctx, max_drop, rank_batches, len(batches), max_evaluations, extra_rows, propose)
    with progress_bar(progress, total=0, description="auto search", unit="plans") as bar:
        search.run(bar)
    cost = SearchCost(search.evaluations, time.perf_counter() - started, n_samples, seen, len(groups), len(search.ranked))
    if search.answer is None:
        best = min(search.rows, key=lambda r: (r.drop, r.promoted))
        raise PlanError(
            f"no plan keeps the drop within {max_drop:g} on every output: the best measured is {best.drop:.4g} with "
            f"{best.nodes_in_float} node(s) in float after {cost.evaluations} evaluations; raise --max-accuracy-drop, "
            f"use a finer calibration method, or check --metric"
        )
    paths = {id(row): path for row, path in zip(search.rows, search.paths)}

    def build(row: ParetoRow) -> Graph:
        promoted = paths[id(row)]
        plan = make_plan(graph, stats, _candidate_config(ctx, promoted))
        for g in promoted:
            for name in groups[g].nodes:
                node = plan.node(name)
                node.precision_reason = (f"auto: group {groups[g].label} promoted to {constraints.promotion.value} "
                                         f"(budget {max_drop:g}); " + node.precision_reason)
        plan.metadata["mpcompile.policy"] = "auto"
        # The evaluation count is deterministic (a plan file stays identical run to run); wall time goes in the manifest.
        plan.metadata["mpcompile.auto_evaluations"] = str(cost.evaluations)
        return plan

    ranking = [search.ranked[g] for g in search.answer] + [
        r for g, r in sorted(search.ranked.items(), key=lambda kv: (-kv[1].score, kv[0])) if g not in search.answer]
    described = metric_fn if isinstance(metric_fn, str) else ("metric-fn" if metric_fn is not None else metric)
    return AutoPlanResult(build(search.chosen), str(described), max_drop, search.rows, search.chosen, ranking,
                          chosen_metrics, constraints.describe(), constraints.promotion.value, cost, search.notes, build)


class _Greedy:
    def __init__(self, executor: Executor, ctx: _Context, max_drop: float, rank_batches: int, all_batches: int,
                 max_evaluations: int, extra_rows: int = 0, propose: Propose | None = None) -> None:
        self.executor = executor
        self.ctx = ctx
        self.max_drop = max_drop
        self.rank_batches = rank_batches
        self.all_batches = all_batches
        self.max_evaluations = max_evaluations
        total = sum(g.macs for g in ctx.groups)
        self.floor = max(MAC_FLOOR * total, 1.0)
        self.evaluations = 0
        self.rows: list[ParetoRow] = []
        self.ranked: dict[int, RankedGroup] = {}
        self.answer: tuple[int, ...] | None = None
        self.chosen: ParetoRow | None = None
        self.notes: list[str] = []
        #: times the remaining groups were measured again in the current plan (their scores all stale and ≤ 0)
        self.reranks = 0
        self.paths: list[tuple[int, ...]] = []  # the promoted groups of each row
        self.extra_rows = extra_rows
        self._rows_past_answer = 0
        self.propose = propose
        #: the groups ``propose`` ordered once the answer was found (None: not asked, or no opinion)
        self.proposed: tuple[int, ...] | None = None

    def _finished(self) -> bool:
        return self.answer is not None and (self.proposed is not None or self._rows_past_answer >= self.extra_rows)

    def _plan_for(self, promoted: Sequence[int]) -> Graph:
        return make_plan(self.ctx.graph, self.ctx.stats, _candidate_config(self.ctx, promoted))

    def _ask(self) -> None:
        """The answer is found: ask ``propose`` which groups to promote next (once)."""
        if self.propose is None or not self.extra_rows or self.answer is None:
            return
        order = self.propose(self._plan_for, self.answer, self.ctx.groups)
        if order is not None:
            self.proposed = tuple(dict.fromkeys(g for g in order if g not in self.answer))

    def _proposed_rows(self, shared: Any, bar: Any) -> None:
        """Cumulative promotions of the proposed order, after the answer (``proposed_sizes``)."""
        for size in proposed_sizes(len(self.proposed or ()), self.extra_rows):
            promoted = self.answer + self.proposed[:size]
            self._accept(promoted, self._run(shared, [(promoted, self.all_batches)], bar)[0])

    def _run(self, shared: Any, items: list[tuple[tuple[int, ...], int]], bar: Any) -> list[_Measured]:
        if self.evaluations + len(items) > self.max_evaluations:
            raise _Exhausted()
        self.evaluations += len(items)
        labels = [f"auto search: the plan with group(s) {list(p)[-3:]} promoted on {n} batch(es)" for p, n in items]
        return self.executor.map(_evaluate, shared, items, labels=labels, progress=bar)

    def _noise(self, measured: _Measured, base: _Measured) -> float:
        """Output noise relative to uniform INT8's, averaged over outputs and targets (1.0 = uniform INT8)."""
        ratios = [measured.noise[k] / base.noise[k] if base.noise[k] > 0 else 0.0 for k in base.noise]
        return float(np.mean(ratios)) if ratios else 0.0

    def _row(self, promoted: tuple[int, ...], measured: _Measured) -> ParetoRow:
        nodes = sum(len(self.ctx.groups[g].nodes) for g in promoted)
        row = ParetoRow(len(promoted), nodes, measured.drop, measured.shares[0], measured.shares[1],
                        measured.drop <= self.max_drop + 1e-12, dict(measured.drops))
        self.rows.append(row)
        return row

    def run(self, bar: Any) -> None:
        shared = self.executor.share(self.ctx)
        try:
            self._search(shared, bar)
            if self.proposed:
                self._proposed_rows(shared, bar)
            if self.extra_rows and self.answer is not None and len(self.ctx.groups) not in map(len, self.paths):
                everything = tuple(g.index for g in self.ctx.groups)  # the float plan, measured like the others
                self._accept(everything, self._run(shared, [(everything, self.all_batches)], bar)[0])
            if self.reranks:
                self.notes.append(f"the remaining groups were measured again in the current plan {self.reranks} time(s): "
                                  "their scores from uniform INT8 had all fallen to zero or below")
        except _Exhausted:
            self.notes.append(f"stopped after {self.evaluations} evaluations (the limit): the best plan measured "
                              "within budget is used, if any")
            within = [i for i, r in enumerate(self.rows) if r.meets_budget]
            if within and self.answer is None:
                self.answer, self.chosen = self.paths[within[0]], self.rows[within[0]]
        finally:
            self.executor.release(shared)

    def _search(self, shared: Any, bar: Any) -> None:
        groups = self.ctx.groups
        full = self._run(shared, [((), self.all_batches)], bar)[0]
        self._accept((), full)
        if self._finished() or not groups:
            return
        base_rank = self._run(shared, [((), self.rank_batches)], bar)[0] if self.rank_batches < self.all_batches else full
        alone = self._run(shared, [((g.index,), self.rank_batches) for g in groups], bar)
        stale: dict[int, float] = {}
        for g, measured in zip(groups, alone):
            gain = 1.0 - self._noise(measured, base_rank)
            self.ranked[g.index] = RankedGroup(g, gain, gain / (g.macs + self.floor))
            stale[g.index] = self.ranked[g.index].score
        promoted: tuple[int, ...] = ()
        current = 1.0
        reranked_at: int | None = None
        while stale:
            order = sorted(stale, key=lambda g: (-stale[g], g))
            top = [g for g in order if stale[g] > 0][:RECHECK]
            if not top:
                if reranked_at == len(promoted):
                    break
                # Every score left is stale and ≤ 0. Most were measured alone in uniform INT8, where a few groups
                # dominate the noise and hide the others' effect (MiniLM: 90 of 107 groups looked useless there and
                # were never tried again, so the budget was met only by promoting all of them). Measure the rest
                # once more in the current plan, then go on with what helps now.
                reranked_at = len(promoted)
                self.reranks += 1
                rest = sorted(stale)
                for g, measured in zip(rest, self._run(shared, [(promoted + (g,), self.rank_batches) for g in rest], bar)):
                    stale[g] = (current - self._noise(measured, base_rank)) / (groups[g].macs + self.floor)
                continue
            fresh = self._run(shared, [(promoted + (g,), self.rank_batches) for g in top], bar)
            scores = {}
            for g, measured in zip(top, fresh):
                gain = current - self._noise(measured, base_rank)
                scores[g] = (gain / (groups[g].macs + self.floor), self._noise(measured, base_rank))
                stale[g] = scores[g][0]
            best = min(scores, key=lambda g: (-scores[g][0], g))
            if scores[best][0] <= 0:
                continue  # none of them helps in this plan any more: the next ones by score are tried
            promoted = promoted + (best,)
            current = scores[best][1]
            del stale[best]
            self._accept(promoted, self._run(shared, [(promoted, self.all_batches)], bar)[0])
            if self._finished():
                return
        # No single group lowers the output noise any more, yet the metric is over budget (noise too small to
        # measure on the ranking samples, or a discrete metric on a plateau): promote the rest cheapest first,
        # in doubling blocks, so the budget is met with as many MACs as possible left in INT8.
        rest = sorted(stale, key=lambda g: (groups[g].macs, -self.ranked[g].score, g))
        self.notes.append(f"no single group lowered the output noise after {len(promoted)} promotion(s) and "
                          f"{self.reranks} re-ranking(s) of the rest in the current plan; "
                          f"the remaining {len(rest)} groups were promoted cheapest first, in doubling blocks")
        size = 1
        while rest:
            block, rest = rest[:size], rest[size:]
            promoted = promoted + tuple(block)
            self._accept(promoted, self._run(shared, [(promoted, self.all_batches)], bar)[0])
            if self._finished():
                return
            size *= 2

    def _accept(self, promoted: tuple[int, ...], measured: _Measured) -> None:
        row = self._row(promoted, measured)
        self.paths.append(promoted)
        if self.answer is not None:
            self._rows_past_answer += 1
        elif row.meets_budget:
            self.answer, self.chosen = promoted, row
            self._ask()


def proposed_sizes(n: int, rows: int) -> list[int]:
    """How many of ``n`` proposed groups each extra row promotes: 1, 2, 4, … and, last, all ``n`` (at most ``rows``
    rows): the largest losses one by one first, then everything that runs slower in INT8."""
    if n <= 0 or rows <= 0:
        return []
    sizes = [s for s in (2**i for i in range(rows - 1)) if s < n]
    return [*sizes, n]


class _Exhausted(Exception):
    """The evaluation limit is reached."""


def warn_without_held_out_data() -> None:
    warnings.warn("--precision auto measures on the calibration data (no --eval-data given): the search sees the "
                  "samples its ranges came from, so its accuracy figures are optimistic; pass held-out --eval-data",
                  stacklevel=2)


__all__ = ["METRICS", "AutoPlanResult", "Group", "ParetoRow", "Propose", "auto_plan", "proposed_sizes", "load_metric_fn", "observed_shapes",
           "tensor_groups", "warn_without_held_out_data"]
