"""Conformance: run every backend and the fake-quant reference on the same inputs, then compare.

Like Polygraphy's comparator: ``run`` everything, then ``compare``; the result objects are
truthy when every backend is within tolerance and say what failed, where and by how much.
Tolerances are in LSB (quantization steps) of each output's scale.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mpcompile.backends.base import Runner
from mpcompile.calibration.data import Dataset
from mpcompile.conformance.metrics import Accumulator
from mpcompile.conformance.reference import ReferenceRunner
from mpcompile.errors import MpcompileError
from mpcompile.ir import serde
from mpcompile.ir.graph import Graph
from mpcompile.outputs import scratch_dir

#: Outputs of lookup-table kernels: runtimes round differently inside them (DESIGN.md: up to 9 LSB).
LUT_OPS = {"Softmax", "Sigmoid", "Tanh", "LogSoftmax", "HardSwish"}


@dataclasses.dataclass
class Tolerances:
    """Allowed max |diff| in LSB of the tensor's scale; per tensor overrides win."""

    default_lsb: float = 1.0
    lut_lsb: float = 9.0
    #: int16 (16x8) kernels requantize with 15-bit multipliers (TFLite): each layer may add about
    #: one int16 LSB. 16 int16 LSB is still 1/16 of an int8 step over the same range.
    int16_lsb: float = 16.0
    per_tensor: dict[str, float] = dataclasses.field(default_factory=dict)
    float_rtol: float = 1e-2
    #: Float outputs also pass when backend-vs-plan SQNR exceeds plan-vs-FP32 SQNR by this margin…
    float_sqnr_margin_db: float = 10.0
    #: …or comes within this margin of the plan's own rounding sensitivity (see ``_rounding_floor``).
    rounding_floor_margin_db: float = 6.0

    @classmethod
    def parse(cls, items: Sequence[str], base: Tolerances | None = None) -> Tolerances:
        tol = dataclasses.replace(base) if base else cls()
        tol.per_tensor = dict(tol.per_tensor)
        for item in items:
            name, sep, value = item.rpartition("=")
            try:
                lsb = float(value)
            except ValueError:
                raise MpcompileError(f"tolerance {item!r} must be LSB or TENSOR=LSB, e.g. 2 or logits=3") from None
            if sep:
                tol.per_tensor[name] = lsb
            else:
                tol.default_lsb = lsb
        return tol

    def for_tensor(self, plan: Graph, name: str, producers: Mapping[str, Any]) -> float:
        from mpcompile.ir.types import QType
        from mpcompile.planning.ops import SCALE_PRESERVING

        if name in self.per_tensor:
            return self.per_tensor[name]
        tolerance = self.default_lsb
        spec = plan.tensors[name].quant if name in plan.tensors else None
        if spec is not None and spec.qtype == QType.INT16:
            tolerance = max(tolerance, self.int16_lsb)
        # A lookup-table output keeps its tolerance through data movement (reshape, transpose…).
        producer = producers.get(name)
        while producer is not None and producer.op_type in SCALE_PRESERVING and producer.inputs:
            producer = producers.get(producer.inputs[0])
        if producer is not None and producer.op_type in LUT_OPS:
            tolerance = max(tolerance, self.lut_lsb)
        return tolerance


@dataclasses.dataclass
class BackendReport:
    backend: str
    artifact: str
    outputs: dict[str, Accumulator] = dataclasses.field(default_factory=dict)
    vs_fp32: dict[str, Accumulator] = dataclasses.field(default_factory=dict)
    per_layer: dict[str, Accumulator] = dataclasses.field(default_factory=dict)
    accuracy: float | None = None
    deviations: list[dict] = dataclasses.field(default_factory=list)
    error: str | None = None

    @property
    def first_divergence(self) -> str | None:
        for name, acc in self.per_layer.items():
            if not acc.passed():
                return name
        return None

    @property
    def failures(self) -> list[str]:
        msgs = []
        if self.error:
            msgs.append(self.error)
        for name, acc in self.outputs.items():
            if not acc.passed():
                if acc.max_lsb is not None:
                    msgs.append(f"output {name!r}: max |diff| {acc.max_lsb:.1f} LSB > tolerance {acc.tolerance_lsb:g} LSB")
                else:
                    need = f", SQNR {acc.sqnr_db:.1f} dB < {acc.min_sqnr_db:.1f} dB needed" if acc.min_sqnr_db is not None else ""
                    msgs.append(f"output {name!r}: max |diff| {acc.max_abs_diff:.3g} beyond float tolerance{need}")
        first = self.first_divergence
        if first is not None:
            acc = self.per_layer[first]
            msgs.append(f"first diverging tensor: {first!r} ({acc.max_lsb:.1f} LSB)" if acc.max_lsb is not None else f"first diverging tensor: {first!r}")
        return msgs

    @property
    def passed(self) -> bool:
        return self.error is None and all(acc.passed() for acc in self.outputs.values())

    def __bool__(self) -> bool:
        return self.passed

    def to_dict(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "artifact": self.artifact,
            "passed": self.passed,
            "error": self.error,
            "failures": self.failures,
            "outputs": {k: v.to_dict() for k, v in self.outputs.items()},
            "vs_fp32": {k: v.to_dict() for k, v in self.vs_fp32.items()},
            "accuracy": self.accuracy,
            "per_layer": {k: v.to_dict() for k, v in self.per_layer.items()},
            "first_divergence": self.first_divergence,
            "deviations": self.deviations,
        }


