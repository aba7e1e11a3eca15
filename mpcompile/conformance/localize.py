"""Localize: the first tensor where a backend leaves tolerance, by bisection over sub-models.

``--per-layer`` exposes every quantized tensor of one artifact at once. That needs a runner
with intermediates, memory for all of them, and on backends that fuse it changes what runs
(an exposed tensor cannot be fused away). Localization instead asks the backend to lower
*prefixes* of the legalized plan, each ending at one quantized tensor (the plan pruned to
that tensor's ancestors), and compares that tensor alone with the fake-quant reference of
the same prefix, in LSB of its scale. Memory is one tensor per probe; any backend that can
lower a plan can be localized, with or without intermediates.

The search, over the quantized tensors that feed the failing output, in topological order:

1. bisection for a tensor beyond tolerance whose predecessor in that order is within it
   (``log2(n)`` probes);
2. a check of that tensor's nearest quantized inputs (the frontier reached through float
   nodes): while one of them is beyond tolerance too, the search continues below it. What it
   reports is therefore a tensor beyond tolerance computed from inputs within tolerance: the
   place where the backend computes something else, not where an earlier error arrives.

The answer comes with the node and op, the worst element (both values and their integers),
the probes it took, and a minimal reproducer: the nodes from that frontier to the tensor as a
plan of their own, with the reference's values of its inputs, checked to reproduce.
"""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from mpcompile.backends.targets import Target, internal_error, open_runner
from mpcompile.conformance.compare import Tolerances
from mpcompile.errors import BackendError, MpcompileError
from mpcompile.ir import serde
from mpcompile.ir.graph import Graph
from mpcompile.reference import ReferenceRunner
from mpcompile.reference.metrics import Accumulator

Batch = dict[str, np.ndarray]


@dataclasses.dataclass
class Probe:
    """One sub-model run: ``tensor`` alone against the reference."""

    tensor: str
    nodes: int
    max_lsb: float
    tolerance_lsb: float
    beyond_share: float

    @property
    def passed(self) -> bool:
        return self.max_lsb <= self.tolerance_lsb


@dataclasses.dataclass
class Localization:
    """Where ``backend`` first leaves tolerance, and how that was found."""

    backend: str
    output: str
    tensor: str | None = None
    node: str | None = None
    op: str | None = None
    max_lsb: float | None = None
    tolerance_lsb: float | None = None
    #: the worst element: index, backend and reference values, and their integers on the tensor's grid
    worst: dict[str, Any] = dataclasses.field(default_factory=dict)
    #: the quantized tensors the diverging node reads (through float nodes), all within tolerance
    frontier: list[str] = dataclasses.field(default_factory=list)
    probes: list[Probe] = dataclasses.field(default_factory=list)
    candidates: int = 0
    plan_nodes: int = 0
    reproducer: str | None = None
    reproducer_nodes: int = 0
    reproduces: bool | None = None
    reproducer_max_lsb: float | None = None
    note: str = ""

    @property
    def runs(self) -> int:
        return len(self.probes)

    def lines(self) -> list[str]:
        head = f"localize {self.backend}: output {self.output!r}"
        if self.tensor is None:
            return [f"{head}: {self.note}"]
        out = [
            f"{head}: first divergence at tensor {self.tensor!r}, output of node {self.node!r} ({self.op}): "
            f"max |diff| {self.max_lsb:.0f} LSB > {self.tolerance_lsb:g}",
        ]
        if self.worst:
            w = self.worst
            out.append(f"  worst element {w['index']}: backend {w['backend']:.6g} (q {w['backend_q']}), "
                       f"reference {w['reference']:.6g} (q {w['reference_q']})")
        reads = ", ".join(repr(t) for t in self.frontier) or "graph inputs and constants only"
        out.append(f"  its quantized inputs are within tolerance: {reads}")
        out.append(f"  {self.runs} sub-model runs for {self.candidates} quantized tensors ({self.plan_nodes} nodes)")
        if self.reproducer:
            verdict = {True: f"reproduces ({self.reproducer_max_lsb:.0f} LSB)", False: "does NOT reproduce alone",
                       None: "not checked"}[self.reproduces]
            out.append(f"  reproducer: {self.reproducer} ({self.reproducer_nodes} nodes; {verdict})")
        if self.note:
            out.append(f"  {self.note}")
        return out

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["runs"] = self.runs
        return d


