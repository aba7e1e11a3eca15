"""ONNX Runtime's legalization: the shared rules from its capabilities, and the dynamic-quantization plan.

What those capabilities say, and why, is in ``mpcompile_onnxruntime.OnnxRuntimeBackend.capabilities``:
int8/uint8 activations, per-channel weights, FP16/BF16 and INT16 run in FP32.

With ``quantization="dynamic"`` the legalized plan itself computes what the artifact computes,
so that conformance holds the artifact to it: before each MatMul with a constant int8 weight,
``DynamicQuantizeLinear → DequantizeLinear`` (ONNX semantics: uint8, range of the batch
widened to contain 0) is inserted into the plan as ordinary nodes; the fake-quant reference
evaluates them like any node, and ORT fuses them with the MatMul into
``DynamicQuantizeMatMul``/``MatMulIntegerToFloat``. Every other static spec is dropped and
every other integer node runs in FP32; each change is a deviation.
"""

from __future__ import annotations

import numpy as np

from mpcompile.backends.api import (
    Capabilities,
    Deviation,
    Graph,
    Node,
    Precision,
    QType,
    Tensor,
    legalize_with_capabilities,
)
from mpcompile_onnxruntime.options import OnnxRuntimeOptions

BACKEND = "onnxruntime"
DYNAMIC_REASON = "quantization=dynamic: the input is quantized per batch at run time (DynamicQuantizeLinear)"


def legalize_for_onnxruntime(plan: Graph, caps: Capabilities, options: OnnxRuntimeOptions | None = None) -> tuple[Graph, list[Deviation]]:
    legal, deviations = legalize_with_capabilities(plan, caps, backend_name=BACKEND)
    if options is not None and options.quantization == "dynamic":
        deviations += dynamic_plan(legal)
    return legal, deviations


def _int8_weight(g: Graph, name: str, axis_ok: tuple[int | None, ...]) -> bool:
    t = g.tensors.get(name)
    return (
        t is not None
        and t.is_constant
        and t.value is not None
        and t.value.ndim == 2
        and t.quant is not None
        and t.quant.qtype == QType.INT8
        and t.quant.axis in axis_ok
    )


def _gemm_as_matmul(g: Graph, node: Node, out: list[Deviation]) -> Node | None:
    """An int8 ``Gemm(A, B[, C])`` with a constant weight as ``MatMul(A, B or Bᵀ)`` (+ ``Add(C)``): same values."""
    if node.attr("alpha", 1.0) != 1.0 or node.attr("beta", 1.0) != 1.0 or node.attr("transA", 0):
        return None
    trans_b = bool(node.attr("transB", 0))
    if not _int8_weight(g, node.inputs[1], (None, 0 if trans_b else 1)):
        return None
    weight = g.tensors[node.inputs[1]]
    spec = weight.quant
    if trans_b:
        name = g.unique_name(f"{weight.name}_transposed")
        g.add_tensor(Tensor(name, value=np.ascontiguousarray(weight.value.T),
                            quant=spec if spec.axis is None else spec.replace(axis=1)))
        weight = g.tensors[name]
    out_name = node.outputs[0]
    bias = node.inputs[2] if len(node.inputs) > 2 and node.inputs[2] else None
    matmul_out = out_name
    if bias is not None:
        matmul_out = g.unique_name(f"{out_name}_matmul")
        g.add_tensor(Tensor(matmul_out, g.tensors[out_name].dtype, g.tensors[out_name].shape))
    # The MatMul keeps the Gemm's name: reports that line nodes up by name find it in the Gemm's place.
    matmul = Node(node.name, "MatMul", [node.inputs[0], weight.name], [matmul_out], {},
                  precision=node.precision, precision_reason=node.precision_reason)
    index = g.nodes.index(node)
    replacement = [matmul]
    if bias is not None:
        replacement.append(Node(g.unique_name(f"{node.name}_bias"), "Add", [matmul_out, bias], [out_name], {},
                                precision=Precision.FP32, precision_reason=DYNAMIC_REASON))
    g.nodes[index : index + 1] = replacement
    if trans_b and not any(node.inputs[1] in n.inputs for n in g.nodes):
        del g.tensors[node.inputs[1]]  # only the transposed copy is read now
    out.append(Deviation(node.name, "node", "Gemm → MatMul + Add (same values)", "ORT's dynamic kernels fuse MatMul only"))
    return matmul


