"""ONNX Runtime backend: lowers a plan to a QDQ ONNX model and runs it with ONNX Runtime.

The room: ``options.py`` (``OnnxRuntimeOptions``), ``legalize.py`` (the shared rules from
the capabilities below), ``lowering.py`` (Q/DQ placement that ORT's CPU provider fuses into
integer kernels), ``runner.py`` (the core's ONNX runner).
"""

from __future__ import annotations

from pathlib import Path

from mpcompile.backends.api import (
    Artifact,
    Backend,
    Capabilities,
    Deviation,
    Graph,
    Precision,
    QType,
    Runner,
    op_table,
    ops,
)
from mpcompile_onnxruntime.options import OnnxRuntimeOptions


class OnnxRuntimeBackend(Backend):
    name = "onnxruntime"
    description = "QDQ ONNX model for ONNX Runtime (CPU provider fuses it into integer kernels)"
    install_hint = "pip install onnxruntime"
    artifact_suffix = ".onnx"
    Options = OnnxRuntimeOptions

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
            # DQ → MatMul with no Q after it becomes MatMulIntegerToFloat (ORT's QDQ MatMul selector).
            float_output_ops=frozenset({"MatMul"}),
            notes=("ops not listed run in FP32", "FP16/BF16 run as FP32 on the CPU provider"),
        )

    def version(self) -> str:
        import onnxruntime

        return onnxruntime.__version__

    def legalize(self, plan: Graph, options: OnnxRuntimeOptions) -> tuple[Graph, list[Deviation]]:
        from mpcompile_onnxruntime.legalize import legalize_for_onnxruntime

        return legalize_for_onnxruntime(plan, self.capabilities, options)

    def lower(self, plan: Graph, out_dir: Path, *, stem: str, options: OnnxRuntimeOptions) -> Artifact:
        from mpcompile.backends.api import uint8_weights
        from mpcompile_onnxruntime.lowering import write_qdq_model

        return write_qdq_model(plan, out_dir, stem, self.version(), fusion=options.fusion_report,
                               skip_layernorm=options.skip_layernorm_fusion, uint8_weights=uint8_weights(options.weights))

    def runner(self, artifact: Artifact, options: OnnxRuntimeOptions) -> Runner:
        from mpcompile_onnxruntime.runner import ort_runner

        return ort_runner(artifact, options)


backend = OnnxRuntimeBackend()

__all__ = ["OnnxRuntimeBackend", "OnnxRuntimeOptions", "backend"]
