"""The intermediate representation: graph, typed quantization annotations, serialization."""

from mpcompile.ir.graph import Graph, Node, OpaqueAttribute, Tensor
from mpcompile.ir.quant import QuantSpec, spec_from_range, weight_spec
from mpcompile.ir.types import Precision, QType

__all__ = [
    "Graph",
    "Node",
    "OpaqueAttribute",
    "Precision",
    "QType",
    "QuantSpec",
    "Tensor",
    "spec_from_range",
    "weight_spec",
]
