"""``QuantSpec``: how one tensor is quantized, and the reference (de)quantization math.

The math is ONNX QuantizeLinear/DequantizeLinear: ``q = saturate(round_half_to_even(x /
scale) + zero_point)`` and ``x' = (q - zero_point) * scale``. Every backend and the
conformance reference agree on it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import numpy as np

from mpcompile.errors import PlanError
from mpcompile.ir.types import QType


def _frozen_array(values: Any, dtype: np.dtype) -> np.ndarray:
    arr = np.array(values, dtype=dtype, order="C")  # a copy, so the caller cannot mutate it
    if arr.ndim > 1:
        arr = arr.reshape(-1)
    arr.setflags(write=False)
    return arr


@dataclasses.dataclass(frozen=True, eq=False)
class QuantSpec:
    """Quantization of one tensor. Immutable and self-validating.

    ``scale`` and ``zero_point`` are 0-d arrays for per-tensor quantization (``axis is
    None``) and 1-d arrays of length ``shape[axis]`` for per-channel quantization.
    ``provenance`` records where the numbers came from (calibration method, percentile,
    QDQ import, user override...) as plain JSON-able values.
    """

    qtype: QType
    scale: np.ndarray
    zero_point: np.ndarray
    axis: int | None = None
    symmetric: bool = False
    narrow_range: bool = False
    provenance: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        qtype = QType(self.qtype)
        object.__setattr__(self, "qtype", qtype)
        scale = _frozen_array(self.scale, np.float32)
        zp_raw = np.asarray(self.zero_point)
        if zp_raw.dtype.kind not in "biuf":
            raise PlanError(f"zero-point must be an integer, got {zp_raw.dtype} values")
        if zp_raw.dtype.kind == "f" and not np.all(np.isfinite(zp_raw) & (zp_raw == np.round(zp_raw))):
            # Never truncated: a zero-point of 0.3 is a damaged file, not a zero-point of 0.
            bad = zp_raw.reshape(-1)[~(np.isfinite(zp_raw) & (zp_raw == np.round(zp_raw))).reshape(-1)]
            raise PlanError(f"zero-point must be an integer, got {bad[0]!r}")
        if np.any(zp_raw < qtype.qmin) or np.any(zp_raw > qtype.qmax):
            raise PlanError(f"zero-point {zp_raw} is outside the {qtype.value} range [{qtype.qmin}, {qtype.qmax}]")
        zero_point = _frozen_array(self.zero_point, qtype.numpy_dtype)
        object.__setattr__(self, "scale", scale)
        object.__setattr__(self, "zero_point", zero_point)
        object.__setattr__(self, "provenance", MappingProxyType(dict(self.provenance)))
        if scale.size == 0:
            raise PlanError("QuantSpec has an empty scale array")
        if not np.all(np.isfinite(scale)) or not np.all(scale > 0):
            raise PlanError(f"QuantSpec scales must be finite and positive, got {scale.reshape(-1)[:8]}")
        if self.axis is None:
            if scale.ndim != 0 or zero_point.ndim != 0:
                raise PlanError("a per-tensor QuantSpec (axis=None) needs scalar scale and zero-point")
        else:
            if scale.ndim != 1 or zero_point.shape != scale.shape:
                raise PlanError(
                    f"a per-channel QuantSpec (axis={self.axis}) needs 1-d scale and zero-point of equal length, "
                    f"got {scale.shape} and {zero_point.shape}"
                )
        if self.symmetric and np.any(zero_point != 0):
            raise PlanError(f"a symmetric QuantSpec must have zero-point 0, got {zero_point}")

    # ----------------------------------------------------------------- properties
    @property
    def per_channel(self) -> bool:
        return self.axis is not None

    @property
    def qmin(self) -> int:
        return self.qtype.qmin + (1 if self.narrow_range and self.qtype.is_signed else 0)

    @property
    def qmax(self) -> int:
        return self.qtype.qmax

    def validate_for_shape(self, shape: tuple[int | str | None, ...] | None, tensor_name: str) -> None:
        """Check per-channel arrays against the tensor's shape (``len == shape[axis]``)."""
        if self.axis is None or shape is None:
            return
        rank = len(shape)
        if not -rank <= self.axis < rank:
            raise PlanError(f"tensor {tensor_name!r}: quantization axis {self.axis} is out of range for rank {rank}")
        dim = shape[self.axis]
        if isinstance(dim, int) and dim != self.scale.shape[0]:
            raise PlanError(
                f"tensor {tensor_name!r}: per-channel scale has {self.scale.shape[0]} entries "
                f"but dimension {self.axis} has size {dim}"
            )

    # ----------------------------------------------------------------- math
    def _broadcast(self, arr: np.ndarray, values: np.ndarray) -> np.ndarray:
        if self.axis is None:
            return values
        shape = [1] * arr.ndim
        shape[self.axis] = -1
        return values.reshape(shape)

    def quantize(self, x: np.ndarray) -> np.ndarray:
        """ONNX QuantizeLinear, computed in float32 like ONNX Runtime does."""
        x = np.asarray(x, dtype=np.float32)
        scale = self._broadcast(x, self.scale)
        zp = self._broadcast(x, self.zero_point.astype(np.float32))
        # All in float32, in place: rint(x / scale) + zp is exact below 2**24 and anything
        # larger saturates at the clip either way (a 90 MB weight set: 0.67 s → ~0.15 s).
        q = np.asarray(np.divide(x, scale, dtype=np.float32))  # (a 0-d result comes back as a scalar)
        np.rint(q, out=q)
        q += zp
        np.clip(q, self.qtype.qmin if not self.narrow_range else self.qmin, self.qmax, out=q)
        return q.astype(self.qtype.numpy_dtype)

    def dequantize(self, q: np.ndarray) -> np.ndarray:
        """ONNX DequantizeLinear."""
        q = np.asarray(q)
        scale = self._broadcast(q, self.scale)
        zp = self._broadcast(q, self.zero_point.astype(np.int64))
        return ((q.astype(np.int64) - zp).astype(np.float32) * scale).astype(np.float32)

    def fake_quantize(self, x: np.ndarray) -> np.ndarray:
        return self.dequantize(self.quantize(x))

    def representable_range(self) -> tuple[np.ndarray, np.ndarray]:
        """The float interval that quantizes without saturation."""
        zp = self.zero_point.astype(np.float64)
        return ((self.qmin - zp) * self.scale, (self.qmax - zp) * self.scale)

    # ----------------------------------------------------------------- equality / serde helpers
    def __eq__(self, other: object) -> bool:
        if not isinstance(other, QuantSpec):
            return NotImplemented
        return (
            self.qtype == other.qtype
            and self.axis == other.axis
            and self.symmetric == other.symmetric
            and self.narrow_range == other.narrow_range
            and self.scale.shape == other.scale.shape
            and np.array_equal(self.scale.view(np.uint32), other.scale.view(np.uint32))
            and np.array_equal(self.zero_point, other.zero_point)
            and dict(self.provenance) == dict(other.provenance)
        )

    def __hash__(self) -> int:
        return hash((self.qtype, self.axis, self.scale.tobytes(), self.zero_point.tobytes()))

    def __reduce__(self):  # noqa: ANN204 - picklable for multiprocessing/Ray despite the read-only provenance view
        return (
            QuantSpec,
            (self.qtype, self.scale, self.zero_point, self.axis, self.symmetric, self.narrow_range, dict(self.provenance)),
        )

    def __deepcopy__(self, memo: dict) -> QuantSpec:
        return self  # immutable

    def replace(self, **changes: Any) -> QuantSpec:
        return dataclasses.replace(self, **changes)

    def __repr__(self) -> str:
        if self.axis is None:
            nums = f"scale={float(self.scale):.6g}, zp={int(self.zero_point)}"
        else:
            nums = f"axis={self.axis}, {self.scale.size} channels, scale∈[{self.scale.min():.3g}, {self.scale.max():.3g}]"
        return f"QuantSpec({self.qtype.value}, {nums}{', sym' if self.symmetric else ''})"


