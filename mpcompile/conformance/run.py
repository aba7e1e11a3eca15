"""Run: every artifact and the fake-quant reference on the same inputs, fed to the comparison.

Like Polygraphy's comparator, running is separate from comparing (``compare.py``) and from
the result objects (``report.py``). ``check_artifacts`` is given artifacts that already exist
and the targets that made them; it never lowers or calibrates (the pipeline does).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from mpcompile._version import __version__
from mpcompile.backends.targets import LowerResult, Target, internal_error, open_runner, strict_plugins
from mpcompile.conformance.compare import Tolerances, layer_accumulators, output_accumulators, rounding_envelope
from mpcompile.conformance.kernels import certify
from mpcompile.conformance.report import BackendReport, ConformanceReport
from mpcompile.data.model import model_inputs
from mpcompile.data.specs import effective_batch_size
from mpcompile.errors import BackendError, DataError, MpcompileError
from mpcompile.ir import serde
from mpcompile.ir.graph import Graph
from mpcompile.ir.types import Precision
from mpcompile.outputs import scratch_dir
from mpcompile.reference import ReferenceRunner
from mpcompile.reference.metrics import Accumulator

Batch = dict[str, np.ndarray]


def _labels(dataset: Any, samples: int | None) -> np.ndarray | None:
    try:
        extra = dataset.extra_arrays(limit=samples)
    except Exception:
        return None
    labels = extra.get("labels", extra.get("label"))
    return None if labels is None else np.asarray(labels).reshape(-1)


def _accuracy(outputs: list[np.ndarray], labels: np.ndarray | None) -> float | None:
    if labels is None or not outputs or outputs[0].ndim != 2:
        return None
    pred = np.concatenate([np.argmax(o, axis=-1) for o in outputs])
    if pred.shape[0] != labels.shape[0]:
        return None
    return float(np.mean(pred == labels))


def _topological_activations(graph: Graph) -> list:
    seen: set[str] = set()
    ordered = []
    for name in graph.inputs:
        seen.add(name)
        ordered.append(graph.tensors[name])
    for node in graph.nodes:
        for out in node.outputs:
            if out and out not in seen:
                seen.add(out)
                ordered.append(graph.tensors[out])
    return ordered


def _precisions(graph: Graph, order: Graph | None = None) -> list[str]:
    """Node precisions in topological order; with ``order``, one per node of that graph, looked up by name
    (a legalized plan may add or rewrite nodes: those without a counterpart are not shown)."""
    if order is None:
        return [(n.precision or Precision.FP32).value for n in graph.nodes]
    by_name = {n.name: n.precision for n in graph.nodes}
    return [(by_name.get(n.name) or Precision.FP32).value for n in order.nodes]


def _version(target: Target) -> str:
    try:
        return str(target.backend.version())
    except Exception:  # a version is a label in the report, never a reason to fail
        return "unknown"


class ReferenceCache:
    """Reference outputs per legalized plan (backends with the same legalized plan share one run)."""

    def __init__(self, batches: list[Batch], engine: str) -> None:
        self.batches = batches
        self.engine = engine
        self._runs: dict[str, list[Batch]] = {}
        self._envelopes: dict[str, dict[str, Accumulator]] = {}

    def outputs(self, plan: Graph, intermediates: tuple[str, ...] = ()) -> list[Batch]:
        key = serde.plan_hash(plan) + "|" + ",".join(intermediates)
        if key not in self._runs:
            runner = ReferenceRunner(plan, engine=self.engine)
            self._runs[key] = [runner.run(b, intermediates) for b in self.batches]
        return self._runs[key]

    def envelope(self, plan: Graph, tol: Tolerances) -> dict[str, Accumulator]:
        """``compare.rounding_envelope`` of ``plan``, computed once per legalized plan."""
        key = serde.plan_hash(plan)
        if key not in self._envelopes:
            self._envelopes[key] = rounding_envelope(plan, self.batches, self.outputs(plan), self.engine, tol)
        return self._envelopes[key]


def _checked_run(
    backend: str, runner: Any, batch: Batch, intermediates: tuple[str, ...], reference: Batch, outputs: list[str]
) -> Batch:
    """One ``runner.run``, held to the contract: every output present, with the reference's shape.

    A runner that raises, returns something else, or a broadcastable wrong shape is the backend's
    error (named), never a numerical disagreement.
    """
    try:
        got = runner.run(batch, intermediates)
    except MpcompileError:
        raise
    except Exception as exc:
        if strict_plugins():
            raise
        raise BackendError(internal_error(backend, "running its artifact", exc)) from None
    if not isinstance(got, Mapping):
        raise BackendError(f"backend {backend!r}: its runner returned {type(got).__name__}, not a mapping of outputs")
    missing = [name for name in outputs if name not in got]
    if missing:
        raise BackendError(f"backend {backend!r}: its runner returned no output {', '.join(map(repr, missing))} "
                           f"(it returned {', '.join(map(repr, got)) or 'nothing'})")
    for name in [*outputs, *(n for n in intermediates if n in got)]:
        value, expected = np.asarray(got[name]), np.asarray(reference[name]) if name in reference else None
        if expected is not None and value.shape != expected.shape:
            raise BackendError(f"backend {backend!r}: tensor {name!r} has shape {value.shape}, the plan's has {expected.shape}")
    return got


def _quantized_intermediates(legal: Graph) -> tuple[str, ...]:
    return tuple(t.name for t in _topological_activations(legal) if t.quant is not None and t.name not in legal.outputs)


def _integer_certificate(
    backend: str, runner: Any, legal: Graph, batches: list[Batch], tol: Tolerances, engine: str
) -> dict[str, Accumulator]:
    """Every quantized tensor the runner exposes against the reference, batch by batch (nothing cached)."""
    inter = _quantized_intermediates(legal)
    reference = ReferenceRunner(legal, engine=engine)
    accumulators = layer_accumulators(legal, inter, tol)
    for batch in batches:
        ref = reference.run(batch, inter)
        got = _checked_run(backend, runner, batch, inter, ref, legal.outputs)
        for name in inter:
            if name in got and name in ref:
                accumulators[name].update(got[name], ref[name])
    return {name: acc for name, acc in accumulators.items() if acc.elements}


def _run_backend(
    target: Target, result: LowerResult, batches: list[Batch], refs: ReferenceCache, fp32_out: list[Batch],
    labels: np.ndarray | None, per_layer: bool, tol: Tolerances, bar: Any, plan: Graph | None = None,
    progress: bool = False,
) -> BackendReport:
    legal = result.plan
    report = BackendReport(target.name, str(result.artifact.path), deviations=[d.to_dict() for d in result.deviations],
                           precision=result.precision_note(), node_precisions=_precisions(legal, plan))
    try:
        runner = open_runner(target, result.artifact)
    except MpcompileError as exc:
        report.error = str(exc)
        return report
    inter: tuple[str, ...] = ()
    if per_layer and runner.supports_intermediates:
        inter = _quantized_intermediates(legal)
    ref = refs.outputs(legal, inter)
    if any(legal.tensors[o].quant is None for o in legal.outputs) and legal.quantized_tensors():
        report.rounding_floor_db = {name: acc.sqnr_db for name, acc in refs.envelope(legal, tol).items() if not acc.quantized}
    report.outputs = output_accumulators(legal, tol)
    report.vs_fp32 = {name: Accumulator() for name in legal.outputs}
    report.per_layer = layer_accumulators(legal, inter, tol)
    first_output = legal.outputs[0]
    collected = []
    try:
        for batch, r, f in zip(batches, ref, fp32_out):
            got = _checked_run(target.name, runner, batch, inter, r, legal.outputs)
            collected.append(got.get(first_output))
            for name in legal.outputs:
                report.outputs[name].update(got[name], r[name])
                report.vs_fp32[name].update(got[name], f[name])
            for name in inter:
                if name in got and name in r:
                    report.per_layer[name].update(got[name], r[name])
            bar.advance(len(next(iter(batch.values()))))
        if not inter and runner.supports_intermediates and report.float_outputs_failed:
            # The float rule failed: look at the integers, which the plan fixes exactly. If every quantized
            # tensor is within tolerance the backend computes the plan and the float gap is amplification.
            report.per_layer = _integer_certificate(target.name, runner, legal, batches, tol, refs.engine)
            report.certificate_reason = "a float output failed its rule"
    except MpcompileError as exc:
        report.error = str(exc)
    finally:
        runner.close()
    if report.error is None and not report.passed and legal.quantized_tensors() and not result.given:
        # End to end the backend is out of tolerance: ask whether it computes each step of the plan, and
        # whether the plan itself amplifies one tie rounded the other way that far (conformance/kernels.py).
        # Not for an artifact handed in: the cut plan is lowered here, so it would certify today's lowering.
        report.rounding_lsb = {name: float(acc.max_lsb or 0.0) for name, acc in refs.envelope(legal, tol).items()
                               if acc.quantized}
        with scratch_dir("mpcompile-kernels-") as work:
            report.kernels = certify(target, legal, batches, tol, refs.engine, work, progress=progress)
    if collected and all(c is not None for c in collected):
        report.accuracy = _accuracy(collected, labels)
    return report


def common_batch_size(plans: Iterable[Graph | None], batch_size: int) -> int:
    """The batch every plan (and so its artifact) accepts: ``batch_size``, or 1 where a backend's copy was frozen to
    batch 1 (``Capabilities.static_shapes``). One size for the whole run keeps every backend on the same batches."""
    return min([batch_size, *(effective_batch_size(model_inputs(p), batch_size) for p in plans if p is not None)])


def check_artifacts(
    plan: Graph,
    lowered: Mapping[str, LowerResult],
    targets: Mapping[str, Target],
    dataset: Any,
    *,
    samples: int | None = None,
    batch_size: int = 32,
    per_layer: bool = False,
    tolerances: Tolerances | None = None,
    reference_engine: str = "onnxruntime",
    progress: bool = False,
) -> ConformanceReport:
    """Run each lowered artifact (those with one) and the reference of its legalized plan; compare."""
    from mpcompile.progress import progress_bar

    tol = tolerances or Tolerances()
    batch_size = common_batch_size((r.plan for r in lowered.values() if r.ok), batch_size)
    batches = list(dataset.batches(batch_size, limit=samples))
    if not batches:
        raise DataError(f"evaluation data {dataset.source} contains no samples")
    count = sum(next(iter(b.values())).shape[0] for b in batches)
    labels = _labels(dataset, samples)

    fp32 = ReferenceRunner(plan, engine=reference_engine, float_reference=True)
    fp32_out = [fp32.run(b) for b in batches]
    first_output = plan.outputs[0]
    refs = ReferenceCache(batches, reference_engine)
    base_ref = refs.outputs(plan)
    plan_vs_fp32 = {}
    for name in plan.outputs:
        acc = Accumulator()
        for r, f in zip(base_ref, fp32_out):
            acc.update(r[name], f[name])
        plan_vs_fp32[name] = acc

    checked = [(name, result) for name, result in lowered.items() if result.ok]
    with progress_bar(progress, total=count * len(checked), description="conformance") as bar:
        reports = [_run_backend(targets[name], result, batches, refs, fp32_out, labels, per_layer, tol, bar, plan,
                                progress)
                   for name, result in checked]
    return ConformanceReport(
        model=str(plan.metadata.get("source", plan.name)),
        samples=count,
        reference_vs_fp32=plan_vs_fp32,
        reference_accuracy=_accuracy([o[first_output] for o in base_ref], labels),
        fp32_accuracy=_accuracy([o[first_output] for o in fp32_out], labels),
        backends=reports,
        failed={name: result.error for name, result in lowered.items() if result.error is not None},
        plan_sha256=serde.plan_hash(plan),
        versions={"mpcompile": __version__, **{name: _version(targets[name]) for name in lowered}},
        plan_precisions=_precisions(plan),
    )
