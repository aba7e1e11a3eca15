"""Bounded-memory streaming histograms for activation calibration.

The grid
--------
Bin edges are always the multiples of a power-of-two width ``2**exponent``; a histogram
keeps a window of ``bins`` consecutive bins, the first one being the bin that contains
the smallest value seen (``start = floor(min / width)``). The exponent is the smallest
one whose window covers ``[min, max]``. When a batch falls outside the window, the
exponent grows by whole powers of two, so every old bin lies inside exactly one new bin
(global bin ``k`` at width ``w`` becomes ``k >> d`` at width ``w * 2**d``): counts merge
exactly, nothing is interpolated.

Why this choice: the final bin of every value is ``floor(x / 2**e_final)`` whatever the
order and the batching of the data, because ``floor(floor(x / w) / 2**d) == floor(x /
(w * 2**d))`` and ``x / 2**e`` is exact in floating point. The final exponent and window
depend only on the global min and max. So one batch or a thousand batches, in any order,
give bit-identical counts, and calibration results that do not depend on how the data
loader batched the samples. The price is resolution: the data fill between ``bins/2``
and ``bins`` bins of the window (a power-of-two width cannot fit the span exactly).

Because the grid is anchored at 0, a signed histogram folds into a histogram of ``|x|``
on the same grid (bin ``k < 0`` goes to ``-k-1``; only values exactly on a negative edge
land one bin low), and that can be coarsened to start at 0, which is what a symmetric
threshold search needs. So one signed histogram serves every method, and a calibration
cache can be re-read with another method.

To keep bin indices exact in 64-bit integers, the width never drops below
``2**-40 * abs_max`` (a constant tensor has a zero span, any width would do).

Non-finite values are the caller's business; ``update`` refuses them with ``ValueError``.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

from mpcompile.errors import InternalError
from mpcompile.ir.schema import HISTOGRAM_MAX_BINS, HISTOGRAM_MAX_EXPONENT, HISTOGRAM_MIN_EXPONENT

_RESOLUTION_BITS = 40  # |x| / width < 2**41: bin indices stay exact in int64 and float64
_MIN_EXPONENT = HISTOGRAM_MIN_EXPONENT  # -1000: keeps 2**-exponent finite in float64
_MAX_MAGNITUDE = 2.0**1000  # keeps 2**exponent finite in float64
_F32_TINY = float(np.finfo(np.float32).tiny)
_F64_TINY = float(np.finfo(np.float64).tiny)


# --------------------------------------------------------------------------- batches and running stats
_CHUNK = 1 << 15  # elements per pass: temporaries stay in cache and are reused (2x faster than whole-array ops)


def as_flat_floats(x: Any) -> np.ndarray:
    """``x`` flattened to float32 (float16/32 input) or float64 (anything else real)."""
    arr = np.asarray(x)
    if arr.dtype.kind not in "biuf":
        raise ValueError(f"calibration data must be real numbers, got dtype {arr.dtype}")
    if arr.dtype == np.float16:
        arr = arr.astype(np.float32)
    elif arr.dtype not in (np.float32, np.float64):
        arr = arr.astype(np.float64)
    return arr.reshape(-1)


def extremes(values: np.ndarray) -> tuple[float, float]:
    """``(min, max)`` of a non-empty flat array; ``ValueError`` for NaN/inf or magnitudes beyond 2**1000."""
    lo = float(values.min())
    hi = float(values.max())
    if not (math.isfinite(lo) and math.isfinite(hi)):  # NaN propagates through min/max
        raise ValueError(
            f"calibration data contains non-finite values (min={lo}, max={hi}); "
            "filter NaN/inf before updating an observer"
        )
    if max(-lo, hi) >= _MAX_MAGNITUDE:
        raise ValueError(f"calibration data magnitude {max(-lo, hi):g} is too large to histogram")
    return lo, hi


def _chunks(values: np.ndarray):
    for first in range(0, values.size, _CHUNK):
        yield values[first : first + _CHUNK]


def min_abs_nonzero(abs_values: np.ndarray, scratch: np.ndarray | None = None) -> float | None:
    """Smallest non-zero entry of a non-negative float array, ``None`` if all are zero."""
    # Non-negative IEEE floats order like their bit patterns. Subtracting 1 from the bits
    # wraps +0.0 to the largest unsigned integer, so a plain min() skips the zeros without
    # a boolean mask (which would be several times slower).
    uint = np.uint32 if abs_values.dtype == np.float32 else np.uint64
    smallest = np.subtract(abs_values.view(uint), uint(1), out=scratch).min()
    if smallest == np.iinfo(uint).max:
        return None
    return float(np.array(smallest + uint(1), dtype=uint).view(abs_values.dtype))


class RunningStats:
    """Exact count, min, max and smallest non-zero magnitude over all batches."""

    __slots__ = ("count", "min", "max", "min_abs_nonzero")

    def __init__(self) -> None:
        self.count = 0
        self.min: float | None = None
        self.max: float | None = None
        self.min_abs_nonzero: float | None = None

    @property
    def abs_max(self) -> float | None:
        if self.min is None or self.max is None:
            return None
        return max(-self.min, self.max)

    def update(self, x: Any) -> tuple[float, float] | None:
        """Add a batch (any shape) and return its ``(min, max)``.

        Empty batches are ignored (``None``); NaN/inf raise ``ValueError``.
        """
        values = as_flat_floats(x)
        if values.size == 0:
            return None
        lo, hi = extremes(values)
        self.add_extremes(values.size, lo, hi)
        buf = np.empty(min(values.size, _CHUNK), values.dtype)
        scratch = np.empty(buf.size, np.uint32 if values.dtype == np.float32 else np.uint64)
        for chunk in _chunks(values):
            mags = np.abs(chunk, out=buf[: chunk.size])
            self.add_min_abs_nonzero(min_abs_nonzero(mags, scratch[: chunk.size]))
        return lo, hi

    def add_extremes(self, count: int, lo: float, hi: float) -> None:
        self.count += int(count)
        self.min = lo if self.min is None else min(self.min, lo)
        self.max = hi if self.max is None else max(self.max, hi)

    def add_min_abs_nonzero(self, value: float | None) -> None:
        if value is not None:
            self.min_abs_nonzero = value if self.min_abs_nonzero is None else min(self.min_abs_nonzero, value)

    def merge(self, other: RunningStats) -> None:
        if other.count:
            self.add_extremes(other.count, other.min, other.max)
            self.add_min_abs_nonzero(other.min_abs_nonzero)

    def to_dict(self) -> dict[str, Any]:
        return {"count": self.count, "min": self.min, "max": self.max, "min_abs_nonzero": self.min_abs_nonzero}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunningStats:
        stats = cls()
        stats.count = int(data["count"])
        stats.min = None if data["min"] is None else float(data["min"])
        stats.max = None if data["max"] is None else float(data["max"])
        man = data.get("min_abs_nonzero")
        stats.min_abs_nonzero = None if man is None else float(man)
        if stats.count < 0:
            raise ValueError(f"count {stats.count} is negative")
        if (stats.min is None) != (stats.max is None) or (stats.min is None) != (stats.count == 0):
            raise ValueError(f"count {stats.count}, min {stats.min!r} and max {stats.max!r} do not agree")
        if stats.min is not None and not (math.isfinite(stats.min) and math.isfinite(stats.max) and stats.min <= stats.max):
            raise ValueError(f"min {stats.min!r} and max {stats.max!r} are not a finite range")
        if stats.min_abs_nonzero is not None and not (math.isfinite(stats.min_abs_nonzero) and stats.min_abs_nonzero > 0):
            raise ValueError(f"min_abs_nonzero {stats.min_abs_nonzero!r} is not finite and > 0")
        return stats


# --------------------------------------------------------------------------- an immutable view of a grid
@dataclasses.dataclass(frozen=True)
class BinnedCounts:
    """Counts on the power-of-two grid: bin ``i`` covers ``[(start+i)*w, (start+i+1)*w)``, ``w = 2**exponent``."""

    counts: np.ndarray  # int64
    start: int
    exponent: int

    @property
    def width(self) -> float:
        return math.ldexp(1.0, self.exponent)

    @property
    def edges(self) -> np.ndarray:
        ks = np.arange(self.start, self.start + self.counts.size + 1, dtype=np.float64)
        return np.ldexp(ks, self.exponent)

    @property
    def total(self) -> int:
        return int(self.counts.sum())

    def fold_abs(self) -> BinnedCounts:
        """The histogram of ``|x|`` on the same grid (bin ``k < 0`` → ``-k-1``; see the module docs)."""
        ks = np.arange(self.start, self.start + self.counts.size, dtype=np.int64)
        mags = np.where(ks >= 0, ks, -ks - 1)
        nonzero = self.counts != 0
        if not nonzero.any():
            return BinnedCounts(np.zeros(1, np.int64), 0, self.exponent)
        mags, counts = mags[nonzero], self.counts[nonzero]
        first = int(mags.min())
        folded = np.zeros(int(mags.max()) - first + 1, np.int64)
        np.add.at(folded, mags - first, counts)
        return BinnedCounts(folded, first, self.exponent)

    def coarsened(self, max_bins: int) -> BinnedCounts:
        """The non-empty span merged by the smallest power of two that fits it in ``max_bins`` bins."""
        return self._coarsened(max_bins, from_zero=False)

    def from_zero(self, max_bins: int) -> BinnedCounts:
        """A non-negative histogram re-based at 0 (``start == 0``) and coarsened to at most ``max_bins`` bins.

        The result ends with the last non-empty bin.
        """
        if self.start < 0:
            raise InternalError("from_zero needs a non-negative histogram; fold_abs() it first")
        return self._coarsened(max_bins, from_zero=True)

    def _coarsened(self, max_bins: int, from_zero: bool) -> BinnedCounts:
        nonzero = np.flatnonzero(self.counts)
        if nonzero.size == 0:
            return BinnedCounts(np.zeros(1, np.int64), 0, self.exponent)
        first = 0 if from_zero else self.start + int(nonzero[0])
        last = self.start + int(nonzero[-1])
        shift = 0
        while (last >> shift) - (first >> shift) + 1 > max_bins:
            shift += 1
        base = first >> shift
        ks = ((self.start + nonzero).astype(np.int64) >> shift) - base
        merged = np.zeros((last >> shift) - base + 1, np.int64)
        np.add.at(merged, ks, self.counts[nonzero])
        return BinnedCounts(merged, base, self.exponent + shift)

    def quantile(self, q: float) -> float:
        """The ``q``-quantile (0..1), interpolating linearly inside the bin where it falls."""
        total = self.total
        if total == 0:
            raise InternalError("quantile of an empty histogram")
        cumulative = np.cumsum(self.counts)
        rank = min(max(q, 0.0), 1.0) * total
        if rank <= 0.0:
            i = int(np.flatnonzero(self.counts)[0])
            fraction = 0.0
        else:
            i = int(np.searchsorted(cumulative, rank, side="left"))
            i = min(i, self.counts.size - 1)
            before = float(cumulative[i - 1]) if i > 0 else 0.0
            fraction = (rank - before) / float(self.counts[i])
        return math.ldexp(self.start + i + fraction, self.exponent)


# --------------------------------------------------------------------------- the streaming histogram
class StatsView:
    """``count``, ``min``, ``max``, ``abs_max`` and ``min_abs_nonzero`` of the object's ``_stats``."""

    _stats: RunningStats

    @property
    def count(self) -> int:
        return self._stats.count

    @property
    def min(self) -> float | None:
        return self._stats.min

    @property
    def max(self) -> float | None:
        return self._stats.max

    @property
    def abs_max(self) -> float | None:
        return self._stats.abs_max

    @property
    def min_abs_nonzero(self) -> float | None:
        """Smallest non-zero |x| seen (FP16 underflow checks); ``None`` if every value was 0."""
        return self._stats.min_abs_nonzero


