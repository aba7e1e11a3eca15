"""TensorRT backend: one plan → a TensorRT engine (10.x implicit INT8 or explicit Q/DQ; 11.x explicit).

Registered as the ``tensorrt`` entry point of ``mpcompile.backends``. TensorRT itself is
imported lazily (``check_available``, engine builds, ``TensorRTRunner``): capabilities,
legalization and ``onnx_only`` lowering work without it. See ``SUPPORT.md`` for what works
on which version and what has been verified where.

Without TensorRT (``--onnx-only``)::

    from mpcompile_tensorrt import lower_onnx_only, OnnxOnlyRunner
    artifact = lower_onnx_only(plan, "out/tensorrt", stem="model")   # legalizes, writes the files
    artifact.metadata["trtexec"]["11.x"]                               # how to build on the GPU machine
    with OnnxOnlyRunner(artifact) as runner:                           # the QDQ ONNX on the CPU
        outputs = runner.run({"input": x})
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

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
from mpcompile_tensorrt.environment import INSTALL_HINT
from mpcompile_tensorrt.options import TensorRTOptions
from mpcompile_tensorrt.runner import OnnxOnlyRunner

_ALL = {Precision.INT8, Precision.FP16, Precision.BF16, Precision.FP32}
_FLOAT = {Precision.FP16, Precision.BF16, Precision.FP32}


class TensorRTBackend(Backend):
    name = "tensorrt"
    description = "TensorRT engine: 10.x implicit INT8 (plan scales via calibration cache) or explicit Q/DQ; 11.x explicit Q/DQ"
    install_hint = INSTALL_HINT
    artifact_suffix = ".engine"
    Options = TensorRTOptions

    @property
    def capabilities(self) -> Capabilities:
        # In explicit quantization any op can sit between DequantizeLinear and QuantizeLinear
        # (TensorRT computes it in float and quantizes the result, as the plan means), so every
        # op the planner quantizes may stay int8; INT16 does not exist in TensorRT.
        return Capabilities(
            ops=op_table([(ops.INTEGER_OPS, _ALL), (ops.FLOAT_ONLY_REASONS, _FLOAT)]),
            per_channel_weights=True,
            symmetric_activations_only=True,
            activation_qtypes=frozenset({QType.INT8}),
            float_precisions=frozenset(_FLOAT),
            notes=(
                "INT8 is symmetric: zero-point 0 on every tensor; per-channel scales only on weights",
                "no INT16: int16 plans become int8",
                "10.x: implicit INT8 (plan scales through a calibration cache) or explicit Q/DQ; 11.x: explicit Q/DQ "
                "on a strongly typed network",
                "onnx_only=True writes the TensorRT-ready QDQ ONNX and a calibration cache without TensorRT",
            ),
        )

    def check_available(self) -> None:
        from mpcompile_tensorrt.environment import cuda_device, import_tensorrt
        from mpcompile_tensorrt.lowering import select_builder

        trt = import_tensorrt()
        select_builder(trt)
        cuda_device()

    def can_lower_without_runtime(self, options: TensorRTOptions) -> bool:
        return options.onnx_only

    def version(self) -> str:
        from mpcompile.backends.api import BackendUnavailableError
        from mpcompile_tensorrt.environment import import_tensorrt, tensorrt_version

        try:
            return tensorrt_version(import_tensorrt())
        except BackendUnavailableError:
            return "not installed"

    def legalize(self, plan: Graph, options: TensorRTOptions) -> tuple[Graph, list[Deviation]]:
        from mpcompile_tensorrt.legalize import legalize_for_tensorrt

        return legalize_for_tensorrt(plan, self.capabilities, backend_name=self.name)

    def lower(self, plan: Graph, out_dir: Path, *, stem: str, options: TensorRTOptions) -> Artifact:
        """Lower a *legalized* plan: the TensorRT-ready files, and the engine unless ``onnx_only``."""
        from mpcompile_tensorrt.lowering import lower_engine, lower_onnx_files

        if options.onnx_only:
            return lower_onnx_files(plan, Path(out_dir), stem, options, _installed_version())
        return lower_engine(plan, Path(out_dir), stem, options)

    def runner(self, artifact: Artifact, options: TensorRTOptions) -> Runner:
        """``OnnxOnlyRunner`` (CPU) for an ``onnx_only`` artifact, else ``TensorRTRunner`` on the engine."""
        if artifact.metadata.get("onnx_only") or Path(artifact.path).suffix == ".onnx" or options.onnx_only:
            return OnnxOnlyRunner(artifact, optimize=options.optimize, emulate_half=options.emulate_half)
        from mpcompile_tensorrt.runner import TensorRTRunner

        return TensorRTRunner(artifact, device_library=options.device_library)


def _installed_version() -> str | None:
    from mpcompile.backends.api import BackendUnavailableError
    from mpcompile_tensorrt.environment import import_tensorrt, tensorrt_version

    try:
        return tensorrt_version(import_tensorrt())
    except BackendUnavailableError:
        return None


def lower_onnx_only(plan: Graph, out_dir: str | Path, stem: str = "model", *, legalize: bool = True, **options: Any) -> Artifact:
    """Write the TensorRT-ready QDQ ONNX, the float ONNX and the calibration cache, without TensorRT.

    ``plan`` is legalized first (``legalize=False`` when it already is: legalization is
    idempotent either way); the deviations are on the returned artifact. ``options`` are
    ``TensorRTOptions`` fields (``shapes``, ``batch_size``, ``max_batch_size``, ``workspace``,
    ``tensorrt_version``…). The artifact's ``metadata["trtexec"]`` holds the command lines that
    build the engine on the target machine, from its folder.
    """
    parsed = backend.options({**options, "onnx_only": True})
    deviations: list[Deviation] = []
    if legalize:
        plan, deviations = backend.legalize(plan, parsed)
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    artifact = backend.lower(plan, Path(out_dir), stem=stem, options=parsed)
    artifact.deviations = deviations + [d for d in artifact.deviations if d not in deviations]
    return artifact


backend = TensorRTBackend()

__all__ = ["OnnxOnlyRunner", "TensorRTBackend", "TensorRTOptions", "backend", "lower_onnx_only"]
