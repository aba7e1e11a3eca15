"""TensorRT's rules on top of the shared legalization (``mpcompile.backends.legalize``).

The shared pass already turns asymmetric activation specs into symmetric ones (from the
calibration statistics kept in the provenance), uint8 activations into int8, and int16
nodes into int8 nodes. TensorRT adds:

* every quantized tensor is int8 with zero-point 0: int16 and uint8 specs that are left
  (constants, or tensors the shared pass did not touch) become symmetric int8;
* per-channel scales only on the weights of Conv/ConvTranspose/Gemm/MatMul: any other
  per-channel spec becomes per-tensor;
* constants that are not weights (e.g. the operand of an Add) get symmetric narrow-range
  specs like weights, because a DequantizeLinear in front of TensorRT must have zero-point 0.

Every change is a ``Deviation`` that names the tensor and says why.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from mpcompile.backends.api import (
    Capabilities,
    Deviation,
    Graph,
    QType,
    QuantSpec,
    Tensor,
    legalize_with_capabilities,
    ops,
    refresh_bias_specs,
    spec_from_range,
    weight_spec,
)

_BIAS_QTYPES = (QType.INT32, QType.INT64)


def legalize_for_tensorrt(plan: Graph, caps: Capabilities, backend_name: str = "tensorrt") -> tuple[Graph, list[Deviation]]:
    graph, deviations = legalize_with_capabilities(plan, caps, backend_name=backend_name)
    weights = weight_tensors(graph)
    for tensor in graph.tensors.values():
        spec = tensor.quant
        if spec is None or spec.qtype in _BIAS_QTYPES:
            continue
        reasons: list[str] = []
        if tensor.is_constant:
            new = _constant_spec(tensor, spec, tensor.name in weights, reasons)
        else:
            new = _activation_spec(spec, reasons)
        if new is not spec:
            tensor.quant = new
            deviations.append(Deviation(tensor.name, "tensor", f"{describe(spec)} → {describe(new)}", "; ".join(reasons)))
    refresh_bias_specs(graph)
    return graph, deviations


def weight_tensors(graph: Graph) -> set[str]:
    """Constant weight inputs of integer Conv/ConvTranspose/Gemm/MatMul nodes: the only per-channel tensors."""
    names: set[str] = set()
    for node in graph.nodes:
        if node.op_type in ops.WEIGHTED and node.precision is not None and node.precision.is_integer:
            index = ops.WEIGHTED[node.op_type][0]
            if len(node.inputs) > index and node.inputs[index]:
                tensor = graph.tensors.get(node.inputs[index])
                if tensor is not None and tensor.is_constant:
                    names.add(tensor.name)
    return names


def _provenance(spec: QuantSpec, **extra: Any) -> dict[str, Any]:
    return {**dict(spec.provenance), **extra}


def _activation_amax(spec: QuantSpec) -> float:
    """±amax the symmetric spec covers: from the statistics when the provenance kept them."""
    prov: Mapping[str, Any] = spec.provenance
    if "symmetric_amax" in prov:
        return float(prov["symmetric_amax"])
    if "range" in prov:
        lo, hi = (float(v) for v in prov["range"])
        return max(abs(lo), abs(hi))
    lo, hi = spec.representable_range()
    return float(max(np.max(np.abs(lo)), np.max(np.abs(hi))))


def _activation_spec(spec: QuantSpec, reasons: list[str]) -> QuantSpec:
    if spec.axis is not None:
        reasons.append("TensorRT quantizes activations per tensor (per-channel scales only on weights)")
    if spec.qtype == QType.INT16:
        reasons.append("TensorRT has no int16 quantization: int16 → int8")
    elif spec.qtype == QType.UINT8:
        reasons.append("TensorRT quantizes to int8 only: uint8 → int8")
    if np.any(spec.zero_point != 0) and spec.qtype != QType.UINT8:
        reasons.append("TensorRT needs zero-point 0 (symmetric); range re-derived as ±max|x|")
    if not reasons:
        return spec
    amax = _activation_amax(spec)
    return spec_from_range(-amax, amax, QType.INT8, symmetric=True, provenance=_provenance(spec, legalized="tensorrt int8 symmetric"))


def _constant_spec(tensor: Tensor, spec: QuantSpec, is_weight: bool, reasons: list[str]) -> QuantSpec:
    axis = spec.axis
    if axis is not None and not is_weight:
        reasons.append("per-channel scales only on Conv/Gemm/MatMul weights in TensorRT: per-tensor")
        axis = None
    if spec.qtype != QType.INT8:
        reasons.append(f"TensorRT quantizes to int8 only: {spec.qtype.value} → int8")
    if np.any(spec.zero_point != 0):
        reasons.append("TensorRT needs zero-point 0: symmetric narrow range over ±max|w|")
    if not reasons:
        return spec
    assert tensor.value is not None
    role = "weight" if is_weight else "constant"
    return weight_spec(tensor.value, axis, QType.INT8, provenance=_provenance(spec, role=role, legalized="tensorrt int8 symmetric"))


def describe(spec: QuantSpec) -> str:
    if spec.axis is None:
        return f"{spec.qtype.value}(s={float(spec.scale):.4g}, zp={int(spec.zero_point)})"
    return f"{spec.qtype.value}(per-channel axis {spec.axis})"