def _gather_tables(g: Graph) -> set[str]:
    """Quantized per-tensor constants read only as the data of integer Gathers (embedding tables): they stay
    int8 (gathered as integers, then dequantized: exact, and a quarter of the file)."""
    readers: dict[str, list[Node]] = {}
    for node in g.nodes:
        for i, name in enumerate(node.inputs):
            if name:
                readers.setdefault(name, []).append(node if i == 0 and node.op_type == "Gather" else None)  # type: ignore[arg-type]
    tables = set()
    for t in g.tensors.values():
        spec = t.quant
        if spec is None or not t.is_constant or spec.axis is not None or spec.qtype not in (QType.INT8, QType.UINT8):
            continue
        nodes = readers.get(t.name, [])
        if nodes and all(n is not None and n.precision is not None and n.precision.is_integer for n in nodes):
            tables.add(t.name)
    return tables


def dynamic_plan(g: Graph) -> list[Deviation]:
    """Rewrite the legalized plan ``g`` in place for dynamic quantization; return the deviations."""
    out: list[Deviation] = []
    for node in list(g.nodes):
        if node.op_type == "Gemm" and node.precision == Precision.INT8:
            _gemm_as_matmul(g, node, out)
    dynamic: dict[str, list[Node]] = {}
    for node in g.nodes:
        if node.op_type != "MatMul" or node.precision != Precision.INT8 or not _int8_weight(g, node.inputs[1], (None, 1)):
            continue
        source = g.tensors.get(node.inputs[0])
        if source is None or source.is_constant or not source.is_float:
            continue
        dynamic.setdefault(source.name, []).append(node)
    chosen = {id(n) for nodes in dynamic.values() for n in nodes}
    tables = _gather_tables(g)
    chosen |= {id(n) for n in g.nodes if n.op_type == "Gather" and n.inputs[0] in tables}
    for node in g.nodes:
        if node.precision is not None and node.precision.is_integer and id(node) not in chosen:
            out.append(Deviation(node.name, "node", f"{node.precision.value} → fp32", "quantization=dynamic: only MatMuls with a "
                                 "constant weight run in integer (ORT's dynamic kernels)"))
            node.precision = Precision.FP32
            node.precision_reason = f"{node.precision_reason}; legalized for {BACKEND}: quantization=dynamic".lstrip("; ")
    keep = {n.inputs[1] for nodes in dynamic.values() for n in nodes} | tables
    for t in g.tensors.values():
        if t.quant is not None and t.name not in keep:
            what = "static quantization removed"
            out.append(Deviation(t.name, "tensor", what, "quantization=dynamic: ranges are measured per batch at run time"
                                 if not t.is_constant else "quantization=dynamic: only MatMul weights and embedding tables "
                                 "stay int8"))
            t.quant = None
    for name, nodes in dynamic.items():
        source = g.tensors[name]
        quantized = g.add_tensor(Tensor(g.unique_name(f"{name}_dynamic_quantized"), np.uint8, source.shape))
        scale = g.add_tensor(Tensor(g.unique_name(f"{name}_dynamic_scale"), np.float32, ()))
        zero = g.add_tensor(Tensor(g.unique_name(f"{name}_dynamic_zero_point"), np.uint8, ()))
        value = g.add_tensor(Tensor(g.unique_name(f"{name}_dynamic"), np.float32, source.shape))
        g.nodes.append(Node(g.unique_name(f"{name}_DynamicQuantizeLinear"), "DynamicQuantizeLinear", [name],
                            [quantized.name, scale.name, zero.name], {}))
        g.nodes.append(Node(g.unique_name(f"{name}_dynamic_DequantizeLinear"), "DequantizeLinear",
                            [quantized.name, scale.name, zero.name], [value.name], {}))
        for node in nodes:
            node.inputs = [value.name, *node.inputs[1:]]
            node.precision_reason = f"{node.precision_reason}; {DYNAMIC_REASON}".lstrip("; ")
            out.append(Deviation(node.name, "node", "int8 static activations → int8 dynamic activations (uint8, per batch)",
                                 DYNAMIC_REASON))
    g.toposort()
    return out
