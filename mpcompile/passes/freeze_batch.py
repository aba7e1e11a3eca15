"""Freeze a plan's dynamic batch to 1 where it still computes shapes at run time, for a backend that cannot.

A backend with static shapes (``Capabilities.static_shapes``: TFLite has no Shape or Range kernels) cannot
run ``Shape → Gather → Concat → Reshape`` chains; they fold away once every input dimension is known. The
import already froze the dimensions the data fixes (the plan was calibrated at them); the batch stays
dynamic in the plan, since it changes no sample's values and every other backend runs it as it comes.
This pass makes the static copy one backend lowers: the inputs' dynamic batch set to 1 (the one batch
every runner can be fed), shapes inferred again and constants folded (``serde.import_proto``), and the
plan's annotations carried over by name: a tensor's ``QuantSpec`` and a node's precision are the plan's,
so the copy computes the same numbers per sample. Nodes that folded away were shape arithmetic.
"""

from __future__ import annotations

from mpcompile.data.model import model_inputs
from mpcompile.data.shapes import batch_of_one
from mpcompile.ir import ops, serde
from mpcompile.ir.graph import Graph
from mpcompile.passes.base import GraphPass, PassResult


def runtime_shape_nodes(graph: Graph) -> list[str]:
    """The nodes that compute shapes at run time (``ops.RUNTIME_SHAPE_OPS``)."""
    return [node.name for node in graph.nodes if node.op_type in ops.RUNTIME_SHAPE_OPS]


def batch_to_freeze(graph: Graph) -> dict[str, tuple[int | None, ...]]:
    """What this pass would freeze in ``graph``: nothing unless it computes shapes and some input's batch is dynamic."""
    if not runtime_shape_nodes(graph):
        return {}
    return batch_of_one(model_inputs(graph))


class FreezeBatch(GraphPass):
    """The notes say, per input, the shape it now has (``x=1x4x6``)."""

    name = "freeze-batch"

    def call(self, graph: Graph) -> PassResult:
        shapes = batch_to_freeze(graph)
        if not shapes:
            return PassResult(graph, False)
        source = str(graph.metadata.get("source", graph.name))
        # Not checked again: the plan was checked at its import, and may hold outputs of unknown rank that only the
        # frozen batch lets shape inference resolve (PaddleOCR's classifier: Reshape to a run-time shape).
        frozen = serde.import_proto(serde.to_onnx(graph), source=source, input_shapes=shapes, check=False)
        frozen.metadata = dict(graph.metadata)
        for name, tensor in frozen.tensors.items():
            planned = graph.tensors.get(name)
            if planned is not None and planned.quant is not None:
                tensor.quant = planned.quant
        planned_nodes = {node.name: node for node in graph.nodes}
        for node in frozen.nodes:
            planned_node = planned_nodes.get(node.name)
            if planned_node is not None:
                node.precision, node.precision_reason = planned_node.precision, planned_node.precision_reason
        notes = [f"{name}={'x'.join(str(d) if isinstance(d, int) else '-1' for d in frozen.tensors[name].shape)}"
                 for name in shapes]
        return PassResult(frozen, True, notes)


__all__ = ["FreezeBatch", "batch_to_freeze", "runtime_shape_nodes"]
