"""Operator fusions on the legalized plan that change no number the plan defines.

``fuse_rsqrt``: ``Reciprocal(Sqrt(x))`` (or ``Div(1, Sqrt(x))``) becomes one ``Rsqrt`` node (TFLite
RSQRT), under the same conditions as the GELU fusion below. ``fuse_not_equal``: ``Not(Equal(a, b))``
becomes one ``NotEqual`` node (TFLite NOT_EQUAL).

``fuse_gelu``: the exact (erf) GELU that PyTorch exports as five nodes,

    x / √2 (or x · 1/√2) → Erf → + 1 → · x → · 0.5     (the · 0.5 may also come first or second)

becomes one ``Gelu`` node (``approximate="none"``), written as TFLite's GELU operator.
A pattern is fused only where the plan gives the five nodes one float precision (FP32 or
FP16) and quantizes none of the four intermediate tensors: those tensors exist in no
artifact's numbers, so the fusion is exact up to float rounding. Where the plan runs part
of the pattern in integer precision (an int8 plan keeps Div/Erf in FP32 but the Add/Mul in
int8), the pattern is written node by node, as the plan says.
"""

from __future__ import annotations

import math

import numpy as np

from mpcompile.backends.api import Graph, Node, Precision

FLOAT_PRECISIONS = (Precision.FP32, Precision.FP16, Precision.BF16)


def _scalar(g: Graph, name: str) -> float | None:
    t = g.tensors.get(name) if name else None
    if t is None or not t.is_constant or t.value is None or t.value.size != 1 or t.value.dtype.kind != "f":
        return None
    return float(np.asarray(t.value).reshape(-1)[0])


def _close(value: float | None, target: float) -> bool:
    return value is not None and math.isclose(value, target, rel_tol=1e-5)


def _other(node: Node, name: str) -> str:
    """The operand of a binary node that is not ``name``."""
    a, b = node.inputs[0], node.inputs[1]
    return b if a == name else a


class _Matcher:
    def __init__(self, g: Graph) -> None:
        self.g = g
        self.producers = g.producers()
        self.consumers = g.consumers()
        self.outputs = set(g.outputs)

    def single_use(self, name: str) -> Node | None:
        """The only consumer of intermediate tensor ``name`` (unquantized, not a graph output), or None."""
        users = self.consumers.get(name, [])
        t = self.g.tensors.get(name)
        if len(users) != 1 or name in self.outputs or t is None or t.quant is not None:
            return None
        return users[0]

    def scaled_input(self, erf: Node) -> str | None:
        """x when Erf reads x / √2 or x · (1/√2)."""
        scale = self.producers.get(erf.inputs[0])
        if scale is None or len(scale.inputs) != 2 or self.single_use(scale.outputs[0]) is not erf:
            return None
        if scale.op_type == "Div" and _close(_scalar(self.g, scale.inputs[1]), math.sqrt(2.0)):
            return scale.inputs[0]
        if scale.op_type == "Mul":
            for x, c in (scale.inputs, scale.inputs[::-1]):
                if _close(_scalar(self.g, c), 1.0 / math.sqrt(2.0)) and not self.g.tensors[x].is_constant:
                    return x
        return None

    def half(self, node: Node, operand: str) -> bool:
        return node.op_type == "Mul" and len(node.inputs) == 2 and _close(_scalar(self.g, _other(node, operand)), 0.5)

    def match(self, erf: Node) -> tuple[str, list[Node], str] | None:
        """(x, the pattern's nodes, output) for a GELU around ``erf``."""
        x = self.scaled_input(erf)
        if x is None:
            return None
        scale = self.producers[erf.inputs[0]]
        add = self.single_use(erf.outputs[0])
        if add is None or add.op_type != "Add" or len(add.inputs) != 2 or not _close(_scalar(self.g, _other(add, erf.outputs[0])), 1.0):
            return None
        first = self.single_use(add.outputs[0])
        if first is None or first.op_type != "Mul" or len(first.inputs) != 2:
            return None
        other = _other(first, add.outputs[0])
        if other == x:  # x · (1 + erf) · 0.5
            last = self.single_use(first.outputs[0])
            if last is None or not self.half(last, first.outputs[0]):
                return None
            return x, [scale, erf, add, first, last], last.outputs[0]
        if self.half(first, add.outputs[0]):  # (1 + erf) · 0.5 · x
            last = self.single_use(first.outputs[0])
            if last is None or last.op_type != "Mul" or len(last.inputs) != 2 or _other(last, first.outputs[0]) != x:
                return None
            return x, [scale, erf, add, first, last], last.outputs[0]
        halved = self.producers.get(other)  # (x · 0.5) · (1 + erf)
        if halved is not None and self.half(halved, x) and x in halved.inputs and self.single_use(other) is first:
            return x, [halved, scale, erf, add, first], first.outputs[0]
        return None


