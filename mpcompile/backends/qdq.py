"""Writing QuantizeLinear/DequantizeLinear into a copy of a plan: the mechanism every QDQ backend shares.

Backends decide *where* Q/DQ go (ONNX Runtime's fusion patterns, TensorRT's rules); this
class does the writing the same way for all of them:

* ``store_constant``: the constant becomes an integer initializer feeding a
  DequantizeLinear (explicit ``axis`` when per channel) whose output keeps the float name;
* ``quantize_activation``: Q → DQ right after a value; consumers and graph outputs read the
  dequantized value, under the original name (a graph input keeps its name and its
  consumers move to the dequantized copy).

``tensor_map`` maps IR tensor names to the artifact tensor holding the value the backend
computes, for per-layer conformance. The fake-quant reference deliberately does *not* use
this class, so that a placement bug cannot hide in both.
"""

from __future__ import annotations

import numpy as np

from mpcompile.ir import ops
from mpcompile.ir.graph import Graph, Node, Tensor
from mpcompile.ir.quant import QuantSpec
from mpcompile.ir.types import QType


def uint8_storage(spec: QuantSpec) -> QuantSpec:
    """The same numbers stored as uint8: int8 becomes uint8 with zero-point + 128 (other types unchanged).

    ``(q + 128) - (z + 128) == q - z`` for every q, and saturation at -128/127 maps to 0/255,
    so the dequantized values are identical.
    """
    if spec.qtype != QType.INT8:
        return spec
    zero = spec.zero_point.astype(np.int16) + 128
    return spec.replace(qtype=QType.UINT8, zero_point=zero.astype(np.uint8), symmetric=False, narrow_range=False)


