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

from mpcompile.backends.api import Artifact, Graph, QDQWriter, serde


def lower_to_qdq(plan: Graph) -> tuple[Graph, dict[str, str]]:
    placer = QDQWriter(plan)  # the shared placement is exactly what ORT's QDQ fusion recognises
    graph = placer.place()
    return graph, placer.tensor_map


def write_qdq_model(plan: Graph, out_dir: Path, stem: str, version: str) -> Artifact:
    graph, tensor_map = lower_to_qdq(plan)
    path = Path(out_dir) / f"{stem}.qdq.onnx"
    serde.save_onnx(graph, path)
    metadata = {"onnxruntime": version, "tensor_map": tensor_map, "format": "QDQ ONNX"}
    return Artifact("onnxruntime", path, [path], metadata=metadata)
