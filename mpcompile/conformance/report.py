"""Conformance results as objects a person and a program read: truthy when within tolerance.

``BackendReport`` says for one backend what failed, where and by how much; ``ConformanceReport``
gathers them with the plan's own distance from FP32, and renders text, JSON and HTML.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

from mpcompile.ir import serde
from mpcompile.reference.metrics import Accumulator


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
    #: backends that produced no artifact to check, and why
    failed: dict[str, str] = dataclasses.field(default_factory=dict)

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
        for name, reason in self.failed.items():
            lines.append(f"  [FAIL] {name}: no artifact: {reason}")
        return "\n".join(lines)