def spec_from_range(
    lo: float,
    hi: float,
    qtype: QType = QType.INT8,
    symmetric: bool = False,
    narrow_range: bool = False,
    provenance: Mapping[str, Any] | None = None,
) -> QuantSpec:
    """Per-tensor spec covering ``[lo, hi]`` (widened to contain 0, as zero must be exact).

    A degenerate (constant) range still gives a valid positive scale.
    """
    qtype = QType(qtype)
    lo = min(float(lo), 0.0)
    hi = max(float(hi), 0.0)
    if not (np.isfinite(lo) and np.isfinite(hi)):
        raise PlanError(f"cannot quantize a non-finite range [{lo}, {hi}]")
    qmin = qtype.qmin + (1 if narrow_range and qtype.is_signed else 0)
    qmax = qtype.qmax
    if symmetric:
        amax = max(abs(lo), abs(hi))
        # amax / qmax (127 for int8), the TensorRT and PyTorch convention: ±amax both representable.
        half = float(qmax) if qtype.is_signed else float(qmax - qmin)
        scale = amax / half if amax > 0 else 1.0
        scale = max(float(np.float32(scale)), np.finfo(np.float32).tiny)
        zp = 0 if qtype.is_signed else (qmin + qmax + 1) // 2
        if not qtype.is_signed:
            symmetric = False  # uint8 "symmetric" is centred at 128, not zero-point 0
        return QuantSpec(qtype, np.float32(scale), zp, None, symmetric, narrow_range, provenance or {})
    span = hi - lo
    scale = span / (qmax - qmin) if span > 0 else 1.0
    scale = max(float(np.float32(scale)), np.finfo(np.float32).tiny)
    zp = int(np.clip(np.rint(qmin - lo / scale), qmin, qmax))
    return QuantSpec(qtype, np.float32(scale), zp, None, False, narrow_range, provenance or {})


