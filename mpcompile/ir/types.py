"""Numeric types of the plan: integer quantization types and node precisions."""

from __future__ import annotations

import enum

import numpy as np


class QType(str, enum.Enum):
    """Storage type of a quantized tensor."""

    INT8 = "int8"
    UINT8 = "uint8"
    INT16 = "int16"
    INT32 = "int32"  # biases only
    INT64 = "int64"  # biases of 16-bit activations (TFLite 16x8)

    @property
    def numpy_dtype(self) -> np.dtype:
        return np.dtype(self.value)

    @property
    def bits(self) -> int:
        return self.numpy_dtype.itemsize * 8

    @property
    def qmin(self) -> int:
        return int(np.iinfo(self.numpy_dtype).min)

    @property
    def qmax(self) -> int:
        return int(np.iinfo(self.numpy_dtype).max)

    @property
    def is_signed(self) -> bool:
        return self.qmin < 0


class Precision(str, enum.Enum):
    """What arithmetic a node runs in.

    INT8 means W8A8, INT16 means 16-bit activations with 8-bit weights (TFLite's 16x8).
    """

    INT8 = "int8"
    INT16 = "int16"
    FP16 = "fp16"
    BF16 = "bf16"
    FP32 = "fp32"

    @property
    def is_integer(self) -> bool:
        return self in (Precision.INT8, Precision.INT16)

    @property
    def is_float(self) -> bool:
        return not self.is_integer
