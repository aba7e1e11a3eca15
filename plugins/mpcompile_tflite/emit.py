"""What an op emitter works with: the node's context in the writer, and the quantization helpers.

``ops.py`` (the emitter registry) and ``writer.py`` (which walks the graph and calls the
emitters) both build on this module, so neither imports the other's internals.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from mpcompile.backends.api import (
    Graph,
    InternalError,
    Node,
    Precision,
    QType,
    QuantSpec,
    Tensor,
    UnsupportedOperatorError,
)
from mpcompile_tflite.model import QuantParams, TflOperator

if TYPE_CHECKING:
    from mpcompile_tflite.writer import ModelWriter

#: What to do when a TFLite kernel needs a shape the model leaves dynamic.
STATIC_SHAPE_HINT = "freeze the model's dynamic input dimensions with --input-shape NAME=DIMS (e.g. x=1x3x224x224)"

#: TFLite's fused activations, from (min, max) bounds of a Relu/Clip.
_FUSED = {(0.0, None): "RELU", (0.0, 6.0): "RELU6", (-1.0, 1.0): "RELU_N1_TO_1"}


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


def is_integer(node: Node) -> bool:
    return node.precision is not None and node.precision.is_integer


def act_dtype(spec: QuantSpec) -> str:
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


def raw_dtype(dtype: np.dtype | None) -> str:
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
        self.integer = is_integer(node)
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
            raise UnsupportedOperatorError(
                f"node {self.node.name!r}: TFLite needs a static shape for {name!r}, got {shape}; {STATIC_SHAPE_HINT}"
            )
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
            dtype = raw_dtype(t.value.dtype)
            w.real[(name, "raw")] = w.new_tensor(name, dtype, t.value.shape, data=t.value.astype(dtype))
        return w.real[(name, "raw")]

    def param(self, values: Any, dtype: str = "int32", suffix: str = "param") -> int:
        """A new constant parameter tensor (shapes, axes, paddings)."""
        data = np.asarray(values, dtype=dtype)
        return self.w.new_tensor(f"{self.node.name}/{suffix}", dtype, data.shape, data=data)

    def batch_shape(self, source: int, axis: int, batch: Any, rest: list[int], suffix: str) -> int:
        """An int32 shape tensor ``[batch, *rest]``: a constant for a static ``batch``, else with the batch read
        from axis ``axis`` of tensor ``source`` at run time (the runner resizes inputs to any batch size)."""
        if isinstance(batch, int):
            return self.param([batch, *rest], suffix=f"{suffix}/dims")
        rank = len(self.w.model.tensors[source].shape)
        shape = self.w.new_tensor(f"{self.node.name}/{suffix}/input_shape", "int32", (rank,))
        self.op("SHAPE", [source], [shape], "ShapeOptions", 1, outType="INT32")
        size = self.w.new_tensor(f"{self.node.name}/{suffix}/batch", "int32", (1,))
        self.op("STRIDED_SLICE", [shape, self.param([axis], suffix=f"{suffix}/b0"), self.param([axis + 1], suffix=f"{suffix}/b1"),
                                  self.param([1], suffix=f"{suffix}/b2")], [size], "StridedSliceOptions", 1)
        dims = self.w.new_tensor(f"{self.node.name}/{suffix}/dims", "int32", (1 + len(rest),))
        self.op("CONCATENATION", [size, self.param(rest, suffix=f"{suffix}/rest")], [dims], "ConcatenationOptions", 1,
                axis=0, fusedActivationFunction="NONE")
        return dims

    def runtime_shape(self, source: int, scale: list[int] | None, offset: list[int] | None, suffix: str,
                      begin: int = 0, end: int | None = None) -> int:
        """An int32 tensor ``SHAPE(source)[begin:end] · scale + offset``: sizes that follow a dynamic input.

        LiteRT computes SHAPE, STRIDED_SLICE, MUL and ADD of constant or persistent tensors while it allocates
        (``IsConstantOrPersistentTensor`` in their Prepare), so after the runner resizes the inputs the operator
        that reads this tensor sees constant sizes and sizes its output statically (XNNPACK can take it).
        """
        rank = len(self.w.model.tensors[source].shape)
        stop = rank if end is None else end
        tensor = self.w.new_tensor(f"{self.node.name}/{suffix}/input_shape", "int32", (rank,))
        self.op("SHAPE", [source], [tensor], "ShapeOptions", 1, outType="INT32")
        if (begin, stop) != (0, rank):
            part = self.w.new_tensor(f"{self.node.name}/{suffix}/sizes", "int32", (stop - begin,))
            self.op("STRIDED_SLICE", [tensor, self.param([begin], suffix=f"{suffix}/b0"),
                                      self.param([stop], suffix=f"{suffix}/b1"), self.param([1], suffix=f"{suffix}/b2")],
                    [part], "StridedSliceOptions", 1)
            tensor = part
        n = stop - begin
        if scale is not None and list(scale) != [1] * n:
            scaled = self.w.new_tensor(f"{self.node.name}/{suffix}/scaled", "int32", (n,))
            self.op("MUL", [tensor, self.param(scale, suffix=f"{suffix}/scale")], [scaled], "MulOptions", 1,
                    fusedActivationFunction="NONE")
            tensor = scaled
        if offset is not None and any(offset):
            shifted = self.w.new_tensor(f"{self.node.name}/{suffix}/dims", "int32", (n,))
            self.op("ADD", [tensor, self.param(offset, suffix=f"{suffix}/offset")], [shifted], "AddOptions", 1,
                    fusedActivationFunction="NONE")
            tensor = shifted
        return tensor

    def scalar_like(self, like: str, value: float, suffix: str) -> int:
        """A constant with the value ``value`` in the representation of activation ``like``."""
        spec = self.spec(like)
        if self.integer and spec is not None:
            q = spec.quantize(np.array([value], dtype=np.float32))
            return self.w.new_tensor(f"{self.node.name}/{suffix}", act_dtype(spec), (1,), quant_params(spec), q)
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
