"""The TFLite model being written, as plain Python objects (no flatbuffers here).

The writer (``writer.py``) and the op emitters (``ops.py``) build a ``TflModel``;
``flatbuffer.py`` is the only module that turns it into schema objects and bytes. Operator
codes, option tables and enum values are named by their schema names (``"CONV_2D"``,
``"Conv2DOptions"``, ``"SAME"``), so nothing outside ``flatbuffer.py`` imports the schema.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np


@dataclasses.dataclass(frozen=True)
class QuantParams:
    """Quantization of one TFLite tensor: float32 scales, int64 zero-points, quantized dimension."""

    scale: np.ndarray
    zero_point: np.ndarray
    dim: int = 0

    @classmethod
    def from_arrays(cls, scale: np.ndarray, zero_point: np.ndarray, dim: int = 0) -> QuantParams:
        return cls(
            np.asarray(scale, dtype=np.float32).reshape(-1).copy(),
            np.asarray(zero_point, dtype=np.int64).reshape(-1).copy(),
            int(dim),
        )


@dataclasses.dataclass
class TflTensor:
    name: str
    dtype: str  # numpy dtype name: float32, float16, int8, int16, int32, int64, bool
    shape: tuple[int, ...]
    #: the shape with -1 for dynamic dimensions; None when every dimension is static
    signature: tuple[int, ...] | None = None
    data: np.ndarray | None = None
    quant: QuantParams | None = None
    #: a variable tensor (recurrent state a kernel updates in place)
    variable: bool = False

    @property
    def is_constant(self) -> bool:
        return self.data is not None


@dataclasses.dataclass
class TflOperator:
    op: str  # BuiltinOperator name
    inputs: list[int]  # tensor indices, -1 for an omitted optional input
    outputs: list[int]
    options: str | None = None  # BuiltinOptions table name, e.g. "Conv2DOptions"
    fields: dict[str, Any] = dataclasses.field(default_factory=dict)
    version: int = 1


@dataclasses.dataclass
class TflModel:
    tensors: list[TflTensor] = dataclasses.field(default_factory=list)
    operators: list[TflOperator] = dataclasses.field(default_factory=list)
    inputs: list[int] = dataclasses.field(default_factory=list)
    outputs: list[int] = dataclasses.field(default_factory=list)
    description: str = "mpcompile"
    metadata: dict[str, bytes] = dataclasses.field(default_factory=dict)

    def add_tensor(self, tensor: TflTensor) -> int:
        self.tensors.append(tensor)
        return len(self.tensors) - 1

    def add_operator(self, operator: TflOperator) -> TflOperator:
        self.operators.append(operator)
        return operator

    def index(self, name: str) -> int:
        for i, t in enumerate(self.tensors):
            if t.name == name:
                return i
        raise KeyError(name)
