"""Compare: how far a backend may be from the reference, per output and per layer, in LSB.

Tolerances are in quantization steps (LSB) of each tensor's scale; float outputs downstream
of quantized tensors by a fixed float rule; ``rounding_envelope`` measures how far the plan itself
moves when one tie rounds the other way.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from mpcompile.errors import MpcompileError
from mpcompile.ir import ops
from mpcompile.ir.graph import Graph
from mpcompile.ir.types import QType
from mpcompile.reference import ReferenceRunner
from mpcompile.reference.metrics import Accumulator

#: Outputs of lookup-table kernels: runtimes round differently inside them (docs/design.md: up to 9 LSB).
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
    #: A float output passes when max |diff| ≤ float_rtol × max |reference|…
    float_rtol: float = 1e-2
    #: …or its SQNR against the reference is at least this (cosine ≈ 0.9995). A fixed bar: it does
    #: not loosen when the plan is far from FP32 or unstable under rounding (the report says so).
    float_min_sqnr_db: float = 30.0

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
        if name in self.per_tensor:
            return self.per_tensor[name]
        tolerance = self.default_lsb
        spec = plan.tensors[name].quant if name in plan.tensors else None
        if spec is not None and spec.qtype == QType.INT16:
            tolerance = max(tolerance, self.int16_lsb)
        # A lookup-table output keeps its tolerance through data movement (reshape, transpose…).
        producer = producers.get(name)
        while producer is not None and producer.op_type in ops.SCALE_PRESERVING and producer.inputs:
            producer = producers.get(producer.inputs[0])
        if producer is not None and producer.op_type in LUT_OPS:
            tolerance = max(tolerance, self.lut_lsb)
        return tolerance


#: Relative nudge of every activation scale used to measure a plan's rounding sensitivity.
NUDGE = 1e-6


def nudged_scales(plan: Graph, factor: float = 1 + NUDGE) -> Graph:
    """The plan with every activation scale ×``factor`` (1 ± 1e-6): only values sitting on rounding ties move."""
    g = plan.copy()
    for t in g.tensors.values():
        if t.quant is not None and not t.is_constant:
            t.quant = t.quant.replace(scale=(t.quant.scale.astype(np.float64) * factor).astype(np.float32))
    return g


def _moved_more(a: Accumulator, b: Accumulator) -> Accumulator:
    """Of two envelopes of one output, the one that moved further (quantized: more LSB; float: lower SQNR)."""
    if a.quantized:
        return a if (a.max_lsb or 0.0) >= (b.max_lsb or 0.0) else b
    return a if a.sqnr_db <= b.sqnr_db else b


def rounding_envelope(plan: Graph, batches: list, reference: list, engine: str, tol: Tolerances | None = None) -> dict[str, Accumulator]:
    """Per output: the reference against itself with every activation scale nudged by 1e-6, up and down.

    Backends round ties differently (half-to-even, half-away, ties toward +inf: docs/design.md);
    only values sitting on a tie move under a one-in-a-million nudge, so how far an output moves
    is how far the plan amplifies a single tie broken the other way. Each direction breaks only
    half the ties the other way: ×(1 + 1e-6) moves a tie the reference rounded up (to even) down,
    ×(1 − 1e-6) one it rounded down up, which is what a backend rounding half away from zero does
    to half of them; each output keeps the direction that moved it further. A plan that moves
    beyond an output's rule here cannot be matched end to end at that output by a backend that
    rounds ties differently (quantized outputs: ``max_lsb``; float outputs: ``sqnr_db``, infinite
    when stable).
    """
    envelopes = []
    for factor in (1 + NUDGE, 1 - NUDGE):
        nudged = ReferenceRunner(nudged_scales(plan, factor), engine=engine)
        envelope = output_accumulators(plan, tol or Tolerances())
        for batch, ref in zip(batches, reference):
            moved = nudged.run(batch)
            for name, acc in envelope.items():
                acc.update(moved[name], ref[name])
        envelopes.append(envelope)
    up, down = envelopes
    return {name: _moved_more(up[name], down[name]) for name in up}


def output_accumulators(legal: Graph, tol: Tolerances) -> dict[str, Accumulator]:
    """One accumulator per output of the legalized plan, with its LSB tolerance or float rule."""
    producers = legal.producers()
    accumulators = {}
    for name in legal.outputs:
        spec = legal.tensors[name].quant
        quantized = spec is not None and spec.axis is None
        accumulators[name] = Accumulator(
            scale=float(spec.scale) if quantized else None,
            tolerance_lsb=tol.for_tensor(legal, name, producers) if quantized else None,
            float_rtol=tol.float_rtol,
            min_sqnr_db=None if quantized else tol.float_min_sqnr_db,
        )
    return accumulators


def layer_accumulators(legal: Graph, names: Sequence[str], tol: Tolerances) -> dict[str, Accumulator]:
    producers = legal.producers()
    return {
        name: Accumulator(scale=float(legal.tensors[name].quant.scale), tolerance_lsb=tol.for_tensor(legal, name, producers))
        for name in names
    }