@dataclasses.dataclass
class ConformanceReport:
    model: str
    samples: int
    reference_vs_fp32: dict[str, Accumulator]
    reference_accuracy: float | None
    fp32_accuracy: float | None
    backends: list[BackendReport]

    @property
    def passed(self) -> bool:
        return all(b.passed for b in self.backends)

    def __bool__(self) -> bool:
        return self.passed

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "samples": self.samples,
            "passed": self.passed,
            "fp32_accuracy": self.fp32_accuracy,
            "reference_accuracy": self.reference_accuracy,
            "reference_vs_fp32": {k: v.to_dict() for k, v in self.reference_vs_fp32.items()},
            "backends": [b.to_dict() for b in self.backends],
        }

    def summary(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "samples": self.samples,
            "fp32_accuracy": self.fp32_accuracy,
            "backends": {
                b.backend: {
                    "passed": b.passed,
                    "accuracy": b.accuracy,
                    "max_lsb": {k: v.to_dict()["max_lsb"] for k, v in b.outputs.items()},
                    "failures": b.failures,
                }
                for b in self.backends
            },
        }

    def save_json(self, path: str | os.PathLike) -> None:
        serde.write_atomic(path, json.dumps(self.to_dict(), indent=2).encode())

    def save_html(self, path: str | os.PathLike) -> None:
        from mpcompile.conformance.html import render_html

        serde.write_atomic(path, render_html(self).encode())

    def format_text(self) -> str:
        lines = [f"conformance of {self.model} on {self.samples} samples"]
        if self.fp32_accuracy is not None:
            lines.append(f"  fp32 accuracy {self.fp32_accuracy:.2%}, reference (fake-quant plan) {self.reference_accuracy:.2%}")
        for name, acc in self.reference_vs_fp32.items():
            lines.append(f"  plan vs fp32 [{name}]: cosine {acc.cosine:.5f}, SQNR {acc.sqnr_db:.1f} dB" + (f", top-1 agreement {acc.top1:.2%}" if acc.top1 is not None else ""))
            if acc.cosine < 0.99:
                lines.append(
                    f"  ! the plan itself is far from FP32 at {name!r}: try --method percentile or entropy, or "
                    f"--precision auto --metric cosine to keep the most sensitive layers in float"
                )
        for b in self.backends:
            status = "PASS" if b.passed else "FAIL"
            acc_txt = f", accuracy {b.accuracy:.2%}" if b.accuracy is not None else ""
            lines.append(f"  [{status}] {b.backend}{acc_txt}")
            for name, acc in b.outputs.items():
                if acc.max_lsb is not None:
                    lsb = f"{acc.max_lsb:.2f} LSB (tol {acc.tolerance_lsb:g})"
                else:
                    bar = f", needs SQNR ≥ {acc.min_sqnr_db:.1f} dB" if acc.min_sqnr_db is not None else ""
                    lsb = f"float output, max |diff| {acc.max_abs_diff:.3g}{bar}"
                top1 = f", top-1 agreement {acc.top1:.2%}" if acc.top1 is not None else ""
                lines.append(f"      {name}: {lsb}, cosine {acc.cosine:.6f}, SQNR {acc.sqnr_db:.1f} dB{top1}")
                fp = b.vs_fp32.get(name)
                if fp is not None and fp.elements:
                    lines.append(f"      {name} vs fp32: cosine {fp.cosine:.5f}, SQNR {fp.sqnr_db:.1f} dB")
            for msg in b.failures:
                lines.append(f"      ✗ {msg}")
        return "\n".join(lines)


