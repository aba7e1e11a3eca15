"""NCHW → NHWC on the IR side: a copy of the plan whose tensors are stored the TFLite way.

The result is an IR ``Graph`` in which

* every activation is stored with a *layout*: a permutation ``perm`` of its ONNX axes
  (``stored = onnx.transpose(perm)``). Rank-4 activations that meet a spatial operator
  (Conv, pooling, Resize, ...) are NHWC, ``perm == (0, 2, 3, 1)``; the rest keep the ONNX
  order unless a layout-transparent operator (elementwise, Concat, Softmax, Reduce,
  Transpose, ...) carries a permutation through;
* nodes keep their ONNX op types with attributes rewritten to the stored axes
  (``axis``, ``axes``, ``pads``, ``perm``...), spatial nodes marked ``data_layout="NHWC"``;
* weights are stored the TFLite way with their ``QuantSpec`` axis moved along: conv OHWI
  (axis 0), depthwise ``[1, H, W, C·M]`` (axis 3), fully-connected ``[out, in]`` (axis 0),
  transpose-conv OHWI (axis 0); the scale arrays are the plan's, untouched;
* a ``Transpose`` node is inserted only where a consumer needs another layout than its
  producer wrote, and at most once per (tensor, layout). A Reshape/Flatten of an NHWC
  tensor whose only consumers are fully-connected layers permutes those layers' weight
  columns instead of transposing the activation.

Graph inputs keep the ONNX (NCHW) signature unless ``nhwc_inputs``; graph outputs are
transposed back to the ONNX layout unless ``nhwc_outputs``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np

from mpcompile.backends.api import Dim, Graph, InternalError, Node, Precision, QType, QuantSpec, Tensor

Perm = tuple[int, ...]
NHWC: Perm = (0, 2, 3, 1)


def identity(rank: int) -> Perm:
    return tuple(range(rank))


def inverse(perm: Perm) -> Perm:
    inv = [0] * len(perm)
    for i, p in enumerate(perm):
        inv[p] = i
    return tuple(inv)


def permute(shape: tuple, perm: Perm) -> tuple:
    return tuple(shape[p] for p in perm)


@dataclasses.dataclass(frozen=True)
class TensorLayout:
    """How a stored tensor relates to the IR tensor in ONNX layout.

    ``stored = onnx.transpose(perm)``. With ``unflatten`` set, the stored tensor is 2-D
    ``[N, prod(unflatten)]``: the row-major flattening of a tensor of stored shape
    ``[N, *unflatten]`` that itself has layout ``perm`` relative to the ONNX tensor
    before its Flatten (the FC weights were permuted to match).
    """

    perm: Perm
    unflatten: tuple[int, ...] | None = None

    @property
    def is_identity(self) -> bool:
        return self.unflatten is None and self.perm == identity(len(self.perm))

    def to_onnx(self, stored: np.ndarray) -> np.ndarray:
        """The ONNX-layout value of a stored tensor."""
        if self.unflatten is not None:
            value = stored.reshape((stored.shape[0], *self.unflatten)).transpose(inverse(self.perm))
            return value.reshape(stored.shape[0], -1)
        return stored.transpose(inverse(self.perm))

    def to_stored(self, value: np.ndarray) -> np.ndarray:
        if self.unflatten is not None:
            raise InternalError("a flattened NHWC layout is never a graph input")
        return np.ascontiguousarray(value.transpose(self.perm))

    def to_dict(self) -> dict:
        data: dict = {"perm": list(self.perm)}
        if self.unflatten is not None:
            data["unflatten"] = list(self.unflatten)
        return data

    @classmethod
    def from_dict(cls, data: dict) -> TensorLayout:
        unflatten = data.get("unflatten")
        return cls(tuple(data["perm"]), None if unflatten is None else tuple(unflatten))


@dataclasses.dataclass
class LayoutResult:
    graph: Graph
    #: layout of every activation of the plan, under its own name in ``graph``
    layouts: dict[str, TensorLayout]
    #: plan constant name -> names of its (re-laid-out) copies in ``graph``
    constants: dict[str, list[str]]
    #: plan output name -> tensor of ``graph`` holding it in the output layout (``graph.outputs``)
    outputs: dict[str, str]
    output_layouts: dict[str, TensorLayout]


#: Operators computed on NHWC data in TFLite (rank-4 data input and output).
SPATIAL = {
    "Conv", "ConvTranspose", "MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool",
    "Resize", "DepthToSpace", "SpaceToDepth", "BatchNormalization", "LRN", "InstanceNormalization", "GlobalLpPool",
}
#: Elementwise operators: any layout, as long as every full-rank input has the same one.
ELEMENTWISE = {
    "Relu", "Clip", "Sigmoid", "Tanh", "LeakyRelu", "HardSwish", "HardSigmoid", "Gelu", "Erf", "Sqrt",
    "Exp", "Log", "Abs", "Neg", "Identity", "Dropout", "Add", "Sub", "Mul", "Div", "Pow", "Max", "Min",
    "PRelu", "Reciprocal", "Rsqrt", "Floor", "Ceil", "Cast", "Sum", "Mean", "Elu", "Selu", "Celu", "Softplus",
    "Softsign", "Mish", "ThresholdedRelu", "Sin", "Cos", "Sign", "Round", "IsNaN", "IsInf", "Shrink",
    "Tan", "Sinh", "Cosh", "Asin", "Acos", "Atan", "Asinh", "Acosh", "Atanh",
}
#: Elementwise operators on bools, ids or floats: every constant operand follows the layout, whatever its type.
ELEMENTWISE_ANY_TYPE = {"And", "Or", "Xor", "Not", "Equal", "NotEqual", "Less", "LessOrEqual", "Greater", "GreaterOrEqual", "Where",
                        "Mod"}
#: Operators that reinterpret memory (and so need the ONNX element order of their input).
RESHAPES = {"Reshape", "Flatten", "Squeeze", "Unsqueeze"}


class _Planner:
    def __init__(self, plan: Graph, nhwc_inputs: bool, nhwc_outputs: bool) -> None:
        self.src = plan
        self.nhwc_inputs = nhwc_inputs
        self.nhwc_outputs = nhwc_outputs
        self.g = Graph(plan.name, [], {}, [], [], plan.opset_imports, plan.metadata)
        self.layouts: dict[str, TensorLayout] = {}
        self.copies: dict[tuple[str, Perm], str] = {}
        self.constants: dict[str, list[str]] = {}
        self.consumers = plan.consumers()

    # ------------------------------------------------------------------ tensors
    def onnx_shape(self, name: str) -> tuple[Dim, ...]:
        shape = self.src.tensors[name].shape
        if shape is None:
            raise InternalError(f"tensor {name!r} has no inferred shape")
        return shape

    def rank(self, name: str) -> int:
        t = self.src.tensors.get(name)
        if t is None or t.shape is None:
            return len(self.g.tensors[name].shape or ())
        return len(t.shape)

    def const_values(self, node: Node, index: int) -> list[float] | None:
        """The values of the node's constant input ``index`` (flattened), or None if it is absent."""
        if len(node.inputs) > index and node.inputs[index]:
            return self.src.tensors[node.inputs[index]].value.reshape(-1).tolist()
        return None

    def is_activation(self, name: str) -> bool:
        return bool(name) and not self.src.tensors[name].is_constant

    def perm(self, name: str) -> Perm:
        layout = self.layouts.get(name)
        return layout.perm if layout is not None else identity(self.rank(name))

    def add_activation(self, name: str, layout: TensorLayout) -> None:
        src = self.src.tensors[name]
        if layout.unflatten is not None:
            shape: tuple = src.shape
        else:
            shape = permute(self.onnx_shape(name), layout.perm)
        self.g.add_tensor(Tensor(name, src.dtype, shape, quant=src.quant))
        self.layouts[name] = layout

    def constant(self, name: str, value: np.ndarray | None = None, spec: QuantSpec | None | bool = False, tag: str = "") -> str:
        """The plan constant ``name`` in the new graph, optionally with a re-laid-out value and spec."""
        src = self.src.tensors[name]
        new_value = src.value if value is None else value
        new_spec = src.quant if spec is False else spec
        for existing in self.constants.get(name, []):
            t = self.g.tensors[existing]
            if t.value.shape == new_value.shape and t.value.tobytes() == new_value.tobytes() and t.quant == new_spec:
                return existing
        target = name if name not in self.g.tensors else self.g.unique_name(f"{name}__{tag or 'copy'}")
        self.g.add_tensor(Tensor(target, value=new_value, quant=new_spec))
        self.constants.setdefault(name, []).append(target)
        return target

    def input_name(self, name: str) -> str:
        """A plan input of a node, as a tensor of the new graph (constants copied over as they are)."""
        if not name:
            return ""
        if self.is_activation(name):
            return name
        return self.constant(name)

    def ensure(self, name: str, perm: Perm) -> str:
        """``name`` stored with layout ``perm``: the tensor itself or a Transpose of it (inserted once)."""
        layout = self.layouts[name]
        if layout.unflatten is not None:
            raise InternalError(f"tensor {name!r} is a flattened NHWC value and cannot be transposed")
        if layout.perm == perm:
            return name
        key = (name, perm)
        if key in self.copies:
            return self.copies[key]
        q = tuple(inverse(layout.perm)[p] for p in perm)
        tag = "nhwc" if perm == NHWC else "nchw" if perm == identity(len(perm)) else "t" + "".join(map(str, perm))
        out = self.g.unique_name(f"{name}__{tag}")
        src = self.g.tensors[name]
        self.g.add_tensor(Tensor(out, src.dtype, permute(src.shape, q), quant=src.quant))
        self.g.nodes.append(Node(self.g.unique_name(f"{out}_transpose"), "Transpose", [name], [out], {"perm": list(q)},
                                 precision=_carrier_precision(src.quant)))
        self.copies[key] = out
        self.layouts[out] = TensorLayout(perm)
        return out

    def constant_output(self, name: str) -> None:
        """A graph output that folded to a constant (a Shape once the batch is frozen): written by a Reshape of the
        value, since a TFLite model's outputs are tensors its operators write."""
        src = self.src.tensors[name]
        value = np.asarray(src.value)
        stored = self.g.unique_name(f"{name}__value")
        self.g.add_tensor(Tensor(stored, value=value, quant=src.quant))
        dims = self.g.unique_name(f"{name}__shape")
        self.g.add_tensor(Tensor(dims, value=np.asarray(value.shape, np.int64)))
        self.g.add_tensor(Tensor(name, value.dtype, tuple(value.shape), quant=src.quant))
        self.layouts[name] = TensorLayout(identity(value.ndim))
        self.g.nodes.append(Node(self.g.unique_name(f"{name}_constant"), "Reshape", [stored, dims], [name], {},
                                 precision=_carrier_precision(src.quant)))

    def memory_order_matches(self, name: str) -> bool:
        """True when the stored tensor has the ONNX element order (only size-1 axes moved)."""
        layout = self.layouts[name]
        if layout.unflatten is not None:
            return False
        shape = self.onnx_shape(name)
        moved = [p for p in layout.perm if shape[p] != 1]
        return moved == sorted(moved)

    # ------------------------------------------------------------------ emission
    def emit(self, node: Node, inputs: list[str], out_layouts: list[TensorLayout], **attrs: object) -> Node:
        new = Node(node.name, node.op_type, inputs, list(node.outputs), {**node.attrs, **attrs}, node.domain,
                   node.precision, node.precision_reason)
        for out, layout in zip(node.outputs, out_layouts):
            if out:
                self.add_activation(out, layout)
        self.g.nodes.append(new)
        return new

    def run(self) -> LayoutResult:
        for name in self.src.inputs:
            rank = self.rank(name)
            perm = NHWC if (self.nhwc_inputs and rank == 4) else identity(rank)
            self.add_activation(name, TensorLayout(perm))
            self.g.inputs.append(name)
        for node in self.src.nodes:
            rule = RULES.get(node.op_type, _keep_onnx_layout)
            rule(self, node)
        outputs: dict[str, str] = {}
        for name in self.src.outputs:
            if name not in self.layouts and self.src.tensors[name].is_constant:
                self.constant_output(name)
            rank = self.rank(name)
            want = NHWC if (self.nhwc_outputs and rank == 4) else identity(rank)
            if self.layouts[name].unflatten is not None:
                raise InternalError(f"output {name!r} cannot be a flattened NHWC value")
            outputs[name] = self.ensure(name, want)
            self.g.outputs.append(outputs[name])
        self.g.remove_unused()
        layouts = {k: v for k, v in self.layouts.items() if k in self.src.tensors}
        output_layouts = {name: self.layouts[g_name] for name, g_name in outputs.items()}
        return LayoutResult(self.g, layouts, self.constants, outputs, output_layouts)


