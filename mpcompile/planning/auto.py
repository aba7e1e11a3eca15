"""The automatic mixed-precision planner: as much INT8 as the accuracy budget allows.

1. Plan everything INT8 and measure the metric against FP32 on the evaluation data
   (fake-quant reference: backend-neutral, so the plan suits every backend).
2. Rank integer layers by local sensitivity (``sensitivity.local_sensitivity``), most
   sensitive first, layers without multiply-accumulates (residual adds, activations,
   element-wise ops) ahead of Conv/Gemm/MatMul: keeping them in float costs no INT8
   compute. Ties are broken by name, so the result is deterministic.
3. Promote the k most sensitive layers to FP16 (FP32 where FP16 is unsafe for their
   values), searching k exponentially then by bisection for the smallest k that keeps the
   metric within budget. Every evaluated k is a row of the Pareto table.
"""

from __future__ import annotations

import dataclasses
import heapq
import importlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from mpcompile.data import Dataset
from mpcompile.errors import PlanError
from mpcompile.execution import Executor, SequentialExecutor
from mpcompile.ir.cost import node_cost
from mpcompile.ir.graph import Graph
from mpcompile.ir.types import Precision
from mpcompile.planning.config import Override, PlanConfig
from mpcompile.planning.plan import make_plan
from mpcompile.planning.sensitivity import local_sensitivity
from mpcompile.planning.stats import TensorStatistics
from mpcompile.progress import progress_bar
from mpcompile.reference import ReferenceRunner

METRICS = ("top1", "cosine", "sqnr", "mse")
MetricFn = Callable[[dict[str, np.ndarray], dict[str, np.ndarray]], float]


def _concat(outputs: list[dict[str, np.ndarray]], name: str) -> np.ndarray:
    return np.concatenate([o[name] for o in outputs], axis=0)


def metric_drop(metric: str, fp32: np.ndarray, quant: np.ndarray) -> float:
    """How much worse ``quant`` is than ``fp32``, in the metric's own units (0 = identical)."""
    f = fp32.astype(np.float64)
    q = quant.astype(np.float64)
    if metric == "top1":
        return 1.0 - float(np.mean(np.argmax(f, axis=-1) == np.argmax(q, axis=-1)))
    if metric == "cosine":
        f2 = f.reshape(f.shape[0], -1)
        q2 = q.reshape(q.shape[0], -1)
        denom = np.linalg.norm(f2, axis=1) * np.linalg.norm(q2, axis=1)
        cos = np.where(denom > 0, np.sum(f2 * q2, axis=1) / np.maximum(denom, 1e-30), 1.0)
        return 1.0 - float(np.mean(cos))
    if metric == "sqnr":  # noise-to-signal power ratio: 0.01 = 20 dB
        signal = float(np.sum(f * f))
        return float(np.sum((q - f) ** 2)) / signal if signal > 0 else 0.0
    if metric == "mse":
        return float(np.mean((q - f) ** 2))
    raise PlanError(f"unknown metric {metric!r}; valid: {', '.join(METRICS)} or --metric-fn module:function")


def load_metric_fn(spec: str) -> MetricFn:
    module, _, attr = spec.partition(":")
    if not attr:
        raise PlanError(f"--metric-fn {spec!r} must look like module:function")
    try:
        return getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as exc:
        raise PlanError(f"--metric-fn {spec!r}: cannot import it ({exc})") from None


@dataclasses.dataclass
class ParetoRow:
    promoted: int
    drop: float
    int8_mac_share: float
    int8_weight_share: float
    meets_budget: bool

    def to_dict(self) -> dict[str, Any]:
        return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in dataclasses.asdict(self).items()}


@dataclasses.dataclass
class AutoPlanResult:
    plan: Graph
    metric: str
    budget: float
    rows: list[ParetoRow]
    chosen: ParetoRow
    ranking: list[str]

    def format_table(self) -> str:
        lines = [f"automatic mixed precision ({self.metric}, max drop {self.budget:g})",
                 "  promoted  drop        INT8 MACs  INT8 weights  within budget"]
        for r in self.rows:
            mark = " ← chosen" if r is self.chosen else ""
            lines.append(f"  {r.promoted:8d}  {r.drop:<10.5g}  {r.int8_mac_share:8.1%}  {r.int8_weight_share:11.1%}  "
                         f"{'yes' if r.meets_budget else 'no':>5}{mark}")
        return "\n".join(lines)


