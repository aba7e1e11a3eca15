"""1-D convolutions and pools as their 2-D forms with a height of one, before the layout.

TFLite has no 1-D CONV or POOL operator (the TFLite converter writes a Keras ``Conv1D`` as
EXPAND_DIMS → CONV_2D → RESHAPE). Audio and sequence models (an STFT written as a strided Conv,
temporal convolution stacks) export rank-3 ``Conv``/``ConvTranspose``/``MaxPool``/``AveragePool``
nodes on ``[N, C, L]``. ``lift_1d`` rewrites each one as

    Unsqueeze(axis 2) → the same operator on ``[N, C, 1, L]`` (kernel ``[1, k]``) → Squeeze(axis 2)

The arithmetic is the same (every window has one row), the unsqueezed tensor and the 2-D output carry
the node's input and output quantization unchanged (Unsqueeze/Squeeze move no number), and the
weights keep their per-channel axis, so no number of the plan changes. A Relu/Clip that alone reads
the output moves inside (before the Squeeze), where it still fuses into the operator. ``layout.py`` then writes the
2-D node in NHWC like any other, with the reshapes carried through without transposes where it can.
"""

from __future__ import annotations

import numpy as np

from mpcompile.backends.api import Graph, Node, Tensor, ops

#: operators whose rank-3 form is the rank-4 form with a unit height
LIFTED = ("Conv", "ConvTranspose", "MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool")
#: per-axis attributes and the value of the added (height) axis
_AXIS_ATTRS = {"kernel_shape": 1, "strides": 1, "dilations": 1, "output_padding": 0, "output_shape": 1}


def is_1d(graph: Graph, node: Node) -> bool:
    if node.op_type not in LIFTED:
        return False
    x = graph.tensors.get(node.inputs[0]) if node.inputs else None
    return x is not None and x.rank == 3


def lifted_attrs(node: Node) -> dict[str, object]:
    attrs = dict(node.attrs)
    for key, unit in _AXIS_ATTRS.items():
        if key in attrs and attrs[key] is not None:
            attrs[key] = [unit, *[int(v) for v in attrs[key]]]
    if attrs.get("pads") is not None:
        begin, end = (int(v) for v in attrs["pads"])
        attrs["pads"] = [0, begin, 0, end]
    return attrs


def _unit_height(shape: tuple | None) -> tuple | None:
    return None if shape is None else (*shape[:2], 1, *shape[2:])


def _lift_weight(g: Graph, name: str, tensors: dict[str, Tensor]) -> str:
    w = g.tensors[name]
    new = g.unique_name(f"{name}/2d")
    while new in tensors:
        new += "_"
    # [O, I, k] → [O, I, 1, k]: the per-channel axis (0, or 1 for ConvTranspose) is unchanged
    tensors[new] = Tensor(new, value=np.ascontiguousarray(w.value[:, :, None, :]), quant=w.quant)
    return new


def lift_node(g: Graph, node: Node, tensors: dict[str, Tensor], activation: Node | None = None) -> list[Node]:
    """The nodes that replace 1-D ``node`` (and the Relu/Clip ``activation`` that reads its output, which
    then runs on the 2-D tensor so that it can still fuse into the operator); new tensors go into ``tensors``."""
    last = activation or node
    x, y = g.tensors[node.inputs[0]], g.tensors[last.outputs[0]]
    x4, axes = g.unique_name(f"{node.name}/input_2d"), g.unique_name(f"{node.name}/height_axis")
    tensors[x4] = Tensor(x4, x.dtype, _unit_height(x.shape), quant=x.quant)
    tensors[axes] = Tensor(axes, value=np.array([2], np.int64))
    inputs = [x4]
    for index, name in enumerate(node.inputs[1:], start=1):
        weight = index == 1 and node.op_type in ("Conv", "ConvTranspose")
        inputs.append(_lift_weight(g, name, tensors) if weight and name else name)
    reason = f"{node.op_type} on [N, C, L] written as 2-D with height 1 (TFLite has no 1-D operator)"
    chain = [node] if activation is None else [node, activation]
    lifted, source = [], x4
    for i, original in enumerate(chain):
        t = g.tensors[original.outputs[0]]
        out = g.unique_name(f"{original.name}/output_2d")
        tensors[out] = Tensor(out, t.dtype, _unit_height(t.shape), quant=t.quant)
        rest = inputs[1:] if i == 0 else original.inputs[1:]
        attrs = lifted_attrs(original) if i == 0 else dict(original.attrs)
        lifted.append(Node(original.name, original.op_type, [source, *rest], [out], attrs, original.domain,
                           original.precision, original.precision_reason))
        source = out
    return [
        Node(g.unique_name(f"{node.name}/expand"), "Unsqueeze", [node.inputs[0], axes], [x4],
             precision=node.precision, precision_reason=reason),
        *lifted,
        Node(g.unique_name(f"{node.name}/squeeze"), "Squeeze", [source, axes], [y.name],
             precision=last.precision, precision_reason=reason),
    ]


def _fused_activation(g: Graph, node: Node, consumers: dict[str, list[Node]]) -> Node | None:
    """The Relu/Clip that is the only reader of ``node``'s output (not a graph output), if any."""
    out = node.outputs[0]
    users = consumers.get(out, [])
    if len(users) != 1 or out in g.outputs or users[0].op_type not in ops.FUSABLE_ACTIVATIONS:
        return None
    return users[0]


def lifted_view(g: Graph, node: Node) -> tuple[Graph, Node]:
    """A small graph holding the 2-D form of ``node`` and its tensors, for the emitters' checks."""
    tensors = {name: g.tensors[name] for name in [*node.inputs, *node.outputs] if name and name in g.tensors}
    nodes = lift_node(g, node, tensors)
    return Graph(g.name, nodes, tensors, [node.inputs[0]], [node.outputs[0]], g.opset_imports), nodes[1]


def lift_1d(plan: Graph) -> tuple[Graph, int]:
    """A copy of ``plan`` with every 1-D convolution and pool in its 2-D form; and how many were lifted."""
    g = plan.copy()
    consumers = g.consumers()
    nodes: list[Node] = []
    absorbed: set[str] = set()
    count = 0
    for node in g.nodes:
        if node.name in absorbed:
            continue
        if not is_1d(g, node):
            nodes.append(node)
            continue
        activation = _fused_activation(g, node, consumers)
        if activation is not None:
            absorbed.add(activation.name)
        added: dict[str, Tensor] = {}
        nodes += lift_node(g, node, added, activation)
        g.tensors.update(added)
        count += 1
    if count:
        g.nodes = nodes
        g.remove_unused()
    return g, count


__all__ = ["LIFTED", "is_1d", "lift_1d", "lifted_view"]