def fuse_gelu(plan: Graph) -> tuple[Graph, int]:
    """A copy of ``plan`` with every exact-GELU pattern of one float precision as a ``Gelu`` node; and the count."""
    g = plan.copy()
    matcher = _Matcher(g)
    fused: dict[str, Node] = {}  # name of the pattern's last node -> the Gelu node
    removed: set[str] = set()
    for erf in [n for n in g.nodes if n.op_type == "Erf"]:
        if erf.name in removed:
            continue
        found = matcher.match(erf)
        if found is None:
            continue
        x, nodes, out = found
        precisions = {n.precision for n in nodes}
        if len(precisions) != 1 or next(iter(precisions)) not in FLOAT_PRECISIONS:
            continue
        last = next(n for n in nodes if out in n.outputs)
        fused[last.name] = Node(g.unique_name(f"{erf.name}/gelu"), "Gelu", [x], [out], {"approximate": "none"},
                                precision=last.precision, precision_reason="exact GELU fused from Div/Erf/Add/Mul/Mul")
        removed.update(n.name for n in nodes)
    if not fused:
        return g, 0
    g.nodes = [fused.get(n.name, n) for n in g.nodes if n.name not in removed or n.name in fused]
    g.remove_unused()
    return g, len(fused)


def fuse_rsqrt(plan: Graph) -> tuple[Graph, int]:
    """``Reciprocal(Sqrt(x))`` and ``Div(1, Sqrt(x))`` of one float precision as one ``Rsqrt`` node (TFLite RSQRT).

    Like the GELU fusion: only where both nodes share one float precision and the square root is an
    intermediate that the plan does not quantize, consumes nowhere else and does not output.
    """
    g = plan.copy()
    matcher = _Matcher(g)
    replaced: dict[str, Node] = {}
    removed: set[str] = set()
    for node in g.nodes:
        if node.op_type == "Reciprocal":
            root = node.inputs[0]
        elif node.op_type == "Div" and len(node.inputs) == 2 and _scalar(g, node.inputs[0]) == 1.0:
            root = node.inputs[1]
        else:
            continue
        sqrt = matcher.producers.get(root)
        if sqrt is None or sqrt.op_type != "Sqrt" or matcher.single_use(root) is not node or sqrt.name in removed:
            continue
        if sqrt.precision != node.precision or node.precision not in FLOAT_PRECISIONS:
            continue
        replaced[node.name] = Node(g.unique_name(f"{node.name}/rsqrt"), "Rsqrt", [sqrt.inputs[0]], [node.outputs[0]],
                                   precision=node.precision, precision_reason=f"{node.op_type}(Sqrt(x)) fused as RSQRT")
        removed.add(sqrt.name)
    if not replaced:
        return g, 0
    g.nodes = [replaced.get(n.name, n) for n in g.nodes if n.name not in removed]
    g.remove_unused()
    return g, len(replaced)


def fuse_not_equal(plan: Graph) -> tuple[Graph, int]:
    """``Not(Equal(a, b))`` as one ``NotEqual`` node (TFLite NOT_EQUAL) where the Equal's bool result is
    consumed by the Not only and is no graph output (ONNX has no NotEqual operator)."""
    g = plan.copy()
    matcher = _Matcher(g)
    replaced: dict[str, Node] = {}
    removed: set[str] = set()
    for node in g.nodes:
        if node.op_type != "Not":
            continue
        equal = matcher.producers.get(node.inputs[0])
        if equal is None or equal.op_type != "Equal" or matcher.single_use(node.inputs[0]) is not node:
            continue
        if equal.precision != node.precision:
            continue
        replaced[node.name] = Node(g.unique_name(f"{node.name}/not_equal"), "NotEqual", list(equal.inputs[:2]),
                                   [node.outputs[0]], precision=node.precision, precision_reason="Not(Equal) fused")
        removed.add(equal.name)
    if not replaced:
        return g, 0
    g.nodes = [replaced.get(n.name, n) for n in g.nodes if n.name not in removed]
    g.remove_unused()
    return g, len(replaced)


__all__ = ["fuse_gelu", "fuse_not_equal", "fuse_rsqrt"]
