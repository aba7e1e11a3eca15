"""TFLite's rules on top of the shared legalization, each change a ``Deviation``.

0. A plan with specs but no node precisions (a QDQ import that skipped the importer) gets
   them from the core's ``InferPrecisions`` pass, as ``mpcompile.load`` would have given.
1. A node the writer cannot emit in its integer precision (no kernel, or an attribute
   TFLite cannot express) runs in FP32 — or, with ``fallback="error"``, the whole list of
   such nodes is reported. An int16 node without a 16x8 kernel goes to FP32 rather than
   int8, so that its int16 neighbours keep their int16 tensors. A node that cannot be
   written at all is always reported.
2. The shared legalization (``legalize_with_capabilities``): BF16 → FP16, uint8 → int8
   activations, zero-point 0 for int16, orphan specs dropped.
3. Lookup-table outputs get TFLite's fixed quantization (SOFTMAX/LOGISTIC int8 1/256 zp
   −128, TANH int8 1/128 zp 0, LOG_SOFTMAX int8 16/256 zp 127; int16 1/32768 zp 0).
4. Operators that move data without requantizing (MAX_POOL_2D, AVERAGE_POOL_2D, RESHAPE,
   TRANSPOSE, PAD, SLICE, GATHER, RESIZE...) write their input's quantization to their
   output. CONCATENATION requantizes, so it keeps different scales.
5. Constant operands in uint8 become int8 (zero-point − 128, identical values); weights of
   integer nodes are int8, symmetric (TFLite's kernels assume zero-point 0).
6. Parameter inputs (Resize roi/scales) are never quantized; an integer node whose float
   input lost its spec (its producer fell back to float) runs in FP32 too.
7. An integer node whose tensors mix int8 and int16 runs in FP32 (a TFLite kernel has one
   activation type).
"""

from __future__ import annotations

import numpy as np

from mpcompile.backends.api import (
    Capabilities,
    Deviation,
    Graph,
    InferPrecisions,
    Node,
    Precision,
    QType,
    QuantSpec,
    UnsupportedOperatorError,
    fixed_output_spec,
    legalize_with_capabilities,
    refresh_bias_specs,
    weight_spec,
)
from mpcompile.backends.api import ops as plan_ops
from mpcompile_tflite import ops

BACKEND = "tflite"

#: The lookup-table kernels whose output quantization TFLite fixes (the numerics contract's values).
FIXED_OUTPUT_KERNELS = {
    ("Softmax", QType.INT8), ("Sigmoid", QType.INT8), ("Tanh", QType.INT8), ("LogSoftmax", QType.INT8),
    ("Softmax", QType.INT16), ("Sigmoid", QType.INT16), ("Tanh", QType.INT16),
}

#: TFLite kernels that copy or select integers: input and output quantization must be equal. The
#: scale-preserving ops of the contract, less those the lowering removes (TILE copies: Tile is one), and the data
#: movement this backend writes in integer precision when an imported QDQ model quantizes it (the planner keeps
#: those in float).
SHARED_QUANTIZATION = (plan_ops.SCALE_PRESERVING - {"Identity", "Dropout"}) | {
    "Trilu", "Compress", "ReverseSequence", "ScatterND", "ScatterElements"}

FALLBACKS = ("float", "error")


def legalize_for_tflite(plan: Graph, caps: Capabilities, fallback: str = "float") -> tuple[Graph, list[Deviation]]:
    if fallback not in FALLBACKS:
        raise ValueError(f"fallback must be one of {FALLBACKS}, got {fallback!r}")
    g = plan.copy()
    deviations: list[Deviation] = []
    InferPrecisions()(g)
    _node_precisions(g, fallback, deviations)
    g, shared = legalize_with_capabilities(g, caps, backend_name=BACKEND)
    deviations += shared
    _unquantized_inputs(g, deviations)
    _mixed_types(g, deviations)
    _parameters(g, deviations)
    _uint8_constants(g, deviations)
    _weights(g, deviations)
    _fixed_outputs(g, deviations)
    _shared_quantization(g, deviations)
    refresh_bias_specs(g)
    # Specs left between float nodes by the fallbacks above are dropped like the shared pass does.
    g, cleanup = legalize_with_capabilities(g, caps, backend_name=BACKEND)
    deviations += cleanup
    return g, deviations


