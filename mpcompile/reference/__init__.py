"""The fake-quant reference: what a plan means, evaluated in float.

Used by the planner (the auto search scores candidate plans with it), by conformance (every
backend is compared with it) and by plugin authors (``mpcompile.backends.api`` re-exports it).
"""

from mpcompile.reference.fakequant import FakeQuantGraph, ReferenceRunner
from mpcompile.reference.metrics import Accumulator, sqnr_db

__all__ = ["Accumulator", "FakeQuantGraph", "ReferenceRunner", "sqnr_db"]