def _int8_shares(plan: Graph) -> tuple[float, float]:
    macs = weights = int8_macs = int8_weights = 0
    for node in plan.nodes:
        m, w = node_cost(plan, node)
        macs += m
        weights += w
        if node.precision is not None and node.precision.is_integer:
            int8_macs += m
            int8_weights += w
    return (int8_macs / macs if macs else 1.0, int8_weights / weights if weights else 1.0)


def auto_plan(
    graph: Graph,
    stats: TensorStatistics,
    config: PlanConfig,
    eval_data: Dataset,
    *,
    metric: str = "top1",
    max_drop: float = 0.01,
    metric_fn: MetricFn | str | None = None,
    samples: int | None = 256,
    batch_size: int = 32,
    progress: bool = False,
    executor: Executor | None = None,
) -> AutoPlanResult:
    """The plan with the fewest layers promoted to float whose ``metric`` drop stays within ``max_drop``.

    Candidate plans are evaluated as tasks of ``executor`` (default: sequential). With more
    than one worker, candidates the search may need next are evaluated speculatively; the
    search itself, the rows it reports and the chosen plan are those of the sequential run.
    """
    if max_drop < 0:
        raise PlanError(f"--max-accuracy-drop must be ≥ 0, got {max_drop}")
    if metric_fn is None and metric not in METRICS:
        metric_drop(metric, np.zeros(1), np.zeros(1))  # raises the helpful error
    fn = load_metric_fn(metric_fn) if isinstance(metric_fn, str) else metric_fn
    batches = list(eval_data.batches(batch_size, limit=samples))
    if not batches:
        raise PlanError(f"evaluation data {eval_data.source} contains no samples")
    executor = executor if executor is not None else SequentialExecutor()
    output = graph.outputs[0]

    int_config = dataclasses.replace(config, precision="int8" if config.activation_type.value != "int16" else "int16")
    base = make_plan(graph, stats, int_config)
    sensitivities = local_sensitivity(base, eval_data, samples=min(samples or 32, 32), batch_size=8,
                                      progress=progress, executor=executor)
    del base
    ranking = [s.node for s in sorted(sensitivities, key=lambda s: (s.macs > 0, s.sqnr_db, s.node))]

    def drop_of(fp32: list[dict[str, np.ndarray]], quant: list[dict[str, np.ndarray]]) -> float:
        if fn is not None:
            f_all = {k: _concat(fp32, k) for k in graph.outputs}
            q_all = {k: _concat(quant, k) for k in graph.outputs}
            return float(fn(f_all, f_all)) - float(fn(f_all, q_all))
        return metric_drop(metric, _concat(fp32, output), _concat(quant, output))

    search = _Search(executor, _SearchContext(graph, stats, int_config, tuple(ranking), batches), max_drop, drop_of)
    with progress_bar(progress, total=0, description="auto search", unit="plans") as bar:
        k_ok, rows = search.run(bar)
    table = [rows[k] for k in sorted(rows)]
    if k_ok is None:
        best = min(rows, key=lambda k: (rows[k].drop, k))
        raise PlanError(
            f"no plan keeps the {metric} drop within {max_drop:g}: the best found is {rows[best].drop:.4g} with "
            f"{best} layers in float; raise --max-accuracy-drop or use a finer calibration method"
        )
    chosen_row = rows[k_ok]
    plan = make_plan(graph, stats, _candidate_config(int_config, ranking, k_ok))
    for name in ranking[:k_ok]:
        node = plan.node(name)
        node.precision_reason = f"auto: among the {k_ok} most sensitive layers ({metric} budget {max_drop:g}); " + node.precision_reason
    plan.metadata["mpcompile.policy"] = "auto"
    return AutoPlanResult(plan, metric if fn is None else str(metric_fn), max_drop, table, chosen_row, ranking)


