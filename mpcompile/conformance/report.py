"""Conformance results as objects a person and a program read: truthy when within tolerance.

``BackendReport`` says for one backend what failed, where and by how much; ``ConformanceReport``
gathers them with the plan's own distance from FP32, and renders text, JSON and HTML.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import TYPE_CHECKING, Any

from mpcompile.ir import serde
from mpcompile.reference.metrics import Accumulator, integer_counts

if TYPE_CHECKING:
    from mpcompile.conformance.kernels import KernelCertificate


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
    #: what runs in which precision after legalization (one line), with a warning when it collapsed
    precision: str = ""
    #: per float output: the plan's own SQNR under a 1e-6 nudge of its scales (how exactly it can be matched)
    rounding_floor_db: dict[str, float] = dataclasses.field(default_factory=dict)
    #: every node's precision after legalization, in topological order (the report's precision map)
    node_precisions: list[str] = dataclasses.field(default_factory=list)
    #: why the integer certificate (per-layer comparison) ran when --per-layer was not asked for
    certificate_reason: str = ""
    #: ``--localize``: where the backend first leaves tolerance (``localize.Localization.to_dict()``)
    localization: list[dict] = dataclasses.field(default_factory=list)
    localization_lines: list[str] = dataclasses.field(default_factory=list)
    #: when the backend is out of tolerance end to end: each quantized tensor as it computes it from the
    #: plan's exact inputs (``kernels.certify``), and how far each quantized output of the plan itself
    #: moves, in LSB, under a 1e-6 nudge of its scales (``compare.rounding_envelope``)
    kernels: KernelCertificate | None = None
    rounding_lsb: dict[str, float] = dataclasses.field(default_factory=dict)

    @property
    def float_outputs_failed(self) -> bool:
        return any(not acc.quantized and not acc.passed() for acc in self.outputs.values())

    @property
    def integers_agree(self) -> bool:
        """Every quantized tensor the backend exposed is within tolerance of the plan (and there was one)."""
        compared = [acc for acc in self.per_layer.values() if acc.elements]
        return bool(compared) and all(acc.passed() for acc in compared)

    @property
    def end_to_end_failures(self) -> list[str]:
        """Outputs out of their own rule end to end (whatever else the verdict rests on)."""
        return [name for name, acc in self.outputs.items() if acc.elements and not acc.passed()]

    @property
    def kernels_agree(self) -> bool:
        return self.kernels is not None and self.kernels.agrees

    def plan_amplifies(self, name: str) -> bool:
        """The plan itself leaves output ``name``'s rule when one tie upstream rounds the other way."""
        acc = self.outputs[name]
        if acc.quantized:
            return name in self.rounding_lsb and self.rounding_lsb[name] > acc.tolerance_lsb
        floor = self.rounding_floor_db.get(name)
        return floor is not None and acc.min_sqnr_db is not None and floor < acc.min_sqnr_db

    def amplified(self, name: str) -> bool:
        """Output ``name`` fails end to end, yet the backend computes every step of the plan within tolerance
        and the plan itself moves beyond that output's rule under a 1e-6 nudge of its scales: two
        independent findings that the end-to-end gap is the plan's amplification of tie rounding."""
        return not self.outputs[name].passed() and self.kernels_agree and self.plan_amplifies(name)

    def output_passed(self, name: str) -> bool:
        """An output's verdict: its own rule; for a float output, the integer certificate; else the kernel rule."""
        acc = self.outputs[name]
        if acc.shape_mismatches:  # no element-wise evidence either rule could rest on
            return False
        return acc.passed() or (not acc.quantized and self.integers_agree) or self.amplified(name)

    @property
    def verdict_rule(self) -> str:
        """Which rule the verdict rests on: ``end to end`` or ``kernel by kernel`` (see ``amplified``)."""
        return "kernel by kernel" if any(self.amplified(name) for name in self.outputs) else "end to end"

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
            if not self.output_passed(name):
                if acc.shape_mismatches:
                    msgs.append(f"output {name!r}: {acc.first_mismatch} in {acc.shape_mismatches} batch(es); its size "
                                f"depends on the values (NonZero, NonMaxSuppression...), and here they select differently")
                elif acc.quantized:
                    msgs.append(f"output {name!r}: max |diff| {acc.max_lsb:.0f} LSB > tolerance {acc.tolerance_lsb:g} LSB "
                                f"({acc.beyond_share:.2%} of values beyond)")
                else:
                    msgs.append(f"output {name!r}: max |diff| {acc.max_abs_diff:.3g} and SQNR {acc.sqnr_db:.1f} dB fail "
                                f"the float rule ({acc.rule()})")
                    floor = self.rounding_floor_db.get(name)
                    if floor is not None and acc.min_sqnr_db is not None and floor < acc.min_sqnr_db:
                        msgs.append(
                            f"output {name!r}: the plan itself moves to {floor:.1f} dB under a 1e-6 nudge of its scales, "
                            f"below the rule's {acc.min_sqnr_db:.0f} dB: no backend that rounds ties differently can be "
                            f"proven equal at this output; compare the integers with --per-layer"
                        )
        if self.kernels is not None and not self.kernels.agrees and not self.kernels.error:
            msgs.append(self.kernels.summary())
        first = self.first_divergence
        if first is not None and not self.kernels_agree:
            acc = self.per_layer[first]
            msgs.append(f"first diverging tensor: {first!r} ({acc.max_lsb:.0f} LSB)" if acc.max_lsb is not None else f"first diverging tensor: {first!r}")
        return msgs

    @property
    def inexact_tensors(self) -> list[str]:
        """Quantized tensors (outputs, then intermediates in topological order) whose integers differ anywhere."""
        return [name for name, acc in [*self.outputs.items(), *self.per_layer.items()]
                if acc.quantized and acc.elements and acc.max_lsb_count > 0]

    @property
    def integer_certificate(self) -> dict[str, int]:
        """Over the compared quantized tensors: how many agree exactly, within tolerance, beyond it."""
        return integer_counts([*self.outputs.values(), *self.per_layer.values()])

    @property
    def passed(self) -> bool:
        """Every output within its rule, and every compared quantized tensor within tolerance."""
        layers_ok = self.kernels_agree or all(acc.passed() for acc in self.per_layer.values() if acc.elements)
        return self.error is None and layers_ok and all(self.output_passed(name) for name in self.outputs)

    def __bool__(self) -> bool:
        return self.passed

    def notes(self) -> list[str]:
        """Verdicts reached another way than an output's own rule, said in words."""
        notes = []
        for name, acc in self.outputs.items():
            if self.amplified(name):
                moved = (f"{self.rounding_lsb[name]:.0f} LSB" if acc.quantized
                         else f"to {self.rounding_floor_db[name]:.1f} dB")
                gap = f"{acc.max_lsb:.0f} LSB" if acc.quantized else f"SQNR {acc.sqnr_db:.1f} dB"
                c = self.kernels.counts
                notes.append(
                    f"output {name!r} is {gap} from the plan end to end ({acc.rule()}), yet the backend computes every "
                    f"step of the plan (fed the plan's exact inputs, {c['exact']} quantized tensors exact, {c['within_tolerance']} "
                    f"within tolerance, none beyond) and the plan itself moves {moved} at this output "
                    f"under a 1e-6 nudge of its scales: one tie rounded the other way upstream, multiplied by scales that "
                    f"shrink along the path. Verdict by the kernel rule; `conform --localize` shows where it starts"
                )
                continue
            if not acc.quantized and not acc.passed() and self.integers_agree:
                cert = self.integer_certificate
                floor = self.rounding_floor_db.get(name)
                why = f"; the plan moves to {floor:.1f} dB under a 1e-6 nudge of its scales" if floor is not None else ""
                notes.append(
                    f"output {name!r} misses its float rule (SQNR {acc.sqnr_db:.1f} dB) but every quantized tensor the "
                    f"backend exposes is within tolerance ({cert['exact']} exact, {cert['within_tolerance']} within): the "
                    f"backend computes the plan and the float gap is tie rounding amplified by the plan{why}"
                )
        return notes

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
            "integer_certificate": self.integer_certificate,
            "inexact_tensors": self.inexact_tensors,
            "certificate_reason": self.certificate_reason,
            "notes": self.notes(),
            "precision": self.precision,
            "rounding_floor_db": self.rounding_floor_db,
            "verdict_rule": self.verdict_rule,
            "kernels": self.kernels.to_dict() if self.kernels is not None else None,
            "rounding_lsb": self.rounding_lsb,
            "deviations": self.deviations,
            "localization": self.localization,
        }


