"""Turn QuantizeLinear/DequantizeLinear pairs of a QDQ model into ``QuantSpec`` annotations.

A QDQ model (from quantization-aware training, ORT's quantizer, ModelOpt...) carries its
numbers in Q/DQ nodes. The IR carries them on tensors, so this pass:

* ``x → QuantizeLinear → DequantizeLinear → consumers`` becomes ``x`` annotated with the
  pair's spec, consumers reading ``x`` directly;
* ``int8 initializer → DequantizeLinear`` (stored weights, int32 biases) becomes a float
  initializer holding the dequantized values, annotated with the same spec, so that
  re-quantizing it gives back the stored integers exactly;
* ``float initializer → Q → DQ`` (QAT exports keep float weights) becomes the float
  initializer annotated with the spec.

Scales and zero-points are copied bit for bit.
"""

from __future__ import annotations

import numpy as np

from mpcompile.errors import PlanError
from mpcompile.ir.graph import Graph, Node, Tensor
from mpcompile.ir.quant import QuantSpec
from mpcompile.ir.types import QType
from mpcompile.passes.base import GraphPass, PassResult

_QTYPES = {np.dtype(q.value): q for q in (QType.INT8, QType.UINT8, QType.INT16, QType.INT32)}
_FIX = "the QDQ model's quantization parameters are invalid; re-export it from the quantizer"


def _where(graph: Graph, node: Node, tensor: str) -> str:
    return f"{graph.metadata.get('source', graph.name)}: tensor {tensor!r} ({node.op_type} {node.name!r})"


def _spec_from_node(graph: Graph, node: Node, data_rank: int | None, tensor: str) -> QuantSpec | None:
    """The pair's spec, or ``None`` if it is not representable (left in place); ``PlanError`` naming the
    file, the tensor and the node if its numbers are invalid (a scale of 0, NaN or Inf, a float or
    out-of-range zero-point, shapes that do not match)."""
    scale_t = graph.tensors.get(node.inputs[1]) if len(node.inputs) > 1 else None
    zp_t = graph.tensors.get(node.inputs[2]) if len(node.inputs) > 2 and node.inputs[2] else None
    if scale_t is None or not scale_t.is_constant or (zp_t is not None and not zp_t.is_constant):
        return None
    where = _where(graph, node, tensor)
    raw_scale = np.asarray(scale_t.value)
    if raw_scale.dtype.kind != "f":
        raise PlanError(f"{where}: scale {scale_t.name!r} is {raw_scale.dtype}, not a float ({_FIX})")
    scale = np.asarray(raw_scale, dtype=np.float32)
    bad = ~np.isfinite(scale) | ~(scale > 0)
    if bad.any():
        raise PlanError(f"{where}: scale {scale[bad].reshape(-1)[0].item()!r} in {scale_t.name!r} is not finite and > 0 ({_FIX})")
    if zp_t is not None:
        zero_point = np.asarray(zp_t.value)
        if zero_point.dtype in (np.float16, np.float32, np.float64):
            raise PlanError(f"{where}: zero-point {zp_t.name!r} is {zero_point.dtype}, not an integer type ({_FIX})")
        if zero_point.size != scale.size:
            raise PlanError(f"{where}: scale {scale_t.name!r} has shape {list(scale.shape)} but zero-point "
                            f"{zp_t.name!r} has {list(zero_point.shape)} ({_FIX})")
        zero_point = zero_point.reshape(scale.shape)  # [1] next to a scalar is one value
    else:
        zero_point = np.zeros(scale.shape, dtype=np.uint8 if node.op_type == "QuantizeLinear" else np.int32)
        if node.op_type == "DequantizeLinear":
            data = graph.tensors.get(node.inputs[0])
            if data is not None and data.dtype is not None:
                zero_point = np.zeros(scale.shape, dtype=data.dtype)
    qtype = _QTYPES.get(zero_point.dtype)
    if qtype is None:
        return None
    if node.attr("block_size", 0):
        return None  # blocked quantization is not representable as a per-channel spec
    axis = None
    if scale.ndim == 1 and scale.size > 1 or scale.ndim == 1 and data_rank not in (None, 0, 1) and scale.size > 1:
        axis = node.attr("axis", 1)
        if isinstance(axis, bool) or not isinstance(axis, int):
            raise PlanError(f"{where}: axis {axis!r} is not an integer ({_FIX})")
        if data_rank is not None:
            if not -data_rank <= axis < data_rank:
                raise PlanError(f"{where}: axis {axis} is out of range for rank {data_rank} ({_FIX})")
            if axis < 0:
                axis += data_rank
    elif scale.ndim == 1 and scale.size == 1:
        scale, zero_point = scale.reshape(()), zero_point.reshape(())
    elif scale.ndim > 1:
        raise PlanError(f"{where}: scale {scale_t.name!r} has shape {list(scale.shape)}; without block_size a "
                        f"Q/DQ scale is a scalar or 1-d ({_FIX})")
    symmetric = bool(np.all(zero_point == 0)) and qtype.is_signed
    narrow = False
    try:
        return QuantSpec(qtype, scale, zero_point, axis, symmetric, narrow, {"source": "qdq-import", "node": node.name})
    except PlanError as exc:
        raise PlanError(f"{where}: {exc} ({_FIX})") from None


