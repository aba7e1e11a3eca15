"""ONNX Runtime's legalization: the shared rules, from its capabilities alone.

What those capabilities say, and why, is in ``mpcompile_onnxruntime.OnnxRuntimeBackend.capabilities``:
int8/uint8 activations, per-channel weights, FP16/BF16 and INT16 run in FP32.
"""

from __future__ import annotations

from mpcompile.backends.api import Capabilities, Deviation, Graph, legalize_with_capabilities

BACKEND = "onnxruntime"


def legalize_for_onnxruntime(plan: Graph, caps: Capabilities) -> tuple[Graph, list[Deviation]]:
    return legalize_with_capabilities(plan, caps, backend_name=BACKEND)
