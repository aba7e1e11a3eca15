"""What a node costs and what share of a graph runs in each precision: MACs and weights, from shapes alone."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from mpcompile.ir import ops
from mpcompile.ir.graph import Graph, Node
from mpcompile.ir.types import Precision


def node_cost(graph: Graph, node: Node) -> tuple[int, int]:
    """(multiply-accumulates per sample, weight bytes in int8) for Conv/Gemm/MatMul; (0, 0) otherwise."""
    if node.op_type not in ops.WEIGHTED or len(node.inputs) < 2:
        return 0, 0
    w = graph.tensors.get(node.inputs[1])
    out = graph.tensors.get(node.outputs[0])
    if w is None or out is None:
        return 0, 0
    w_shape = w.value.shape if w.is_constant else w.shape
    if w_shape is None or not all(isinstance(d, int) for d in w_shape):
        return 0, 0
    out_shape = [d if isinstance(d, int) else 1 for d in (out.shape or ())][1:]
    weight_elems = int(np.prod(w_shape))
    if node.op_type in ("Conv", "ConvTranspose"):
        spatial = int(np.prod(out_shape[1:])) if len(out_shape) > 1 else 1
        macs = weight_elems * spatial
    else:  # Gemm / MatMul: every output row reuses all weights
        rows = int(np.prod(out_shape[:-1])) if len(out_shape) > 1 else 1
        macs = weight_elems * rows
    return macs, weight_elems if w.is_constant else 0


@dataclasses.dataclass(frozen=True)
class PrecisionSummary:
    """Per precision: how many nodes, multiply-accumulates and weights of a graph run in it."""

    nodes: dict[str, int]
    macs: dict[str, int]
    weights: dict[str, int]

    @classmethod
    def of(cls, graph: Graph) -> PrecisionSummary:
        nodes: dict[str, int] = {}
        macs: dict[str, int] = {}
        weights: dict[str, int] = {}
        for node in graph.nodes:
            key = (node.precision or Precision.FP32).value
            m, w = node_cost(graph, node)
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