# ============================================================================ sub-models
def prefix_plan(plan: Graph, outputs: list[str]) -> Graph:
    """``plan`` pruned to what ``outputs`` need, reading only the inputs they depend on."""
    sub = plan.copy()
    sub.outputs = list(outputs)
    sub.remove_unused()
    read = {i for n in sub.nodes for i in n.inputs if i} | set(sub.outputs)
    sub.inputs = [i for i in sub.inputs if i in read]
    sub.tensors = {k: v for k, v in sub.tensors.items() if k in read or any(k in n.outputs for n in sub.nodes)}
    return sub


def region_plan(plan: Graph, tensor: str, frontier: set[str]) -> Graph:
    """The nodes between ``frontier`` (and the graph inputs) and ``tensor``, as a plan whose inputs are that boundary."""
    producers = plan.producers()
    keep: set[int] = set()
    boundary: list[str] = []
    stack = [tensor]
    seen: set[str] = set()
    while stack:
        name = stack.pop()
        if name in seen:
            continue
        seen.add(name)
        t = plan.tensors[name]
        producer = producers.get(name)
        if t.is_constant:
            continue
        if producer is None or (name in frontier and name != tensor):
            boundary.append(name)
            continue
        keep.add(id(producer))
        stack.extend(i for i in producer.inputs if i)
    region = plan.copy()
    ids = {id(n): i for i, n in enumerate(plan.nodes)}
    wanted = {ids[k] for k in keep}
    region.nodes = [n for i, n in enumerate(region.nodes) if i in wanted]
    order = {name: i for i, name in enumerate([*plan.inputs, *(o for n in plan.nodes for o in n.outputs)])}
    region.inputs = sorted(boundary, key=order.__getitem__)
    region.outputs = [tensor]
    region.remove_unused()
    return region


def _ancestors(plan: Graph, names: list[str]) -> set[str]:
    producers = plan.producers()
    seen: set[str] = set()
    stack = list(names)
    while stack:
        name = stack.pop()
        if name in seen:
            continue
        seen.add(name)
        producer = producers.get(name)
        if producer is not None:
            stack.extend(i for i in producer.inputs if i)
    return seen


def _quantized_frontier(plan: Graph, tensor: str) -> list[str]:
    """The nearest quantized activations ``tensor``'s producer reads, looking through float nodes."""
    producers = plan.producers()
    producer = producers.get(tensor)
    found: list[str] = []
    stack = list(producer.inputs) if producer is not None else []
    seen: set[str] = set()
    while stack:
        name = stack.pop()
        if not name or name in seen:
            continue
        seen.add(name)
        t = plan.tensors[name]
        if t.is_constant:
            continue
        if t.quant is not None and t.quant.axis is None and name in producers:
            found.append(name)
            continue
        p = producers.get(name)
        if p is not None:
            stack.extend(p.inputs)
    return sorted(found)