#: Weight channels whose largest magnitude is below either bound carry nothing int8 can keep (see weight_spec).
NEGLIGIBLE_WEIGHT = 1e-30
NEGLIGIBLE_CHANNEL_SHARE = 1e-12


def weight_spec(
    weights: np.ndarray,
    axis: int | None,
    qtype: QType = QType.INT8,
    provenance: Mapping[str, Any] | None = None,
    amax: np.ndarray | None = None,
) -> QuantSpec:
    """Symmetric narrow-range spec for a weight tensor, per channel along ``axis`` or per tensor."""
    w = np.asarray(weights, dtype=np.float32)
    qmax = QType(qtype).qmax
    if amax is None:
        if axis is None:
            amax = np.abs(w).max() if w.size else 0.0
        else:
            reduce_axes = tuple(i for i in range(w.ndim) if i != (axis % w.ndim))
            amax = np.abs(w).max(axis=reduce_axes) if w.size else np.zeros(w.shape[axis])
    amax = np.asarray(amax, dtype=np.float64)
    # A channel far below float32's useful range, or 1e-12 of the tensor's largest one, is dead (pruned
    # channels of real exports hold values like 1e-36): quantized at its own scale, its bias scale
    # s_in x s_w is a denormal that runtimes flush to zero (OpenVINO does). It is quantized to zeros at scale 1.
    dead = (amax < NEGLIGIBLE_WEIGHT) | (amax < NEGLIGIBLE_CHANNEL_SHARE * (amax.max() if amax.size else 0.0))
    scale = np.where(dead, 1.0, amax / qmax).astype(np.float32)
    scale = np.maximum(scale, np.finfo(np.float32).tiny)
    zp = np.zeros_like(scale, dtype=QType(qtype).numpy_dtype)
    if axis is None:
        scale, zp = scale.reshape(()), zp.reshape(())
    return QuantSpec(QType(qtype), scale, zp, axis, True, True, provenance or {})