def _check_shape(graph: Graph, node: Node, spec: QuantSpec, tensor: Tensor) -> None:
    try:
        spec.validate_for_shape(tensor.shape, tensor.name)
    except PlanError as exc:
        text = str(exc).split(": ", 1)[-1]
        raise PlanError(f"{_where(graph, node, tensor.name)}: {text} ({_FIX})") from None


class AbsorbQDQ(GraphPass):
    name = "absorb-qdq"

    def call(self, graph: Graph) -> PassResult:
        notes: list[str] = []
        consumers = graph.consumers()
        producers = graph.producers()
        drop: set[int] = set()
        for dq in list(graph.nodes):
            if dq.op_type != "DequantizeLinear" or id(dq) in drop:
                continue
            src_name = dq.inputs[0]
            src = graph.tensors.get(src_name)
            q = producers.get(src_name)
            out = dq.outputs[0]
            if src is not None and src.is_constant:
                # Stored integer tensor (weight or bias): keep its dequantized value, annotated.
                spec = _spec_from_node(graph, dq, src.rank, src_name)
                if spec is None:
                    notes.append(f"{dq.name}: left in place (non-constant or unsupported parameters)")
                    continue
                if src.value.dtype != spec.qtype.numpy_dtype:
                    raise PlanError(f"{_where(graph, dq, src_name)}: the stored tensor is {src.value.dtype} but its "
                                    f"zero-point is {spec.qtype.value} ({_FIX})")
                _check_shape(graph, dq, spec, src)
                is_bias = spec.qtype == QType.INT32
                spec = spec.replace(narrow_range=bool(spec.symmetric and not is_bias and src.value.min() > spec.qtype.qmin))
                value = spec.dequantize(src.value)
                only_this_dq = [c is dq for c in consumers.get(src_name, [])] == [True]
                if only_this_dq and src_name not in graph.outputs:
                    # The float weight takes the stored integer tensor's (original) name.
                    graph.tensors[src_name] = Tensor(src_name, value=value, quant=spec)
                    graph.replace_uses(out, src_name)
                else:
                    graph.tensors.pop(out, None)
                    graph.tensors[out] = Tensor(out, value=value, quant=spec)
                drop.add(id(dq))
                continue
            if q is None or q.op_type != "QuantizeLinear":
                notes.append(f"{dq.name}: DequantizeLinear without a QuantizeLinear producer left in place")
                continue
            x_name = q.inputs[0]
            x = graph.tensors.get(x_name)
            spec = _spec_from_node(graph, q, x.rank if x is not None else None, x_name)
            dq_spec = _spec_from_node(graph, dq, x.rank if x is not None else None, x_name)
            if spec is None or dq_spec is None:
                notes.append(f"{q.name}/{dq.name}: left in place (unsupported parameters)")
                continue
            if x is not None:
                _check_shape(graph, q, spec, x)
            if not (np.array_equal(spec.scale, dq_spec.scale) and np.array_equal(spec.zero_point, dq_spec.zero_point)):
                raise PlanError(
                    f"QDQ pair {q.name} → {dq.name} on tensor {x_name!r} uses different scales or zero-points; "
                    f"mpcompile cannot represent a requantizing pair"
                )
            if x is None:
                continue
            if x.quant is not None and x.quant != spec:
                if not (np.array_equal(x.quant.scale, spec.scale) and np.array_equal(x.quant.zero_point, spec.zero_point)):
                    notes.append(f"tensor {x_name!r} has several QDQ pairs with different numbers; kept the first")
            else:
                x.quant = spec
            if x.is_constant and spec.symmetric and spec.axis is not None:
                x.quant = spec.replace(narrow_range=True)
            if out in graph.outputs and x_name not in graph.inputs and x_name not in graph.outputs:
                # Keep the model's output names: the annotated tensor takes the DQ output's name.
                graph.tensors.pop(out, None)
                graph.rename_tensor(x_name, out)
            else:
                graph.replace_uses(out, x_name)
            drop.add(id(dq))
            if all(id(c) in drop or c is dq for c in consumers.get(q.outputs[0], [])):
                drop.add(id(q))
        if drop:
            graph.nodes = [n for n in graph.nodes if id(n) not in drop]
            graph.remove_unused()
        return PassResult(graph, bool(drop), notes)
