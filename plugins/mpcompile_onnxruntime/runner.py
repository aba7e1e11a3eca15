"""Run a QDQ artifact in ONNX Runtime: the core's ONNX runner with this backend's session options."""

from __future__ import annotations

from mpcompile.backends.api import Artifact, OnnxFileRunner
from mpcompile_onnxruntime.options import OnnxRuntimeOptions


def ort_runner(artifact: Artifact, options: OnnxRuntimeOptions) -> OnnxFileRunner:
    # ORT's production session defaults (every graph optimization) unless optimize=False.
    return OnnxFileRunner(artifact, optimize=options.optimize, threads=options.threads)