# ============================================================================ the search
class _Prober:
    """Lowers and runs one-tensor sub-models of ``legal`` on ``target``, against the reference."""

    def __init__(self, target: Target, legal: Graph, batches: list[Batch], tol: Tolerances, engine: str, work: Path,
                 on_probe: Callable[[], None] | None = None) -> None:
        self.target, self.legal, self.batches, self.tol, self.engine = target, legal, batches, tol, engine
        self.work = work
        self.producers = legal.producers()
        self.results: dict[str, Probe] = {}
        self.order: list[Probe] = []
        self.on_probe = on_probe
        self.worst: dict[str, dict[str, Any]] = {}

    def run_plan(self, sub: Graph, feeds: list[Batch], folder: Path) -> tuple[Accumulator, dict[str, Any]]:
        name = sub.outputs[0]
        spec = sub.tensors[name].quant
        acc = Accumulator(scale=float(spec.scale), tolerance_lsb=self.tol.for_tensor(self.legal, name, self.producers))
        folder.mkdir(parents=True, exist_ok=True)
        try:
            artifact = self.target.backend.lower(sub, folder, stem="probe", options=self.target.options)
            runner = open_runner(self.target, artifact)
        except MpcompileError as exc:
            raise BackendError(f"backend {self.target.name!r} cannot lower the sub-model ending at {name!r}: {exc}") from None
        except Exception as exc:  # noqa: BLE001 - the plugin's fault, named
            raise BackendError(internal_error(self.target.name, f"lowering the sub-model ending at {name!r}", exc)) from None
        reference = ReferenceRunner(sub, engine=self.engine)
        scale, zero_point = float(spec.scale), int(spec.zero_point)
        worst: dict[str, Any] = {}
        try:
            for feed in feeds:
                feed = {k: feed[k] for k in sub.inputs}
                got = np.asarray(runner.run(feed)[name], dtype=np.float64)
                ref = np.asarray(reference.run(feed)[name], dtype=np.float64)
                acc.update(got, ref)
                diff = np.abs(got - ref)
                if diff.size and (not worst or diff.max() > worst["diff"]):
                    i = int(np.argmax(diff))
                    g, r = float(got.reshape(-1)[i]), float(ref.reshape(-1)[i])
                    worst = {"diff": float(diff.reshape(-1)[i]), "index": list(np.unravel_index(i, diff.shape)),
                             "backend": g, "reference": r, "backend_q": int(np.rint(g / scale)) + zero_point,
                             "reference_q": int(np.rint(r / scale)) + zero_point}
        finally:
            runner.close()
        worst.pop("diff", None)
        worst["index"] = [int(x) for x in worst.get("index", [])]
        return acc, worst

    def probe(self, name: str) -> Probe:
        if name in self.results:
            return self.results[name]
        sub = prefix_plan(self.legal, [name])
        folder = self.work / f"probe-{len(self.order):03d}"
        try:
            acc, worst = self.run_plan(sub, self.batches, folder)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        probe = Probe(name, len(sub.nodes), float(acc.max_lsb or 0.0), float(acc.tolerance_lsb), acc.beyond_share)
        self.results[name] = probe
        self.worst[name] = worst
        self.order.append(probe)
        if self.on_probe is not None:
            self.on_probe()
        return probe


def candidates_for(legal: Graph, output: str) -> list[str]:
    """Quantized activations (per-tensor, produced by a node) that can influence ``output``, in topological order."""
    ancestors = _ancestors(legal, [output])
    found = []
    for node in legal.nodes:
        for out in node.outputs:
            t = legal.tensors.get(out) if out else None
            if t is not None and out in ancestors and t.quant is not None and t.quant.axis is None:
                found.append(out)
    return found


def localize(target: Target, legal: Graph, output: str, batches: list[Batch], *, tolerances: Tolerances | None = None,
             engine: str = "onnxruntime", work: Path, reproducer_dir: Path | None = None,
             on_probe: Callable[[], None] | None = None) -> Localization:
    """Find where ``target`` first leaves tolerance on the way to ``output`` (see the module docstring)."""
    tol = tolerances or Tolerances()
    result = Localization(target.name, output, plan_nodes=len(legal.nodes))
    candidates = candidates_for(legal, output)
    result.candidates = len(candidates)
    if not candidates:
        result.note = "no quantized tensor feeds this output: nothing to bisect (the whole path runs in float)"
        return result
    prober = _Prober(target, legal, batches, tol, engine, work, on_probe)
    position = {name: i for i, name in enumerate(candidates)}
    last = candidates[-1]
    if prober.probe(last).passed:
        tail = len(legal.nodes) - 1 - max(i for i, n in enumerate(legal.nodes) if last in n.outputs)
        result.probes = prober.order
        result.note = (f"every quantized tensor checked agrees, the last one ({last!r}) included: the divergence is in "
                       f"the {tail} float node(s) after it")
        return result
    good, bad = -1, len(candidates) - 1
    while True:
        while bad - good > 1:
            mid = (good + bad) // 2
            if prober.probe(candidates[mid]).passed:
                good = mid
            else:
                bad = mid
        frontier = _quantized_frontier(legal, candidates[bad])
        failing = [f for f in frontier if f in position and not prober.probe(f).passed]
        if not failing:
            break
        # An input of the tensor found is beyond tolerance too: the error started below it.
        bad = min(position[f] for f in failing)
        good = max((position[n] for n, p in prober.results.items() if p.passed and position.get(n, -1) < bad), default=-1)
    name = candidates[bad]
    node = prober.producers[name]
    probe = prober.results[name]
    result.tensor, result.node, result.op = name, node.name, node.op_type
    result.max_lsb, result.tolerance_lsb = probe.max_lsb, probe.tolerance_lsb
    result.worst = prober.worst.get(name, {})
    result.frontier = frontier
    result.probes = prober.order
    result.note = _amplification(legal, name, probe, frontier, prober.results)
    if reproducer_dir is not None:
        _write_reproducer(result, prober, legal, name, set(frontier), batches[:1], reproducer_dir)
    return result


