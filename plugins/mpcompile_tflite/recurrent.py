"""Recurrent operators in float: ONNX LSTM (TFLite's fused UNIDIRECTIONAL_SEQUENCE_LSTM, or unrolled) and GRU (unrolled).

Both keep the ONNX interface: initial states are inputs (``initial_h``/``initial_c``), final states
outputs (``Y_h``/``Y_c``), directions forward/reverse/bidirectional, ``layout`` 0 (time major, batch
on axis 1, the ONNX default) or 1 (batch major). FP16 nodes store their weights in float16 and
DEQUANTIZE them, like every FP16 node of this backend; the arithmetic is float32.

Fused LSTM (a static batch, activations Sigmoid/Tanh/Tanh, no ``clip``; peepholes allowed). The
kernel keeps its state in two *variable* tensors (``output_state``/``cell_state``) that it updates
in place and that persist between invocations. So that the artifact is stateless like the ONNX
model, every invocation first writes the initial state into them (CONCATENATION of one tensor, FILL
with zeros, or MAXIMUM of a constant state with a FILL of −∞: LiteRT computes operators on constants
only once, at allocation), and the final states are read back after the kernel: ``Y_h`` is the kernel
output at its last step; ``Y_c`` is the cell-state variable, read through CONCATENATION with that
last step and a SLICE, so that the read visibly depends on the LSTM's output (a delegate partitions
by visible edges: XNNPACK otherwise ran a plain copy of the variable before the kernel, measured).
A reverse direction runs the kernel on REVERSE_V2 of the sequence; a bidirectional LSTM is two
kernels. Measured limits of LiteRT 2.3 that shape this: a variable tensor is not reallocated when
the batch is resized (batch 5 on a file written for batch 1 overwrote the other direction's state),
hence a static batch only; and a RESHAPE/ADD/MUL writing a variable from a computed tensor fails or
crashes without XNNPACK (in-place execution), hence CONCATENATION.

Unrolled (GRU always; LSTM with a dynamic batch, ``clip`` or other activations). The recurrence is
written step by step over the static sequence: one FULLY_CONNECTED for the input projection of all
steps, then per step FULLY_CONNECTED (recurrent projection), SPLIT_V, LOGISTIC/TANH/RELU,
MUL/ADD/SUB; GRU in both ``linear_before_reset`` forms; ``clip`` as MAXIMUM/MINIMUM on the
activation inputs, as ONNX defines it (TFLite's ``cell_clip`` would clip the cell state).
Refused: ``input_forget``, activations other than Sigmoid/Tanh/Relu, ``activation_alpha/beta``,
``sequence_lens`` shorter than the sequence, a dynamic sequence length.

Integer recurrent kernels are not written: mpcompile's planner keeps LSTM/GRU in FP32 in integer
plans (they are not in its integer op set), and TFLite's integer LSTM needs a dozen internal
scales (gate outputs, cell state in power-of-two Q formats) that a plan does not define.
"""

from __future__ import annotations

import numpy as np

from mpcompile.backends.api import Graph, Node
from mpcompile_tflite.emit import NodeContext

#: ONNX activation name -> TFLite unary operator
_ACTIVATIONS = {"Sigmoid": "LOGISTIC", "Tanh": "TANH", "Relu": "RELU"}


def _text(node: Node, key: str, default: str) -> str:
    value = node.attr(key, default)
    return value.decode() if isinstance(value, bytes) else value


def _activations(node: Node, defaults: list[str]) -> list[str]:
    values = node.attr("activations")
    directions = 2 if _text(node, "direction", "forward") == "bidirectional" else 1
    if not values:
        return defaults * directions
    return [v.decode() if isinstance(v, bytes) else v for v in values]


def _static_input(graph: Graph, node: Node, index: int) -> bool:
    return len(node.inputs) <= index or not node.inputs[index] or graph.tensors[node.inputs[index]].is_constant


