"""Streaming comparison metrics between a candidate and a reference tensor.

Every metric accumulates over batches, so a conformance run over thousands of samples
keeps nothing but a handful of sums per output.
"""

from __future__ import annotations

import dataclasses
import math

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


@dataclasses.dataclass
class Accumulator:
    """Sums needed for max |diff|, LSB counts, cosine, SQNR and top-1 agreement."""

    scale: float | None = None
    tolerance_lsb: float | None = None
    max_abs_diff: float = 0.0
    elements: int = 0
    beyond: int = 0
    dot: float = 0.0
    ref_sq: float = 0.0
    cand_sq: float = 0.0
    noise_sq: float = 0.0
    top1_total: int = 0
    top1_agree: int = 0
    ref_abs_max: float = 0.0
    #: For float outputs: also pass when the backend's deviation from the plan is this far (dB) below signal,
    #: i.e. much smaller than the plan's own quantization noise (set from the plan-vs-FP32 SQNR).
    min_sqnr_db: float | None = None

    def update(self, candidate: np.ndarray, reference: np.ndarray) -> None:
        c = np.asarray(candidate, dtype=np.float64)
        r = np.asarray(reference, dtype=np.float64)
        if c.shape != r.shape:
            c = c.reshape(r.shape) if c.size == r.size else c
        diff = np.abs(c - r)
        if diff.size:
            self.max_abs_diff = max(self.max_abs_diff, float(diff.max()))
            self.ref_abs_max = max(self.ref_abs_max, float(np.abs(r).max()))
        self.elements += diff.size
        if self.scale and self.tolerance_lsb is not None:
            # Half an LSB of slack absorbs float rounding in the dequantized values.
            self.beyond += int(np.count_nonzero(diff > (self.tolerance_lsb + 0.5) * self.scale))
        self.dot += float(np.sum(c * r))
        self.ref_sq += float(np.sum(r * r))
        self.cand_sq += float(np.sum(c * c))
        self.noise_sq += float(np.sum((c - r) ** 2))
        if r.ndim >= 2 and r.shape[-1] > 1:
            self.top1_total += int(np.prod(r.shape[:-1]))
            self.top1_agree += int(np.count_nonzero(np.argmax(c, axis=-1) == np.argmax(r, axis=-1)))

    @property
    def max_lsb(self) -> float | None:
        return None if not self.scale else self.max_abs_diff / self.scale

    @property
    def beyond_share(self) -> float:
        return self.beyond / self.elements if self.elements else 0.0

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

    def passed(self, float_rtol: float = 1e-2) -> bool:
        if self.scale and self.tolerance_lsb is not None:
            return self.max_abs_diff <= (self.tolerance_lsb + 0.5) * self.scale
        if self.max_abs_diff <= float_rtol * max(self.ref_abs_max, 1e-6) + 1e-6:
            return True
        # A float output downstream of quantized tensors: one-LSB rounding flips upstream (float
        # accumulation order differs between kernels) are amplified by the float layers after them.
        # Such a backend still conforms when its noise is far below the plan's own.
        return self.min_sqnr_db is not None and self.sqnr_db >= self.min_sqnr_db

    def to_dict(self) -> dict:
        def clean(x: float | None) -> float | None | str:
            if x is None:
                return None
            if isinstance(x, float) and math.isinf(x):
                return "inf" if x > 0 else "-inf"
            return round(float(x), 6)

        return {
            "scale": self.scale,
            "tolerance_lsb": self.tolerance_lsb,
            "max_abs_diff": clean(self.max_abs_diff),
            "max_lsb": clean(self.max_lsb),
            "beyond_tolerance_share": clean(self.beyond_share),
            "cosine": clean(self.cosine),
            "sqnr_db": clean(self.sqnr_db),
            "top1_agreement": clean(self.top1),
            "elements": self.elements,
            "min_sqnr_db": clean(self.min_sqnr_db),
            "passed": self.passed(),
        }
