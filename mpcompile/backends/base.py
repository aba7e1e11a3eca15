"""The backend plugin contract.

A backend is one object, exposed through the ``mpcompile.backends`` entry-point group::

    [project.entry-points."mpcompile.backends"]
    mybackend = "my_package:backend"      # an instance of a Backend subclass

mpcompile drives every backend through the same four steps:

1. ``capabilities``: what the target can run (ops × precisions, per-channel weights,
   symmetric-only activations, which integer types). Pure data, no heavy imports.
2. ``legalize(plan)``: adapt a copy of the plan to those capabilities. Every change is a
   ``Deviation`` naming the tensor or node, what changed and why. The default
   implementation (``mpcompile.backends.legalize``) handles the common cases from
   ``capabilities`` alone.
3. ``lower(plan, out_dir)``: write the artifact and return an ``Artifact``.
4. ``runner(artifact)``: a ``Runner`` that executes it on numpy feeds.

Heavy libraries (tflite, tensorrt) are imported inside ``check_available``/``lower``/
``runner``, never at module import, so that ``mpcompile --help`` works without them.
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from mpcompile.ir.graph import Graph
from mpcompile.ir.types import Precision, QType

ALL_PRECISIONS = frozenset(Precision)
FLOAT_ONLY = frozenset({Precision.FP32, Precision.FP16, Precision.BF16})


@dataclasses.dataclass(frozen=True)
class Capabilities:
    """What a backend can execute. ``ops`` maps an ONNX op type to the precisions it runs in."""

    ops: Mapping[str, frozenset[Precision]]
    per_channel_weights: bool = True
    symmetric_activations_only: bool = False
    activation_qtypes: frozenset[QType] = frozenset({QType.INT8, QType.UINT8, QType.INT16})
    int16_zero_point_zero: bool = False
    float_precisions: frozenset[Precision] = frozenset({Precision.FP32, Precision.FP16, Precision.BF16})
    notes: tuple[str, ...] = ()

    def supports(self, op_type: str, precision: Precision) -> bool:
        return precision in self.ops.get(op_type, frozenset())

    def summary(self) -> str:
        counts: dict[Precision, int] = {p: 0 for p in Precision}
        for precisions in self.ops.values():
            for p in precisions:
                counts[p] += 1
        parts = [f"{p.value}:{counts[p]} ops" for p in Precision if counts[p]]
        flags = []
        if self.symmetric_activations_only:
            flags.append("symmetric activations only")
        if self.per_channel_weights:
            flags.append("per-channel weights")
        return ", ".join(parts + flags)

    def to_dict(self) -> dict[str, Any]:
        return {
            "ops": {op: sorted(p.value for p in ps) for op, ps in sorted(self.ops.items())},
            "per_channel_weights": self.per_channel_weights,
            "symmetric_activations_only": self.symmetric_activations_only,
            "activation_qtypes": sorted(q.value for q in self.activation_qtypes),
            "int16_zero_point_zero": self.int16_zero_point_zero,
            "float_precisions": sorted(p.value for p in self.float_precisions),
            "notes": list(self.notes),
        }


def op_table(rows: Iterable[tuple[Iterable[str], Iterable[Precision]]]) -> dict[str, frozenset[Precision]]:
    """Build ``Capabilities.ops`` from (op types, precisions) rows; later rows add to earlier ones."""
    table: dict[str, set[Precision]] = {}
    for ops, precisions in rows:
        for op in ops:
            table.setdefault(op, set()).update(precisions)
    return {op: frozenset(ps) for op, ps in table.items()}


@dataclasses.dataclass(frozen=True)
class Deviation:
    """One change legalization made to the plan, with the reason."""

    subject: str  # tensor or node name
    kind: str  # "tensor" | "node"
    change: str
    reason: str

    def to_dict(self) -> dict[str, str]:
        return dataclasses.asdict(self)

    def __str__(self) -> str:
        return f"{self.kind} {self.subject}: {self.change} ({self.reason})"


@dataclasses.dataclass
class Artifact:
    """What ``lower`` produced: the main file, any side files, and facts for the manifest."""

    backend: str
    path: Path
    files: list[Path] = dataclasses.field(default_factory=list)
    deviations: list[Deviation] = dataclasses.field(default_factory=list)
    metadata: dict[str, Any] = dataclasses.field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "path": str(self.path),
            "files": [str(f) for f in self.files],
            "deviations": [d.to_dict() for d in self.deviations],
            "metadata": self.metadata,
        }


class Runner(abc.ABC):
    """Runs one artifact. ``run`` maps input names to arrays and returns output names to arrays."""

    #: True when ``run(..., intermediates=[...])`` can return named IR tensors too.
    supports_intermediates: bool = False

    @abc.abstractmethod
    def run(self, feeds: Mapping[str, np.ndarray], intermediates: Iterable[str] = ()) -> dict[str, np.ndarray]:
        ...

    def close(self) -> None:
        """Release resources (sessions, device memory)."""

    def __enter__(self) -> Runner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Backend(abc.ABC):
    """Base class of every backend plugin (built-in or third-party)."""

    name: str = "backend"
    description: str = ""
    #: Shown when the backend's library is missing, e.g. ``pip install 'mpcompile[tflite]'``.
    install_hint: str = ""
    artifact_suffix: str = ""

    @property
    @abc.abstractmethod
    def capabilities(self) -> Capabilities:
        ...

    def check_available(self) -> None:
        """Raise ``BackendUnavailableError`` (with the install hint) if the backend cannot run here."""

    def can_lower_without_runtime(self, **options: Any) -> bool:
        """True if ``lower`` (and a CPU check of the result) works with these options even when
        ``check_available`` fails, e.g. TensorRT's ``onnx_only`` export for building on the device."""
        return False

    def version(self) -> str:
        """Version of the library that runs the artifacts (not of the plugin)."""
        return "unknown"

    def supported_ops(self) -> frozenset[str] | None:
        """Op types the backend can run in some precision; ``None`` means any standard ONNX op."""
        return None

    def legalize(self, plan: Graph) -> tuple[Graph, list[Deviation]]:
        from mpcompile.backends.legalize import legalize_with_capabilities

        return legalize_with_capabilities(plan, self.capabilities, backend_name=self.name)

    @abc.abstractmethod
    def lower(self, plan: Graph, out_dir: Path, **options: Any) -> Artifact:
        ...

    @abc.abstractmethod
    def runner(self, artifact: Artifact, **options: Any) -> Runner:
        ...
