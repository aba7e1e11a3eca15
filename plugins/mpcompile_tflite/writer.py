"""Walk the NHWC graph and build the ``TflModel``: tensors with the plan's numbers, operators from ``ops.py``.

Every activation has one *native* TFLite tensor, written by its producer: integer with
the plan's ``QuantSpec`` when the plan quantized it, float32 otherwise. A consumer that
needs the other representation gets it once through QUANTIZE or DEQUANTIZE (float and
integer islands of a mixed plan, float model I/O around an integer model). Constants
are written the way their consumer runs: quantized with their spec (integer nodes),
float16 + DEQUANTIZE (FP16 nodes, as the TFLite converter does), or float32.

A Relu/Clip whose input the plan left unquantized (or quantized exactly like the
activation's output) is fused into its producer's ``fused_activation_function``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from mpcompile.errors import InternalError, UnsupportedOperatorError
from mpcompile.ir.graph import Graph, Node, Tensor
from mpcompile.ir.quant import QuantSpec
from mpcompile.ir.types import Precision, QType
from mpcompile_tflite.layout import LayoutResult
from mpcompile_tflite.model import QuantParams, TflModel, TflOperator, TflTensor

#: TFLite's fused activations, from (min, max) bounds of a Relu/Clip.
_FUSED = {(0.0, None): "RELU", (0.0, 6.0): "RELU6", (-1.0, 1.0): "RELU_N1_TO_1"}


@dataclasses.dataclass(frozen=True)
class WriterOptions:
    io: str = "float"  # "float" | "int8": type of the model's inputs/outputs when the plan quantizes them
    description: str = "mpcompile"


def clip_bounds(graph: Graph, node: Node) -> tuple[float | None, float | None]:
    """(min, max) of a Relu or Clip with constant bounds; None for an open side."""
    if node.op_type == "Relu":
        return 0.0, None
    lo, hi = node.attr("min"), node.attr("max")
    for index in (1, 2):
        if len(node.inputs) > index and node.inputs[index]:
            t = graph.tensors.get(node.inputs[index])
            if t is None or not t.is_constant:
                raise UnsupportedOperatorError(f"Clip {node.name!r}: bounds must be constants for TFLite")
            value = float(np.asarray(t.value).reshape(-1)[0])
            lo, hi = (value, hi) if index == 1 else (lo, value)
    lo = None if lo is None or lo <= -3.0e38 else float(lo)
    hi = None if hi is None or hi >= 3.0e38 else float(hi)
    return lo, hi


def fused_activation_name(graph: Graph, node: Node) -> str | None:
    if node.op_type not in ("Relu", "Clip"):
        return None
    return _FUSED.get(clip_bounds(graph, node))


def _is_integer(node: Node) -> bool:
    return node.precision is not None and node.precision.is_integer


def _act_dtype(spec: QuantSpec) -> str:
    if spec.qtype not in (QType.INT8, QType.INT16):
        raise InternalError(f"TFLite activations are int8 or int16, got {spec.qtype.value} (legalization missed it)")
    return spec.qtype.value


def same_numbers(a: QuantSpec | None, b: QuantSpec | None) -> bool:
    """Equal quantization as a kernel sees it (type, scale bits, zero-points, axis), whatever the provenance."""
    if a is None or b is None:
        return a is b
    return (
        a.qtype == b.qtype
        and a.axis == b.axis
        and a.scale.tobytes() == b.scale.tobytes()
        and a.zero_point.tobytes() == b.zero_point.tobytes()
    )


def quant_params(spec: QuantSpec) -> QuantParams:
    return QuantParams.from_arrays(spec.scale, spec.zero_point, 0 if spec.axis is None else spec.axis)


class ModelWriter:
    def __init__(self, layout: LayoutResult, options: WriterOptions) -> None:
        from mpcompile_tflite import ops

        self.ops = ops
        self.g = layout.graph
        self.layout = layout
        self.options = options
        self.model = TflModel(description=options.description)
        self.producers = self.g.producers()
        self.consumers = self.g.consumers()
        #: (graph tensor, "q" | "f" | "raw") -> TFLite tensor index
        self.real: dict[tuple[str, str], int] = {}
        self.native: dict[str, str] = {}
        #: a producer output realized with another tensor's spec: the unfusable Relu/Clip input
        self.retarget: dict[str, QuantSpec] = {}
        #: producer node -> (fused activation, output tensor that the producer writes instead)
        self.fused: dict[str, tuple[str, str]] = {}
        self.skip: set[str] = set()
        #: graph tensor aliases: Identity/Dropout/no-op transposes write nothing
        self.alias: dict[str, str] = {}
        self.op_counts: dict[str, int] = {}

    # ------------------------------------------------------------------ planning
    def plan_fusions(self) -> None:
        for node in self.g.nodes:
            if node.op_type not in ("Relu", "Clip"):
                continue
            x, out = node.inputs[0], node.outputs[0]
            producer = self.producers.get(x)
            x_spec, out_spec = self.g.tensors[x].quant, self.g.tensors[out].quant
            if producer is None or _is_integer(producer) != _is_integer(node):
                continue
            single = len(self.consumers.get(x, [])) == 1 and x not in self.g.outputs
            act = fused_activation_name(self.g, node)
            support = self.ops.EMITTERS.get(producer.op_type)
            fusable = support is not None and support.fuses is not None and support.fuses(self.g, producer)
            if single and act is not None and fusable and (x_spec is None or same_numbers(x_spec, out_spec)):
                self.fused[producer.name] = (act, out)
                self.skip.add(node.name)
            elif _is_integer(node) and x_spec is None and single:
                # Written directly with the activation's spec; the standalone op then clamps exactly.
                self.retarget[x] = out_spec

    # ------------------------------------------------------------------ tensors
    def spec(self, name: str) -> QuantSpec | None:
        name = self.alias.get(name, name)
        if name in self.retarget:
            return self.retarget[name]
        return self.g.tensors[name].quant

    def shape(self, name: str) -> tuple[Any, ...]:
        return self.g.tensors[self.alias.get(name, name)].shape

    @staticmethod
    def tfl_shape(shape: tuple[Any, ...]) -> tuple[tuple[int, ...], tuple[int, ...] | None]:
        static = tuple(d if isinstance(d, int) and d >= 0 else 1 for d in shape)
        if all(isinstance(d, int) and d >= 0 for d in shape):
            return static, None
        return static, tuple(d if isinstance(d, int) and d >= 0 else -1 for d in shape)

    def new_tensor(self, name: str, dtype: str, shape: tuple[Any, ...], quant: QuantParams | None = None,
                   data: np.ndarray | None = None) -> int:
        static, signature = self.tfl_shape(shape)
        return self.model.add_tensor(TflTensor(name, dtype, static, signature, data, quant))

    def activation_tensor(self, name: str, integer: bool) -> int:
        """Create the native TFLite tensor of a graph activation (output of the node being written)."""
        t = self.g.tensors[name]
        spec = self.spec(name)
        if integer and spec is not None:
            index = self.new_tensor(name, _act_dtype(spec), t.shape, quant_params(spec))
            kind = "q"
        elif t.is_float:
            index = self.new_tensor(name, "float32", t.shape)
            kind = "f" if spec is None else "float"  # with a spec, "f" means the dequantized value
        else:
            index = self.new_tensor(name, _raw_dtype(t.dtype), t.shape)
            kind = "raw"
        self.real[(name, kind)] = index
        self.native[name] = kind
        return index

    def realize(self, name: str, kind: str) -> int:
        """``name`` as the plan defines it, quantized ("q") or dequantized to float32 ("f"), or "raw".

        A float consumer of a quantized tensor reads the dequantized value, like every consumer
        in the plan; a float-native tensor with a spec (a float producer feeding an integer node,
        a float model input) is quantized first. QUANTIZE and DEQUANTIZE are inserted once each.
        """
        name = self.alias.get(name, name)
        if (name, kind) in self.real:
            return self.real[(name, kind)]
        native = self.native.get(name)
        if native is None:
            raise InternalError(f"tensor {name!r} is read before it is written")
        src = self.real[(name, native)]
        shape = self.g.tensors[name].shape
        spec = self.spec(name)
        if native == "raw" or spec is None:
            return src
        if kind == "q":  # native float
            out = self.new_tensor(f"{name}/quantize", _act_dtype(spec), shape, quant_params(spec))
            self.add_op("QUANTIZE", [src], [out], version=2 if spec.qtype == QType.INT16 else 1)
        elif kind == "f":
            q = self.realize(name, "q")
            out = self.new_tensor(f"{name}/dequantize", "float32", shape)
            self.add_op("DEQUANTIZE", [q], [out], version=3 if spec.qtype == QType.INT16 else 2)
        else:
            raise InternalError(f"cannot realize {name!r} as {kind} from {native}")
        self.real[(name, kind)] = out
        return out

    def add_op(self, op: str, inputs: list[int], outputs: list[int], options: str | None = None,
               fields: dict[str, Any] | None = None, version: int = 1) -> TflOperator:
        self.op_counts[op] = self.op_counts.get(op, 0) + 1
        return self.model.add_operator(TflOperator(op, list(inputs), list(outputs), options, dict(fields or {}), version))

    # ------------------------------------------------------------------ driver
    def write(self) -> TflModel:
        self.plan_fusions()
        for name in self.g.inputs:
            t = self.g.tensors[name]
            spec = t.quant
            if self.options.io == "int8" and spec is not None:
                index = self.new_tensor(name, _act_dtype(spec), t.shape, quant_params(spec))
                kind = "q"
            elif t.is_float:
                index = self.new_tensor(name, "float32", t.shape)
                kind = "f" if spec is None else "float"
            else:
                index = self.new_tensor(name, _raw_dtype(t.dtype), t.shape)
                kind = "raw"
            self.real[(name, kind)] = index
            self.native[name] = kind
            self.model.inputs.append(index)
        for node in self.g.nodes:
            if node.name in self.skip:
                continue
            support = self.ops.EMITTERS.get(node.op_type)
            if support is None:
                raise UnsupportedOperatorError(f"the TFLite writer has no emitter for {node.op_type} (node {node.name!r})")
            support.emit(NodeContext(self, node), node)
        for name in self.g.outputs:
            spec = self.spec(name)
            t = self.g.tensors[name]
            if self.options.io == "int8" and spec is not None:
                index = self.realize(name, "q")
            elif t.is_float:
                index = self.realize(name, "f")
            else:
                index = self.realize(name, "raw")
            self.model.outputs.append(index)
        self.name_outputs()
        self.unique_names()
        return self.model

    def unique_names(self) -> None:
        """The runner finds tensors by name: later duplicates get a suffix."""
        seen: set[str] = set()
        for t in self.model.tensors:
            if t.name in seen:
                k = 1
                while f"{t.name};{k}" in seen:
                    k += 1
                t.name = f"{t.name};{k}"
            seen.add(t.name)

    def interface(self, indices: list[int], layouts: dict, names: list[str]) -> list[dict[str, Any]]:
        """What the runner needs about each model input/output: its tensor, dtype and layout."""
        return [
            {"name": name, "tensor": self.model.tensors[i].name, "dtype": self.model.tensors[i].dtype,
             "layout": layouts[name].to_dict()}
            for name, i in zip(names, indices)
        ]

    def constant_map(self) -> dict[str, list[str]]:
        """Plan constant -> the TFLite tensors that store it (quantized, float16 or float32)."""
        result: dict[str, list[str]] = {}
        for plan_name, copies in self.layout.constants.items():
            names = {self.model.tensors[index].name for (g_name, _kind), index in self.real.items()
                     if g_name in copies and self.model.tensors[index].data is not None}
            if names:
                result[plan_name] = sorted(names)
        return result

    def name_outputs(self) -> None:
        """The model's outputs carry the plan's output names (other tensors step aside)."""
        for plan_name, g_name in self.layout.outputs.items():
            index = self.model.outputs[self.g.outputs.index(g_name)]
            target = self.model.tensors[index]
            if target.name == plan_name:
                continue
            for t in self.model.tensors:
                if t.name == plan_name:
                    t.name = f"{plan_name}/stored"
            target.name = plan_name

    def tensor_map(self) -> dict[str, str]:
        """Plan activation -> name of the TFLite tensor that holds its value as the plan defines it."""
        result: dict[str, str] = {}
        for name in self.layout.layouts:
            g_name = self.alias.get(name, name)
            if g_name not in self.g.tensors:
                continue
            spec = self.g.tensors[g_name].quant
            kind = "q" if spec is not None else ("f" if self.g.tensors[g_name].is_float else "raw")
            index = self.real.get((g_name, kind))
            if index is not None:
                result[name] = self.model.tensors[index].name
        return result


def _raw_dtype(dtype: np.dtype | None) -> str:
    name = np.dtype(dtype).name if dtype is not None else "float32"
    if name in ("float64",):
        return "float32"
    if name in ("uint64", "uint32"):
        return "int64"
    return name


class NodeContext:
    """What an op emitter sees: the node's inputs realized for its precision, and helpers."""

    def __init__(self, writer: ModelWriter, node: Node) -> None:
        self.w = writer
        self.node = node
        self.integer = _is_integer(node)
        self.fp16 = node.precision in (Precision.FP16, Precision.BF16)
        fused = writer.fused.get(node.name)
        self.fused_activation = fused[0] if fused else "NONE"
        self._fused_output = fused[1] if fused else None

    # ------------------------------------------------------------------ facts
    @property
    def graph(self) -> Graph:
        return self.w.g

    @property
    def kind(self) -> str:
        """"int8", "int16" or "float": selects kernels and operator versions."""
        if not self.integer:
            return "float"
        for name in self.node.outputs + self.node.inputs:
            if name and name in self.w.g.tensors and not self.w.g.tensors[name].is_constant:
                spec = self.w.spec(name)
                if spec is not None:
                    return "int16" if spec.qtype == QType.INT16 else "int8"
        return "int16" if self.node.precision == Precision.INT16 else "int8"

    def version(self, int8: int = 1, int16: int = 1, float: int = 1) -> int:  # noqa: A002 - reads as a table
        return {"int8": int8, "int16": int16, "float": float}[self.kind]

    def tensor(self, name: str) -> Tensor:
        return self.w.g.tensors[self.w.alias.get(name, name)]

    def shape(self, name: str) -> tuple[Any, ...]:
        return self.w.shape(name)

    def static_shape(self, name: str) -> tuple[int, ...]:
        shape = self.shape(name)
        if not all(isinstance(d, int) for d in shape):
            raise UnsupportedOperatorError(f"node {self.node.name!r}: TFLite needs a static shape for {name!r}, got {shape}")
        return tuple(shape)

    def spec(self, name: str) -> QuantSpec | None:
        return self.w.spec(name)

    def value(self, name: str) -> np.ndarray:
        t = self.tensor(name)
        if t.value is None:
            raise UnsupportedOperatorError(f"node {self.node.name!r}: input {name!r} must be a constant for TFLite")
        return t.value

    def is_constant(self, name: str) -> bool:
        return bool(name) and self.tensor(name).is_constant

    # ------------------------------------------------------------------ inputs
    def input(self, name: str) -> int:
        """An input (activation or constant) as this node consumes it."""
        if not name:
            return -1
        if self.is_constant(name):
            return self.const(name)
        t = self.tensor(name)
        if not t.is_float:
            return self.w.realize(name, "raw")
        if self.integer:
            if self.spec(name) is None:
                raise InternalError(f"integer node {self.node.name!r} reads {name!r}, which the plan did not quantize")
            return self.w.realize(name, "q")
        return self.w.realize(name, "f")

    def const(self, name: str) -> int:
        """A constant operand: quantized with its spec (integer node), float16 + DEQUANTIZE (FP16 node), or float32."""
        t = self.tensor(name)
        spec = t.quant
        w = self.w
        if self.integer and spec is not None:
            dtype = spec.qtype.value
            if spec.qtype == QType.INT32 and self.kind == "int16":
                # 16x8 kernels take int64 biases: same scale, same rounding, no int32 saturation.
                dtype = "int64"
            key = (name, dtype)
            if key not in w.real:
                data = _quantize(spec, t.value, dtype)
                w.real[key] = w.new_tensor(name, dtype, t.value.shape, quant_params(spec), data)
            return w.real[key]
        if t.is_float and self.fp16:
            if (name, "f") not in w.real:
                half = w.new_tensor(f"{name}/fp16", "float16", t.value.shape, data=t.value.astype(np.float16))
                full = w.new_tensor(name, "float32", t.value.shape)
                w.add_op("DEQUANTIZE", [half], [full], version=3)
                w.real[(name, "fp16")] = half
                w.real[(name, "f")] = full
            return w.real[(name, "f")]
        if t.is_float:
            if (name, "f") not in w.real:
                w.real[(name, "f")] = w.new_tensor(name, "float32", t.value.shape, data=t.value.astype(np.float32))
            return w.real[(name, "f")]
        if (name, "raw") not in w.real:
            dtype = _raw_dtype(t.value.dtype)
            w.real[(name, "raw")] = w.new_tensor(name, dtype, t.value.shape, data=t.value.astype(dtype))
        return w.real[(name, "raw")]

    def param(self, values: Any, dtype: str = "int32", suffix: str = "param") -> int:
        """A new constant parameter tensor (shapes, axes, paddings)."""
        data = np.asarray(values, dtype=dtype)
        return self.w.new_tensor(f"{self.node.name}/{suffix}", dtype, data.shape, data=data)

    def scalar_like(self, like: str, value: float, suffix: str) -> int:
        """A constant with the value ``value`` in the representation of activation ``like``."""
        spec = self.spec(like)
        if self.integer and spec is not None:
            q = spec.quantize(np.array([value], dtype=np.float32))
            return self.w.new_tensor(f"{self.node.name}/{suffix}", _act_dtype(spec), (1,), quant_params(spec), q)
        return self.w.new_tensor(f"{self.node.name}/{suffix}", "float32", (1,), data=np.array([value], np.float32))

    # ------------------------------------------------------------------ outputs
    def output(self, name: str) -> int:
        """The native tensor of output ``name`` (the fused activation's output when one was fused)."""
        target = self._fused_output if (self._fused_output and name == self.node.outputs[0]) else name
        return self.w.activation_tensor(target, self.integer)

    def temp(self, like: int, shape: tuple[Any, ...], suffix: str, dtype: str | None = None,
             quant: QuantParams | None | bool = True) -> int:
        """An intermediate tensor, by default with the dtype and quantization of tensor ``like``."""
        src = self.w.model.tensors[like]
        q = src.quant if quant is True else (quant or None)
        return self.w.new_tensor(f"{self.node.name}/{suffix}", dtype or src.dtype, shape, q)

    def alias(self, output: str, source: str) -> None:
        """``output`` is the same tensor as ``source`` (Identity, Dropout, no-op Transpose)."""
        self.w.alias[output] = self.w.alias.get(source, source)

    def op(self, op: str, inputs: list[int], outputs: list[int], options: str | None = None, version: int = 1,
           **fields: Any) -> TflOperator:
        return self.w.add_op(op, inputs, outputs, options, fields, version)


def _quantize(spec: QuantSpec, value: np.ndarray, dtype: str) -> np.ndarray:
    if dtype == "int64":
        scale = spec.scale if spec.axis is None else spec.scale.reshape([-1 if i == spec.axis else 1 for i in range(value.ndim)])
        return np.rint(np.asarray(value, np.float32) / scale).astype(np.int64)
    return spec.quantize(value)