class QDQWriter:
    #: Store int8 weights as uint8 (``uint8_storage``): u8 × u8 kernels, exact on x86 CPUs without VNNI
    #: where u8 × s8 kernels saturate (``mpcompile.backends.cpu``). Biases and data constants are unchanged.
    uint8_weights = False
    #: the weighted ops whose weights ``uint8_weights`` stores as uint8 (a backend may exclude one it mishandles)
    uint8_weight_ops: frozenset[str] = frozenset(ops.WEIGHTED)

    def __init__(self, plan: Graph) -> None:
        self.g = plan.copy()
        self.tensor_map: dict[str, str] = {t.name: t.name for t in self.g.tensors.values() if not t.is_constant}
        self._constant_readers: dict[str, list[Node]] | None = None  # set by ``place``
        self.reindex()

    def reindex(self) -> None:
        """Rebuild the producer index after rewiring the graph by other means than this class.

        Built once per placement pass (not per tensor): the writer keeps it current itself.
        """
        self._producers = self.g.producers()

    # ------------------------------------------------------------------ building blocks
    def node(self, op: str, inputs: list[str], output: str, dtype, shape=None, domain: str = "", **attrs) -> None:  # noqa: ANN001
        g = self.g
        if output not in g.tensors:
            g.add_tensor(Tensor(output, dtype, shape))
        g.nodes.append(Node(g.unique_name(f"{output}_{op}"), op, inputs, [output], attrs, domain=domain))
        self._producers[output] = g.nodes[-1]

    def params(self, base: str, spec: QuantSpec) -> tuple[str, str]:
        """Scale and zero-point initializers (the zero-point's dtype is the quantized type)."""
        g = self.g
        scale = g.add_tensor(Tensor(g.unique_name(f"{base}_scale"), value=np.array(spec.scale, dtype=np.float32)))
        zero = g.add_tensor(Tensor(g.unique_name(f"{base}_zero_point"), value=np.array(spec.zero_point)))
        if spec.qtype == QType.INT16:
            g.opset_imports.setdefault("com.microsoft", 1)
        return scale.name, zero.name

    @staticmethod
    def attrs(spec: QuantSpec) -> dict:
        """Q/DQ attributes and domain. The axis is always written when per channel: ONNX defaults
        to 1, TensorRT's parser to 0. Standard int16 Q/DQ need opset 21; ORT's contrib ops take
        int16 at any opset."""
        attrs: dict = {} if spec.axis is None else {"axis": int(spec.axis)}
        attrs["domain"] = "com.microsoft" if spec.qtype == QType.INT16 else ""
        return attrs

    # ------------------------------------------------------------------ placements
    def store_constant(self, tensor: Tensor, spec: QuantSpec) -> None:
        """Integer initializer → DequantizeLinear producing the constant's float name."""
        g = self.g
        assert tensor.value is not None
        stored = g.add_tensor(Tensor(g.unique_name(f"{tensor.name}_quantized"), value=spec.quantize(tensor.value)))
        scale, zero = self.params(tensor.name, spec)
        g.tensors[tensor.name] = Tensor(tensor.name, np.float32, tensor.shape)
        self.node("DequantizeLinear", [stored.name, scale, zero], tensor.name, np.float32, tensor.shape, **self.attrs(spec))

    def quantize_activation(self, name: str, spec: QuantSpec) -> None:
        """Q → DQ after the value; consumers and graph outputs then read the dequantized value."""
        g = self.g
        tensor = g.tensors[name]
        producer = self._producers.get(name)
        if producer is None and name not in g.inputs:
            return  # nothing computes it: nothing to quantize
        if producer is None:  # a graph input keeps its name; its consumers read the dequantized copy
            source, target = name, g.unique_name(f"{name}_dequantized")
            g.replace_uses(name, target)
            g.outputs = [name if o == target else o for o in g.outputs]
            self.tensor_map[name] = target
        else:  # the producer writes a float temporary; the dequantized value takes the original name
            source, target = g.unique_name(f"{name}_float"), name
            producer.outputs = [source if o == name else o for o in producer.outputs]
            self._producers[source] = producer
            g.add_tensor(Tensor(source, tensor.dtype, tensor.shape))
        scale, zero = self.params(name, spec)
        quantized = g.unique_name(f"{name}_quantized")
        attrs = self.attrs(spec)
        self.node("QuantizeLinear", [source, scale, zero], quantized, spec.qtype.numpy_dtype, tensor.shape, **attrs)
        self.node("DequantizeLinear", [quantized, scale, zero], target, np.float32, tensor.shape, **attrs)

    def clear_plan(self) -> Graph:
        """Drop the plan's annotations (now written as nodes) and restore topological order."""
        for t in self.g.tensors.values():
            t.quant = None
        for n in self.g.nodes:
            n.precision = None
        self.g.toposort()
        return self.g

    # ------------------------------------------------------------------ the placement integer runtimes fuse
    def prepare(self) -> None:
        """Hook for a backend's own rewrites before the Q/DQ nodes are written (default: none)."""

    def fused_relu_inputs(self) -> list[tuple[str, QuantSpec]]:
        """Producer outputs the plan leaves unquantized because an integer Relu reads them (a fused activation).

        Writing the Relu's own Q/DQ there too changes no number (with the Relu's zero-point at the
        bottom of the integer range the quantizer itself clamps negatives) and lets a runtime fuse
        the producer into an integer kernel.
        """
        g = self.g
        consumers, producers = g.consumers(), g.producers()
        fused = []
        for node in g.nodes:
            if node.op_type != "Relu" or node.precision is None or not node.precision.is_integer:
                continue
            src, out = node.inputs[0], node.outputs[0]
            spec, producer = g.tensors[out].quant, producers.get(src)
            if (
                spec is not None
                and g.tensors[src].quant is None
                and producer is not None
                and producer.op_type in ops.FUSING_PRODUCERS
                and len(consumers.get(src, [])) == 1
                and float(spec.representable_range()[0]) == 0.0
            ):
                fused.append((src, spec))
        return fused

    def place_constant(self, tensor: Tensor, spec: QuantSpec) -> None:
        """Hook: how an annotated constant is written (default: ``store_constant``; weights as ``weight_storage``)."""
        self.store_constant(tensor, self.weight_storage(tensor.name, spec) if self.weight_only(tensor.name) else spec)

    def weight_storage(self, name: str, spec: QuantSpec) -> QuantSpec:
        """How weight ``name`` is stored: as the plan says, or as uint8 with the same numbers (``uint8_weights``,
        for readers in ``uint8_weight_ops``)."""
        readers = self._constant_readers if self._constant_readers is not None else self.g.consumers()
        if self.uint8_weights and all(n.op_type in self.uint8_weight_ops for n in readers.get(name, [])):
            return uint8_storage(spec)
        return spec

    def weight_only(self, name: str) -> bool:
        """True when every reader takes the constant as the weight of a Conv/Gemm/MatMul (or as a bias)."""
        readers = self._constant_readers if self._constant_readers is not None else self.g.consumers()
        for node in readers.get(name, []):
            if node.op_type not in ops.WEIGHTED:
                return False
            weight, bias = ops.WEIGHTED[node.op_type]
            if any(i not in (weight, bias) for i, x in enumerate(node.inputs) if x == name):
                return False
        return True

    def activation_storage(self, name: str, spec: QuantSpec) -> QuantSpec | None:
        """Hook: the spec an annotated activation's Q/DQ is written with, or None for no Q/DQ (default: the plan's).

        A backend may store the same numbers differently (another integer type whose dequantized
        values are identical) or skip a value whose Q/DQ it already wrote another way.
        """
        return spec

    def finish(self) -> None:
        """Hook for a backend's own rewrites after the Q/DQ nodes are written (default: none)."""

    def place(self) -> Graph:
        """Every annotated constant stored as integers, every annotated activation Q → DQ, fused Relu inputs too."""
        fused = self.fused_relu_inputs()
        self.prepare()
        self._constant_readers = self.g.consumers()  # storing a constant keeps its readers: one index for all
        for tensor in list(self.g.tensors.values()):
            if tensor.quant is not None and tensor.is_constant:
                self.place_constant(tensor, tensor.quant)
        for tensor in list(self.g.tensors.values()):
            if tensor.quant is not None and not tensor.is_constant:
                storage = self.activation_storage(tensor.name, tensor.quant)
                if storage is not None:
                    self.quantize_activation(tensor.name, storage)
        for name, spec in fused:
            storage = self.activation_storage(name, spec.replace(provenance={"role": "fused-relu-input"}))
            if storage is not None:
                self.quantize_activation(name, storage)
        self.finish()
        return self.clear_plan()
