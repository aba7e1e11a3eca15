"""The interface between calibration and planning: per-tensor statistics and ranges."""

from __future__ import annotations

from typing import Protocol

from mpcompile.ir.types import QType


class TensorStatistics(Protocol):
    """What the planner needs to know about calibrated activations."""

    method: str

    def __contains__(self, tensor_name: object) -> bool: ...

    def range(self, tensor_name: str, qtype: QType, symmetric: bool) -> tuple[float, float]:
        """The clip range the calibration method chose for this tensor."""
        ...

    def summary(self, tensor_name: str) -> dict[str, float]:
        """Raw statistics: ``min``, ``max``, ``abs_max``, ``min_abs_nonzero``, ``count``."""
        ...

    def provenance(self) -> dict:
        """How the statistics were computed (method and its options), recorded in each spec."""
        ...
