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

from mpcompile.backends.api import (
    InternalError,
    QType,
    QuantSpec,
    UnsupportedOperatorError,
)
from mpcompile_tflite import ops
from mpcompile_tflite.emit import (
    NodeContext,
    act_dtype,
    fused_activation_name,
    is_integer,
    quant_params,
    raw_dtype,
    same_numbers,
)
from mpcompile_tflite.layout import LayoutResult
from mpcompile_tflite.model import QuantParams, TflModel, TflOperator, TflTensor


@dataclasses.dataclass(frozen=True)
class WriterOptions:
    io: str = "float"  # "float" | "int8": type of the model's inputs/outputs when the plan quantizes them
    description: str = "mpcompile"


class ModelWriter:
    def __init__(self, layout: LayoutResult, options: WriterOptions) -> None:
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
            if producer is None or is_integer(producer) != is_integer(node):
                continue
            single = len(self.consumers.get(x, [])) == 1 and x not in self.g.outputs
            act = fused_activation_name(self.g, node)
            support = self.ops.EMITTERS.get(producer.op_type)
            fusable = support is not None and support.fuses is not None and support.fuses(self.g, producer)
            if single and act is not None and fusable and (x_spec is None or same_numbers(x_spec, out_spec)):
                self.fused[producer.name] = (act, out)
                self.skip.add(node.name)
            elif is_integer(node) and x_spec is None and single:
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
            index = self.new_tensor(name, act_dtype(spec), t.shape, quant_params(spec))
            kind = "q"
        elif t.is_float:
            index = self.new_tensor(name, "float32", t.shape)
            kind = "f" if spec is None else "float"  # with a spec, "f" means the dequantized value
        else:
            index = self.new_tensor(name, raw_dtype(t.dtype), t.shape)
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
            out = self.new_tensor(f"{name}/quantize", act_dtype(spec), shape, quant_params(spec))
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
                index = self.new_tensor(name, act_dtype(spec), t.shape, quant_params(spec))
                kind = "q"
            elif t.is_float:
                index = self.new_tensor(name, "float32", t.shape)
                kind = "f" if spec is None else "float"
            else:
                index = self.new_tensor(name, raw_dtype(t.dtype), t.shape)
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
