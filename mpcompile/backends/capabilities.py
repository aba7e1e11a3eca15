"""What a backend can run, and how legalization records what it changed: pure data, no heavy imports."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from typing import Any

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
    #: the backend cannot compute shapes at run time (TFLite): a plan that still does is lowered with its inputs'
    #: dynamic batch frozen to 1, so that its shape computations fold (``mpcompile.passes.freeze_batch``); the plan
    #: itself, and every other backend's artifact, keep the batch dynamic
    static_shapes: bool = False
    #: integer kernels that write their int32 accumulator dequantized (× s_in·s_w) to a float output: where every
    #: reader of such a node's output is float, the plan's requantization there is dropped (``legalize.py``).
    #: ORT's ``MatMulIntegerToFloat``, for example; TFLite's int8 FULLY_CONNECTED must write int8.
    float_output_ops: frozenset[str] = frozenset()
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
        if self.static_shapes:
            flags.append("static shapes")
        return ", ".join(parts + flags)

    def to_dict(self) -> dict[str, Any]:
        return {
            "ops": {op: sorted(p.value for p in ps) for op, ps in sorted(self.ops.items())},
            "per_channel_weights": self.per_channel_weights,
            "symmetric_activations_only": self.symmetric_activations_only,
            "activation_qtypes": sorted(q.value for q in self.activation_qtypes),
            "int16_zero_point_zero": self.int16_zero_point_zero,
            "float_precisions": sorted(p.value for p in self.float_precisions),
            "static_shapes": self.static_shapes,
            "float_output_ops": sorted(self.float_output_ops),
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

    subject: str  # tensor or node name; for "shapes", the inputs
    kind: str  # "tensor" | "node" | "shapes" (input dims frozen for this backend)
    change: str
    reason: str

    def to_dict(self) -> dict[str, str]:
        return dataclasses.asdict(self)

    def __str__(self) -> str:
        return f"{self.kind} {self.subject}: {self.change} ({self.reason})"