class StreamingHistogram(StatsView):
    """Histogram of a stream of batches in O(bins) memory, on a power-of-two grid (see module docs).

    Also keeps the exact ``count``, ``min``, ``max``, ``abs_max`` and ``min_abs_nonzero``.
    """

    def __init__(self, bins: int = 2048) -> None:
        if isinstance(bins, bool) or not isinstance(bins, (int, np.integer)) or not 8 <= bins <= HISTOGRAM_MAX_BINS:
            raise ValueError(f"a histogram needs an integer number of bins in [8, {HISTOGRAM_MAX_BINS}], got {bins!r}")
        self._bins = int(bins)
        self._stats = RunningStats()
        #: Track the smallest non-zero |x| (two extra passes per batch). Calibration turns it off:
        #: the planner needs it only for constants, and bins narrower than 1 never need it for exactness.
        self.track_min_abs_nonzero = True
        self._exponent: int | None = None  # None until the first value arrives
        self._start = 0
        self._counts = np.zeros(self._bins, np.int64)

    # ----------------------------------------------------------------- properties
    @property
    def bins(self) -> int:
        return self._bins

    @property
    def stats(self) -> RunningStats:
        return self._stats

    @property
    def exponent(self) -> int | None:
        """Bin width is ``2**exponent``; ``None`` before the first value."""
        return self._exponent

    @property
    def counts(self) -> np.ndarray:
        """A copy of the ``bins`` counts (int64)."""
        return self._counts.copy()

    @property
    def edges(self) -> np.ndarray:
        """The ``bins + 1`` edges (float64); all zeros before the first value."""
        if self._exponent is None:
            return np.zeros(self._bins + 1)
        return self.snapshot().edges

    def snapshot(self) -> BinnedCounts:
        return BinnedCounts(self._counts.copy(), self._start, 0 if self._exponent is None else self._exponent)

    # ----------------------------------------------------------------- updates
    def update(self, x: Any) -> None:
        """Add a batch (any shape). Empty batches are ignored; NaN/inf raise ``ValueError``."""
        values = as_flat_floats(x)
        if values.size == 0:
            return
        lo, hi = extremes(values)  # validates before any state changes
        self._stats.add_extremes(values.size, lo, hi)
        self._regrid(self._exponent)
        self._add_values(values)

    def merge(self, other: StreamingHistogram) -> None:
        """Add another histogram's data (e.g. from a parallel worker); exact, like streaming both."""
        if other._bins != self._bins:
            raise ValueError(f"cannot merge a {other._bins}-bin histogram into a {self._bins}-bin one")
        if other._exponent is None:
            return
        self._stats.merge(other._stats)
        floor = other._exponent if self._exponent is None else max(self._exponent, other._exponent)
        self._regrid(floor)
        self._counts += _regridded(
            other._counts, other._start, other._exponent, self._start, self._exponent, self._bins
        )

    # ----------------------------------------------------------------- grid
    def copy(self) -> StreamingHistogram:
        other = StreamingHistogram(self._bins)
        other._stats.merge(self._stats)
        other._exponent, other._start, other._counts = self._exponent, self._start, self._counts.copy()
        return other

    def _target_exponent(self, lower: int | None) -> int:
        vmin, vmax, amax = self._stats.min, self._stats.max, self._stats.abs_max
        e = _MIN_EXPONENT if amax == 0 else max(_MIN_EXPONENT, math.frexp(amax)[1] - _RESOLUTION_BITS)
        if lower is not None:
            e = max(e, lower)
        span = vmax - vmin
        if span > 0:
            e = max(e, math.frexp(span / self._bins)[1] - 1)  # floor(log2(span / bins)): never too large
        while _bin_index(vmax, e) - _bin_index(vmin, e) > self._bins - 1:
            e += 1
        return e

    def _regrid(self, lower: int | None) -> None:
        exponent = self._target_exponent(lower)
        start = _bin_index(self._stats.min, exponent)
        if self._exponent is not None and (exponent, start) != (self._exponent, self._start):
            self._counts = _regridded(self._counts, self._start, self._exponent, start, exponent, self._bins)
        self._exponent, self._start = exponent, start

    def _add_values(self, values: np.ndarray) -> None:
        """Bin ``values`` into the current window (which covers them) and record their min |x| != 0."""
        e, start = self._exponent, self._start
        inv_width = math.ldexp(1.0, -e)
        fast32 = values.dtype == np.float32 and -126 <= e <= 126 and abs(start) < 2**100
        fast32 = fast32 and float(np.float32(start)) == start
        inv32 = np.float32(inv_width) if fast32 else None
        start32 = np.float32(start) if fast32 else None
        n = min(values.size, _CHUNK)
        need_smallest = self.track_min_abs_nonzero or e > 0
        if need_smallest:
            mags_buf = np.empty(n, values.dtype)
            scratch = np.empty(n, np.uint32 if values.dtype == np.float32 else np.uint64)
        scaled_buf = np.empty(n, values.dtype)
        # int32 indices: float32 -> int32 is a vector conversion, float32 -> int64 is not (0.13 vs 0.67 ns per
        # value here), and bincount converts int32 to intp faster than that. The indices lie in [0, bins) < 2**31.
        index_buf = np.empty(n, np.int32)
        counts = np.zeros(self._bins, np.int64)
        for chunk in _chunks(values):
            m = chunk.size
            smallest = None
            if need_smallest:
                mags = np.abs(chunk, out=mags_buf[:m])
                smallest = min_abs_nonzero(mags, scratch[:m])
                self._stats.add_min_abs_nonzero(smallest)
            # x * 2**-e is exact unless the product is subnormal (tiny x, wide bins).
            tiny_product = e > 0 and smallest is not None and smallest * inv_width < _F32_TINY
            if fast32 and not tiny_product:
                scaled = np.multiply(chunk, inv32, out=scaled_buf[:m])
                np.floor(scaled, out=scaled)
                scaled -= start32  # exact: float32 integers whose difference is in [0, bins)
            else:
                wide = chunk.astype(np.float64)
                if e > 0 and smallest is not None and smallest * inv_width < _F64_TINY:
                    scaled = np.floor_divide(wide, math.ldexp(1.0, e))  # exact but slow; subnormal data only
                else:
                    scaled = np.floor(wide * inv_width)
                scaled -= float(start)
            index = index_buf[:m]
            np.copyto(index, scaled, casting="unsafe")
            chunk_counts = np.bincount(index, minlength=self._bins)
            if chunk_counts.size != self._bins:
                raise InternalError(f"histogram binning left its window ({chunk_counts.size} > {self._bins} bins)")
            counts += chunk_counts
        self._counts += counts

    # ----------------------------------------------------------------- serde
    def to_dict(self) -> dict[str, Any]:
        """JSON-able state (plain ints, floats, lists, None) for a calibration cache."""
        return {
            "bins": self._bins,
            "exponent": self._exponent,
            "start": self._start,
            "counts": [int(c) for c in self._counts],
            "stats": self._stats.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StreamingHistogram:
        """Rebuild from ``to_dict()``; ``ValueError`` unless the state is one this class can reach.

        Beyond the bounds (bins, exponent range, non-negative counts), the grid invariants: the
        counts sum to the recorded count, the window starts at the minimum's bin and covers the
        maximum, and the bins are no narrower than the resolution floor (indices exact in int64).
        """
        bins = data["bins"]
        if isinstance(bins, bool) or not isinstance(bins, (int, np.integer)):
            raise ValueError(f"histogram bins must be an integer, got {bins!r}")
        hist = cls(int(bins))
        try:
            counts = np.asarray(data["counts"], dtype=np.int64)
        except OverflowError:
            raise ValueError("histogram counts do not fit in 64-bit integers") from None
        if counts.shape != (hist._bins,):
            raise ValueError(f"histogram state has {counts.size} counts, expected {hist._bins}")
        if counts.size and counts.min() < 0:
            raise ValueError(f"histogram count {int(counts.min())} is negative")
        stats = RunningStats.from_dict(data["stats"])
        exponent = None if data["exponent"] is None else int(data["exponent"])
        start = int(data["start"])
        if int(counts.sum(dtype=np.uint64)) != stats.count:
            raise ValueError(f"histogram counts sum to {int(counts.sum(dtype=np.uint64))}, but the recorded count is {stats.count}")
        if (exponent is None) != (stats.count == 0):
            raise ValueError(f"histogram exponent {exponent!r} does not fit a count of {stats.count}")
        if exponent is not None:
            if not HISTOGRAM_MIN_EXPONENT <= exponent <= HISTOGRAM_MAX_EXPONENT:
                raise ValueError(
                    f"histogram exponent {exponent} is outside [{HISTOGRAM_MIN_EXPONENT}, {HISTOGRAM_MAX_EXPONENT}]"
                )
            vmin, vmax = stats.min, stats.max
            if not (math.isfinite(vmin) and math.isfinite(vmax) and vmin <= vmax and max(-vmin, vmax) < _MAX_MAGNITUDE):
                raise ValueError(f"histogram min {vmin!r} and max {vmax!r} are not a finite range")
            amax = max(-vmin, vmax)
            floor = _MIN_EXPONENT if amax == 0 else max(_MIN_EXPONENT, math.frexp(amax)[1] - _RESOLUTION_BITS)
            if exponent < floor:
                raise ValueError(f"histogram exponent {exponent} is finer than the resolution floor {floor} for |x| <= {amax:g}")
            if start != _bin_index(vmin, exponent) or _bin_index(vmax, exponent) - start > hist._bins - 1:
                raise ValueError(
                    f"histogram window (start {start}, exponent {exponent}, {hist._bins} bins) does not cover "
                    f"[{vmin!r}, {vmax!r}]"
                )
        elif start != 0:
            raise ValueError(f"an empty histogram starts at 0, not {start}")
        hist._counts, hist._exponent, hist._start, hist._stats = counts, exponent, start, stats
        return hist

    def __repr__(self) -> str:
        if self._exponent is None:
            return f"StreamingHistogram(bins={self._bins}, empty)"
        lo = math.ldexp(self._start, self._exponent)
        hi = math.ldexp(self._start + self._bins, self._exponent)
        return f"StreamingHistogram(x in [{lo:.6g}, {hi:.6g}), {self._bins} bins, count={self.count})"


def _bin_index(value: float, exponent: int) -> int:
    """``floor(value / 2**exponent)``, exact (a negative value whose quotient underflows is in bin -1)."""
    scaled = math.ldexp(value, -exponent)
    if scaled == 0.0 and value < 0.0:
        return -1
    return math.floor(scaled)


def _regridded(
    counts: np.ndarray, start: int, exponent: int, new_start: int, new_exponent: int, bins: int
) -> np.ndarray:
    """Move counts to a coarser (or shifted) window of the same power-of-two grid family."""
    shift = new_exponent - exponent
    if shift < 0:
        raise InternalError("a histogram grid can only grow")
    nonzero = np.flatnonzero(counts)
    new = np.zeros(bins, np.int64)
    if nonzero.size == 0:
        return new
    ks = ((start + nonzero).astype(np.int64) >> shift) - new_start  # >> floors negative indices too
    if ks[0] < 0 or ks[-1] >= bins:
        raise InternalError("histogram regrid left the window")
    np.add.at(new, ks, counts[nonzero])
    return new