def recurrent_check(graph: Graph, node: Node, integer: bool) -> str | None:
    """Why an LSTM/GRU node cannot be written (constant weights, a static sequence, supported attributes)."""
    name = f"{node.op_type} {node.name!r}"
    for index in (1, 2, 3) + ((7,) if node.op_type == "LSTM" else ()):
        if not _static_input(graph, node, index):
            return f"{name}: TFLite needs constant weights, biases and peepholes"
    x = graph.tensors[node.inputs[0]]
    layout = int(node.attr("layout", 0))
    if x.shape is None or len(x.shape) != 3:
        return f"{name}: TFLite needs a rank-3 input"
    time, features = (x.shape[0], x.shape[2]) if layout == 0 else (x.shape[1], x.shape[2])
    if not isinstance(time, int) or not isinstance(features, int):
        return f"{name}: TFLite needs a static sequence length and input size; freeze them with --input-shape"
    if len(node.inputs) > 4 and node.inputs[4]:
        lengths = graph.tensors[node.inputs[4]]
        if not lengths.is_constant or np.any(np.asarray(lengths.value) != time):
            return f"{name}: sequence_lens shorter than the sequence (per-sample lengths) have no TFLite form"
    direction = _text(node, "direction", "forward")
    if direction not in ("forward", "reverse", "bidirectional"):
        return f"{name}: direction {direction!r} is unknown"
    if node.attr("activation_alpha") or node.attr("activation_beta"):
        return f"{name}: activation_alpha/activation_beta are not written for TFLite"
    if node.op_type == "LSTM" and int(node.attr("input_forget", 0)):
        return f"{name}: input_forget (coupled input and forget gates) is not written for TFLite"
    unknown = [a for a in _activations(node, ["Sigmoid", "Tanh", "Tanh"] if node.op_type == "LSTM" else ["Sigmoid", "Tanh"])
               if a not in _ACTIVATIONS]
    if unknown:
        return f"{name}: activations {unknown} are not written for TFLite (Sigmoid, Tanh, Relu are)"
    return None


