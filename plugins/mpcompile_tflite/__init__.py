"""LiteRT / TFLite backend: writes the plan as a ``.tflite`` flatbuffer and runs it with LiteRT.

Lowering, step by step:

1. ``legalize.py``: TFLite's constraints on top of the shared legalization (fixed
   softmax/logistic/tanh outputs, equal quantization across data-movement ops, zero-point
   0 for int16, no BF16, float fallback or an error for what the writer cannot emit).
2. ``layout.py``: NCHW → NHWC on the IR (weights OHWI / ``[1, H, W, C·M]``, axes remapped,
   transposes only where unavoidable).
3. ``fuse.py``: exact-GELU patterns that the plan keeps in one float precision become
   TFLite's GELU operator (no number of the plan changes).
4. ``writer.py`` + ``ops.py``: one TFLite operator (or a few) per node, every scale and
   zero-point taken from the plan's ``QuantSpec``s.
5. ``flatbuffer.py``: the only code that touches the flatbuffer schema.

Options of ``lower`` (defaults also settable on the backend: ``TFLiteBackend(io="int8")``):

``io="float"|"int8"``
    Type of the model's inputs and outputs where the plan quantizes them. ``"float"``
    (default): float32 I/O with QUANTIZE/DEQUANTIZE inside the model. ``"int8"``: the
    integer tensors are the interface (int16 for 16x8 plans); the runner quantizes feeds
    with the plan's spec and dequantizes results.
``nhwc_inputs=False``, ``nhwc_outputs=False``
    Expose rank-4 inputs/outputs in NHWC instead of the ONNX model's NCHW signature (which
    otherwise costs one TRANSPOSE at each such edge).
``fallback="float"|"error"``
    What happens to a node that TFLite cannot run in its planned integer precision: FP32
    with a recorded deviation (default), or an ``UnsupportedOperatorError`` listing them all.
    ``legalize(plan, fallback=...)`` takes it too (the pipeline's ``legalize(plan)`` uses the
    backend's default).

Other keyword options are ignored: the pipeline hands every backend the same options.

Options of ``runner``: ``reference_kernels=False`` (TFLite's reference kernels instead of
the optimized ones and XNNPACK), ``xnnpack=True``, ``num_threads=None``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mpcompile.backends.base import Artifact, Backend, Capabilities, Deviation, Runner, op_table
from mpcompile.errors import BackendUnavailableError, MpcompileError
from mpcompile.ir.graph import Graph
from mpcompile.ir.types import Precision, QType

IO_TYPES = ("float", "int8")
LOWER_OPTIONS = ("io", "nhwc_inputs", "nhwc_outputs", "fallback")


class TFLiteBackend(Backend):
    name = "tflite"
    description = "TFLite flatbuffer for LiteRT (int8, 16x8, float16, float32 and mixed plans; NHWC)"
    install_hint = "pip install 'mpcompile[tflite]'   (ai-edge-litert and flatbuffers)"
    artifact_suffix = ".tflite"

    def __init__(self, *, io: str = "float", nhwc_inputs: bool = False, nhwc_outputs: bool = False,
                 fallback: str = "float") -> None:
        self.defaults = _check_options({"io": io, "nhwc_inputs": nhwc_inputs, "nhwc_outputs": nhwc_outputs,
                                        "fallback": fallback})

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

    def legalize(self, plan: Graph, fallback: str | None = None) -> tuple[Graph, list[Deviation]]:
        from mpcompile_tflite.legalize import legalize_for_tflite

        return legalize_for_tflite(plan, self.capabilities, fallback or self.defaults["fallback"])

    def lower(self, plan: Graph, out_dir: Path, **options: Any) -> Artifact:
        from mpcompile.ir import serde
        from mpcompile_tflite.flatbuffer import serialize
        from mpcompile_tflite.fuse import fuse_gelu
        from mpcompile_tflite.layout import to_tflite_layout
        from mpcompile_tflite.writer import ModelWriter, WriterOptions

        stem = options.pop("stem", None) or plan.name or "model"
        # The pipeline hands every backend the same options; the ones meant for others are not ours.
        opts = _check_options({**self.defaults, **{k: v for k, v in options.items() if k in LOWER_OPTIONS}})
        # Idempotent on a legalized plan; a plan lowered directly is legalized here, with its deviations.
        legal, deviations = self.legalize(plan, opts["fallback"])
        fusable, gelus = fuse_gelu(legal)  # exact GELUs in one float precision: TFLite's GELU operator
        layout = to_tflite_layout(fusable, nhwc_inputs=opts["nhwc_inputs"], nhwc_outputs=opts["nhwc_outputs"])
        writer = ModelWriter(layout, WriterOptions(io=opts["io"], description=f"mpcompile: {plan.name}"))
        model = writer.write()
        path = Path(out_dir) / f"{stem}.tflite"
        serde.write_atomic(path, serialize(model))
        tensor_map = writer.tensor_map()
        metadata = {
            "format": "TFLite flatbuffer (schema v3)",
            "litert": self.version(),
            "options": opts,
            "ops": dict(sorted(writer.op_counts.items())),
            "fused": {"Gelu": gelus} if gelus else {},
            "inputs": writer.interface(model.inputs, layout.layouts, legal.inputs),
            "outputs": writer.interface(model.outputs, layout.output_layouts, legal.outputs),
            "tensor_map": tensor_map,
            "layouts": {k: v.to_dict() for k, v in layout.layouts.items() if k in tensor_map and not v.is_identity},
            "constants": writer.constant_map(),
        }
        json.dumps(metadata)  # the manifest stores it: fail here, not there
        return Artifact(self.name, path, [path], deviations=list(deviations), metadata=metadata)

    def runner(self, artifact: Artifact, **options: Any) -> Runner:
        from mpcompile_tflite.runner import LiteRTRunner

        unknown = set(options) - {"reference_kernels", "xnnpack", "num_threads"}
        if unknown:
            raise MpcompileError(f"unknown tflite runner option(s) {sorted(unknown)}; use reference_kernels, xnnpack, num_threads")
        self.check_available()
        return LiteRTRunner(artifact, **options)


def _check_options(options: dict[str, Any]) -> dict[str, Any]:
    known = set(LOWER_OPTIONS)
    unknown = set(options) - known
    if unknown:
        raise MpcompileError(f"unknown tflite lowering option(s) {sorted(unknown)}; known: {sorted(known)}")
    if options["io"] not in IO_TYPES:
        raise MpcompileError(f"tflite option io={options['io']!r}: use 'float' or 'int8'")
    if options["fallback"] not in ("float", "error"):
        raise MpcompileError(f"tflite option fallback={options['fallback']!r}: use 'float' or 'error'")
    return {"io": options["io"], "nhwc_inputs": bool(options["nhwc_inputs"]), "nhwc_outputs": bool(options["nhwc_outputs"]),
            "fallback": options["fallback"]}


backend = TFLiteBackend()

__all__ = ["TFLiteBackend", "backend"]