def _node_precisions(g: Graph, fallback: str, out: list[Deviation]) -> None:
    unwritable: list[str] = []
    integer_only: list[str] = []
    for node in g.nodes:
        integer = node.precision is not None and node.precision.is_integer
        if integer:
            reason = ops.why_not(g, node, integer=True)
            if reason is None:
                continue
            float_reason = ops.why_not(g, node, integer=False)
            if float_reason is not None:
                unwritable.append(f"{node.name} ({node.op_type}): {float_reason}")
                continue
            if fallback == "error":
                integer_only.append(f"{node.name} ({node.op_type}): {reason}")
                continue
            out.append(Deviation(node.name, "node", f"{node.precision.value} → fp32", reason))
            node.precision_reason = f"{node.precision_reason}; legalized for {BACKEND}: {reason}".lstrip("; ")
            node.precision = Precision.FP32
        else:
            reason = ops.why_not(g, node, integer=False)
            if reason is not None:
                unwritable.append(f"{node.name} ({node.op_type}): {reason}")
    if unwritable:
        raise UnsupportedOperatorError(
            f"the TFLite backend cannot write {len(unwritable)} node(s) of model {g.name!r}: " + "; ".join(unwritable[:12])
        )
    if integer_only:
        raise UnsupportedOperatorError(
            f"{len(integer_only)} node(s) of model {g.name!r} cannot run in integer precision on TFLite "
            f"(lower with fallback='float' to run them in FP32): " + "; ".join(integer_only[:12])
        )


def _unquantized_inputs(g: Graph, out: list[Deviation]) -> None:
    """An integer node reading an unquantized float activation (its producer fell back to float) runs in FP32.

    The one exception is the plan's fused pattern: an integer Relu/Clip right after an integer producer.
    """
    producers = g.producers()
    changed = True
    while changed:
        changed = False
        for node in g.nodes:
            if node.precision is None or not node.precision.is_integer:
                continue
            for name in node.inputs:
                t = g.tensors.get(name) if name else None
                if t is None or t.is_constant or not t.is_float or t.quant is not None:
                    continue
                producer = producers.get(name)
                if node.op_type in plan_ops.FUSABLE_ACTIVATIONS and producer is not None and producer.precision is not None \
                        and producer.precision.is_integer:
                    continue
                why = f"its input {name!r} is not quantized (the producer runs in float)"
                out.append(Deviation(node.name, "node", f"{node.precision.value} → fp32", why))
                node.precision = Precision.FP32
                changed = True
                break


def _activation_specs(g: Graph, node: Node) -> list[QuantSpec]:
    specs = []
    for name in node.inputs + node.outputs:
        t = g.tensors.get(name) if name else None
        if t is not None and not t.is_constant and t.quant is not None:
            specs.append(t.quant)
    return specs


def _mixed_types(g: Graph, out: list[Deviation]) -> None:
    for node in g.nodes:
        if node.precision is None or not node.precision.is_integer:
            continue
        kinds = {s.qtype for s in _activation_specs(g, node)}
        if len(kinds) > 1:
            why = f"a TFLite kernel has one activation type; {node.op_type} would mix " + " and ".join(sorted(k.value for k in kinds))
            out.append(Deviation(node.name, "node", f"{node.precision.value} → fp32", why))
            node.precision = Precision.FP32


#: float inputs that are parameters, not data: quantizing them would change the operator
PARAMETER_INPUTS = {"Resize": (1, 2)}


def _parameters(g: Graph, out: list[Deviation]) -> None:
    for node in g.nodes:
        for index in PARAMETER_INPUTS.get(node.op_type, ()):
            t = g.tensors.get(node.inputs[index]) if len(node.inputs) > index and node.inputs[index] else None
            if t is not None and t.is_constant and t.quant is not None:
                t.quant = None
                out.append(Deviation(t.name, "tensor", "quantization removed",
                                     f"input {index} of {node.op_type} {node.name!r} is a parameter (roi/scales), not data"))