# ============================================================================ shared pieces
class _Recurrence:
    """What both recurrent emitters need: shapes, directions, constants in the node's float format."""

    def __init__(self, ctx: NodeContext, node: Node, gates: int) -> None:
        self.ctx, self.node = ctx, node
        self.layout = int(node.attr("layout", 0))
        self.direction = _text(node, "direction", "forward")
        self.directions = ["forward", "reverse"] if self.direction == "bidirectional" else [self.direction]
        w = ctx.value(node.inputs[1]).astype(np.float32)
        self.hidden = w.shape[1] // gates
        x_shape = ctx.shape(node.inputs[0])
        self.time = int(x_shape[0] if self.layout == 0 else x_shape[1])
        self.batch = x_shape[1] if self.layout == 0 else x_shape[0]
        self.time_axis = 0 if self.layout == 0 else 1
        self.x = ctx.input(node.inputs[0])
        self.gates = gates

    def inputs(self, index: int) -> str:
        return self.node.inputs[index] if len(self.node.inputs) > index else ""

    def value(self, index: int, shape: tuple[int, ...]) -> np.ndarray:
        """Constant input ``index`` (or zeros when omitted), float32 with the node's float16 rounding."""
        name = self.inputs(index)
        value = np.zeros(shape, np.float32) if not name else self.ctx.value(name).astype(np.float32).reshape(shape)
        return value.astype(np.float16).astype(np.float32) if self.ctx.fp16 else value

    def weight(self, value: np.ndarray, suffix: str) -> int:
        """A weight: float32, or float16 + DEQUANTIZE in an FP16 node (sums of rounded biases stay float32)."""
        ctx = self.ctx
        value = np.ascontiguousarray(value, np.float32)
        if not ctx.fp16:
            return ctx.param(value, "float32", suffix)
        half = ctx.w.new_tensor(f"{self.node.name}/{suffix}/fp16", "float16", value.shape, data=value.astype(np.float16))
        full = ctx.w.new_tensor(f"{self.node.name}/{suffix}", "float32", value.shape)
        ctx.op("DEQUANTIZE", [half], [full], None, 3)
        return full

    def f32(self, shape: tuple, suffix: str, dtype: str = "float32") -> int:
        return self.ctx.w.new_tensor(f"{self.node.name}/{suffix}", dtype, shape)

    def state_shape(self) -> tuple:
        return (self.batch, self.hidden)

    def sequence_shape(self, features: int) -> tuple:
        return (self.time, self.batch, features) if self.layout == 0 else (self.batch, self.time, features)

    def reverse(self, x: int, features: int, suffix: str) -> int:
        out = self.f32(self.sequence_shape(features), suffix)
        self.ctx.op("REVERSE_V2", [x, self.ctx.param([self.time_axis], suffix=f"{suffix}/axis")], [out], "ReverseV2Options",
                    1)
        return out

    def initial_state(self, index: int, d: int, suffix: str, target: int | None = None) -> int:
        """Direction ``d``'s initial state [B, H] from input ``index`` ([D, B, H] or [B, D, H]), or zeros.

        With ``target`` (a variable tensor) the state is written into it by FILL or by CONCATENATION of
        one tensor: measured in LiteRT 2.3, a RESHAPE, ADD or MUL writing a variable tensor from a computed
        tensor fails or crashes without XNNPACK (in-place execution shares the buffers); CONCATENATION,
        MAXIMUM and TRANSPOSE copy.
        """
        ctx = self.ctx
        out = target if target is not None else self.f32(self.state_shape(), suffix)
        name = self.inputs(index)
        constant = self._constant_state(name, d) if name and target is not None else None
        if not name or (constant is not None and not constant.any()):
            ctx.op("FILL", [self.batch_dims(suffix), ctx.param(0.0, "float32", f"{suffix}/zero")], [out], "FillOptions", 1)
            return out
        if constant is not None:
            # LiteRT evaluates operators on constants once, when it allocates: a slice or copy of a
            # constant state would reach the variable only at the first invocation (measured). MAXIMUM
            # with a FILL of −∞ is computed at every invocation and gives the constant exactly.
            lowest = self.f32(self.state_shape(), f"{suffix}/lowest")
            ctx.op("FILL", [self.batch_dims(suffix), ctx.param(-np.inf, "float32", f"{suffix}/minus_inf")], [lowest],
                   "FillOptions", 1)
            ctx.op("MAXIMUM", [ctx.param(constant, "float32", f"{suffix}/value"), lowest], [out], "MaximumMinimumOptions", 1)
            return out
        state = ctx.input(name)
        axis = 0 if self.layout == 0 else 1
        begin, end = [0, 0, 0], [0, 0, 0]
        begin[axis], end[axis] = d, d + 1
        sliced = self.f32(self.state_shape(), f"{suffix}/slice") if target is not None else out
        ctx.op("STRIDED_SLICE", [state, ctx.param(begin, suffix=f"{suffix}/begin"), ctx.param(end, suffix=f"{suffix}/end"),
                                 ctx.param([1, 1, 1], suffix=f"{suffix}/strides")], [sliced], "StridedSliceOptions", 1,
               beginMask=0b111 & ~(1 << axis), endMask=0b111 & ~(1 << axis), shrinkAxisMask=1 << axis)
        if target is not None:
            ctx.op("CONCATENATION", [sliced], [out], "ConcatenationOptions", 1, axis=0, fusedActivationFunction="NONE")
        return out

    def _constant_state(self, name: str, d: int) -> np.ndarray | None:
        """Direction ``d``'s [B, H] slice of a constant initial state (float16-rounded in an FP16 node), or None."""
        if not self.ctx.is_constant(name):
            return None
        value = np.asarray(self.ctx.value(name), np.float32)
        value = value[d] if self.layout == 0 else value[:, d]
        return value.astype(np.float16).astype(np.float32) if self.ctx.fp16 else np.ascontiguousarray(value)

    def batch_dims(self, suffix: str) -> int:
        """An int32 [B, H] shape tensor: a constant for a static batch, else from SHAPE of the input."""
        return self.ctx.batch_shape(self.x, 1 if self.layout == 0 else 0, self.batch, [self.hidden], suffix)

    def last_step(self, y: int, suffix: str) -> int:
        """[B, H] at the last time index of a [T, B, H] / [B, T, H] kernel output."""
        ctx = self.ctx
        out = self.f32(self.state_shape(), suffix)
        begin, end = [0, 0, 0], [0, 0, 0]
        begin[self.time_axis], end[self.time_axis] = self.time - 1, self.time
        ctx.op("STRIDED_SLICE", [y, ctx.param(begin, suffix=f"{suffix}/begin"), ctx.param(end, suffix=f"{suffix}/end"),
                                 ctx.param([1, 1, 1], suffix=f"{suffix}/strides")], [out], "StridedSliceOptions", 1,
               beginMask=0b111 & ~(1 << self.time_axis), endMask=0b111 & ~(1 << self.time_axis),
               shrinkAxisMask=1 << self.time_axis)
        return out

    def outputs(self, sequences: list[int], finals: list[list[int]]) -> None:
        """Write Y ([T, D, B, H] / [B, T, D, H]) and the final states ([D, B, H] / [B, D, H])."""
        ctx, node = self.ctx, self.node
        targets = [(0, sequences, 1 if self.layout == 0 else 2)]
        targets += [(k + 1, states, 0 if self.layout == 0 else 1) for k, states in enumerate(finals)]
        for index, parts, axis in targets:
            name = node.outputs[index] if len(node.outputs) > index else ""
            if not name:
                continue
            out = ctx.output(name)
            if len(parts) == 1:
                dims = [d if isinstance(d, int) and d >= 0 else -1 for d in ctx.shape(name)]
                ctx.op("RESHAPE", [parts[0], ctx.param(dims, suffix=f"{name}/shape")], [out], "ReshapeOptions", 1,
                       newShape=dims)
            else:
                ctx.op("PACK", parts, [out], "PackOptions", 1, valuesCount=len(parts), axis=axis)