# ============================================================================ running
def _batches(dataset: Dataset, batch_size: int, samples: int | None) -> list[dict[str, np.ndarray]]:
    return list(dataset.batches(batch_size, limit=samples))


def _labels(dataset: Dataset, samples: int | None) -> np.ndarray | None:
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


#: Relative nudge of every activation scale used to measure a plan's rounding sensitivity.
NUDGE = 1e-6


def _nudged(plan: Graph) -> Graph:
    """The plan with every activation scale ×(1 + 1e-6): only values sitting on rounding ties move."""
    g = plan.copy()
    for t in g.tensors.values():
        if t.quant is not None and not t.is_constant:
            t.quant = t.quant.replace(scale=(t.quant.scale.astype(np.float64) * (1 + NUDGE)).astype(np.float32))
    return g


def _rounding_floor(plan: Graph, batches: list, reference: list, engine: str) -> dict[str, float]:
    """Per float output: SQNR between the reference and itself with scales nudged by 1e-6.

    Backends round ties differently (half-to-even, half-away, ties toward +inf: DESIGN.md);
    a plan whose float outputs move this much under a one-in-a-million nudge cannot be
    matched more closely than that by any backend. Infinite when the plan is insensitive.
    """
    nudged = ReferenceRunner(_nudged(plan), engine=engine)
    floors = {}
    for name in plan.outputs:
        if plan.tensors[name].quant is not None:
            continue
        acc = Accumulator()
        for batch, ref in zip(batches, reference):
            acc.update(nudged.run(batch)[name], ref[name])
        floors[name] = acc.sqnr_db
    return floors


def conform_results(
    plan: Graph,
    lowered: Mapping[str, Any],
    dataset: Dataset,
    *,
    samples: int | None = None,
    batch_size: int = 32,
    per_layer: bool = False,
    tolerances: Tolerances | None = None,
    reference_engine: str = "onnxruntime",
    runner_options: Mapping[str, Mapping[str, Any]] | None = None,
    backends: Mapping[str, Any] | None = None,
) -> ConformanceReport:
    """Compare already-lowered artifacts (``pipeline.LowerResult`` per backend) with the reference."""
    from mpcompile.backends.registry import get_backend

    tol = tolerances or Tolerances()
    batches = _batches(dataset, batch_size, samples)
    if not batches:
        raise MpcompileError(f"evaluation data {dataset.source} contains no samples")
    count = sum(next(iter(b.values())).shape[0] for b in batches)
    labels = _labels(dataset, samples)

    fp32 = ReferenceRunner(plan, engine=reference_engine, float_reference=True)
    fp32_out = [fp32.run(b) for b in batches]
    first_output = plan.outputs[0]
    fp32_accuracy = _accuracy([o[first_output] for o in fp32_out], labels)

    references: dict[str, tuple[ReferenceRunner, list[dict[str, np.ndarray]]]] = {}

    def reference_for(legal: Graph, intermediates: tuple[str, ...]) -> list[dict[str, np.ndarray]]:
        key = serde.plan_hash(legal) + "|" + ",".join(intermediates)
        if key not in references:
            runner = ReferenceRunner(legal, engine=reference_engine)
            references[key] = (runner, [runner.run(b, intermediates) for b in batches])
        return references[key][1]

    base_ref = reference_for(plan, ())
    ref_vs_fp32 = {}
    for name in plan.outputs:
        acc = Accumulator()
        for r, f in zip(base_ref, fp32_out):
            acc.update(r[name], f[name])
        ref_vs_fp32[name] = acc
    reference_accuracy = _accuracy([o[first_output] for o in base_ref], labels)

    reports = []
    for name, result in lowered.items():
        legal: Graph = result.plan
        report = BackendReport(name, str(result.artifact.path), deviations=[d.to_dict() for d in result.deviations])
        try:
            backend = backends[name] if backends and name in backends else get_backend(name)
            runner: Runner = backend.runner(result.artifact, **dict((runner_options or {}).get(name, {})))
        except MpcompileError as exc:
            report.error = str(exc)
            reports.append(report)
            continue
        inter: tuple[str, ...] = ()
        if per_layer and runner.supports_intermediates:
            inter = tuple(t.name for t in _topological_activations(legal) if t.quant is not None and t.name not in legal.outputs)
        legal_producers = legal.producers()
        ref = reference_for(legal, inter)
        floors = _rounding_floor(legal, batches, ref, reference_engine) if any(
            legal.tensors[o].quant is None for o in legal.outputs) and legal.quantized_tensors() else {}
        for out_name in legal.outputs:
            spec = legal.tensors[out_name].quant
            plan_sqnr = ref_vs_fp32[out_name].sqnr_db if out_name in ref_vs_fp32 else float("inf")
            bars = [plan_sqnr + tol.float_sqnr_margin_db, floors.get(out_name, float("inf")) - tol.rounding_floor_margin_db]
            bar = min(b for b in bars)
            report.outputs[out_name] = Accumulator(
                scale=float(spec.scale) if spec is not None and spec.axis is None else None,
                tolerance_lsb=tol.for_tensor(legal, out_name, legal_producers),
                min_sqnr_db=bar if np.isfinite(bar) else None,
            )
            report.vs_fp32[out_name] = Accumulator()
        for name_ in inter:
            spec = legal.tensors[name_].quant
            report.per_layer[name_] = Accumulator(scale=float(spec.scale), tolerance_lsb=tol.for_tensor(legal, name_, legal_producers))
        collected = []
        try:
            for batch, r, f in zip(batches, ref, fp32_out):
                got = runner.run(batch, inter)
                collected.append(got[first_output] if first_output in got else None)
                for out_name in legal.outputs:
                    report.outputs[out_name].update(got[out_name], r[out_name])
                    report.vs_fp32[out_name].update(got[out_name], f[out_name])
                for name_ in inter:
                    if name_ in got and name_ in r:
                        report.per_layer[name_].update(got[name_], r[name_])
        except MpcompileError as exc:
            report.error = str(exc)
        finally:
            runner.close()
        if collected and all(c is not None for c in collected):
            report.accuracy = _accuracy(collected, labels)
        reports.append(report)
    return ConformanceReport(
        model=str(plan.metadata.get("source", plan.name)),
        samples=count,
        reference_vs_fp32=ref_vs_fp32,
        reference_accuracy=reference_accuracy,
        fp32_accuracy=fp32_accuracy,
        backends=reports,
    )


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


