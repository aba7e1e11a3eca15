"""The numerics contract's derived quantities, written once for the planner and every backend.

* Bias of a Conv/Gemm/MatMul: int32 at scale ``s_in × s_w`` (per channel when the weight is),
  zero-point 0. It is derived, never calibrated, so it is recomputed whenever an input or
  weight spec changes (legalization does).
* Outputs of lookup-table kernels have a fixed quantization, the same on every backend so
  artifacts agree: softmax/sigmoid int8 1/256 zero-point −128, tanh int8 1/128 zero-point 0,
  log-softmax int8 16/256 zero-point 127; every int16 LUT output 1/32768 zero-point 0.
"""

from __future__ import annotations

import numpy as np

from mpcompile.ir import ops
from mpcompile.ir.graph import Graph, Node
from mpcompile.ir.quant import QuantSpec
from mpcompile.ir.types import QType


def fixed_output_spec(op_type: str, qtype: QType) -> QuantSpec:
    """The fixed output quantization of a lookup-table op (``ops.FIXED_OUTPUT``) in ``qtype``."""
    if op_type not in ops.FIXED_OUTPUT:
        raise KeyError(op_type)
    provenance = {"role": "fixed", "op": op_type}
    if qtype == QType.INT16:
        return QuantSpec(qtype, np.float32(1.0 / 32768.0), 0, None, True, False, provenance)
    if op_type in ("Softmax", "Sigmoid"):
        zp = -128 if qtype == QType.INT8 else 0
        return QuantSpec(qtype, np.float32(1 / 256), zp, None, False, False, provenance)
    if op_type == "Tanh":
        zp = 0 if qtype == QType.INT8 else 128
        return QuantSpec(qtype, np.float32(1 / 128), zp, None, qtype == QType.INT8, False, provenance)
    # LogSoftmax: output in (-inf, 0]; TFLite fixes 16/256 with zero-point 127.
    zp = 127 if qtype == QType.INT8 else 255
    return QuantSpec(qtype, np.float32(16 / 256), zp, None, False, False, provenance)


def bias_spec(plan: Graph, node: Node) -> QuantSpec | None:
    """int32 bias spec at scale s_in × s_w (per channel when the weight is), zero-point 0."""
    w_index, b_index = ops.WEIGHTED[node.op_type]
    x = plan.tensors.get(node.inputs[0])
    w = plan.tensors.get(node.inputs[w_index])
    bias = plan.tensors.get(node.inputs[b_index]) if b_index is not None else None
    if x is None or w is None or bias is None or x.quant is None or w.quant is None or not bias.is_constant:
        return None
    if bias.value.ndim != 1:
        return None
    s_in = np.float32(x.quant.scale)
    s_w = w.quant.scale.astype(np.float32)
    scale = (s_in * s_w).astype(np.float32)
    if w.quant.axis is None:
        scale = scale.reshape(())
        axis = None
        zp = np.int32(0)
    else:
        axis = 0
        zp = np.zeros(scale.shape, dtype=np.int32)
        if scale.shape[0] != bias.value.shape[0]:
            return None
    return QuantSpec(QType.INT32, scale, zp, axis, True, False, {"role": "bias", "input": x.name, "weight": w.name})


def refresh_bias_specs(plan: Graph) -> None:
    """Recompute every bias spec from its (possibly changed) input and weight specs."""
    for node in plan.nodes:
        if node.op_type in ops.WEIGHTED and node.precision is not None and node.precision.is_integer:
            b_index = ops.WEIGHTED[node.op_type][1]
            if b_index is not None and len(node.inputs) > b_index and node.inputs[b_index]:
                plan.tensors[node.inputs[b_index]].quant = bias_spec(plan, node)