def _carrier_precision(spec: QuantSpec | None) -> Precision:
    if spec is None:
        return Precision.FP32
    return Precision.INT16 if spec.qtype == QType.INT16 else Precision.INT8


def _majority(perms: list[Perm], rank: int) -> Perm:
    if not perms:
        return identity(rank)
    counts: dict[Perm, int] = {}
    for p in perms:
        counts[p] = counts.get(p, 0) + 1
    # ties go to the non-identity layout: it is the one a spatial neighbour wants
    return max(counts, key=lambda p: (counts[p], p != identity(rank)))


def _axis(axis: int, rank: int) -> int:
    return axis + rank if axis < 0 else axis


def _const_for_layout(pl: _Planner, name: str, rank: int, perm: Perm) -> str:
    """An elementwise constant operand, broadcast-compatible with a stored tensor of layout ``perm``."""
    src = pl.src.tensors[name]
    if perm == identity(rank) or src.value.ndim == 0:
        return pl.constant(name)
    value = src.value.reshape((1,) * (rank - src.value.ndim) + src.value.shape)
    spec = src.quant
    if spec is not None and spec.axis is not None:
        spec = spec.replace(axis=perm.index(spec.axis + rank - src.value.ndim))
    return pl.constant(name, np.ascontiguousarray(value.transpose(perm)), spec, tag="nhwc")