# ============================================================================ the search
def _candidate_config(config: PlanConfig, ranking: Sequence[str], k: int) -> PlanConfig:
    """The k most sensitive layers in FP16 (FP32 where FP16 is unsafe), the rest as ``config`` says."""
    overrides = tuple(config.overrides) + tuple(Override(name, Precision.FP16) for name in ranking[:k])
    return dataclasses.replace(config, overrides=overrides, precision="mixed")


def search_steps(meets: Callable[[int], bool], layers: int) -> int | None:
    """The smallest k whose plan meets the budget: k = 0, then 1, 2, 4, … until one does, then bisection
    (assuming more float never hurts). ``meets(k)`` is asked in the order the search needs it."""
    if meets(0):
        return 0
    k, lo = 1, 0
    while k < layers and not meets(k):
        lo, k = k, k * 2
    hi = min(k, layers)
    if not meets(hi):
        return None
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if meets(mid):
            hi = mid
        else:
            lo = mid
    return hi


class _Need(Exception):
    def __init__(self, k: int) -> None:
        self.k = k


def _replay(known: Mapping[int, bool], layers: int) -> tuple[int | None, int | None, list[int]]:
    """Run the search on the known outcomes: (the k it needs next or None, its answer, the ks it asked)."""
    asked: list[int] = []

    def meets(k: int) -> bool:
        asked.append(k)
        if k not in known:
            raise _Need(k)
        return known[k]

    try:
        answer = search_steps(meets, layers)
    except _Need as need:
        return need.k, None, asked
    return None, answer, list(dict.fromkeys(asked))


@dataclasses.dataclass(frozen=True)
class _SearchContext:
    """What every evaluation task needs: sent to each worker once."""

    graph: Graph
    stats: TensorStatistics
    config: PlanConfig
    ranking: tuple[str, ...]
    batches: list[dict[str, np.ndarray]]


#: A task's item: (k, first batch, end batch); k None is the FP32 reference.
_Item = tuple[int | None, int, int]


def _evaluate_task(ctx: _SearchContext, item: _Item) -> tuple[list[dict[str, np.ndarray]], tuple[float, float] | None]:
    """The fake-quant outputs of candidate k (or of FP32) on batches [lo, hi): one task of the executor."""
    k, lo, hi = item
    if k is None:
        runner = ReferenceRunner(ctx.graph, float_reference=True)
        return [runner.run(b) for b in ctx.batches[lo:hi]], None
    plan = make_plan(ctx.graph, ctx.stats, _candidate_config(ctx.config, ctx.ranking, k))
    runner = ReferenceRunner(plan)
    outputs = [runner.run(b) for b in ctx.batches[lo:hi]]
    return outputs, (_int8_shares(plan) if lo == 0 else None)


#: How likely the predicted outcome of a candidate is taken to be, when ordering speculative work.
_CONFIDENCE = 0.7