def _uint8_constants(g: Graph, out: list[Deviation]) -> None:
    """Constant operands (an Add's bias, a Gather table) quantized uint8 become int8 with zero-point − 128."""
    for t in g.tensors.values():
        spec = t.quant
        if not t.is_constant or spec is None or spec.qtype != QType.UINT8:
            continue
        t.quant = QuantSpec(QType.INT8, spec.scale, spec.zero_point.astype(np.int32) - 128, spec.axis, False,
                            spec.narrow_range, {**dict(spec.provenance), "legalized": "uint8→int8"})
        out.append(Deviation(t.name, "tensor", "uint8 → int8 with zero-point − 128 (identical values)",
                             "TFLite's integer kernels take int8 operands"))


def _weights(g: Graph, out: list[Deviation]) -> None:
    for node in g.nodes:
        if node.op_type not in plan_ops.WEIGHTED or node.precision is None or not node.precision.is_integer:
            continue
        w_index = plan_ops.WEIGHTED[node.op_type][0]
        t = g.tensors.get(node.inputs[w_index]) if len(node.inputs) > w_index else None
        if t is None or not t.is_constant or t.quant is None:
            continue
        spec = t.quant
        if spec.qtype == QType.INT8 and not np.any(spec.zero_point != 0):
            continue
        new = weight_spec(t.value, spec.axis, QType.INT8, provenance={**dict(spec.provenance), "legalized": "tflite symmetric int8"})
        t.quant = new
        out.append(Deviation(t.name, "tensor", f"{spec.qtype.value} weights → symmetric int8",
                             "TFLite's integer kernels take int8 weights with zero-point 0"))


def _fixed_outputs(g: Graph, out: list[Deviation]) -> None:
    for node in g.nodes:
        if node.op_type not in plan_ops.FIXED_OUTPUT or node.precision is None or not node.precision.is_integer:
            continue
        t = g.tensors[node.outputs[0]]
        spec = t.quant
        if spec is None:
            continue
        if (node.op_type, spec.qtype) not in FIXED_OUTPUT_KERNELS:
            continue
        fixed = fixed_output_spec(node.op_type, spec.qtype)
        scale, zp = fixed.scale, int(fixed.zero_point)
        if spec.axis is None and spec.scale.view(np.uint32) == scale.view(np.uint32) and int(spec.zero_point) == zp:
            continue
        new = fixed.replace(provenance={**dict(fixed.provenance), "legalized": BACKEND})
        t.quant = new
        out.append(Deviation(t.name, "tensor", f"scale {float(spec.scale):.6g} zp {int(spec.zero_point)} → "
                             f"scale {float(scale):.6g} zp {zp}",
                             f"TFLite's {node.op_type} kernel has a fixed output quantization"))


def _shared_quantization(g: Graph, out: list[Deviation]) -> None:
    for node in g.nodes:  # topological: a changed output flows into the next shared op
        if node.op_type not in SHARED_QUANTIZATION or node.precision is None or not node.precision.is_integer:
            continue
        source = g.tensors[node.inputs[0]].quant
        if source is None:
            continue
        for name in node.outputs:
            t = g.tensors.get(name) if name else None
            if t is None or t.quant is None or t.quant.scale.tobytes() == source.scale.tobytes() and np.array_equal(
                t.quant.zero_point, source.zero_point
            ) and t.quant.qtype == source.qtype:
                continue
            old = t.quant
            t.quant = source.replace(provenance={**dict(source.provenance), "role": "shared", "from": node.inputs[0],
                                                 "legalized": BACKEND})
            out.append(Deviation(name, "tensor", f"scale {float(old.scale):.6g} zp {int(old.zero_point)} → input's "
                                 f"scale {float(source.scale):.6g} zp {int(source.zero_point)}",
                                 f"TFLite's {node.op_type} does not requantize: output quantization must equal the input's"))