@dataclasses.dataclass
class ConformanceReport:
    model: str
    samples: int
    reference_vs_fp32: dict[str, Accumulator]
    reference_accuracy: float | None
    fp32_accuracy: float | None
    backends: list[BackendReport]
    #: backends that produced no artifact to check, and why
    failed: dict[str, str] = dataclasses.field(default_factory=dict)
    plan_sha256: str = ""
    #: mpcompile's and each backend library's version
    versions: dict[str, str] = dataclasses.field(default_factory=dict)
    plan_precisions: list[str] = dataclasses.field(default_factory=list)
    #: the auto search that made the plan (``AutoPlanResult.summary()``) and artifact timings
    #: (``BenchReport.to_dict()``), when the run had them: the report charts both
    auto: dict[str, Any] | None = None
    bench: dict[str, Any] | None = None

    @property
    def passed(self) -> bool:
        return not self.failed and all(b.passed for b in self.backends)

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
            "failed": dict(self.failed),
            "plan_sha256": self.plan_sha256,
            "versions": dict(self.versions),
            "auto": self.auto,
            "bench": self.bench,
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
            "failed": dict(self.failed),
        }

    def save_json(self, path: str | os.PathLike) -> None:
        serde.write_atomic(path, json.dumps(self.to_dict(), indent=2).encode())

    def save_html(self, path: str | os.PathLike) -> None:
        from mpcompile.conformance.html import render_html

        serde.write_atomic(path, render_html(self, path).encode())

    def artifacts_vs_fp32(self, output: str) -> list[tuple[str, Accumulator]]:
        """(backend, its artifact against FP32) at ``output``, for each backend that ran."""
        return [(b.backend, b.vs_fp32[output]) for b in self.backends
                if output in b.vs_fp32 and b.vs_fp32[output].elements and not b.error]

    def far_from_fp32(self, output: str, min_cosine: float = 0.99) -> list[str] | None:
        """None when the plan is close to FP32 at ``output`` or some artifact is, else the artifacts that are
        far too (empty: none ran). Each artifact implements its own legalized plan, which may be closer to
        FP32 than the plan (a backend that writes integer MACs' accumulators to float drops requantizations)."""
        if self.reference_vs_fp32[output].cosine >= min_cosine:
            return None
        artifacts = self.artifacts_vs_fp32(output)
        far = [backend for backend, acc in artifacts if acc.cosine < min_cosine]
        return far if len(far) == len(artifacts) else None

    def plan_cost(self) -> tuple[str, float] | None:
        """The plan's accuracy cost against FP32, as (metric, drop): accuracy on the labels if the data has
        them, else top-1 agreement of the first output, else 1 − cosine."""
        if self.fp32_accuracy is not None and self.reference_accuracy is not None:
            return "accuracy", self.fp32_accuracy - self.reference_accuracy
        if not self.reference_vs_fp32:
            return None
        acc = next(iter(self.reference_vs_fp32.values()))
        if acc.top1 is not None:
            return "top-1 agreement", 1.0 - acc.top1
        return "cosine", 1.0 - acc.cosine

    def plan_within(self, max_drop: float) -> bool:
        cost = self.plan_cost()
        return cost is None or cost[1] <= max_drop

    def format_text(self, max_accuracy_drop: float | None = None) -> str:
        """Two verdicts, kept apart: does each backend compute the plan, and what does the plan cost against FP32."""
        lines = [f"conformance of {self.model} on {self.samples} samples", "  backend equals plan:"]
        for b in self.backends:
            status = "PASS" if b.passed else "FAIL"
            rule = " (kernel by kernel)" if b.passed and b.verdict_rule != "end to end" else ""
            lines.append(f"    [{status}] {b.backend}{rule}" + (f"  {b.precision}" if b.precision else ""))
            for name, acc in b.outputs.items():
                if not acc.elements:
                    got = "no values to compare (an empty output)"
                elif acc.quantized:
                    got = f"max |diff| {acc.max_lsb:.0f} LSB, exact {acc.exact_share:.2%}"
                else:
                    got = f"max |diff| {acc.max_abs_diff:.3g}, SQNR {acc.sqnr_db:.1f} dB"
                lines.append(f"        {name}: {got}, cosine {acc.cosine:.6f}  [rule: {acc.rule()}]")
            if b.per_layer:
                cert = b.integer_certificate
                why = f" (compared because {b.certificate_reason})" if b.certificate_reason else ""
                inexact = b.inexact_tensors
                first = f"; first not exact: {inexact[0]!r}" if inexact else ""
                lines.append(f"        integers: {cert['exact']} tensors exact, {cert['within_tolerance']} within tolerance, "
                             f"{cert['beyond_tolerance']} beyond{first}{why}")
            if b.kernels is not None and (b.kernels.agrees or b.kernels.error):
                lines.append(f"        {b.kernels.summary()}")
            for note in b.notes():
                lines.append(f"        note: {note}")
            for msg in b.failures:
                lines.append(f"        ✗ {msg}")
            lines += [f"        {line}" for line in b.localization_lines]
        for name, reason in self.failed.items():
            lines.append(f"    [FAIL] {name}: no artifact: {reason}")
        lines.append("  plan against FP32 (the accuracy cost):")
        if self.fp32_accuracy is not None and self.reference_accuracy is not None:
            lines.append(f"    accuracy: FP32 {self.fp32_accuracy:.2%}, plan {self.reference_accuracy:.2%}"
                         + "".join(f", {b.backend} {b.accuracy:.2%}" for b in self.backends if b.accuracy is not None))
        for name, acc in self.reference_vs_fp32.items():
            if acc.shape_mismatches:
                lines.append(f"    {name}: the plan selects another count than FP32 in {acc.shape_mismatches} batch(es) "
                             f"({acc.first_mismatch}): its size depends on the values")
                continue
            top1 = f", top-1 agreement {acc.top1:.2%}" if acc.top1 is not None else ""
            lines.append(f"    {name}: cosine {acc.cosine:.5f}, SQNR {acc.sqnr_db:.1f} dB{top1}")
            artifacts = self.artifacts_vs_fp32(name)
            if artifacts:
                lines.append("      each artifact against FP32: " + ", ".join(
                    f"{backend} cosine {a.cosine:.5f}" + (f", top-1 agreement {a.top1:.2%}" if a.top1 is not None else "")
                    for backend, a in artifacts))
            far = self.far_from_fp32(name)
            if far is not None:
                which = f" (and so are the artifacts of {', '.join(far)})" if far else ""
                lines.append(
                    f"    ! the plan itself is far from FP32 at {name!r}{which}: try --method percentile or entropy, or "
                    f"--precision auto --metric cosine to keep the most sensitive layers in float"
                )
        cost = self.plan_cost()
        if cost is not None and max_accuracy_drop is not None:
            verdict = "within" if cost[1] <= max_accuracy_drop else "EXCEEDS"
            lines.append(f"    {cost[0]} drop {cost[1]:.4f}: {verdict} the budget --max-accuracy-drop {max_accuracy_drop:g}")
        return "\n".join(lines)