class _Search:
    """``search_steps`` driven by task results; with idle workers, the candidates it may need next run ahead.

    The search only ever reads real outcomes, so the ks it visits, its rows and its answer
    are the sequential run's; speculative results it does not visit are dropped.
    """

    def __init__(self, executor: Executor, ctx: _SearchContext, max_drop: float,
                 drop_of: Callable[[list, list], float]) -> None:
        self.executor = executor
        self.ctx = ctx
        self.max_drop = max_drop
        self.drop_of = drop_of
        self.layers = len(ctx.ranking)
        n = len(ctx.batches)
        # One task per candidate (all its batches) on one worker; with many workers, candidates are
        # split into contiguous ranges of batches too (outputs are per batch: the split changes nothing).
        parts = max(1, min(n, executor.workers // 2))
        bounds = [round(i * n / parts) for i in range(parts + 1)]
        self.ranges = [(bounds[i], bounds[i + 1]) for i in range(parts) if bounds[i] < bounds[i + 1]]
        self.outputs: dict[int | None, dict[int, list]] = {}
        self.shares: dict[int, tuple[float, float]] = {}
        self.drops: dict[int, float] = {}

    def _complete(self, k: int | None) -> bool:
        return len(self.outputs.get(k, {})) == len(self.ranges)

    def _joined(self, k: int | None) -> list[dict[str, np.ndarray]]:
        parts = self.outputs[k]
        return [out for lo, _ in self.ranges for out in parts[lo]]

    def _predict(self, k: int, known: Mapping[int, bool]) -> bool:
        """A guess of meets(k), to order speculative work (never used as an outcome)."""
        below = [j for j in known if j < k]
        above = [j for j in known if j > k]
        lo = max(below) if below else None
        hi = min(above) if above else None
        if hi is not None and not known[hi]:
            return False  # more float never hurts: if hi fails, k < hi fails
        if lo is not None and known[lo]:
            return True
        if lo is not None and hi is not None and lo in self.drops and hi in self.drops:
            d_lo, d_hi = self.drops[lo], self.drops[hi]
            return d_lo + (d_hi - d_lo) * (k - lo) / (hi - lo) <= self.max_drop
        return False

    def _wanted(self, known: dict[int, bool], limit: int) -> list[int]:
        """Candidates in the order they are likely to be needed: the one needed now, then the likeliest next."""
        order: list[int] = []
        heap: list[tuple[float, int, dict[int, bool]]] = [(-1.0, 0, known)]
        counter = 0
        while heap and len(order) < limit and counter < 16 * limit:
            negp, _, hypothesis = heapq.heappop(heap)
            need, _, _ = _replay(hypothesis, self.layers)
            if need is None:
                continue
            if need not in order:
                order.append(need)
            guess = self._predict(need, hypothesis)
            for outcome, weight in ((guess, _CONFIDENCE), (not guess, 1 - _CONFIDENCE)):
                counter += 1
                heapq.heappush(heap, (negp * weight, counter, {**hypothesis, need: outcome}))
        return order

    def _label(self, item: _Item) -> str:
        k, lo, hi = item
        what = "the FP32 reference" if k is None else f"the candidate plan with {k} layer(s) in float"
        return f"auto search: {what} on batches {lo}..{hi - 1}"

    def run(self, bar: Any) -> tuple[int | None, dict[int, ParetoRow]]:
        ex = self.executor
        shared = ex.share(self.ctx)
        in_flight: dict[_Item, Any] = {}
        try:
            while True:
                known = {k: d <= self.max_drop + 1e-12 for k, d in self.drops.items()}
                need, answer, asked = _replay(known, self.layers)
                if need is None:
                    rows = {k: self._row(k) for k in asked}
                    return answer, rows
                slots = ex.workers - len(in_flight)
                if slots > 0:
                    queue = [None] + self._wanted(known, max(1, ex.workers))
                    for k in queue:
                        for lo, hi in self.ranges:
                            item = (k, lo, hi)
                            if slots > 0 and item not in in_flight and lo not in self.outputs.get(k, {}):
                                in_flight[item] = ex.submit(_evaluate_task, shared, item, label=self._label(item))
                                slots -= 1
                for task in ex.wait(list(in_flight.values())):
                    item = next(i for i, t in in_flight.items() if t is task)
                    del in_flight[item]
                    outputs, shares = task.result()
                    k, lo, _ = item
                    self.outputs.setdefault(k, {})[lo] = outputs
                    if shares is not None:
                        self.shares[k] = shares  # type: ignore[index]
                    bar.advance(1)
                    self._score()
        finally:
            ex.cancel(list(in_flight.values()))
            ex.release(shared)

    def _score(self) -> None:
        if not self._complete(None):
            return
        fp32 = self._joined(None)
        for k in list(self.outputs):
            if k is not None and k not in self.drops and self._complete(k):
                self.drops[k] = self.drop_of(fp32, self._joined(k))
                del self.outputs[k]  # keep memory flat: only the drop is needed from here on

    def _row(self, k: int) -> ParetoRow:
        macs, weights = self.shares[k]
        drop = self.drops[k]
        return ParetoRow(k, drop, macs, weights, drop <= self.max_drop + 1e-12)
