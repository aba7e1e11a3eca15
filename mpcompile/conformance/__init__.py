"""Conformance: proof that every backend computes what the plan says, in quantization steps.

Split the way Polygraphy splits its comparator: ``run`` (artifacts and the fake-quant
reference on the same inputs), ``compare`` (tolerances in LSB, accumulated metrics) and
``report`` (result objects that are truthy when within tolerance, rendered as text, JSON
and HTML). The pipeline decides what to lower and calibrate; this package only checks.
"""

from mpcompile.conformance.compare import Tolerances
from mpcompile.conformance.report import BackendReport, ConformanceReport
from mpcompile.conformance.run import check_artifacts

__all__ = ["BackendReport", "ConformanceReport", "Tolerances", "check_artifacts"]