def _amplification(legal: Graph, name: str, probe: Probe, frontier: list[str], probes: dict[str, Probe]) -> str:
    """Whether an inexact input, within its own tolerance, explains the difference once counted on this finer grid.

    One LSB of a coarse input is many LSB of a fine output (a wide Add read by a Clip(0, 6)):
    backends that break rounding ties differently upstream then differ here by the scale ratio,
    without computing this node differently.
    """
    scale = float(legal.tensors[name].quant.scale)
    worst = max(((probes[f].max_lsb * float(legal.tensors[f].quant.scale) / scale, f) for f in frontier
                 if f in probes and probes[f].max_lsb > 0), default=None)
    if worst is None or worst[0] < 0.5 * probe.max_lsb:
        return ""
    f = worst[1]
    return (f"input {f!r} differs by {probes[f].max_lsb:.0f} LSB (within its tolerance) at scale "
            f"{float(legal.tensors[f].quant.scale):.4g}, which is {worst[0]:.0f} LSB of this tensor's scale {scale:.4g}: "
            f"the difference is tie rounding upstream amplified by the plan's scale ratio, not another computation "
            f"here (a plan whose ranges shrink this much along a path cannot be matched in LSB by backends that "
            f"round ties differently)")


#: How many times the reproducer may grow by one quantized step upstream when it does not reproduce alone
#: (a backend may compute the tensor differently only inside a fused pattern that starts further up).
REPRODUCER_GROWTH = 3


def _write_reproducer(result: Localization, prober: _Prober, legal: Graph, name: str, frontier: set[str],
                      batches: list[Batch], folder: Path) -> None:
    """The diverging region as a plan of its own, with the reference's values of its inputs; checked to reproduce.

    When the region alone computes the tensor within tolerance, it grows one quantized step
    upstream (up to ``REPRODUCER_GROWTH`` times): the smallest region that reproduces is kept.
    """
    full = ReferenceRunner(legal, engine=prober.engine)
    folder.mkdir(parents=True, exist_ok=True)
    for growth in range(REPRODUCER_GROWTH + 1):
        region = region_plan(legal, name, frontier)
        feeds = []
        for batch in batches:
            values = full.run(batch, tuple(i for i in region.inputs if i not in legal.inputs))
            feeds.append({i: np.asarray(batch[i] if i in legal.inputs else values[i]) for i in region.inputs})
        shutil.rmtree(folder / "lowered", ignore_errors=True)
        try:
            acc, _ = prober.run_plan(region, feeds, folder / "lowered")
        except MpcompileError as exc:
            result.note = f"the reproducer could not be run on its own: {exc}"
            acc = None
        if acc is not None:
            result.reproduces = not acc.passed()
            result.reproducer_max_lsb = float(acc.max_lsb or 0.0)
        upstream = {q for f in frontier for q in _quantized_frontier(legal, f)}
        if acc is None or result.reproduces or not upstream or growth == REPRODUCER_GROWTH:
            break
        frontier = upstream
    if not result.reproduces:
        # The backend computes it differently only in a larger context (a fusion across the region's
        # boundary): the prefix that showed the divergence is the reproducer, with the model's own inputs.
        region = prefix_plan(legal, [name])
        shutil.rmtree(folder / "lowered", ignore_errors=True)
        feeds = [{i: np.concatenate([np.asarray(b[i]) for b in prober.batches]) for i in region.inputs}]
        result.reproduces = True
        result.reproducer_max_lsb = prober.results[name].max_lsb
        why = ("fed the reference's exact inputs, as that amplification predicts" if result.note else
               "so the backend diverges only in a larger context (a fused pattern across that boundary)")
        result.note = (f"{result.note}; " if result.note else "") + (
            f"the region from its quantized inputs computes {name!r} within tolerance on its own, {why}; the "
            f"reproducer is the prefix of the plan that ends at {name!r}")
    plan_path = folder / "reproducer.plan.onnx"
    serde.save_plan(region, plan_path)
    np.savez(folder / "reproducer.inputs.npz", **feeds[0])
    result.reproducer = str(plan_path)
    result.reproducer_nodes = len(region.nodes)
    (folder / "README.txt").write_text(
        "\n".join(result.lines()) + "\n\nRun it again:\n\n"
        f"  mpcompile conform {plan_path.name} --backend {result.backend} --data reproducer.inputs.npz --per-layer\n"
    )
