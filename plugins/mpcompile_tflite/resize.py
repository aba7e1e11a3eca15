"""Which TFLite resize reproduces an ONNX Resize exactly, decided by computing both source-pixel maps.

TFLite has two resize operators with two flags (``align_corners``, ``half_pixel_centers``); ONNX
has a coordinate transformation (seven modes), a nearest rounding (four modes), and a scale that
is either given or ``output / input``. Rather than a table of "equivalent" combinations (which
holds only for some sizes: ``half_pixel`` + ``round_prefer_floor`` is TFLite's half-pixel nearest
for an integer upscale, not for 3 → 5), the check computes, for the node's actual sizes, the
source index (nearest) or source coordinate (linear) of every output position

* as ONNX Runtime does (``upsamplebase.h``: float32 arithmetic, then the nearest rounding and the
  clamp to the input), which is what the reference evaluates, and
* as each TFLite kernel does (``reference_ops::ResizeNearestNeighbor`` in float32, the optimized
  int8/uint8 kernel's 16.16 fixed-point ratio, ``ComputeInterpolationValues`` for bilinear),

and picks the first TFLite configuration that agrees on both spatial axes: exactly for nearest
(any other pixel is a different value), within 1e-4 pixel for linear (the kernels differ only by
float rounding of the coordinate). No agreement: the node is refused with the first mismatch.
"""

from __future__ import annotations

import dataclasses
import math
from fractions import Fraction

import numpy as np

F32 = np.float32

#: (align_corners, half_pixel_centers) in the order tried (the plain one first: lowest op version)
CONFIGS = ((False, False), (True, False), (False, True))
LINEAR_TOLERANCE = 1e-4


@dataclasses.dataclass(frozen=True)
class ResizeAxis:
    """One spatial axis of a Resize: sizes and the scale ONNX uses in its coordinate transformation."""

    input: int
    output: int
    scale: float  # float32 value: the given scale, or output / input


def onnx_coordinates(axis: ResizeAxis, coord: str) -> np.ndarray | None:
    """ONNX Runtime's source coordinate of every output position (float32), or None for a mode not emulated.

    An axis with scale 1 is copied as it is, whatever the mode (ONNX Runtime skips the transformation
    there: measured with tf_half_pixel_for_nn + ceil, which would otherwise shift by one).
    ``half_pixel_symmetric`` (opset 19) is not emulated: ONNX Runtime's float arithmetic for it did not
    reproduce here (3 → 1 reads input 0, the formula gives 1).
    """
    x = np.arange(axis.output, dtype=F32)
    s, length_in, length_out = F32(axis.scale), F32(axis.input), F32(axis.output)
    if s == F32(1.0) and axis.input == axis.output:
        return x
    with np.errstate(all="ignore"):
        if coord == "half_pixel":
            return (x + F32(0.5)) / s - F32(0.5)
        if coord == "asymmetric":
            return x / s
        if coord == "pytorch_half_pixel":
            return (x + F32(0.5)) / s - F32(0.5) if axis.output > 1 else np.zeros_like(x)
        if coord == "tf_half_pixel_for_nn":
            return (x + F32(0.5)) / s
        if coord == "align_corners":
            return x * (length_in - F32(1)) / (length_out - F32(1)) if axis.output > 1 else np.zeros_like(x)
    return None


def _exact_coordinates(axis: ResizeAxis, coord: str, s: Fraction) -> list[Fraction] | None:
    """The coordinates in exact arithmetic with scale ``s``."""
    if F32(axis.scale) == F32(1.0) and axis.input == axis.output:
        return [Fraction(x) for x in range(axis.output)]
    half = Fraction(1, 2)
    result = []
    for x in range(axis.output):
        if coord == "half_pixel" or (coord == "pytorch_half_pixel" and axis.output > 1):
            result.append((x + half) / s - half)
        elif coord == "asymmetric":
            result.append(Fraction(x) / s)
        elif coord == "tf_half_pixel_for_nn":
            result.append((x + half) / s)
        elif coord == "align_corners" and axis.output > 1:
            result.append(Fraction(x * (axis.input - 1), axis.output - 1))
        elif coord in ("align_corners", "pytorch_half_pixel"):
            result.append(Fraction(0))
        else:
            return None
    return result


