"""Cross-layer equalization (Nagel et al., "Data-Free Quantization", 2019) of conv pairs.

For ``Conv1 → [Relu | LeakyRelu] → Conv2`` the output channel ``c`` of Conv1 can be divided by
``s_c > 0`` and Conv2's input channel ``c`` multiplied by it without changing the FP32 function
(both activations are positively homogeneous). With ``s_c = sqrt(r1_c / r2_c)`` both ranges
become ``sqrt(r1_c · r2_c)``: a depthwise conv whose channels span very different ranges, and the
pointwise conv after it, no longer waste most of one scale's grid on a few wide channels. Conv2 is
a dense conv (group 1) or a depthwise one (group = its input channels). ReLU6 (``Clip``) is not
homogeneous and stops a pair. A few sweeps let chains settle.
"""

from __future__ import annotations

import numpy as np

from mpcompile.ir.graph import Graph, Node
from mpcompile.recovery.weights import conv_bias, conv_weight, replace_constant, set_conv_bias, uses

HOMOGENEOUS = {"Relu", "LeakyRelu"}
SWEEPS = 4
#: Channels whose weight range is below this share of their tensor's widest are (nearly) dead and left
#: alone: dividing such a channel blows its bias up (b / s), past what an int32 bias at s_in·s_w can hold.
DEAD = 1e-4
#: Bound on one channel's factor over all sweeps, for the same reason (Conv1's bias is divided by it).
MAX_FACTOR = 32.0


def _pairs(graph: Graph) -> list[tuple[Node, Node]]:
    counts = uses(graph)
    consumers = graph.consumers()
    pairs = []
    for first in graph.nodes:
        w1 = conv_weight(graph, first)
        if w1 is None or counts.get(first.inputs[1], 0) != 1:
            continue
        tensor, between = first.outputs[0], None
        users = consumers.get(tensor, [])
        if len(users) == 1 and users[0].op_type in HOMOGENEOUS and tensor not in graph.outputs:
            between = users[0]
            tensor = between.outputs[0]
            users = consumers.get(tensor, [])
        if len(users) != 1 or tensor in graph.outputs or users[0].inputs[0] != tensor:
            continue
        second = users[0]
        w2 = conv_weight(graph, second)
        if w2 is None or counts.get(second.inputs[1], 0) != 1:
            continue
        group = int(second.attr("group", 1))
        channels = w1.shape[0]
        if group == 1 and w2.shape[1] == channels or group == channels and w2.shape[1] == 1:
            pairs.append((first, second))
    return pairs


def _input_channel_range(w2: np.ndarray, group: int, channels: int) -> np.ndarray:
    if group == 1:
        return np.abs(w2).max(axis=tuple(i for i in range(w2.ndim) if i != 1))
    per_out = np.abs(w2).reshape(w2.shape[0], -1).max(axis=1)
    return per_out.reshape(channels, -1).max(axis=1)  # depthwise with multiplier m: m outputs per input channel


def _equalize(graph: Graph, first: Node, second: Node, total: np.ndarray) -> float:
    """Scale one pair (``total``: its factors so far, updated); returns the largest change of any channel."""
    w1 = graph.tensors[first.inputs[1]].value.astype(np.float64)
    w2 = graph.tensors[second.inputs[1]].value.astype(np.float64)
    group = int(second.attr("group", 1))
    channels = w1.shape[0]
    r1 = np.abs(w1).reshape(channels, -1).max(axis=1)
    r2 = _input_channel_range(w2, group, channels)
    s = np.ones(channels)
    ok = (r1 > DEAD * r1.max()) & (r2 > DEAD * r2.max())
    s[ok] = np.sqrt(r1[ok] / r2[ok])
    s = np.clip(total * s, 1.0 / MAX_FACTOR, MAX_FACTOR) / total
    total *= s
    if np.allclose(s, 1.0, rtol=1e-6):
        return 0.0
    replace_constant(graph, first.inputs[1], w1 / s.reshape((-1,) + (1,) * (w1.ndim - 1)))
    set_conv_bias(graph, first, conv_bias(graph, first).astype(np.float64) / s)
    if group == 1:
        w2 = w2 * s.reshape((1, -1) + (1,) * (w2.ndim - 2))
    else:
        w2 = w2 * np.repeat(s, w2.shape[0] // channels).reshape((-1,) + (1,) * (w2.ndim - 1))
    replace_constant(graph, second.inputs[1], w2)
    return float(np.abs(np.log(s)).max())


def _spread(graph: Graph, node: Node) -> float:
    """Widest over narrowest output-channel range of a conv's weight."""
    w = graph.tensors[node.inputs[1]].value
    r = np.abs(w).reshape(w.shape[0], -1).max(axis=1)
    r = r[r > DEAD * r.max()] if r.size else r
    return float(r.max() / r.min()) if r.size else 1.0


def equalize(graph: Graph) -> dict:
    """Equalize in place; returns the pairs and the worst per-tensor channel spread before and after."""
    pairs = _pairs(graph)
    if not pairs:
        return {"changed": 0}
    convs = {n.name: n for pair in pairs for n in pair}
    before = max(_spread(graph, n) for n in convs.values())
    totals = [np.ones(graph.tensors[a.inputs[1]].value.shape[0]) for a, _ in pairs]
    for _ in range(SWEEPS):
        if max(_equalize(graph, a, b, t) for (a, b), t in zip(pairs, totals)) < 1e-3:
            break
    after = max(_spread(graph, n) for n in convs.values())
    return {"changed": len(pairs), "pairs": [f"{a.name} -> {b.name}" for a, b in pairs][:50],
            "max_channel_spread_before": round(before, 3), "max_channel_spread_after": round(after, 3)}