def conform(
    model: Any,
    backends: Sequence[str] | None = None,
    data: Any = None,
    *,
    calibration_data: Any = None,
    samples: int | None = None,
    batch_size: int = 32,
    per_layer: bool = False,
    tolerances: Tolerances | None = None,
    artifacts: Mapping[str, str | os.PathLike] | None = None,
    out_dir: str | os.PathLike | None = None,
    reference_engine: str = "onnxruntime",
    runner_options: Mapping[str, Mapping[str, Any]] | None = None,
    onnx_only: bool = False,
    **calibrate_options: Any,
) -> ConformanceReport:
    """Conformance of ``model`` (a plan, or a model calibrated on ``calibration_data or data``).

    Each backend lowers the plan (or uses the given ``artifacts[backend]``), then every
    artifact and the reference run on ``data``.
    """
    from mpcompile.backends.base import Artifact
    from mpcompile.backends.registry import resolve_backends
    from mpcompile.pipeline import LowerResult, as_graph, calibrate, check_supported, lower_one, open_data

    graph = as_graph(model)
    if not graph.is_annotated:
        graph = calibrate(graph, calibration_data if calibration_data is not None else data, progress=False, **calibrate_options).plan
    lower_options = {"onnx_only": True} if onnx_only else {}
    chosen = resolve_backends(list(backends) if backends else None, **lower_options)
    check_supported(graph, chosen)
    dataset = open_data(graph, data)
    # Without out_dir the artifacts live in a scratch folder, removed once the runners are closed.
    with contextlib.nullcontext(Path(out_dir)) if out_dir else scratch_dir("mpcompile-conform-") as work:
        lowered: dict[str, Any] = {}
        for backend in chosen:
            if artifacts and backend.name in artifacts:
                legal, deviations = backend.legalize(graph)
                # A user-supplied artifact is held to the legalized plan, with the tensor names it carries.
                artifact = Artifact(backend.name, Path(artifacts[backend.name]), [Path(artifacts[backend.name])])
                lowered[backend.name] = LowerResult(backend.name, artifact, legal, deviations, 0.0)
            else:
                lowered[backend.name] = lower_one(backend, graph, work, "model", **lower_options)
        return conform_results(
            graph,
            lowered,
            dataset,
            samples=samples,
            batch_size=batch_size,
            per_layer=per_layer,
            tolerances=tolerances,
            reference_engine=reference_engine,
            runner_options=runner_options,
            backends={b.name: b for b in chosen},
        )
