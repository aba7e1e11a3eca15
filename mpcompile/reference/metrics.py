"""Streaming comparison metrics between a candidate and a reference tensor.

Every metric accumulates over batches, so a conformance run over thousands of samples
keeps nothing but a handful of sums per output.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable

import numpy as np


def sqnr_db(signal_power: float, noise_power: float) -> float:
    """Signal-to-quantization-noise ratio in dB: +inf without noise, -inf without signal.

    The one SQNR of the project (conformance, sensitivity, auto search): powers are sums of
    squares over the same elements, so any batching of the sums gives the same value.
    """
    if noise_power == 0:
        return math.inf
    if signal_power == 0:
        return -math.inf
    return 10.0 * math.log10(signal_power / noise_power)


#: LSB histogram bins: |diff| of 0, 1, …, LSB_BINS - 2 LSB, and LSB_BINS - 1 or more.
LSB_BINS = 10


@dataclasses.dataclass
class Accumulator:
    """Sums for max |diff|, integer LSB counts, cosine, SQNR and top-1 agreement, over batches.

    Two rules judge a tensor, and ``rule()`` says which one in words:

    * quantized (``scale`` set): both sides are on the tensor's integer grid, so the difference is
      counted in whole LSB (``rint(|diff| / scale)``); it passes when the largest count is at most
      ``tolerance_lsb``. ``lsb_counts`` is the histogram, ``exact_share`` the share of equal integers.
    * float: passes when max |diff| ≤ ``float_rtol`` × max |reference|, or the SQNR against the
      reference is at least ``min_sqnr_db``. Both bounds are fixed numbers, never derived from how
      far the plan is from FP32.
    """

    scale: float | None = None
    tolerance_lsb: float | None = None
    max_abs_diff: float = 0.0
    elements: int = 0
    dot: float = 0.0
    ref_sq: float = 0.0
    cand_sq: float = 0.0
    noise_sq: float = 0.0
    top1_total: int = 0
    top1_agree: int = 0
    ref_abs_max: float = 0.0
    lsb_counts: list[int] = dataclasses.field(default_factory=lambda: [0] * LSB_BINS)
    max_lsb_count: int = 0
    float_rtol: float = 1e-2
    min_sqnr_db: float | None = None
    #: batches where the candidate had another shape than the reference (an output whose size depends on the
    #: values, NonZero's or NonMaxSuppression's: quantization can change how many it selects); never passed
    shape_mismatches: int = 0
    first_mismatch: str = ""

    @property
    def quantized(self) -> bool:
        return bool(self.scale) and self.tolerance_lsb is not None

    def update(self, candidate: np.ndarray, reference: np.ndarray) -> None:
        c = np.asarray(candidate, dtype=np.float64)
        r = np.asarray(reference, dtype=np.float64)
        if c.shape != r.shape:  # nothing element-wise to compare: counted, and the tensor fails its rule
            self.shape_mismatches += 1
            self.first_mismatch = self.first_mismatch or f"shape {c.shape} where the reference has {r.shape}"
            return
        diff = np.abs(c - r)
        if diff.size:
            self.max_abs_diff = max(self.max_abs_diff, float(diff.max()))
            self.ref_abs_max = max(self.ref_abs_max, float(np.abs(r).max()))
        self.elements += diff.size
        if self.scale:
            lsb = np.rint(diff / self.scale)
            if lsb.size:
                self.max_lsb_count = max(self.max_lsb_count, int(lsb.max()))
            counts = np.bincount(np.minimum(lsb, LSB_BINS - 1).astype(np.int64).reshape(-1), minlength=LSB_BINS)
            self.lsb_counts = [a + int(b) for a, b in zip(self.lsb_counts, counts)]
        self.dot += float(np.sum(c * r))
        self.ref_sq += float(np.sum(r * r))
        self.cand_sq += float(np.sum(c * c))
        self.noise_sq += float(np.sum((c - r) ** 2))
        if r.ndim >= 2 and r.shape[-1] > 1:
            self.top1_total += int(np.prod(r.shape[:-1]))
            self.top1_agree += int(np.count_nonzero(np.argmax(c, axis=-1) == np.argmax(r, axis=-1)))

    @property
    def max_lsb(self) -> float | None:
        """The largest difference in whole LSB of the tensor's scale (None for a float tensor)."""
        return float(self.max_lsb_count) if self.scale else None

    @property
    def exact_share(self) -> float | None:
        return self.lsb_counts[0] / self.elements if self.scale and self.elements else None

    @property
    def beyond_share(self) -> float:
        """Share of elements beyond the LSB tolerance."""
        if not self.quantized or not self.elements:
            return 0.0
        within = sum(self.lsb_counts[: int(self.tolerance_lsb) + 1]) if self.tolerance_lsb < LSB_BINS - 1 else self.elements
        return 1.0 - within / self.elements

    @property
    def cosine(self) -> float:
        denom = math.sqrt(self.ref_sq * self.cand_sq)
        if denom == 0:
            return 1.0 if self.ref_sq == self.cand_sq else 0.0
        return self.dot / denom

    @property
    def sqnr_db(self) -> float:
        return sqnr_db(self.ref_sq, self.noise_sq)

    @property
    def top1(self) -> float | None:
        return self.top1_agree / self.top1_total if self.top1_total else None

    @property
    def float_bound(self) -> float:
        return self.float_rtol * max(self.ref_abs_max, 1e-6) + 1e-6

    def passed(self) -> bool:
        if self.shape_mismatches:
            return False
        if self.quantized:
            return self.max_lsb_count <= self.tolerance_lsb
        if self.max_abs_diff <= self.float_bound:
            return True
        return self.min_sqnr_db is not None and self.sqnr_db >= self.min_sqnr_db

    def rule(self) -> str:
        """The rule this tensor is judged by, with its numbers, as the report prints it."""
        if self.quantized:
            return f"max |diff| ≤ {self.tolerance_lsb:g} LSB of scale {self.scale:.6g}"
        sqnr = f" or SQNR ≥ {self.min_sqnr_db:.1f} dB" if self.min_sqnr_db is not None else ""
        return f"max |diff| ≤ {self.float_rtol:g} × max |reference| (= {self.float_bound:.3g}){sqnr}"

    def to_dict(self) -> dict:
        def clean(x: float | None) -> float | None | str:
            if x is None:
                return None
            if isinstance(x, float) and math.isinf(x):
                return "inf" if x > 0 else "-inf"
            return round(float(x), 6)

        return {
            "rule": self.rule(),
            "scale": self.scale,
            "tolerance_lsb": self.tolerance_lsb,
            "max_abs_diff": clean(self.max_abs_diff),
            "max_lsb": clean(self.max_lsb),
            "exact_share": clean(self.exact_share),
            "lsb_histogram": list(self.lsb_counts) if self.scale else None,
            "beyond_tolerance_share": clean(self.beyond_share),
            "cosine": clean(self.cosine),
            "sqnr_db": clean(self.sqnr_db),
            "top1_agreement": clean(self.top1),
            "elements": self.elements,
            "min_sqnr_db": clean(self.min_sqnr_db),
            "shape_mismatches": self.shape_mismatches,
            "first_mismatch": self.first_mismatch,
            "passed": self.passed(),
        }


def integer_counts(accumulators: Iterable[Accumulator]) -> dict[str, int]:
    """Over the quantized tensors compared: how many agree exactly, within their tolerance, beyond it."""
    exact = within = beyond = 0
    for acc in accumulators:
        if not acc.quantized or not acc.elements:
            continue
        if acc.max_lsb_count == 0:
            exact += 1
        elif acc.passed():
            within += 1
        else:
            beyond += 1
    return {"exact": exact, "within_tolerance": within, "beyond_tolerance": beyond}
