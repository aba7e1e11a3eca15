"""The TensorRT backend's options, validated once (``mpcompile backends tensorrt`` lists them)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import model_validator

from mpcompile.backends.api import BackendError, BackendOptions, Field

DEFAULT_BATCH = 32
DEFAULT_WORKSPACE = 1 << 30


class TensorRTOptions(BackendOptions):
    onnx_only: bool = Field(
        False,
        description="write the TensorRT-ready QDQ ONNX, the float ONNX and the calibration cache (plus trtexec "
        "command lines) without TensorRT; no engine. The artifact is checked on CPU with ONNX Runtime",
    )
    quantization: Literal["explicit", "implicit"] | None = Field(
        None,
        description="explicit (Q/DQ ONNX, strongly typed network) or implicit (TensorRT 10 only: float ONNX + INT8 "
        "calibrator); default implicit on 10.x, explicit on 11.x",
    )
    calibrator: Literal["plan", "entropy", "minmax"] = Field(
        "plan",
        description="implicit only: plan (a calibration cache with the plan's scales: the engine uses exactly the "
        "plan's numbers), or entropy/minmax (TensorRT calibrates its own scales on calibration_data; a deviation)",
    )
    calibration_data: Any = Field(
        None, description="entropy/minmax calibrators: the calibration set (any data source --data accepts); also "
        "gives the shapes of dynamic non-batch dims",
    )
    calibration_samples: int | None = Field(None, ge=1, description="at most this many calibration samples")
    shapes: Mapping[str, Any] | None = Field(
        None, description="{input: {'min': shape, 'opt': shape, 'max': shape}} or {input: shape}; overrides the "
        "profile derived from batch_size/min_batch_size/max_batch_size",
    )
    batch_size: int = Field(DEFAULT_BATCH, ge=1, description="the optimization profile's opt batch")
    min_batch_size: int = Field(1, ge=1, description="the optimization profile's min batch")
    max_batch_size: int | None = Field(None, ge=1, description="the optimization profile's max batch (default batch_size)")
    workspace: int = Field(DEFAULT_WORKSPACE, ge=1, description="builder workspace limit in bytes")
    tensorrt_version: str | None = Field(
        None, description="the TensorRT that will read the calibration cache (its header must match); default the "
        "installed one, else the last 10.x release",
    )
    device_library: Literal["torch", "cupy", "cuda-python"] | None = Field(
        None, description="library for device buffers (default: the first that imports)"
    )
    optimize: bool = Field(False, description="onnx_only runner: run the QDQ ONNX with ORT's graph optimizations on")
    emulate_half: bool | None = Field(None, description="onnx_only runner: emulate FP16/BF16 nodes in float32 (default: only if ONNX Runtime cannot run them)")

    @model_validator(mode="after")
    def _consistent(self) -> TensorRTOptions:
        if self.max_batch_size is not None and self.max_batch_size < self.batch_size:
            raise BackendError(
                f"tensorrt: max_batch_size={self.max_batch_size!r} must be an integer ≥ batch_size ({self.batch_size})"
            )
        if self.min_batch_size > self.batch_size:
            raise BackendError(f"tensorrt: min_batch_size={self.min_batch_size} exceeds batch_size={self.batch_size}")
        if self.calibrator != "plan" and self.quantization == "explicit":
            raise BackendError(
                f"tensorrt: calibrator={self.calibrator!r} calibrates implicit INT8; explicit quantization takes the "
                f"plan's scales from Q/DQ nodes. Use quantization='implicit' (TensorRT 10) or calibrator='plan'"
            )
        return self