# ============================================================================ step arithmetic (unrolled forms)
class _Step:
    """The float operators of one unrolled step, on [B, k·H] tensors."""

    def __init__(self, ctx: NodeContext, r: _Recurrence, tag: str, clip: float | None) -> None:
        self.ctx, self.r, self.tag, self.clip = ctx, r, tag, clip

    def tmp(self, suffix: str, width: int = 1) -> int:
        return self.r.f32((self.r.batch, width * self.r.hidden), f"{self.tag}/{suffix}")

    def act(self, op: str, value: int, suffix: str, width: int = 1) -> int:
        """An activation; ONNX's ``clip`` bounds its input first."""
        ctx = self.ctx
        if self.clip is not None:
            low, high = self.tmp(f"{suffix}_clip_low", width), self.tmp(f"{suffix}_clipped", width)
            ctx.op("MAXIMUM", [value, ctx.param([-float(self.clip)], "float32", f"{self.tag}/{suffix}_lo")], [low],
                   "MaximumMinimumOptions", 1)
            ctx.op("MINIMUM", [low, ctx.param([float(self.clip)], "float32", f"{self.tag}/{suffix}_hi")], [high],
                   "MaximumMinimumOptions", 1)
            value = high
        out = self.tmp(suffix, width)
        ctx.op(op, [value], [out])
        return out

    def fc(self, data: int, weights: tuple[int, int], width: int, suffix: str) -> int:
        out = self.tmp(suffix, width)
        self.ctx.op("FULLY_CONNECTED", [data, *weights], [out], "FullyConnectedOptions", 1, fusedActivationFunction="NONE",
                    keepNumDims=False)
        return out

    def binary(self, op: str, a: int, b: int, suffix: str, width: int = 1) -> int:
        out = self.tmp(suffix, width)
        options = {"ADD": "AddOptions", "SUB": "SubOptions", "MUL": "MulOptions"}[op]
        self.ctx.op(op, [a, b], [out], options, 1, fusedActivationFunction="NONE")
        return out

    def split(self, value: int, sizes: list[int], suffix: str) -> list[int]:
        ctx, h = self.ctx, self.r.hidden
        parts = [self.tmp(f"{suffix}{k}", size) for k, size in enumerate(sizes)]
        ctx.op("SPLIT_V", [value, ctx.param([size * h for size in sizes], suffix=f"{self.tag}/{suffix}_sizes"),
                           ctx.param(1, suffix=f"{self.tag}/{suffix}_axis")], parts, "SplitVOptions", 1, numSplits=len(sizes))
        return parts