# ============================================================================ rules, one per operator family
def _keep_onnx_layout(pl: _Planner, node: Node) -> None:
    inputs = [pl.ensure(i, identity(pl.rank(i))) if pl.is_activation(i) else pl.input_name(i) for i in node.inputs]
    pl.emit(node, inputs, [TensorLayout(identity(pl.rank(o))) for o in node.outputs if o])


def _onnx_layout_if_unflattened(handler: Callable[[_Planner, Node], None]) -> Callable[[_Planner, Node], None]:
    """An axis-indexed op whose data input still carries an unflattened layout runs in ONNX layout."""
    def guarded(pl: _Planner, node: Node) -> None:
        if pl.layouts[node.inputs[0]].unflatten is not None:
            _keep_onnx_layout(pl, node)
        else:
            handler(pl, node)
    return guarded


def _elementwise(pl: _Planner, node: Node) -> None:
    out = node.outputs[0]
    rank = pl.rank(out)
    acts = [i for i in node.inputs if pl.is_activation(i)]
    full = [i for i in acts if pl.rank(i) == rank]
    if any(pl.rank(i) != rank for i in acts) or any(pl.layouts[i].unflatten is not None for i in full):
        perm = identity(rank)
    else:
        perm = _majority([pl.perm(i) for i in full], rank)
    inputs = []
    for i in node.inputs:
        if not i:
            inputs.append("")
        elif pl.is_activation(i):
            inputs.append(pl.ensure(i, perm if pl.rank(i) == rank else identity(pl.rank(i))))
        elif pl.src.tensors[i].value.ndim <= rank and (pl.src.tensors[i].value.dtype.kind == "f"
                                                       or node.op_type in ELEMENTWISE_ANY_TYPE):
            inputs.append(_const_for_layout(pl, i, rank, perm))
        else:
            inputs.append(pl.constant(i))  # Clip bounds, Cast targets: scalars
    pl.emit(node, inputs, [TensorLayout(perm)] + [TensorLayout(identity(pl.rank(o))) for o in node.outputs[1:] if o])