def _round(value: Fraction | float, nearest: str) -> int:
    """ONNX's nearest rounding of one coordinate (round: halves away from zero, as std::round)."""
    if nearest == "floor":
        return math.floor(value)
    if nearest == "ceil":
        return math.ceil(value)
    magnitude = abs(value)
    below = math.floor(magnitude)
    if magnitude - below == Fraction(1, 2) and nearest == "round_prefer_floor":
        return math.floor(value)  # a tie: toward −∞
    rounded = math.floor(magnitude + Fraction(1, 2))
    return rounded if value >= 0 else -rounded


def onnx_nearest(axis: ResizeAxis, coord: str, nearest: str, sizes: bool = True) -> np.ndarray | str:
    """ONNX's source index of every output position for mode ``nearest``, or why it is not determined.

    Computed three ways: exactly with the ratio output/input, exactly with the float32 scale, and with
    ONNX Runtime's float32 formula. Where they disagree (a coordinate on or next to a rounding
    boundary, e.g. 7 → 2 asymmetric: 1 · 7/2 = 3.5 exactly, 3.4999998 in float32), which pixel a runtime
    reads depends on its arithmetic (measured: ONNX Runtime follows the exact ratio for the round modes,
    even when the scale is given, and float32 for floor/ceil), so no TFLite kernel can be held to it.
    Where they agree, ONNX Runtime agrees too (``tests/test_tflite_resize.py``: every mode, sizes and
    scales, inputs up to 13 and outputs up to 26).
    """
    if nearest not in ("round_prefer_floor", "round_prefer_ceil", "floor", "ceil"):
        return f"nearest_mode {nearest!r} is unknown"
    approx = onnx_coordinates(axis, coord)
    if approx is None:
        return f"nearest with {coord} is not written for TFLite"
    limit = axis.input - 1
    candidates = [[Fraction(float(c)) for c in approx]]
    for s in {Fraction(axis.output, axis.input), Fraction(float(F32(axis.scale)))}:
        exact = _exact_coordinates(axis, coord, s)
        if exact is None:
            return f"nearest with {coord} is not written for TFLite"
        candidates.append(exact)
    maps = [np.array([min(max(_round(c, nearest), 0), limit) for c in cs], np.int64) for cs in candidates]
    for other, coordinates in zip(maps[1:], candidates[1:]):
        if not np.array_equal(maps[0], other):
            bad = int(np.argmax(maps[0] != other))
            return (f"{coord}/{nearest} {axis.input} → {axis.output}: output {bad} sits on a rounding boundary "
                    f"({coordinates[bad]} exactly), so the pixel it reads depends on the runtime's float arithmetic")
    return maps[0]


def _tflite_scale(axis: ResizeAxis, align: bool) -> np.float32:
    if align and axis.output > 1:
        return F32(axis.input - 1) / F32(axis.output - 1)
    return F32(axis.input) / F32(axis.output)


def tflite_nearest(axis: ResizeAxis, align: bool, half: bool) -> list[np.ndarray]:
    """The source index map of each TFLite RESIZE_NEAREST_NEIGHBOR kernel for this configuration."""
    y = np.arange(axis.output, dtype=F32)
    scaled = ((y + F32(0.5 if half else 0.0)) * _tflite_scale(axis, align)).astype(np.float64)
    index = np.sign(scaled) * np.floor(np.abs(scaled) + 0.5) if align else np.floor(scaled)  # TfLiteRound / floor
    index = np.minimum(index, axis.input - 1)
    if half:
        index = np.maximum(index, 0)
    maps = [index.astype(np.int64)]
    if not align and not half:
        # optimized_ops::ResizeNearestNeighbor (integer kernels): a 16.16 fixed-point ratio
        ratio = (axis.input << 16) // axis.output + 1
        maps.append(np.minimum((np.arange(axis.output, dtype=np.int64) * ratio) >> 16, axis.input - 1))
    return maps


