"""Reading and writing the weights of Conv/Gemm layers as [output channel, input...] matrices."""

from __future__ import annotations

import numpy as np

from mpcompile.ir.graph import Graph, Node, Tensor


def uses(graph: Graph) -> dict[str, int]:
    """How many node inputs read each tensor (a shared constant must not be changed for one user)."""
    counts: dict[str, int] = {}
    for node in graph.nodes:
        for name in node.inputs:
            if name:
                counts[name] = counts.get(name, 0) + 1
    for name in graph.outputs:
        counts[name] = counts.get(name, 0) + 1
    return counts


def constant(graph: Graph, name: str | None) -> np.ndarray | None:
    tensor = graph.tensors.get(name) if name else None
    if tensor is None or not tensor.is_constant or not tensor.is_float:
        return None
    return tensor.value


def replace_constant(graph: Graph, name: str, value: np.ndarray) -> None:
    """A new tensor object with the new value: constant arrays are shared between graph copies (immutable)."""
    old = graph.tensors[name]
    graph.tensors[name] = Tensor(name, value=np.ascontiguousarray(value, dtype=old.value.dtype), quant=old.quant)


def conv_weight(graph: Graph, node: Node) -> np.ndarray | None:
    if node.op_type != "Conv" or len(node.inputs) < 2:
        return None
    w = constant(graph, node.inputs[1])
    return w if w is not None and w.ndim >= 3 else None


def conv_bias(graph: Graph, node: Node) -> np.ndarray:
    """The conv's bias (zeros when it has none)."""
    w = graph.tensors[node.inputs[1]].value
    b = constant(graph, node.inputs[2]) if len(node.inputs) > 2 and node.inputs[2] else None
    return np.zeros(w.shape[0], w.dtype) if b is None else b


def set_conv_bias(graph: Graph, node: Node, bias: np.ndarray) -> None:
    """Write a conv's bias, adding a bias input to a conv that had none."""
    if len(node.inputs) > 2 and node.inputs[2]:
        replace_constant(graph, node.inputs[2], bias)
        return
    name = graph.unique_name(f"{node.name}_bias")
    graph.add_tensor(Tensor(name, value=np.asarray(bias, dtype=graph.tensors[node.inputs[1]].value.dtype)))
    node.inputs = [*node.inputs[:2], name]


def gemm_matrix(node: Node, w: np.ndarray) -> np.ndarray:
    """Gemm/MatMul weight as [out, in]."""
    if node.op_type == "Gemm" and int(node.attr("transB", 0)):
        return w
    return w.T


def from_gemm_matrix(node: Node, m: np.ndarray) -> np.ndarray:
    if node.op_type == "Gemm" and int(node.attr("transB", 0)):
        return m
    return m.T
