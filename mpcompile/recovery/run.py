"""The recovery driver: which transforms run, in which order, and what each measurably did."""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from mpcompile.errors import PlanError
from mpcompile.ir.graph import Graph
from mpcompile.recovery.bias_correction import correct_biases
from mpcompile.recovery.equalize import equalize
from mpcompile.recovery.fold_scalars import fold_scalars
from mpcompile.recovery.rounding import round_weights
from mpcompile.reference.fakequant import ReferenceRunner
from mpcompile.reference.metrics import sqnr_db

#: FP32-preserving rewrites of the graph, before calibration (in this order).
GRAPH_TRANSFORMS: dict[str, Callable[[Graph], dict]] = {"fold_scalars": fold_scalars, "equalize": equalize}
#: Rewrites of a plan's weight and bias values, measured on calibration data (in this order:
#: rounding first, so the bias correction sees the final weights).
PLAN_TRANSFORMS: dict[str, Callable[[Graph, Sequence[dict[str, np.ndarray]]], dict]] = {
    "rounding": round_weights,
    "bias_correction": correct_biases,
}
RECOVERIES = tuple(GRAPH_TRANSFORMS) + tuple(PLAN_TRANSFORMS)

#: Calibration samples the plan transforms read and are measured on (the first ones).
SAMPLES = 64
#: A plan transform is kept only when it raises the worst output's SQNR against FP32 by this much.
MIN_GAIN_DB = 0.01


@dataclasses.dataclass
class RecoveryStep:
    """What one transform did: how many layers it changed, its details, and its measured effect."""

    name: str
    changed: int
    kept: bool
    details: dict[str, Any]
    sqnr_before_db: float | None = None
    sqnr_after_db: float | None = None
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        for key in ("sqnr_before_db", "sqnr_after_db"):
            if out[key] is not None:
                out[key] = round(out[key], 3) if math.isfinite(out[key]) else str(out[key])
        return out


def parse_recover(spec: str | Sequence[str] | None) -> tuple[str, ...]:
    """``"none"``, ``"all"`` or names joined by ``+`` or ``,`` (or a sequence of names), in canonical order."""
    if spec is None:
        return ()
    items = [spec] if isinstance(spec, str) else list(spec)
    names: set[str] = set()
    for item in items:
        for name in str(item).replace(",", "+").split("+"):
            name = name.strip().lower().replace("-", "_")
            if name in ("", "none"):
                continue
            if name == "all":
                names.update(RECOVERIES)
            elif name in RECOVERIES:
                names.add(name)
            else:
                raise PlanError(f"unknown recovery {name!r}; valid: {', '.join(RECOVERIES)}, all, none "
                                f"(e.g. --recover bias_correction+rounding)")
    return tuple(n for n in RECOVERIES if n in names)


def prepare_graph(graph: Graph, recover: Sequence[str]) -> tuple[Graph, list[RecoveryStep]]:
    """The FP32 graph with the requested graph transforms applied (a copy when any runs)."""
    steps: list[RecoveryStep] = []
    wanted = [n for n in GRAPH_TRANSFORMS if n in recover]
    if not wanted:
        return graph, steps
    graph = graph.copy()
    for name in wanted:
        t0 = time.perf_counter()
        details = GRAPH_TRANSFORMS[name](graph)
        changed = int(details.pop("changed"))
        steps.append(RecoveryStep(name, changed, changed > 0, details, seconds=time.perf_counter() - t0))
    return graph, steps


class _Measure:
    """The worst float output's SQNR of a plan against the FP32 outputs of the plan before any transform."""

    def __init__(self, plan: Graph, batches: Sequence[dict[str, np.ndarray]]) -> None:
        self.batches = batches
        fp32 = ReferenceRunner(plan, float_reference=True)
        self.outputs = [o for o in plan.outputs if plan.tensors[o].is_float]
        self.reference = [{o: np.asarray(v, np.float64) for o, v in fp32.run(b).items() if o in self.outputs}
                          for b in batches]

    def __call__(self, plan: Graph) -> float:
        runner = ReferenceRunner(plan)
        signal = dict.fromkeys(self.outputs, 0.0)
        noise = dict.fromkeys(self.outputs, 0.0)
        for feeds, ref in zip(self.batches, self.reference):
            got = runner.run(feeds)
            for o in self.outputs:
                signal[o] += float((ref[o] ** 2).sum())
                noise[o] += float(((np.asarray(got[o], np.float64) - ref[o]) ** 2).sum())
        return min((sqnr_db(signal[o], noise[o]) for o in self.outputs), default=math.inf)


def refine_plan(plan: Graph, recover: Sequence[str], batches: Sequence[dict[str, np.ndarray]]) -> tuple[Graph, list[RecoveryStep]]:
    """The plan with the requested plan transforms applied, each kept only where it measurably helps."""
    wanted = [n for n in PLAN_TRANSFORMS if n in recover]
    if not wanted or not batches:
        return plan, []
    measure = _Measure(plan, batches)
    score = measure(plan)
    steps = []
    for name in wanted:
        t0 = time.perf_counter()
        candidate = plan.copy()
        details = PLAN_TRANSFORMS[name](candidate, batches)
        changed = int(details.pop("changed"))
        after = measure(candidate) if changed else score
        kept = changed > 0 and after >= score + MIN_GAIN_DB
        steps.append(RecoveryStep(name, changed, kept, details, score, after, time.perf_counter() - t0))
        if kept:
            plan, score = candidate, after
    return plan, steps
