"""LiteRT / TFLite backend: writes the plan as a ``.tflite`` flatbuffer and runs it with LiteRT.

The room: ``options.py`` (``TFLiteOptions``: I/O types, NHWC interfaces, fallback, runner
kernels), ``legalize.py`` (TFLite's rules on top of the shared legalization), ``lowering.py``
(layout, GELU fusion, the flatbuffer writer), ``runner.py`` (LiteRT's interpreter, in the
plan's ONNX terms). ``emit.py``/``ops.py``/``writer.py``/``layout.py``/``flatbuffer.py`` are the
writer's parts; see ``lowering.py`` and the README beside this file.
"""

from __future__ import annotations

from pathlib import Path

from mpcompile.backends.api import (
    Artifact,
    Backend,
    BackendUnavailableError,
    Capabilities,
    Deviation,
    Graph,
    Precision,
    QType,
    Runner,
    op_table,
)
from mpcompile_tflite.options import TFLiteOptions


class TFLiteBackend(Backend):
    name = "tflite"
    description = "TFLite flatbuffer for LiteRT (int8, 16x8, float16, float32 and mixed plans; NHWC)"
    install_hint = "pip install 'mpcompile[tflite]'   (ai-edge-litert and flatbuffers)"
    artifact_suffix = ".tflite"
    Options = TFLiteOptions

    @property
    def capabilities(self) -> Capabilities:
        from mpcompile_tflite.ops import supported_precisions

        return Capabilities(
            ops=op_table(([op], precisions) for op, precisions in supported_precisions().items()),
            per_channel_weights=True,
            symmetric_activations_only=False,
            activation_qtypes=frozenset({QType.INT8, QType.INT16}),
            int16_zero_point_zero=True,
            float_precisions=frozenset({Precision.FP32, Precision.FP16}),
            static_shapes=True,  # no Shape/Range kernels: shape computations must fold before the flatbuffer
            notes=(
                "int16 means TFLite's 16x8 kernels (int16 activations, int8 weights, int64 biases)",
                "FP16 nodes store float16 weights dequantized to float32 (as the TFLite converter does)",
                "BF16 runs as FP16; uint8 activations become int8 with zero-point - 128",
            ),
        )

    def check_available(self) -> None:
        try:
            import flatbuffers  # noqa: F401
            from ai_edge_litert import interpreter, schema_py_generated  # noqa: F401
        except ImportError as exc:
            raise BackendUnavailableError(f"the tflite backend needs ai-edge-litert and flatbuffers ({exc}); "
                                          f"install them with: {self.install_hint}") from None

    def version(self) -> str:
        from importlib.metadata import PackageNotFoundError, version

        try:
            return version("ai-edge-litert")
        except PackageNotFoundError:
            return "unknown"

    def supported_ops(self) -> frozenset[str]:
        from mpcompile_tflite.ops import EMITTERS

        return frozenset(EMITTERS)

    def legalize(self, plan: Graph, options: TFLiteOptions) -> tuple[Graph, list[Deviation]]:
        from mpcompile_tflite.legalize import legalize_for_tflite

        return legalize_for_tflite(plan, self.capabilities, options.fallback)

    def lower(self, plan: Graph, out_dir: Path, *, stem: str, options: TFLiteOptions) -> Artifact:
        from mpcompile_tflite.lowering import write_flatbuffer

        return write_flatbuffer(plan, out_dir, stem, options, self.version())

    def runner(self, artifact: Artifact, options: TFLiteOptions) -> Runner:
        from mpcompile_tflite.runner import LiteRTRunner

        self.check_available()
        return LiteRTRunner(artifact, reference_kernels=options.reference_kernels, xnnpack=options.xnnpack,
                            num_threads=options.num_threads)


backend = TFLiteBackend()

__all__ = ["TFLiteBackend", "TFLiteOptions", "backend"]
