"""Error types.

``MpcompileError`` and its subclasses are *user* errors: bad input, a missing optional
backend, an unsupported operator. Their message names the file, node or tensor at fault
and says how to fix it; the CLI prints it on one line and exits with code 2.

``InternalError`` is a bug in mpcompile itself and keeps its traceback.
"""

from __future__ import annotations


class MpcompileError(Exception):
    """Base class of every error caused by the user's input or environment."""

    exit_code = 2


class ModelLoadError(MpcompileError):
    """The model file is missing, corrupt, not ONNX, or cannot be imported."""


class UnsupportedOperatorError(MpcompileError):
    """A node uses an operator that mpcompile (or the chosen backend) cannot handle."""


class DataError(MpcompileError):
    """Calibration or evaluation data does not match the model, or is degenerate."""


class PlanError(MpcompileError):
    """A quantization plan or an override is invalid."""


class BackendError(MpcompileError):
    """A backend is unknown, unavailable, or failed on the user's model."""


class BackendUnavailableError(BackendError):
    """A backend's optional library is not installed."""


class InternalError(RuntimeError):
    """A bug in mpcompile. Never raised for bad user input."""