def tflite_bilinear(axis: ResizeAxis, align: bool, half: bool) -> np.ndarray:
    """TFLite RESIZE_BILINEAR's source coordinate (ComputeInterpolationValues), clamped to the input."""
    y = np.arange(axis.output, dtype=F32)
    scale = _tflite_scale(axis, align)
    scaled = (y + F32(0.5)) * scale - F32(0.5) if half else y * scale
    return scaled


def _clamped(c: np.ndarray, size: int) -> np.ndarray:
    return np.clip(c.astype(np.float64), 0.0, size - 1)


def choose(axes: list[ResizeAxis], mode: str, coord: str, nearest: str, sizes: bool = True,
           configs: tuple[tuple[bool, bool], ...] = CONFIGS) -> tuple[bool, bool] | str:
    """(align_corners, half_pixel_centers) of the TFLite resize equal to ONNX's on every axis, or why none is.

    ``sizes``: the output size was given (scale = output/input) rather than the scales. ``configs``: the
    TFLite configurations to try, in order.
    """
    if mode == "nearest":
        wanted = [onnx_nearest(axis, coord, nearest, sizes) for axis in axes]
        for want in wanted:
            if isinstance(want, str):
                return want
    mismatch = ""
    for align, half in configs:
        agree = True
        for k, axis in enumerate(axes):
            if mode == "nearest":
                want = wanted[k]
                for got in tflite_nearest(axis, align, half):
                    if not np.array_equal(got, want):
                        bad = int(np.argmax(got != want))
                        mismatch = mismatch or (f"spatial axis {k} ({axis.input} → {axis.output}): output {bad} reads "
                                                f"input {int(want[bad])} in ONNX, {int(got[bad])} in TFLite")
                        agree = False
                        break
            else:
                want = onnx_coordinates(axis, coord)
                if want is None:
                    return f"linear with {coord} is not written for TFLite"
                got = tflite_bilinear(axis, align, half)
                error = np.abs(_clamped(got, axis.input) - _clamped(want, axis.input))
                if error.size and float(error.max()) > LINEAR_TOLERANCE:
                    bad = int(np.argmax(error))
                    mismatch = mismatch or (f"spatial axis {k} ({axis.input} → {axis.output}): output {bad} samples "
                                            f"{float(want[bad]):.4f} in ONNX, {float(got[bad]):.4f} in TFLite")
                    agree = False
            if not agree:
                break
        if agree:
            return align, half
    return f"no TFLite resize samples the same source pixels as {mode} {coord}" + (
        f"/{nearest}" if mode == "nearest" else "") + f" ({mismatch})"


__all__ = ["CONFIGS", "ResizeAxis", "choose", "onnx_coordinates", "onnx_nearest", "tflite_bilinear", "tflite_nearest"]


#: The input sizes at which a Resize over a dynamic axis is checked: every size to 32, and each power of two with
#: its neighbours up to 4097 (where float32 ratios and TFLite's 16.16 fixed point part ways first, if they do).
DYNAMIC_SIZES = tuple(range(1, 33)) + tuple(n for p in range(6, 13) for n in (2**p - 1, 2**p, 2**p + 1))


def choose_any_size(axes: list[ResizeAxis | int], mode: str, coord: str, nearest: str) -> tuple[bool, bool] | str:
    """The TFLite resize equal to ONNX's for every input size of the dynamic axes, or why none is.

    ``axes``: a ``ResizeAxis`` for a static axis, the integer scale ``k`` for a dynamic one (ONNX's output is
    ``floor(k·n) = k·n``, which the artifact computes at run time). One configuration must agree at every
    size in ``DYNAMIC_SIZES`` (with a power-of-two scale the ratio ``n / (k·n)`` is exact in float32 and in
    fixed point, so the maps agree at every size; other scales are held to the sampled sizes).
    """
    mismatch = ""
    for config in CONFIGS:
        for n in DYNAMIC_SIZES:
            concrete = [a if isinstance(a, ResizeAxis) else ResizeAxis(n, a * n, float(a)) for a in axes]
            found = choose(concrete, mode, coord, nearest, sizes=False, configs=(config,))
            if isinstance(found, str):
                mismatch = mismatch or f"at input size {n}: {found}"
                break
        else:
            return config
    return mismatch
