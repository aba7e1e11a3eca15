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
import importlib
from collections.abc import Callable
from typing import Any

import numpy as np

from mpcompile.data import Dataset
from mpcompile.errors import PlanError
from mpcompile.ir.cost import node_cost
from mpcompile.ir.graph import Graph
from mpcompile.ir.types import Precision
from mpcompile.planning.config import Override, PlanConfig
from mpcompile.planning.plan import make_plan
from mpcompile.planning.sensitivity import local_sensitivity
from mpcompile.planning.stats import TensorStatistics
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
) -> AutoPlanResult:
    if max_drop < 0:
        raise PlanError(f"--max-accuracy-drop must be ≥ 0, got {max_drop}")
    if metric_fn is None and metric not in METRICS:
        metric_drop(metric, np.zeros(1), np.zeros(1))  # raises the helpful error
    fn = load_metric_fn(metric_fn) if isinstance(metric_fn, str) else metric_fn
    batches = list(eval_data.batches(batch_size, limit=samples))
    if not batches:
        raise PlanError(f"evaluation data {eval_data.source} contains no samples")
    output = graph.outputs[0]
    fp32_runner = ReferenceRunner(graph, float_reference=True)
    fp32 = [fp32_runner.run(b) for b in batches]
    del fp32_runner

    def drop_of(plan: Graph) -> float:
        runner = ReferenceRunner(plan)
        quant = [runner.run(b) for b in batches]
        if fn is not None:
            f_all = {k: _concat(fp32, k) for k in graph.outputs}
            q_all = {k: _concat(quant, k) for k in graph.outputs}
            return float(fn(f_all, f_all)) - float(fn(f_all, q_all))
        return metric_drop(metric, _concat(fp32, output), _concat(quant, output))

    int_config = dataclasses.replace(config, precision="int8" if config.activation_type.value != "int16" else "int16")
    base = make_plan(graph, stats, int_config)
    sensitivities = local_sensitivity(base, eval_data, samples=min(samples or 32, 32), batch_size=8)
    ranking = [s.node for s in sorted(sensitivities, key=lambda s: (s.macs > 0, s.sqnr_db, s.node))]
    rows: dict[int, tuple[ParetoRow, Graph]] = {}

    def evaluate(k: int) -> ParetoRow:
        if k not in rows:
            overrides = tuple(int_config.overrides) + tuple(Override(name, Precision.FP16) for name in ranking[:k])
            plan = make_plan(graph, stats, dataclasses.replace(int_config, overrides=overrides, precision="mixed"))
            drop = drop_of(plan)
            macs, weights = _int8_shares(plan)
            rows[k] = (ParetoRow(k, drop, macs, weights, drop <= max_drop + 1e-12), plan)
        return rows[k][0]

    evaluate(0)
    k_ok = None
    if rows[0][0].meets_budget:
        k_ok = 0
    else:
        k, lo = 1, 0
        while k < len(ranking) and not evaluate(k).meets_budget:
            lo, k = k, k * 2
        hi = min(k, len(ranking))
        if evaluate(hi).meets_budget:
            while hi - lo > 1:  # smallest k within budget, assuming more float never hurts
                mid = (lo + hi) // 2
                if evaluate(mid).meets_budget:
                    hi = mid
                else:
                    lo = mid
            k_ok = hi
    table = [rows[k][0] for k in sorted(rows)]
    if k_ok is None:
        best = min(rows, key=lambda k: (rows[k][0].drop, k))
        raise PlanError(
            f"no plan keeps the {metric} drop within {max_drop:g}: the best found is {rows[best][0].drop:.4g} with "
            f"{best} layers in float; raise --max-accuracy-drop or use a finer calibration method"
        )
    chosen_row, plan = rows[k_ok]
    for name in ranking[:k_ok]:
        node = plan.node(name)
        node.precision_reason = f"auto: among the {k_ok} most sensitive layers ({metric} budget {max_drop:g}); " + node.precision_reason
    plan.metadata["mpcompile.policy"] = "auto"
    return AutoPlanResult(plan, metric if fn is None else str(metric_fn), max_drop, table, chosen_row, ranking)
