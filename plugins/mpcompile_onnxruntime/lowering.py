"""Lower a plan to a QDQ ONNX model that ONNX Runtime's CPU provider turns into integer kernels.

Placement follows what ORT's QDQ fusion recognises (QLinearConv, QLinearMatMul, QGemm…):

* weights and biases are stored as integers (int8 per channel, int32 bias) feeding a
  DequantizeLinear with an explicit axis;
* every annotated activation gets QuantizeLinear → DequantizeLinear right after its
  producer;
* a Relu whose input the plan left unquantized (fused activation) gets the Relu's own
  Q/DQ on its producer's output too: with the Relu's zero-point at the bottom of the
  integer range, the quantizer itself clamps negatives, so ORT can fuse the producer
  into an integer kernel and the numbers do not change.
"""

from __future__ import annotations

import numpy as np

from mpcompile.ir.graph import Graph, Node, Tensor
from mpcompile.ir.quant import QuantSpec
from mpcompile.ir.types import QType
from mpcompile.planning import ops


class QDQPlacer:
    def __init__(self, plan: Graph) -> None:
        self.g = plan.copy()
        #: IR tensor name -> tensor in the artifact holding its value as the backend sees it
        self.tensor_map: dict[str, str] = {t.name: t.name for t in self.g.tensors.values() if not t.is_constant}

    def _params(self, base: str, spec: QuantSpec) -> tuple[str, str]:
        g = self.g
        scale, zp = g.unique_name(f"{base}_scale"), g.unique_name(f"{base}_zero_point")
        g.add_tensor(Tensor(scale, value=np.array(spec.scale, dtype=np.float32)))
        g.add_tensor(Tensor(zp, value=np.array(spec.zero_point)))
        if spec.qtype == QType.INT16:
            g.opset_imports.setdefault("com.microsoft", 1)
        return scale, zp

    @staticmethod
    def _domain(spec: QuantSpec) -> str:
        # Standard int16 Q/DQ need opset 21; ORT's contrib Q/DQ accept int16 at any opset.
        return "com.microsoft" if spec.qtype == QType.INT16 else ""

    def _node(self, op: str, inputs: list[str], output: str, spec: QuantSpec, dtype) -> None:  # noqa: ANN001
        g = self.g
        if output not in g.tensors:
            g.add_tensor(Tensor(output, dtype))
        attrs = {} if spec.axis is None else {"axis": int(spec.axis)}
        g.nodes.append(Node(g.unique_name(f"{output}_{op}"), op, inputs, [output], attrs, domain=self._domain(spec)))

    def store_constant(self, tensor: Tensor) -> None:
        """Integer initializer + DequantizeLinear producing the tensor's float name."""
        spec = tensor.quant
        assert spec is not None and tensor.value is not None
        g = self.g
        qname = g.unique_name(f"{tensor.name}_quantized")
        g.add_tensor(Tensor(qname, value=spec.quantize(tensor.value)))
        scale, zp = self._params(tensor.name, spec)
        g.tensors[tensor.name] = Tensor(tensor.name, np.float32, tensor.shape)
        self._node("DequantizeLinear", [qname, scale, zp], tensor.name, spec, np.float32)

    def quantize_activation(self, name: str, spec: QuantSpec) -> None:
        """Q → DQ after the value. Consumers and graph outputs then read the dequantized value."""
        g = self.g
        tensor = g.tensors[name]
        producer = g.producers().get(name)
        if producer is None:
            # A graph input keeps its name; its consumers move to the dequantized copy.
            source, target = name, g.unique_name(f"{name}_dequantized")
            g.replace_uses(name, target)
            self.tensor_map[name] = target
        else:
            # The producer writes a float temporary; the dequantized value takes the original name.
            source, target = g.unique_name(f"{name}_float"), name
            producer.outputs = [source if o == name else o for o in producer.outputs]
            g.add_tensor(Tensor(source, tensor.dtype, tensor.shape))
        scale, zp = self._params(name, spec)
        q = g.unique_name(f"{name}_quantized")
        self._node("QuantizeLinear", [source, scale, zp], q, spec, spec.qtype.numpy_dtype)
        self._node("DequantizeLinear", [q, scale, zp], target, spec, np.float32)

    def place(self) -> Graph:
        g = self.g
        consumers = g.consumers()
        producers = g.producers()
        fused: list[tuple[str, QuantSpec]] = []
        for node in g.nodes:
            if node.op_type == "Relu" and node.precision is not None and node.precision.is_integer:
                src, out = node.inputs[0], node.outputs[0]
                spec = g.tensors[out].quant
                producer = producers.get(src)
                if (
                    spec is not None
                    and g.tensors[src].quant is None
                    and producer is not None
                    and producer.op_type in ops.FUSING_PRODUCERS
                    and len(consumers.get(src, [])) == 1
                    and float(spec.representable_range()[0]) == 0.0
                ):
                    fused.append((src, spec))
        for tensor in list(g.tensors.values()):
            if tensor.quant is not None and tensor.is_constant:
                self.store_constant(tensor)
        for tensor in list(g.tensors.values()):
            if tensor.quant is not None and not tensor.is_constant:
                self.quantize_activation(tensor.name, tensor.quant)
        for name, spec in fused:
            self.quantize_activation(name, spec.replace(provenance={"role": "fused-relu-input"}))
        for t in g.tensors.values():
            t.quant = None
        for n in g.nodes:
            n.precision = None
        g.toposort()
        return g


def lower_to_qdq(plan: Graph) -> tuple[Graph, dict[str, str]]:
    placer = QDQPlacer(plan)
    graph = placer.place()
    return graph, placer.tensor_map
