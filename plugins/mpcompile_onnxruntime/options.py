"""The ONNX Runtime backend's options."""

from __future__ import annotations

from mpcompile.backends.api import BackendOptions, Field


class OnnxRuntimeOptions(BackendOptions):
    optimize: bool = Field(
        True,
        description="run artifacts with ORT's graph optimizations (its production default, which fuses Q/DQ into "
        "integer kernels); false runs them unfused, for debugging a disagreement",
    )
    threads: int | None = Field(None, ge=1, description="intra-op threads of the runner's session (default: ORT's)")
