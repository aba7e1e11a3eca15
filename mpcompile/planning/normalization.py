"""Decomposed normalizations: the statistics of a LayerNorm written as elementary ops stay float.

A fused ``LayerNormalization`` runs in float (``ops.FLOAT_ONLY_REASONS``). Exporters often write
it out instead (jax2tf, older torch exports): ``mean = ReduceSum(x)·1/n``, ``var = ReduceSum(x·x)·1/n
- mean·mean`` or ``ReduceMean((x - mean)²)``, then ``Sqrt(var + eps)``. The elementary ops look
integer-friendly one by one, but their values are not: a square spans twice the dynamic range of
``x`` in log scale, so one 8-bit scale set by the largest square flushes the small ones, and
``E[x²] - E[x]²`` subtracts two nearly equal numbers, which turns a rounding step of either into a
large error of the variance, then of every normalized value. (Magika: the int8 plan's accuracy
0.56 against FP32's 0.95 comes mostly from the square and the mean of its first LayerNorm.)

So the nodes that compute a normalization's statistics run in float, as the fused op would:
every node on a path from a reduction to the square root of the variance (a square root that
then scales other data: a magnitude such as ``sqrt(re² + im²)`` is data, not a statistic), the square (``x·x``
or ``x**2``) feeding such a reduction, and the data-movement ops (reshape, expand) that only carry
those statistics. Where the statistics meet the data again (``x - mean``, ``(x - mean) · rstd``)
the ops stay integer and quantize the statistic at its own range. The rule reads only the graph's
structure, so it holds with or without calibration statistics, for every backend.
"""

from __future__ import annotations

import numpy as np

from mpcompile.ir import ops
from mpcompile.ir.graph import Graph, Node

#: Ops that reduce a row to its statistic.
REDUCTIONS = {"ReduceSum", "ReduceMean"}
#: Ops a variance may pass through between its reduction and its square root: element-wise arithmetic
#: and data movement, never a layer with weights (a Conv above an SE block's ReduceMean is no statistic).
PASS_THROUGH = {"Add", "Sub", "Mul", "Div", "Max", "Min", "Clip", "Relu", "Abs", "Neg", "Cast",
                "Reshape", "Expand", "Squeeze", "Unsqueeze", "Flatten", "Identity", "Transpose", "Tile"}
#: How far above a square root the reduction may be (``Sqrt ← Add eps ← Expand ← Reshape ← Max ← Sub ← Mul ← ReduceSum`` is 7).
MAX_DEPTH = 10

STATISTICS = "normalization statistics"


def _constant_exponent(graph: Graph, node: Node) -> float | None:
    if node.op_type != "Pow" or len(node.inputs) < 2:
        return None
    exponent = graph.tensors.get(node.inputs[1])
    if exponent is None or not exponent.is_constant or exponent.value.size != 1:
        return None
    return float(np.asarray(exponent.value).reshape(()))


def _is_square(graph: Graph, node: Node) -> bool:
    if node.op_type == "Mul":
        return len(node.inputs) == 2 and node.inputs[0] == node.inputs[1]
    return _constant_exponent(graph, node) == 2.0


def _is_root(graph: Graph, node: Node) -> bool:
    return node.op_type == "Sqrt" or _constant_exponent(graph, node) in (0.5, -0.5)


def _normalizes(graph: Graph, root: Node, consumers: dict[str, list[Node]], hops: int = MAX_DEPTH) -> bool:
    """Whether the square root scales other data (``x · 1/std``, ``(x - mean) / std``): a normalization.

    A square root that is itself the result (a magnitude ``sqrt(re² + im²)`` on its way to a log
    spectrum) is data, not a statistic, and is quantized like any other activation.
    """
    frontier, seen = [root], {root.name}
    for _ in range(hops):
        following = []
        for node in frontier:
            for out in node.outputs:
                for user in consumers.get(out, []):
                    computed = {i for i in user.inputs if i and i in graph.tensors and not graph.tensors[i].is_constant}
                    if user.op_type in ("Mul", "Div") and len(computed) == 2:
                        return True
                    if user.name not in seen and user.op_type in PASS_THROUGH | {"Reciprocal"} and not _is_square(graph, user):
                        seen.add(user.name)
                        following.append(user)
        frontier = following
    return False


def statistics_nodes(graph: Graph) -> dict[str, str]:
    """Every node computing a normalization's statistics: node name -> name of the square root it feeds."""
    producers = graph.producers()
    consumers = graph.consumers()
    found: dict[str, str] = {}

    def cone(node: Node, depth: int, seen: dict[str, set[str]]) -> set[str]:
        """Nodes on the paths from ``node`` up to reductions (empty when no reduction is within reach)."""
        if node.name in seen:
            return seen[node.name]
        seen[node.name] = set()  # a cycle-free graph, but keeps a revisit cheap
        if node.op_type in REDUCTIONS:
            members = {node.name}
            data = producers.get(node.inputs[0]) if node.inputs else None
            if data is not None and _is_square(graph, data):
                members.add(data.name)
            seen[node.name] = members
            return members
        if depth == 0 or (node.op_type not in PASS_THROUGH and not _is_root(graph, node)):
            return set()
        members: set[str] = set()
        for name in node.inputs:
            tensor = graph.tensors.get(name) if name else None
            parent = producers.get(name) if name else None
            if tensor is None or tensor.is_constant or parent is None:
                continue
            members |= cone(parent, depth - 1, seen)
        if members:
            members.add(node.name)
        seen[node.name] = members
        return members

    for node in graph.nodes:
        if _is_root(graph, node) and _normalizes(graph, node, consumers):
            for name in cone(node, MAX_DEPTH, {}):
                found.setdefault(name, node.name)
    # Data-movement ops that only carry statistics (the mean reshaped and broadcast towards ``x - mean``)
    # follow them: quantizing there would round the value the float statistics path also reads.
    for node in graph.nodes:  # topological order: a follower's producers are decided first
        if node.name in found or node.op_type not in ops.SCALE_PRESERVING:
            continue
        computed = [producers.get(i) for i in node.inputs if i and i in graph.tensors and not graph.tensors[i].is_constant]
        if computed and all(p is not None and p.name in found for p in computed):
            found[node.name] = found[computed[0].name]
    return found


def statistics_reason(root: str) -> str:
    return (f"kept FP32 ({STATISTICS}): computes the mean or variance of a decomposed normalization (its variance "
            f"reaches {root!r}); squares and E[x²] - E[x]² lose their small values on an 8-bit grid, so these run in "
            f"float as a fused LayerNormalization does")
