"""ONNX Runtime sessions on IR graphs, created without serializing the weights.

Calibration, the fake-quant reference and the ONNX runner all run IR graphs in ONNX
Runtime. Serializing a model into a protobuf copies every weight twice more (into the
message, into the bytes) and ORT parses them back; handing ORT the large initializers as
numpy-backed ``OrtValue``s skips both copies.
"""

from __future__ import annotations

from typing import Any

from mpcompile.ir import serde
from mpcompile.ir.graph import Graph


def inference_session(graph: Graph, options: Any = None) -> Any:
    """An ``onnxruntime.InferenceSession`` (CPU) running ``graph``. ORT's own errors propagate."""
    import onnxruntime as ort

    options = options if options is not None else ort.SessionOptions()
    payload, weights = serde.onnx_bytes_and_weights(graph)
    values = [ort.OrtValue.ortvalue_from_numpy(array) for array in weights.values()]
    if values:
        options.add_external_initializers(list(weights), values)
    session = ort.InferenceSession(payload, options, providers=["CPUExecutionProvider"])
    # ORT reads the initializers in place: they must live as long as the session does.
    session._mpcompile_weights = (weights, values)
    return session
