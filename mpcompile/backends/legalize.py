"""Adapt a plan to a backend's capabilities, recording every change as a ``Deviation``.

Shared by every backend (a backend overrides ``Backend.legalize`` only to add its own
rules on top). The conformance reference is always evaluated on the *legalized* plan,
so what a backend is held to is exactly what it was asked to compute.
"""

from __future__ import annotations

import numpy as np

from mpcompile.backends.capabilities import Capabilities, Deviation
from mpcompile.ir.graph import Graph
from mpcompile.ir.numerics import refresh_bias_specs
from mpcompile.ir.quant import QuantSpec, spec_from_range
from mpcompile.ir.types import Precision, QType


def legalize_with_capabilities(plan: Graph, caps: Capabilities, backend_name: str) -> tuple[Graph, list[Deviation]]:
    g = plan.copy()
    deviations: list[Deviation] = []
    _legalize_node_precisions(g, caps, backend_name, deviations)
    _drop_orphan_specs(g, deviations)
    _float_accumulator_outputs(g, caps, backend_name, deviations)
    _legalize_tensor_specs(g, caps, backend_name, deviations)
    refresh_bias_specs(g)
    return g, deviations


def _fallback(caps: Capabilities, op_type: str, wanted: Precision) -> Precision:
    order = {
        # Accuracy first: a user who asked for 16-bit gets float, not 8-bit, where 16-bit is missing.
        Precision.INT16: [Precision.FP16, Precision.FP32],
        Precision.INT8: [Precision.FP32],
        Precision.BF16: [Precision.FP16, Precision.FP32],
        Precision.FP16: [Precision.FP32],
        Precision.FP32: [],
    }[wanted]
    for p in order:
        if caps.supports(op_type, p) or (p.is_float and p in caps.float_precisions and p == Precision.FP32):
            return p
    return Precision.FP32


def _legalize_node_precisions(g: Graph, caps: Capabilities, backend: str, out: list[Deviation]) -> None:
    for node in g.nodes:
        p = node.precision
        if p is None:
            continue
        ok = caps.supports(node.op_type, p) if p.is_integer else (p in caps.float_precisions)
        if ok:
            continue
        new = _fallback(caps, node.op_type, p)
        why = (
            f"{backend} has no {p.value} kernel for {node.op_type}"
            if p.is_integer
            else f"{backend} does not run {p.value}"
        )
        out.append(Deviation(node.name, "node", f"{p.value} → {new.value}", why))
        node.precision = new
        node.precision_reason = f"{node.precision_reason}; legalized for {backend}: {why}".lstrip("; ")
        if new == Precision.INT8 and p == Precision.INT16:
            for name in node.inputs + node.outputs:
                t = g.tensors.get(name)
                if t is not None and t.quant is not None and t.quant.qtype == QType.INT16 and not t.is_constant:
                    lo, hi = (float(v) for v in t.quant.representable_range())
                    t.quant = spec_from_range(lo, hi, QType.INT8, provenance={**dict(t.quant.provenance), "legalized": "int16→int8"})


def _drop_orphan_specs(g: Graph, out: list[Deviation]) -> None:
    """A spec only means something next to an integer node; between float nodes it is dropped."""
    touching: set[str] = set()
    for node in g.nodes:
        if node.precision is not None and node.precision.is_integer:
            touching.update(n for n in node.inputs + node.outputs if n)
    for t in g.tensors.values():
        if t.quant is not None and t.name not in touching:
            out.append(Deviation(t.name, "tensor", "quantization removed", "no integer node reads or writes it after legalization"))
            t.quant = None


def _float_accumulator_outputs(g: Graph, caps: Capabilities, backend: str, out: list[Deviation]) -> None:
    """Drop the requantization of an integer MAC output that only float nodes read (the plan marks it
    ``readers: float``), where the backend's kernel writes the dequantized int32 accumulator itself.

    The numbers get more exact, not different in kind: the reference of the legalized plan computes the
    same float output, so conformance still holds the artifact to it.
    """
    if not caps.float_output_ops:
        return
    producers = g.producers()
    consumers = g.consumers()
    for t in g.tensors.values():
        spec = t.quant
        node = producers.get(t.name)
        if spec is None or t.is_constant or spec.provenance.get("readers") != "float" or node is None:
            continue
        if node.op_type not in caps.float_output_ops or not (node.precision and node.precision.is_integer):
            continue
        if t.name in g.outputs or any(u.precision is not None and u.precision.is_integer for u in consumers.get(t.name, [])):
            continue
        t.quant = None
        out.append(Deviation(t.name, "tensor", "requantization removed",
                             f"only float nodes read it: {backend}'s integer {node.op_type} writes its accumulator "
                             f"dequantized to float"))


def _legalize_tensor_specs(g: Graph, caps: Capabilities, backend: str, out: list[Deviation]) -> None:
    for t in g.tensors.values():
        spec = t.quant
        if spec is None or spec.qtype in (QType.INT32, QType.INT64):
            continue
        new = spec
        reasons = []
        if t.is_constant and spec.axis is not None and not caps.per_channel_weights:
            amax = float(np.max(np.abs(np.asarray(spec.representable_range()))))
            new = QuantSpec(spec.qtype, np.float32(amax / spec.qmax), 0, None, True, spec.narrow_range, spec.provenance)
            reasons.append("per-channel → per-tensor: backend supports per-tensor weights only")
        if not t.is_constant and new.qtype not in caps.activation_qtypes:
            if new.qtype == QType.UINT8 and QType.INT8 in caps.activation_qtypes:
                # Same scale, zero-point shifted by 128: the representable values are identical.
                new = QuantSpec(QType.INT8, new.scale, (new.zero_point.astype(np.int32) - 128), new.axis, False, new.narrow_range, new.provenance)
                reasons.append("uint8 → int8 with zero-point − 128 (identical values)")
        if not t.is_constant and new.qtype == QType.INT16 and caps.int16_zero_point_zero and np.any(new.zero_point != 0):
            new = _symmetric(new, t.name)
            reasons.append("int16 needs zero-point 0")
        if caps.symmetric_activations_only and not t.is_constant and not new.symmetric:
            if new.qtype != QType.UINT8 or QType.UINT8 not in caps.activation_qtypes:
                new = _symmetric(new, t.name)
                reasons.append(f"{backend} accepts symmetric activations only (zero-point 0); range re-derived as ±max|x|")
        if new is not spec:
            t.quant = new
            out.append(Deviation(t.name, "tensor", f"{_describe(spec)} → {_describe(new)}", "; ".join(reasons)))


def _symmetric(spec: QuantSpec, name: str) -> QuantSpec:
    """Symmetric spec covering the same values: ±max(|lo|, |hi|) of the calibrated range.

    The calibrated range (not just the old representable range re-centred) is used when the
    provenance kept it, so the symmetric scale is derived from the statistics.
    """
    lo, hi = (float(v) for v in spec.representable_range())
    prov = dict(spec.provenance)
    if "symmetric_amax" in prov:
        lo, hi = -float(prov["symmetric_amax"]), float(prov["symmetric_amax"])
    elif "range" in prov:
        lo, hi = (float(v) for v in prov["range"])
    qtype = QType.INT8 if spec.qtype == QType.UINT8 else spec.qtype
    return spec_from_range(lo, hi, qtype, symmetric=True, provenance={**prov, "legalized": "symmetric"})


def _describe(spec: QuantSpec) -> str:
    if spec.axis is None:
        return f"{spec.qtype.value}(s={float(spec.scale):.4g}, zp={int(spec.zero_point)})"
    return f"{spec.qtype.value}(per-channel axis {spec.axis})"
