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

The row a normalization reads is float too (``input_nodes``), fused or decomposed: the MAC-free
element-wise ops that compute it (a transformer's residual ``x + f(x)`` and the bias ``Add`` before it,
the product ``x · Φ(x)`` of a GELU written out) and, in a decomposed normalization, the nodes that read
it (the mean, ``x - mean``). Such rows carry outlier
channels: in all-MiniLM-L6-v2 the residual sums before the LayerNorms reach 224 where most channels
stay within a few units, so one 8-bit scale set by the outliers leaves the ordinary channels a few
levels, and the normalization then scales those levels up to unit variance. (MiniLM's retrieval top-1:
0.844 with the sums in int8, 0.984 = FP32 with them in float, 100 % of its MACs still INT8; Magika,
whose LayerNorms read GELU products: accuracy 0.930 -> 0.940.) These ops have no multiply-accumulates
to speed up, so keeping them float costs no integer MAC; the layers before and after stay integer.
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
INPUT = "normalization input"

#: Normalizations written as one op: each reads the row at its first input, in float.
FUSED = {"LayerNormalization", "LpNormalization", "InstanceNormalization", "GroupNormalization"}
#: MAC-free element-wise ops that may compute the row a normalization reads: a residual sum, a bias, the
#: product of a gated activation written out (GELU's ``x · Φ(x)``), a constant scale.
ELEMENTWISE = {"Add", "Sub", "Mul", "Neg"}


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


def _through_data_movement(graph: Graph, name: str, producers: dict[str, Node]) -> tuple[str, list[Node]]:
    """The tensor ``name`` is a reshaped or transposed copy of, and the data-movement ops in between."""
    chain: list[Node] = []
    node = producers.get(name)
    while node is not None and node.op_type in ops.SCALE_PRESERVING:
        computed = [i for i in node.inputs if i and i in graph.tensors and not graph.tensors[i].is_constant]
        if len(computed) != 1:
            break
        chain.append(node)
        name = computed[0]
        node = producers.get(name)
    return name, chain


def _normalized_rows(graph: Graph, statistics: dict[str, str], producers: dict[str, Node],
                     consumers: dict[str, list[Node]]) -> dict[str, tuple[str, set[str]]]:
    """Each row a normalization reads -> (the op or square root that normalizes it, the nodes of the normalization reading it)."""
    rows: dict[str, tuple[str, set[str]]] = {}
    for node in graph.nodes:
        if node.op_type in FUSED and node.inputs and node.inputs[0]:
            rows.setdefault(node.inputs[0], (node.name, set()))
    for node in graph.nodes:
        if node.name not in statistics or not _is_square(graph, node):
            continue
        root = statistics[node.name]
        squared = producers.get(node.inputs[0])
        if squared is not None and squared.op_type == "Sub" and squared.name not in statistics:
            # torch: ReduceMean((x - mean)²); the row is x, read by the mean and by x - mean
            row = squared.inputs[0]
            mean, chain = _through_data_movement(graph, squared.inputs[1], producers)
            reduction = producers.get(mean)
            if reduction is None or reduction.op_type not in REDUCTIONS or reduction.inputs[0] != row:
                continue
            readers = {squared.name, reduction.name} | {c.name for c in chain}
        else:
            # jax: E[x·x] - E[x]²; the row is x, read by its reductions (statistics already) and by x - mean
            row = node.inputs[0]
            readers = {u.name for u in consumers.get(row, []) if u.op_type == "Sub" and u.inputs[0] == row
                       and (p := producers.get(u.inputs[1])) is not None and p.name in statistics}
        rows.setdefault(row, (root, set()))[1].update(readers)
    return rows


def input_nodes(graph: Graph, statistics: dict[str, str] | None = None) -> dict[str, str]:
    """Every node computing or reading the row of a normalization in float: node name -> why.

    The MAC-free element-wise ops (``ELEMENTWISE``) above the row, through data movement, back to the
    layers, activations and inputs they combine; and a decomposed normalization's mean and ``x - mean``.
    """
    statistics = statistics_nodes(graph) if statistics is None else statistics
    producers = graph.producers()
    consumers = graph.consumers()
    found: dict[str, str] = {}
    for row, (norm, readers) in _normalized_rows(graph, statistics, producers, consumers).items():
        for name in readers:
            found.setdefault(name, input_reason(norm, row, reads=True))
        frontier, seen = [row], set()
        while frontier:
            name = frontier.pop()
            source, chain = _through_data_movement(graph, name, producers)
            node = producers.get(source)
            if node is None or node.op_type not in ELEMENTWISE or node.name in seen or node.name in statistics:
                continue
            seen.add(node.name)
            for member in [*chain, node]:
                found.setdefault(member.name, input_reason(norm, row, reads=False))
            frontier += [i for i in node.inputs if i and i in graph.tensors and not graph.tensors[i].is_constant]
    return found


def input_reason(norm: str, row: str, *, reads: bool) -> str:
    what = "reads" if reads else "computes"
    return (f"kept FP32 ({INPUT}): {what} the row {row!r} that {norm!r} normalizes; such rows (residual sums) carry "
            f"outlier channels, so one 8-bit scale leaves the other channels a few levels that the normalization then "
            f"scales up; this op has no MACs to run in integer, so it stays float as a fused normalization reads it")