def _project_inputs(ctx: NodeContext, r: _Recurrence, tag: str, w: np.ndarray, wb: np.ndarray, width: int) -> list[int]:
    """x·Wᵀ + Wb for every step at once ([T, B, k·H] or [B, T, k·H]), unpacked into T tensors [B, k·H]."""
    projected = r.f32(r.sequence_shape(width), f"{tag}/x_projected")
    ctx.op("FULLY_CONNECTED", [r.x, r.weight(w, f"{tag}/W"), ctx.param(wb, "float32", f"{tag}/Wb")], [projected],
           "FullyConnectedOptions", 5, fusedActivationFunction="NONE", keepNumDims=True)
    steps = [r.f32((r.batch, width), f"{tag}/x_{t}") for t in range(r.time)]
    ctx.op("UNPACK", [projected], steps, "UnpackOptions", 1, num=r.time, axis=r.time_axis)
    return steps


def _pack_steps(ctx: NodeContext, r: _Recurrence, tag: str, outputs: dict[int, int]) -> int:
    sequence = r.f32(r.sequence_shape(r.hidden), f"{tag}/y")
    ctx.op("PACK", [outputs[t] for t in range(r.time)], [sequence], "PackOptions", 1, valuesCount=r.time, axis=r.time_axis)
    return sequence


# ============================================================================ LSTM
#: ONNX's gate order in W/R/B (i, o, f, c) -> TFLite's input slots (i, f, c, o)
_LSTM_GATES = {"i": 0, "o": 1, "f": 2, "c": 3}
_TFLITE_ORDER = ("i", "f", "c", "o")


def fused_lstm_possible(ctx: NodeContext, node: Node) -> bool:
    """TFLite's fused kernel: a static batch (LiteRT does not reallocate the state variables when the batch
    is resized: measured, batch 5 on a file written for batch 1 corrupts the other direction's state), the
    default activations and no clip."""
    shape = ctx.shape(node.inputs[0])
    batch = shape[1] if int(node.attr("layout", 0)) == 0 else shape[0]
    default = _activations(node, ["Sigmoid", "Tanh", "Tanh"]) == ["Sigmoid", "Tanh", "Tanh"] * (
        2 if _text(node, "direction", "forward") == "bidirectional" else 1)
    return isinstance(batch, int) and default and node.attr("clip") is None


def lstm(ctx: NodeContext, node: Node) -> None:
    r = _Recurrence(ctx, node, 4)
    h = r.hidden
    features = int(ctx.shape(node.inputs[0])[2])
    directions = len(r.directions)
    w = r.value(1, (directions, 4 * h, features))
    rec = r.value(2, (directions, 4 * h, h))
    bias = r.value(3, (directions, 8 * h))
    peep = r.value(7, (directions, 3 * h)) if r.inputs(7) else None
    fused = fused_lstm_possible(ctx, node)
    activations = _activations(node, ["Sigmoid", "Tanh", "Tanh"])
    sequences, final_h, final_c = [], [], []
    for d, direction in enumerate(r.directions):
        tag = f"d{d}"
        if fused:
            y, last, cell = _fused_lstm(ctx, r, tag, direction, features, w[d], rec[d], bias[d],
                                        None if peep is None else peep[d], d)
        else:
            y, last, cell = _unrolled_lstm(ctx, r, tag, direction, w[d], rec[d], bias[d], None if peep is None else peep[d],
                                           d, [_ACTIVATIONS[a] for a in activations[3 * d:3 * d + 3]], node.attr("clip"))
        sequences.append(y)
        final_h.append(last)
        final_c.append(cell)
    r.outputs(sequences, [final_h, final_c])


