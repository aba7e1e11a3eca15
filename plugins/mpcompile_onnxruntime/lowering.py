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

from pathlib import Path

from mpcompile.backends.api import Artifact, Graph, QDQWriter, QuantSpec, ops, serde


class QDQPlacer(QDQWriter):
    """ORT's placement on top of the shared Q/DQ writer."""

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
                self.store_constant(tensor, tensor.quant)
        for tensor in list(g.tensors.values()):
            if tensor.quant is not None and not tensor.is_constant:
                self.quantize_activation(tensor.name, tensor.quant)
        for name, spec in fused:
            self.quantize_activation(name, spec.replace(provenance={"role": "fused-relu-input"}))
        return self.clear_plan()


def lower_to_qdq(plan: Graph) -> tuple[Graph, dict[str, str]]:
    placer = QDQPlacer(plan)
    graph = placer.place()
    return graph, placer.tensor_map


def write_qdq_model(plan: Graph, out_dir: Path, stem: str, version: str) -> Artifact:
    graph, tensor_map = lower_to_qdq(plan)
    path = Path(out_dir) / f"{stem}.qdq.onnx"
    serde.save_onnx(graph, path)
    metadata = {"onnxruntime": version, "tensor_map": tensor_map, "format": "QDQ ONNX"}
    return Artifact("onnxruntime", path, [path], metadata=metadata)