def _spatial(pl: _Planner, node: Node) -> None:
    data = node.inputs[0]
    if pl.rank(data) != 4:
        _keep_onnx_layout(pl, node)
        return
    inputs = [pl.ensure(data, NHWC)]
    attrs: dict[str, object] = {"data_layout": "NHWC"}
    if node.op_type == "Conv":
        w = pl.src.tensors[node.inputs[1]]
        group = int(node.attr("group", 1))
        c_in = int(pl.onnx_shape(data)[1])
        if group > 1 and group == c_in and w.value.shape[1] == 1:
            # depthwise: [C·M, 1, kH, kW] -> [1, kH, kW, C·M], per-channel axis 0 -> 3
            spec = w.quant.replace(axis=3) if w.quant is not None and w.quant.axis is not None else w.quant
            inputs.append(pl.constant(w.name, np.ascontiguousarray(w.value.transpose(1, 2, 3, 0)), spec, "1hwo"))
            attrs.update(weight_layout="1HWO", depth_multiplier=int(w.value.shape[0]) // c_in)
        else:
            inputs.append(pl.constant(w.name, np.ascontiguousarray(w.value.transpose(0, 2, 3, 1)), w.quant, "ohwi"))
            attrs.update(weight_layout="OHWI")
        inputs += [pl.input_name(i) for i in node.inputs[2:]]
    elif node.op_type == "ConvTranspose":
        w = pl.src.tensors[node.inputs[1]]
        # [C_in, C_out, kH, kW] -> [C_out, kH, kW, C_in], per-channel axis 1 -> 0
        spec = w.quant.replace(axis=0) if w.quant is not None and w.quant.axis is not None else w.quant
        inputs.append(pl.constant(w.name, np.ascontiguousarray(w.value.transpose(1, 2, 3, 0)), spec, "ohwi"))
        inputs += [pl.input_name(i) for i in node.inputs[2:]]
        attrs.update(weight_layout="OHWI")
    else:
        inputs += [pl.input_name(i) for i in node.inputs[1:]]
    pl.emit(node, inputs, [TensorLayout(NHWC if pl.rank(o) == 4 else identity(pl.rank(o))) for o in node.outputs if o], **attrs)


def _concat(pl: _Planner, node: Node) -> None:
    rank = pl.rank(node.outputs[0])
    acts = [i for i in node.inputs if pl.is_activation(i)]
    flat = any(pl.layouts[i].unflatten is not None for i in acts)
    perm = identity(rank) if flat else _majority([pl.perm(i) for i in acts], rank)
    inputs = [pl.ensure(i, perm) if pl.is_activation(i) else
              pl.constant(i, np.ascontiguousarray(pl.src.tensors[i].value.transpose(perm)), tag="t") for i in node.inputs]
    pl.emit(node, inputs, [TensorLayout(perm)], axis=perm.index(_axis(int(node.attr("axis", 0)), rank)))


def _softmax(pl: _Planner, node: Node) -> None:
    x = node.inputs[0]
    rank = pl.rank(x)
    default = -1 if pl.src.opset_imports.get("", 17) >= 13 else 1
    axis = _axis(int(node.attr("axis", default)), rank)
    if pl.src.opset_imports.get("", 17) < 13 and axis != rank - 1:
        _keep_onnx_layout(pl, node)  # opset < 13 softmax flattens from `axis`: only the last axis maps
        return
    perm = pl.perm(x)
    if pl.layouts[x].unflatten is not None or perm[-1] != axis:
        perm = identity(rank) if axis == rank - 1 else tuple(i for i in range(rank) if i != axis) + (axis,)
    pl.emit(node, [pl.ensure(x, perm)], [TensorLayout(perm)], axis=rank - 1)


@_onnx_layout_if_unflattened
def _reduce(pl: _Planner, node: Node) -> None:
    x = node.inputs[0]
    rank = pl.rank(x)
    axes = node.attr("axes")
    if axes is None:
        axes = pl.const_values(node, 1)
    if axes is None or len(axes) == 0:
        axes = list(range(rank))
    axes = sorted(_axis(int(a), rank) for a in axes)
    perm = pl.perm(x)
    keep = bool(node.attr("keepdims", 1))
    if keep:
        out_perm = perm
    else:
        rest = [i for i in range(rank) if i not in axes]
        out_perm = tuple(rest.index(p) for p in perm if p not in axes)
    node_attrs = {"axes": sorted(perm.index(a) for a in axes), "keepdims": int(keep)}
    pl.emit(node, [x], [TensorLayout(out_perm)], **node_attrs)


@_onnx_layout_if_unflattened
def _shape_of(pl: _Planner, node: Node) -> None:
    """Shape/Size read their input in any layout: ``stored_perm`` tells the emitter which stored dim is which."""
    x = node.inputs[0]
    pl.emit(node, [x], [TensorLayout(identity(pl.rank(o))) for o in node.outputs if o], stored_perm=list(pl.perm(x)))


@_onnx_layout_if_unflattened
def _axis_attr(pl: _Planner, node: Node) -> None:
    """An operator along one ``axis`` attribute (LpNormalization): any layout, the axis remapped."""
    x = node.inputs[0]
    rank = pl.rank(x)
    perm = pl.perm(x)
    pl.emit(node, [x], [TensorLayout(perm)], axis=perm.index(_axis(int(node.attr("axis", -1)), rank)))


@_onnx_layout_if_unflattened
def _transpose(pl: _Planner, node: Node) -> None:
    x = node.inputs[0]
    rank = pl.rank(x)
    t = tuple(int(p) for p in node.attr("perm", list(reversed(range(rank)))))
    # Choose the output layout that makes the stored transpose the identity.
    px = pl.perm(x)
    out_perm = tuple(inverse(t)[p] for p in px)
    pl.emit(node, [x], [TensorLayout(out_perm)], perm=list(range(rank)))


@_onnx_layout_if_unflattened
def _split(pl: _Planner, node: Node) -> None:
    x = node.inputs[0]
    rank = pl.rank(x)
    perm = pl.perm(x)
    axis = _axis(int(node.attr("axis", 0)), rank)
    sizes = node.attr("split")
    if sizes is None:
        sizes = pl.const_values(node, 1)
    if sizes is None:
        sizes = [int(pl.onnx_shape(o)[axis]) for o in node.outputs]
    pl.emit(node, [x], [TensorLayout(perm) for o in node.outputs if o], axis=perm.index(axis), split=[int(s) for s in sizes])


@_onnx_layout_if_unflattened
def _slice(pl: _Planner, node: Node) -> None:
    x = node.inputs[0]
    rank = pl.rank(x)
    perm = pl.perm(x)
    starts, ends = pl.const_values(node, 1) or node.attr("starts"), pl.const_values(node, 2) or node.attr("ends")
    axes = pl.const_values(node, 3) or node.attr("axes") or list(range(len(starts)))
    steps = pl.const_values(node, 4) or [1] * len(starts)
    axes = [perm.index(_axis(int(a), rank)) for a in axes]
    pl.emit(node, [x], [TensorLayout(perm)], starts=[int(v) for v in starts], ends=[int(v) for v in ends], axes=axes,
            steps=[int(v) for v in steps])


@_onnx_layout_if_unflattened
def _pad(pl: _Planner, node: Node) -> None:
    x = node.inputs[0]
    rank = pl.rank(x)
    perm = pl.perm(x)
    pads = pl.const_values(node, 1) or node.attr("pads")
    value = float((pl.const_values(node, 2) or [node.attr("value", 0.0)])[0])
    axes = [_axis(int(a), rank) for a in pl.const_values(node, 3) or range(rank)]
    full = [0] * (2 * rank)
    for k, a in enumerate(axes):
        full[a], full[a + rank] = int(pads[k]), int(pads[k + len(axes)])
    stored = [full[p] for p in perm] + [full[p + rank] for p in perm]
    pl.emit(node, [x], [TensorLayout(perm)], pads=stored, value=value)


def _gather(pl: _Planner, node: Node) -> None:
    data, indices = node.inputs[0], node.inputs[1]
    if not pl.is_activation(data):
        _keep_onnx_layout(pl, node)
        return
    rank = pl.rank(data)
    index_rank = pl.rank(indices)
    if pl.layouts[data].unflatten is not None or index_rank > 1:
        _keep_onnx_layout(pl, node)
        return
    perm = pl.perm(data)
    axis = _axis(int(node.attr("axis", 0)), rank)
    if index_rank == 1:
        out_perm = perm
    else:
        rest = [i for i in range(rank) if i != axis]
        out_perm = tuple(rest.index(p) for p in perm if p != axis)
    idx = pl.ensure(indices, identity(index_rank)) if pl.is_activation(indices) else pl.constant(indices)
    pl.emit(node, [data, idx], [TensorLayout(out_perm)], axis=perm.index(axis))


def _reshape(pl: _Planner, node: Node) -> None:
    x, out = node.inputs[0], node.outputs[0]
    out_rank = pl.rank(out)
    layout = pl.layouts[x]
    if pl.memory_order_matches(x):
        pl.emit(node, [x], [TensorLayout(identity(out_rank))])
        return
    if layout.unflatten is None and _feeds_only_fully_connected(pl, node):
        # Flatten of an NHWC tensor into [N, C·H·W]: permute the FC weight columns, keep the data.
        stored = pl.g.tensors[x].shape
        pl.emit(node, [x], [TensorLayout(layout.perm, tuple(int(d) for d in stored[1:]))])
        return
    carried = carried_layout(pl.onnx_shape(x), pl.onnx_shape(out), layout.perm) if layout.unflatten is None else None
    if carried is not None:
        # e.g. NHWC [N,H,W,C] → ONNX [N,C,H·W] is stored [N,H·W,C]: the reshape needs no transpose
        pl.emit(node, [x], [TensorLayout(carried)])
        return
    if out_rank == 4 and layout.unflatten is None and any(c.op_type in SPATIAL for c in pl.consumers.get(out, [])):
        # one transpose straight into the layout whose reshape is already NHWC (e.g. a channel shuffle)
        need = required_layout(pl.onnx_shape(x), pl.onnx_shape(out), NHWC)
        if need is not None:
            pl.emit(node, [pl.ensure(x, need)], [TensorLayout(NHWC)])
            return
    pl.emit(node, [pl.ensure(x, identity(pl.rank(x)))], [TensorLayout(identity(out_rank))])


def _reshape_groups(in_shape: tuple[Dim, ...], out_shape: tuple[Dim, ...],
                    lead: int) -> list[tuple[list[int], list[int]]] | None:
    """Runs of consecutive input axes and the output axes each becomes, after ``lead`` shared axes.

    None unless the reshape only merges or splits runs of axes (sizes static after the lead).
    """
    din, dout = list(in_shape[lead:]), list(out_shape[lead:])
    if not all(isinstance(d, int) and d > 0 for d in din + dout) or int(np.prod(din)) != int(np.prod(dout)):
        return None
    groups: list[tuple[list[int], list[int]]] = []
    i = j = 0
    while i < len(din) and j < len(dout):
        gi, gj, pi, pj = [i], [j], din[i], dout[j]
        i, j = i + 1, j + 1
        while pi != pj:
            if pi < pj:
                gi.append(i)
                pi *= din[i]
                i += 1
            else:
                gj.append(j)
                pj *= dout[j]
                j += 1
        groups.append((gi, gj))
    if not groups:
        return None
    groups[-1][0].extend(range(i, len(din)))  # trailing size-1 axes join the last run
    groups[-1][1].extend(range(j, len(dout)))
    return groups


def _shared_lead(in_shape: tuple[Dim, ...], out_shape: tuple[Dim, ...], perm: Perm) -> int:
    symbolic = bool(in_shape and out_shape) and not isinstance(in_shape[0], int) and not isinstance(out_shape[0], int)
    if in_shape and out_shape and perm and perm[0] == 0 and (in_shape[0] == out_shape[0] or symbolic):
        return 1  # a shared (possibly symbolic) batch axis stays in front
    return 0


def _relayout(groups: list[tuple[list[int], list[int]]], perm: Perm, lead: int, forward: bool) -> Perm | None:
    """Map a layout through the reshape's runs: input layout → output layout (``forward``) or back."""
    src_side, dst_side = (0, 1) if forward else (1, 0)
    stored = [p - lead for p in perm[lead:]]
    order = []
    for group in groups:
        src, dst = group[src_side], group[dst_side]
        start = stored.index(src[0])
        if stored[start:start + len(src)] != src:
            return None
        order.append((start, dst))
    result = list(range(lead))
    for _, dst in sorted(order):
        result.extend(a + lead for a in dst)
    return tuple(result)


def carried_layout(in_shape: tuple[Dim, ...], out_shape: tuple[Dim, ...], perm: Perm) -> Perm | None:
    """The output layout under which reshaping the *stored* input gives the ONNX reshape, or None.

    Works when the reshape only merges or splits runs of consecutive axes (ignoring a shared
    leading batch axis) and the stored layout keeps every merged run together and in order.
    """
    lead = _shared_lead(in_shape, out_shape, perm)
    groups = _reshape_groups(in_shape, out_shape, lead)
    return None if groups is None else _relayout(groups, perm, lead, forward=True)


def required_layout(in_shape: tuple[Dim, ...], out_shape: tuple[Dim, ...], out_perm: Perm) -> Perm | None:
    """The input layout whose stored reshape is the output stored with ``out_perm``, or None."""
    lead = _shared_lead(in_shape, out_shape, out_perm)
    groups = _reshape_groups(in_shape, out_shape, lead)
    return None if groups is None else _relayout(groups, out_perm, lead, forward=False)


def _feeds_only_fully_connected(pl: _Planner, node: Node) -> bool:
    x, out = node.inputs[0], node.outputs[0]
    in_shape, out_shape = pl.onnx_shape(x), pl.onnx_shape(out)
    if out in pl.src.outputs or len(out_shape) != 2 or len(in_shape) < 3:
        return False
    if not all(isinstance(d, int) for d in in_shape[1:]) or out_shape[1] != int(np.prod(in_shape[1:])):
        return False
    if pl.layouts[x].perm[0] != 0:
        return False
    users = pl.consumers.get(out, [])
    return bool(users) and all(_fc_weight(pl, u, out) is not None for u in users)


def _fc_weight(pl: _Planner, node: Node, data: str) -> Tensor | None:
    """The constant weight of a Gemm/MatMul that runs as FULLY_CONNECTED on ``data``, or None."""
    if not node.inputs or node.inputs[0] != data or len(node.inputs) < 2:
        return None
    w = pl.src.tensors.get(node.inputs[1])
    if w is None or not w.is_constant or w.value.ndim != 2 or node.inputs[1] == data:
        return None
    if node.op_type == "Gemm" and not node.attr("transA", 0):
        return w
    if node.op_type == "MatMul":
        return w
    return None


def _fully_connected(pl: _Planner, node: Node) -> None:
    a = node.inputs[0]
    w = _fc_weight(pl, node, a)
    if node.op_type == "Gemm" and node.attr("transA", 0):
        # An explicit transpose of A, then a plain Gemm: the copy shares A's spec.
        a_rank = pl.rank(a)
        a_name = pl.ensure(a, identity(a_rank))
        t_out = pl.g.unique_name(f"{a}__transA")
        src = pl.g.tensors[a_name]
        pl.g.add_tensor(Tensor(t_out, src.dtype, tuple(reversed(src.shape)), quant=src.quant))
        pl.g.nodes.append(Node(pl.g.unique_name(f"{t_out}_transpose"), "Transpose", [a_name], [t_out], {"perm": [1, 0]},
                               precision=_carrier_precision(src.quant)))
        pl.layouts[t_out] = TensorLayout((0, 1))
        w = pl.src.tensors.get(node.inputs[1])
        if w is not None and (not w.is_constant or w.value.ndim != 2):
            w = None
        node = Node(node.name, node.op_type, [t_out] + node.inputs[1:], node.outputs, {**node.attrs, "transA": 0},
                    node.domain, node.precision, node.precision_reason)
        a = t_out
    if w is None:
        # activation × activation (or a batched constant): BATCH_MATMUL on ONNX-layout operands
        _keep_onnx_layout(pl, node)
        return
    layout = pl.layouts[a]
    value, spec = w.value, w.quant
    trans_b = node.op_type == "Gemm" and bool(node.attr("transB", 0))
    if not trans_b:  # [in, out] -> [out, in], per-channel axis 1 -> 0
        value = value.T
        if spec is not None and spec.axis is not None:
            spec = spec.replace(axis=0)
    if layout.unflatten is not None:
        pre = pl.src.tensors[_flatten_source(pl, a)].shape
        perm = layout.perm
        value = value.reshape((value.shape[0], *pre[1:])).transpose((0, *perm[1:])).reshape(value.shape[0], -1)
        a_name = a
    else:
        a_name = pl.ensure(a, identity(pl.rank(a)))
    alpha, beta = float(node.attr("alpha", 1.0)), float(node.attr("beta", 1.0))
    if alpha != 1.0:  # float only (legalization keeps integer Gemm at alpha 1)
        value = value * np.float32(alpha)
    weight = pl.constant(w.name, np.ascontiguousarray(value), spec, "oi")
    inputs = [a_name, weight]
    if node.op_type == "Gemm" and len(node.inputs) > 2 and node.inputs[2]:
        c = pl.src.tensors[node.inputs[2]]
        if c.is_constant and c.value.size == value.shape[0] and beta == 1.0:
            inputs.append(pl.constant(c.name, c.value.reshape(-1), c.quant, "bias"))
        elif c.is_constant and c.value.size == value.shape[0]:
            inputs.append(pl.constant(c.name, (c.value * np.float32(beta)).reshape(-1), None, "bias"))
        else:
            inputs.append(pl.input_name(node.inputs[2]))  # broadcast bias: an ADD after the FC
    pl.emit(node, inputs, [TensorLayout(identity(pl.rank(node.outputs[0])))], weight_layout="OI", alpha=1.0, beta=1.0, transB=1)


def _flatten_source(pl: _Planner, name: str) -> str:
    producer = pl.src.producers().get(name)
    if producer is None:
        raise InternalError(f"flattened tensor {name!r} has no producer")
    return producer.inputs[0]


RULES: dict[str, Callable[[_Planner, Node], None]] = {
    **{op: _spatial for op in SPATIAL},
    **{op: _elementwise for op in ELEMENTWISE | ELEMENTWISE_ANY_TYPE},
    **{op: _reshape for op in RESHAPES},
    "Concat": _concat,
    "Softmax": _softmax,
    "LogSoftmax": _softmax,
    "ReduceMean": _reduce,
    "ReduceMax": _reduce,
    "ReduceMin": _reduce,
    "ReduceSum": _reduce,
    "ReduceProd": _reduce,
    "ReduceL1": _reduce,
    "ReduceL2": _reduce,
    "ReduceSumSquare": _reduce,
    "ReduceLogSum": _reduce,
    "ReduceLogSumExp": _reduce,
    "LpNormalization": _axis_attr,
    "Shape": _shape_of,
    "Size": _shape_of,
    "Transpose": _transpose,
    "Split": _split,
    "Slice": _slice,
    "Pad": _pad,
    "Gather": _gather,
    "Gemm": _fully_connected,
    "MatMul": _fully_connected,
}


def to_tflite_layout(plan: Graph, *, nhwc_inputs: bool = False, nhwc_outputs: bool = False) -> LayoutResult:
    """The plan with TFLite's layouts (see the module docstring); ``plan`` is not modified."""
    return _Planner(plan, nhwc_inputs, nhwc_outputs).run()
