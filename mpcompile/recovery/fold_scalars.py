"""Fold constant scalings after (and scalar scalings before) a convolution into its weights and bias.

``Conv → Mul(c) / Div(c) / Add(c) / Sub(c)`` with ``c`` a scalar or one value per output channel
becomes one Conv: ``W·c, b·c`` or ``b + c``. ``Mul(c) → Conv`` with a scalar ``c`` becomes
``W·c`` (zero padding commutes with a scaling; an offset before a padded conv would not, and is
left alone). The FP32 function is unchanged; what changes for quantization is that the scaled
tensor no longer needs its own scale (and a ``Div``, which has no integer kernel, no longer
splits the integer graph). Chains fold one link per sweep until nothing is left to fold.
"""

from __future__ import annotations

import numpy as np

from mpcompile.ir.graph import Graph, Node
from mpcompile.recovery.weights import constant, conv_bias, conv_weight, replace_constant, set_conv_bias, uses

AFTER = {"Mul", "Div", "Add", "Sub"}


def _per_channel(c: np.ndarray, channels: int, out_rank: int) -> np.ndarray | None:
    """``c`` as one value per output channel of an NCHW conv output, or None when it broadcasts otherwise."""
    if c.size == 1:
        return np.full(channels, float(c.reshape(())), dtype=np.float64)
    shape = (1,) * (out_rank - c.ndim) + tuple(c.shape)
    if len(shape) != out_rank or shape[1] != channels or any(d != 1 for i, d in enumerate(shape) if i != 1):
        return None
    return c.reshape(channels).astype(np.float64)


def _fold_after(graph: Graph, conv: Node, op: Node, counts: dict[str, int]) -> bool:
    w = conv_weight(graph, conv)
    out = conv.outputs[0]
    if w is None or counts.get(out, 0) != 1 or out in graph.outputs or counts.get(conv.inputs[1], 0) != 1:
        return False
    if len(conv.inputs) > 2 and conv.inputs[2] and counts.get(conv.inputs[2], 0) != 1:
        return False
    other = [i for i in op.inputs if i != out]
    if len(other) != 1 or len(op.inputs) != 2:
        return False
    c = constant(graph, other[0])
    if c is None or (op.op_type in ("Div", "Sub") and op.inputs[1] != other[0]):
        return False  # c / x and c - x are not scalings of x
    c = _per_channel(c, w.shape[0], w.ndim)
    if c is None or (op.op_type in ("Mul", "Div") and not np.all(np.isfinite(c) & (c != 0))):
        return False
    b = conv_bias(graph, conv).astype(np.float64)
    shape = (-1,) + (1,) * (w.ndim - 1)
    if op.op_type in ("Mul", "Div"):
        factor = c if op.op_type == "Mul" else 1.0 / c
        replace_constant(graph, conv.inputs[1], w.astype(np.float64) * factor.reshape(shape))
        b = b * factor
    else:
        b = b + (c if op.op_type == "Add" else -c)
    set_conv_bias(graph, conv, b)
    conv.outputs = [op.outputs[0]]
    graph.nodes.remove(op)
    del graph.tensors[out]
    return True


def _fold_before(graph: Graph, op: Node, conv: Node, counts: dict[str, int]) -> bool:
    w = conv_weight(graph, conv)
    scaled = op.outputs[0]
    if w is None or op.op_type != "Mul" or counts.get(scaled, 0) != 1 or scaled in graph.outputs:
        return False
    if counts.get(conv.inputs[1], 0) != 1 or conv.inputs[0] != scaled:
        return False
    consts = [(i, constant(graph, i)) for i in op.inputs]
    scalars = [(i, c) for i, c in consts if c is not None and c.size == 1]
    data = [i for i, c in consts if c is None]
    if len(scalars) != 1 or len(data) != 1 or not np.isfinite(scalars[0][1]).all():
        return False
    replace_constant(graph, conv.inputs[1], w.astype(np.float64) * float(scalars[0][1].reshape(())))
    conv.inputs = [data[0], *conv.inputs[1:]]
    graph.nodes.remove(op)
    del graph.tensors[scaled]
    return True


def fold_scalars(graph: Graph) -> dict:
    """Fold in place; returns what was folded."""
    folded: list[str] = []
    changed = True
    while changed:
        changed = False
        counts = uses(graph)
        consumers = graph.consumers()
        producers = graph.producers()
        for node in list(graph.nodes):
            if node.op_type == "Conv":
                users = consumers.get(node.outputs[0], [])
                if len(users) == 1 and users[0].op_type in AFTER and _fold_after(graph, node, users[0], counts):
                    folded.append(f"{users[0].name} into {node.name}")
                    changed = True
                    break
                source = producers.get(node.inputs[0])
                if source is not None and _fold_before(graph, source, node, counts):
                    folded.append(f"{source.name} into {node.name}")
                    changed = True
                    break
    if folded:
        graph.toposort()
    return {"changed": len(folded), "folded": folded}
