"""Give node precisions to an imported QDQ model, whose Q/DQ pairs became tensor specs.

A node whose float data inputs and outputs all carry specs ran between Q/DQ pairs: it is
INT8 (INT16 when its activations are 16-bit). Other nodes with float values run in FP32.
"""

from __future__ import annotations

from mpcompile.ir import ops
from mpcompile.ir.graph import Graph
from mpcompile.ir.types import Precision, QType
from mpcompile.passes.base import GraphPass, PassResult


class InferPrecisions(GraphPass):
    name = "infer-precisions"

    def call(self, graph: Graph) -> PassResult:
        if not graph.quantized_tensors() or any(n.precision is not None for n in graph.nodes):
            return PassResult(graph, False)
        changed = False
        for node in graph.nodes:
            params = ops.PARAMETER_INPUTS.get(node.op_type, set())
            data = [n for i, n in enumerate(node.inputs) if n and i not in params] + [o for o in node.outputs if o]
            floats = [graph.tensors[n] for n in data if n in graph.tensors and graph.tensors[n].is_float]
            if not floats:
                continue
            if all(t.quant is not None for t in floats):
                wide = any(t.quant.qtype == QType.INT16 for t in floats if not t.is_constant)
                node.precision = Precision.INT16 if wide else Precision.INT8
                node.precision_reason = "QDQ import: every value of this node passes through Q/DQ"
            else:
                missing = next(t.name for t in floats if t.quant is None)
                node.precision = Precision.FP32
                node.precision_reason = f"QDQ import: {missing!r} has no Q/DQ pair"
            changed = True
        graph.metadata["mpcompile.policy"] = "qdq-import"
        return PassResult(graph, changed)
