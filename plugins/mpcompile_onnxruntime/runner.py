"""Run a QDQ artifact with ONNX Runtime: production defaults, or every graph optimization off."""

from __future__ import annotations

from mpcompile.backends.base import Artifact
from mpcompile.backends.onnx_runner import OnnxFileRunner


class OnnxRuntimeRunner(OnnxFileRunner):
    """ORT's production session defaults (all graph optimizations) unless ``optimize=False``."""

    def __init__(self, artifact: Artifact, *, optimize: bool = True) -> None:
        super().__init__(artifact, optimize=optimize)
