"""mpcompile: a mixed-precision deployment compiler.

One FP32 (or QDQ) ONNX model and some calibration data go in; one quantization plan
comes out, lowered to ONNX Runtime, TFLite and TensorRT, with a conformance suite that
proves every artifact computes what the plan says.

The Python API mirrors the CLI::

    import mpcompile
    result = mpcompile.compile("model.onnx", data="calib.npz", backends=["onnxruntime"], out_dir="out")
    print(result.artifacts["onnxruntime"].path, result.conformance)
"""

from __future__ import annotations

from typing import Any

from mpcompile._version import __version__

__all__ = ["__version__", "calibrate", "compile", "conform", "load", "lower", "save_plan"]


def load(path: Any):  # noqa: ANN201 - re-exported API
    """A model or plan file as an IR ``Graph`` (QDQ pairs absorbed, BatchNorm folded)."""
    from mpcompile.importer import load as _load

    return _load(path)


def save_plan(graph: Any, path: Any):  # noqa: ANN201
    from mpcompile.ir.serde import save_plan as _save

    return _save(graph, path)


def calibrate(*args: Any, **kwargs: Any):  # noqa: ANN201
    """See ``mpcompile.pipeline.calibrate``."""
    from mpcompile.pipeline import calibrate as _calibrate

    return _calibrate(*args, **kwargs)


def compile(*args: Any, **kwargs: Any):  # noqa: A001, ANN201
    """See ``mpcompile.pipeline.compile``."""
    from mpcompile.pipeline import compile as _compile

    return _compile(*args, **kwargs)


def lower(*args: Any, **kwargs: Any):  # noqa: ANN201
    """See ``mpcompile.pipeline.lower``."""
    from mpcompile.pipeline import lower as _lower

    return _lower(*args, **kwargs)


def conform(*args: Any, **kwargs: Any):  # noqa: ANN201
    """See ``mpcompile.pipeline.conform``."""
    from mpcompile.pipeline import conform as _conform

    return _conform(*args, **kwargs)
