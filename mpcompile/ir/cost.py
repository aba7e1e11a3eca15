"""What a node costs and what share of a graph runs in each precision: MACs and weights, from shapes.

Shapes come from the IR, or, where the IR's are symbolic (a dynamic batch, sequence or image
size), from ``shapes``: concrete shapes observed when the model ran on real data (the auto
search records them at calibration size). A MAC count never guesses a symbolic dimension: a
node whose shapes stay unknown counts 0 and is reported by :func:`unknown_cost_nodes`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import numpy as np

from mpcompile.ir import ops
from mpcompile.ir.graph import Graph, Node
from mpcompile.ir.types import Precision

#: name -> concrete shape (batch dimension included), e.g. recorded by one run on real data.
Shapes = Mapping[str, tuple[int, ...]]

#: Recurrent ops: gates per hidden unit (the weight W is [directions, gates·hidden, input]).
RECURRENT_GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}


def _shape(graph: Graph, name: str, shapes: Shapes | None, batch_axis: int = 0) -> tuple[int, ...] | None:
    """The concrete shape of ``name``: the IR's, else the observed one; a symbolic batch axis alone counts 1
    (costs are per sample), any other symbolic dimension without an observation makes it unknown."""
    tensor = graph.tensors.get(name)
    if tensor is not None and tensor.is_constant:
        return tuple(tensor.value.shape)
    if tensor is None or tensor.shape is None:
        return tuple(int(d) for d in shapes[name]) if shapes is not None and name in shapes else None
    if all(isinstance(d, int) for d in tensor.shape):
        return tuple(int(d) for d in tensor.shape)
    if shapes is not None and name in shapes:
        return tuple(int(d) for d in shapes[name])
    if all(isinstance(d, int) for i, d in enumerate(tensor.shape) if i != batch_axis):
        return tuple(1 if i == batch_axis else int(d) for i, d in enumerate(tensor.shape))
    return None


def node_cost(graph: Graph, node: Node, shapes: Shapes | None = None) -> tuple[int, int]:
    """(multiply-accumulates per sample, weight elements) of a node; (0, 0) for ops without MACs.

    Conv/ConvTranspose/Gemm/MatMul (weights constant or computed, e.g. attention's Q·Kᵀ) and
    the recurrent LSTM/GRU/RNN (input and recurrent weights at every time step). "Per sample"
    divides by the batch dimension (axis 0; axis 1 of a recurrent op's input).
    """
    if node.op_type in RECURRENT_GATES:
        return _recurrent_cost(graph, node, shapes)
    if node.op_type not in ops.WEIGHTED or len(node.inputs) < 2 or not node.outputs or not node.outputs[0]:
        return 0, 0
    w = graph.tensors.get(node.inputs[1])
    w_shape = _shape(graph, node.inputs[1], shapes)
    out_shape = _shape(graph, node.outputs[0], shapes)
    if w is None or w_shape is None or out_shape is None or len(out_shape) == 0:
        return 0, 0
    weights = int(np.prod(w_shape)) if w.is_constant else 0
    batch = max(int(out_shape[0]), 1)
    if node.op_type in ("Conv", "ConvTranspose"):
        # Conv: every output position reuses the whole kernel; ConvTranspose: every input position.
        x_shape = _shape(graph, node.inputs[0], shapes)
        positions = out_shape[2:] if node.op_type == "Conv" else (x_shape[2:] if x_shape else None)
        if positions is None:
            return 0, weights
        return int(np.prod(w_shape)) * int(np.prod(positions, dtype=np.int64)), weights
    if node.op_type == "Gemm":
        k = w_shape[1] if int(node.attr("transB", 0)) else w_shape[0]
        return int(np.prod(out_shape, dtype=np.int64)) * int(k) // batch, weights
    # MatMul: every output element is a dot product over the shared dimension K.
    k = w_shape[-2] if len(w_shape) >= 2 else w_shape[0]
    per_batch = int(np.prod(out_shape, dtype=np.int64)) * int(k)
    return (per_batch // batch if len(out_shape) > 1 else per_batch), weights


def _recurrent_cost(graph: Graph, node: Node, shapes: Shapes | None) -> tuple[int, int]:
    if len(node.inputs) < 3:
        return 0, 0
    layout = int(node.attr("layout", 0))
    x_shape = _shape(graph, node.inputs[0], shapes, batch_axis=0 if layout else 1)
    w_shape = _shape(graph, node.inputs[1], shapes)
    r_shape = _shape(graph, node.inputs[2], shapes)
    if w_shape is None or r_shape is None:
        return 0, 0
    weights = sum(int(np.prod(s)) for s, name in ((w_shape, node.inputs[1]), (r_shape, node.inputs[2]))
                  if graph.tensors.get(name) is not None and graph.tensors[name].is_constant)
    if x_shape is None or len(x_shape) != 3:
        return 0, weights
    steps = x_shape[1] if layout else x_shape[0]
    # W·x_t and R·h_(t-1) for every direction, at every time step.
    return steps * (int(np.prod(w_shape)) + int(np.prod(r_shape))), weights


def unknown_cost_nodes(graph: Graph, shapes: Shapes | None = None) -> list[str]:
    """Nodes that have MACs but whose shapes are not known (their cost counts 0)."""
    names = []
    for node in graph.nodes:
        if node.op_type in ops.WEIGHTED or node.op_type in RECURRENT_GATES:
            if node_cost(graph, node, shapes)[0] == 0:
                names.append(node.name)
    return names


@dataclasses.dataclass(frozen=True)
class PrecisionSummary:
    """Per precision: how many nodes, multiply-accumulates and weights of a graph run in it."""

    nodes: dict[str, int]
    macs: dict[str, int]
    weights: dict[str, int]

    @classmethod
    def of(cls, graph: Graph, shapes: Shapes | None = None) -> PrecisionSummary:
        nodes: dict[str, int] = {}
        macs: dict[str, int] = {}
        weights: dict[str, int] = {}
        for node in graph.nodes:
            key = (node.precision or Precision.FP32).value
            m, w = node_cost(graph, node, shapes)
            nodes[key] = nodes.get(key, 0) + 1
            macs[key] = macs.get(key, 0) + m
            weights[key] = weights.get(key, 0) + w
        return cls(nodes, macs, weights)

    def share(self, what: str, precision: str) -> float:
        table = getattr(self, what)
        total = sum(table.values())
        return table.get(precision, 0) / total if total else 0.0

    def integer_mac_share(self) -> float:
        return self.share("macs", "int8") + self.share("macs", "int16")

    def integer_node_share(self) -> float:
        return self.share("nodes", "int8") + self.share("nodes", "int16")

    def format(self) -> str:
        """``42 nodes INT8 (97.1 % of MACs), 3 FP32``: one line, precisions by node count."""
        order = [p.value for p in Precision]
        parts = []
        for key in sorted(self.nodes, key=lambda k: (-self.nodes[k], order.index(k) if k in order else 99)):
            mac = f" ({self.share('macs', key):.1%} of MACs)" if sum(self.macs.values()) else ""
            parts.append(f"{self.nodes[key]} {key.upper()}{mac}")
        return "nodes: " + ", ".join(parts) if parts else "no nodes"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self) | {"integer_mac_share": round(self.integer_mac_share(), 6)}