def _fused_lstm(ctx: NodeContext, r: _Recurrence, tag: str, direction: str, features: int, w: np.ndarray,
                rec: np.ndarray, bias: np.ndarray, peep: np.ndarray | None, d: int) -> tuple[int, int, int]:
    h = r.hidden
    x = r.reverse(r.x, features, f"{tag}/reversed_input") if direction == "reverse" else r.x
    slot = {g: slice(k * h, (k + 1) * h) for g, k in _LSTM_GATES.items()}
    wi = [r.weight(w[slot[g]], f"{tag}/input_to_{g}") for g in _TFLITE_ORDER]
    ri = [r.weight(rec[slot[g]], f"{tag}/recurrent_to_{g}") for g in _TFLITE_ORDER]
    # ONNX's two biases add up (each rounded to fp16 first in an FP16 node, as the plan computes them)
    bi = [ctx.param(bias[slot[g]] + bias[4 * h:][slot[g]], "float32", f"{tag}/{g}_bias") for g in _TFLITE_ORDER]
    if peep is not None:  # P is (i, o, f): TFLite's cell_to_input, cell_to_forget, cell_to_output
        cells = [r.weight(peep[k * h:(k + 1) * h], f"{tag}/cell_to_{g}") for g, k in (("i", 0), ("f", 2), ("o", 1))]
    else:
        cells = [-1, -1, -1]
    vh, vc = r.f32(r.state_shape(), f"{tag}/output_state"), r.f32(r.state_shape(), f"{tag}/cell_state")
    ctx.w.model.tensors[vh].variable = ctx.w.model.tensors[vc].variable = True
    r.initial_state(5, d, f"{tag}/initial_h", target=vh)
    r.initial_state(6, d, f"{tag}/initial_c", target=vc)
    y = r.f32(r.sequence_shape(h), f"{tag}/y")
    ctx.op("UNIDIRECTIONAL_SEQUENCE_LSTM", [x, *wi, *ri, *cells, *bi, -1, -1, vh, vc, -1, -1, -1, -1], [y],
           "UnidirectionalSequenceLSTMOptions", 1, fusedActivationFunction="TANH", cellClip=0.0, projClip=0.0,
           timeMajor=r.layout == 0, asymmetricQuantizeInputs=False)
    last = r.last_step(y, f"{tag}/last_h")
    # the cell state, read after the kernel through a visible dependency on its output
    both = r.f32((r.batch, 2 * h), f"{tag}/cell_and_h")
    ctx.op("CONCATENATION", [vc, last], [both], "ConcatenationOptions", 1, axis=1, fusedActivationFunction="NONE")
    cell = r.f32(r.state_shape(), f"{tag}/last_c")
    ctx.op("SLICE", [both, ctx.param([0, 0], suffix=f"{tag}/c_begin"), ctx.param([-1, h], suffix=f"{tag}/c_size")],
           [cell], None, 1)
    sequence = r.reverse(y, h, f"{tag}/y_forward_order") if direction == "reverse" else y
    return sequence, last, cell


def _unrolled_lstm(ctx: NodeContext, r: _Recurrence, tag: str, direction: str, w: np.ndarray, rec: np.ndarray,
                   bias: np.ndarray, peep: np.ndarray | None, d: int, acts: list[str],
                   clip: float | None) -> tuple[int, int, int]:
    """ONNX's LSTM equations step by step (gates i, o, f, c as ONNX orders them)."""
    h = r.hidden
    steps = _project_inputs(ctx, r, tag, w, bias[:4 * h], 4 * h)
    recurrent = (r.weight(rec, f"{tag}/R"), ctx.param(bias[4 * h:], "float32", f"{tag}/Rb"))
    peeps = [r.weight(peep[k * h:(k + 1) * h], f"{tag}/P{k}") for k in range(3)] if peep is not None else None
    state, cell = r.initial_state(5, d, f"{tag}/initial_h"), r.initial_state(6, d, f"{tag}/initial_c")
    f_act, g_act, h_act = acts
    order = range(r.time) if direction == "forward" else range(r.time - 1, -1, -1)
    outputs: dict[int, int] = {}
    for t in order:
        s = _Step(ctx, r, f"{tag}/t{t}", clip)
        gates = s.binary("ADD", steps[t], s.fc(state, recurrent, 4, "recurrent"), "gates_in", 4)
        i_in, o_in, f_in, c_in = s.split(gates, [1, 1, 1, 1], "gate")
        if peeps is not None:
            i_in = s.binary("ADD", i_in, s.binary("MUL", peeps[0], cell, "peep_i"), "i_in")
            f_in = s.binary("ADD", f_in, s.binary("MUL", peeps[2], cell, "peep_f"), "f_in")
        i, f, c = s.act(f_act, i_in, "i"), s.act(f_act, f_in, "f"), s.act(g_act, c_in, "c")
        cell = s.binary("ADD", s.binary("MUL", f, cell, "kept"), s.binary("MUL", i, c, "written"), "cell")
        if peeps is not None:
            o_in = s.binary("ADD", o_in, s.binary("MUL", peeps[1], cell, "peep_o"), "o_in")
        o = s.act(f_act, o_in, "o")
        cell_out = s.tmp("cell_out")
        ctx.op(h_act, [cell], [cell_out])  # ONNX clips activation inputs of the gates, not of h(C)
        state = s.binary("MUL", o, cell_out, "state")
        outputs[t] = state
    return _pack_steps(ctx, r, tag, outputs), state, cell


