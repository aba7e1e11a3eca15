"""Options that decide a plan: policy, integer types, symmetry, granularity, overrides."""

from __future__ import annotations

import dataclasses
import fnmatch

from mpcompile.errors import PlanError
from mpcompile.ir.types import Precision, QType

POLICIES = ("int8", "int16", "fp16", "bf16", "fp32", "mixed", "auto")


@dataclasses.dataclass(frozen=True)
class Override:
    """``pattern=precision``: a node-name glob or an op type, and the precision it must run in."""

    pattern: str
    precision: Precision

    @classmethod
    def parse(cls, text: str) -> Override:
        if "=" not in text:
            raise PlanError(f"override {text!r} must look like PATTERN=PRECISION, e.g. 'Softmax=fp32' or 'conv1*=fp16'")
        pattern, _, precision = text.rpartition("=")
        try:
            return cls(pattern.strip(), Precision(precision.strip().lower()))
        except ValueError:
            valid = ", ".join(p.value for p in Precision)
            raise PlanError(f"override {text!r}: unknown precision {precision!r}; valid: {valid}") from None

    def matches(self, node_name: str, op_type: str) -> bool:
        return self.pattern in (op_type, node_name) or fnmatch.fnmatchcase(node_name, self.pattern)


@dataclasses.dataclass(frozen=True)
class PlanConfig:
    precision: str = "int8"
    activation_type: QType = QType.INT8
    symmetric_activations: bool = False
    per_channel: bool = True
    weight_method: str = "minmax"
    overrides: tuple[Override, ...] = ()

    def __post_init__(self) -> None:
        if self.precision not in POLICIES:
            raise PlanError(f"unknown precision policy {self.precision!r}; valid: {', '.join(POLICIES)}")
        object.__setattr__(self, "activation_type", QType(self.activation_type))
        if self.activation_type not in (QType.INT8, QType.UINT8, QType.INT16):
            raise PlanError(f"activation type must be int8, uint8 or int16, not {self.activation_type.value}")
        if self.weight_method not in ("minmax", "mse"):
            raise PlanError(f"weight method must be minmax or mse, not {self.weight_method!r}")
