"""ONNX Runtime backend: lowers a plan to a QDQ ONNX model and runs it with ONNX Runtime."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mpcompile.backends.base import Artifact, Backend, Capabilities, Runner, op_table
from mpcompile.ir import serde
from mpcompile.ir.graph import Graph
from mpcompile.ir.types import Precision, QType
from mpcompile.planning import ops


class OnnxRuntimeBackend(Backend):
    name = "onnxruntime"
    description = "QDQ ONNX model for ONNX Runtime (CPU provider fuses it into integer kernels)"
    install_hint = "pip install onnxruntime"
    artifact_suffix = ".onnx"

    @property
    def capabilities(self) -> Capabilities:
        # Any standard op runs in FP32; quantizable ops in int8 (ORT falls back to float
        # between DQ and Q for ops without an integer kernel, which keeps the plan's numbers).
        # The CPU provider has no general FP16/BF16 kernels: such nodes are legalized to FP32.
        # No int16: measured here (ORT 1.32, CPU), graph optimizations from the BASIC level on
        # change the results of int16 QDQ models by 40–270 LSB (MatMul, Conv, Relu chains),
        # while the same models are exact with optimizations off. The conformance suite found
        # it; legalization runs such nodes in FP32 instead (accuracy first) and says so.
        return Capabilities(
            ops=op_table([(ops.INTEGER_OPS, {Precision.INT8, Precision.FP32}), (ops.FLOAT_ONLY_REASONS, {Precision.FP32})]),
            per_channel_weights=True,
            symmetric_activations_only=False,
            activation_qtypes=frozenset({QType.INT8, QType.UINT8}),
            float_precisions=frozenset({Precision.FP32}),
            notes=("ops not listed run in FP32", "FP16/BF16 run as FP32 on the CPU provider"),
        )

    def version(self) -> str:
        import onnxruntime

        return onnxruntime.__version__

    def lower(self, plan: Graph, out_dir: Path, **options: Any) -> Artifact:
        from mpcompile_onnxruntime.lowering import lower_to_qdq

        graph, tensor_map = lower_to_qdq(plan)
        out_dir = Path(out_dir)
        path = out_dir / f"{options.get('stem', plan.name or 'model')}.qdq.onnx"
        serde.save_onnx(graph, path)
        return Artifact(
            self.name,
            path,
            [path],
            metadata={"onnxruntime": self.version(), "tensor_map": tensor_map, "format": "QDQ ONNX"},
        )

    def runner(self, artifact: Artifact, **options: Any) -> Runner:
        from mpcompile.backends.onnx_runner import OnnxFileRunner

        # ORT's production session defaults (every graph optimization) unless optimize=False.
        return OnnxFileRunner(artifact, optimize=options.get("optimize", True))


backend = OnnxRuntimeBackend()

__all__ = ["OnnxRuntimeBackend", "backend"]