# ============================================================================ GRU
def gru(ctx: NodeContext, node: Node) -> None:
    r = _Recurrence(ctx, node, 3)
    h = r.hidden
    features = int(ctx.shape(node.inputs[0])[2])
    directions = len(r.directions)
    w = r.value(1, (directions, 3 * h, features))
    rec = r.value(2, (directions, 3 * h, h))
    bias = r.value(3, (directions, 6 * h))
    activations = _activations(node, ["Sigmoid", "Tanh"])
    clip = node.attr("clip")
    linear_before_reset = int(node.attr("linear_before_reset", 0))
    sequences, finals = [], []
    for d, direction in enumerate(r.directions):
        tag = f"d{d}"
        f_act, g_act = (_ACTIVATIONS[a] for a in activations[2 * d:2 * d + 2])
        steps = _project_inputs(ctx, r, tag, w[d], bias[d, :3 * h], 3 * h)
        if linear_before_reset:
            recurrent = [(r.weight(rec[d], f"{tag}/R"), ctx.param(bias[d, 3 * h:], "float32", f"{tag}/Rb"))]
        else:
            recurrent = [(r.weight(rec[d, :2 * h], f"{tag}/R_zr"), ctx.param(bias[d, 3 * h:5 * h], "float32", f"{tag}/Rb_zr")),
                         (r.weight(rec[d, 2 * h:], f"{tag}/R_h"), ctx.param(bias[d, 5 * h:], "float32", f"{tag}/Rb_h"))]
        state = r.initial_state(5, d, f"{tag}/initial_h")
        order = range(r.time) if direction == "forward" else range(r.time - 1, -1, -1)
        outputs: dict[int, int] = {}
        for t in order:
            state = _gru_step(_Step(ctx, r, f"{tag}/t{t}", clip), steps[t], state, recurrent, f_act, g_act)
            outputs[t] = state
        sequences.append(_pack_steps(ctx, r, tag, outputs))
        finals.append(state)
    r.outputs(sequences, [finals])


def _gru_step(s: _Step, x: int, state: int, recurrent: list[tuple[int, int]], f_act: str, g_act: str) -> int:
    x_zr, x_h = s.split(x, [2, 1], "x_parts")
    if len(recurrent) == 1:  # linear_before_reset: h_t = g(x·Wh + Wbh + r ⊙ (H·Rh + Rbh))
        h_zr, h_h = s.split(s.fc(state, recurrent[0], 3, "recurrent"), [2, 1], "h_parts")
    else:
        h_zr = s.fc(state, recurrent[0], 2, "recurrent_zr")
    zr = s.act(f_act, s.binary("ADD", x_zr, h_zr, "zr_in", 2), "zr", 2)
    z, reset = s.split(zr, [1, 1], "gates")
    if len(recurrent) == 1:
        candidate_in = s.binary("ADD", x_h, s.binary("MUL", reset, h_h, "reset_h"), "candidate_in")
    else:  # h_t = g(x·Wh + Wbh + (r ⊙ H)·Rh + Rbh)
        candidate_in = s.binary("ADD", x_h, s.fc(s.binary("MUL", reset, state, "reset_state"), recurrent[1], 1, "recurrent_h"),
                                "candidate_in")
    candidate = s.act(g_act, candidate_in, "candidate")
    # H_t = (1 − z) ⊙ h_t + z ⊙ H_{t−1} = h_t + z ⊙ (H_{t−1} − h_t)
    return s.binary("ADD", candidate, s.binary("MUL", z, s.binary("SUB", state, candidate, "state_minus"), "gated"), "state")


__all__ = ["fused_lstm_possible", "gru", "lstm", "recurrent_check"]
