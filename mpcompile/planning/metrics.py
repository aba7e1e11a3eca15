"""How far a quantized model's outputs are from FP32's: one metric per output, chosen to fit it.

A metric that cannot see a change makes a search keep everything in INT8 (cosine of a one-
element vector is always 1) or promote everything (top-1 over a ``[N, 40, 6625]`` sequence
counts frames, where a decoder reads lines). So every output gets a metric that fits its
shape and values, or a one-line refusal that names the output and the fix:

* ``top1``: agreement of the argmax over the last axis (classifier outputs ``[N, C]``);
* ``sequence``: exact match per sample of the argmax sequence over the last axis, repeats
  collapsed and the dominant FP32 class (a CTC blank) removed: what a greedy CTC decoder reads;
* ``cosine``: mean per-sample cosine (embeddings, logits, maps);
* ``channels``: mean over last-axis channels of the noise-to-signal power ratio, so a class
  score next to box coordinates in one concatenated detector output counts as much as they do;
* ``sqnr``: noise-to-signal power ratio of the whole output (0.01 = 20 dB), also for one value
  per sample; ``mse``: mean squared error.

``auto`` picks one of these per output from the FP32 outputs (see :func:`choose`). A spec may
name outputs: ``auto``, ``cosine``, ``logits=top1,boxes=channels`` or ``cosine,p=sqnr``.

Every metric is a sum over samples, so a search streams batches through :class:`Accumulator`
and keeps no candidate's outputs (memory stays that of the FP32 references).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import numpy as np

from mpcompile.errors import PlanError

METRICS = ("auto", "top1", "sequence", "cosine", "channels", "sqnr", "mse")
#: A class that is the argmax on at least this share of FP32 positions is a CTC blank, removed by ``sequence``.
BLANK_SHARE = 0.3
#: Per-position channels whose FP32 magnitudes differ by more than this factor do not fit one cosine
#: (a YOLO output: pixel coordinates beside probabilities, ~300×).
CHANNEL_SPREAD = 30.0
#: ``channels`` is for outputs with at most this many channels on the last axis (boxes, scores, a few classes).
MAX_CHANNELS = 1024


@dataclasses.dataclass(frozen=True)
class OutputMetric:
    """The metric of one output, and why it was chosen."""

    output: str
    metric: str
    reason: str
    blank: int | None = None  # ``sequence``: the class removed from decoded sequences

    def describe(self) -> str:
        return f"{self.output}: {self.metric} ({self.reason})"


def parse_spec(spec: str) -> tuple[str, dict[str, str]]:
    """``"cosine,boxes=channels"`` → (``"cosine"``, ``{"boxes": "channels"}``); default ``auto``."""
    default, named = "auto", {}
    for part in (p.strip() for p in spec.split(",") if p.strip()):
        name, sep, metric = part.rpartition("=")
        metric = metric.strip()
        if metric not in METRICS:
            raise PlanError(f"unknown metric {metric!r} in --metric {spec!r}; valid: {', '.join(METRICS)} "
                            f"(optionally OUTPUT=METRIC, comma-separated), or --metric-fn module:function")
        if sep:
            named[name.strip()] = metric
        else:
            default = metric
    return default, named


def _per_sample(value: np.ndarray) -> np.ndarray:
    return value.reshape(value.shape[0], -1) if value.ndim > 1 else value.reshape(-1, 1)


def _is_distribution(value: np.ndarray) -> bool:
    """Rows over the last axis are probability distributions (a softmax output)."""
    if value.ndim < 2 or value.shape[-1] < 2 or value.size == 0:
        return False
    sums = value.sum(axis=-1, dtype=np.float64)
    return bool(value.min() >= -1e-6 and np.all(np.abs(sums - 1.0) < 1e-3))


def _channel_spread(value: np.ndarray) -> float:
    """max/min over last-axis channels of their RMS magnitude (constant-zero channels ignored).

    Only outputs with positions ``[N, P, C]``: the classes of ``[N, C]`` differ in magnitude by nature.
    """
    if value.ndim < 3 or not 2 <= value.shape[-1] <= MAX_CHANNELS:
        return 1.0
    rms = np.sqrt(np.mean(value.reshape(-1, value.shape[-1]).astype(np.float64) ** 2, axis=0))
    rms = rms[rms > 0]
    return float(rms.max() / rms.min()) if rms.size > 1 else 1.0


def _positions(value: np.ndarray) -> int:
    """How many argmax decisions one sample of ``value`` carries (the axes between batch and classes)."""
    return int(np.prod(value.shape[1:-1])) if value.ndim >= 3 else 1


def choose(output: str, fp32: np.ndarray) -> OutputMetric:
    """The metric ``auto`` gives an output, from its FP32 values ``[N, ...]``."""
    per_sample = int(np.prod(fp32.shape[1:])) if fp32.ndim > 1 else 1
    if per_sample == 1:
        return OutputMetric(output, "sqnr", "one value per sample: noise power over the samples")
    if _is_distribution(fp32) and _positions(fp32) > 1:
        return _sequence(output, fp32, "a distribution at every position: argmax sequence, CTC-collapsed")
    if _is_distribution(fp32):
        return OutputMetric(output, "top1", "a probability distribution per sample")
    spread = _channel_spread(fp32)
    if spread > CHANNEL_SPREAD:
        return OutputMetric(output, "channels", f"its {fp32.shape[-1]} last-axis channels differ {spread:.0f}× in magnitude")
    return OutputMetric(output, "cosine", "values per sample")


def _sequence(output: str, fp32: np.ndarray, reason: str) -> OutputMetric:
    labels = np.argmax(fp32, axis=-1).reshape(-1)
    counts = np.bincount(labels)
    blank = int(np.argmax(counts))
    if counts[blank] < BLANK_SHARE * labels.size:
        return OutputMetric(output, "sequence", reason + "; no dominant class, nothing removed")
    return OutputMetric(output, "sequence", reason + f"; class {blank} (on {counts[blank] / labels.size:.0%} of positions) "
                        "removed as the blank", blank)


def check(output: str, metric: str, fp32: np.ndarray) -> OutputMetric:
    """``metric`` asked for by name on ``output``: kept if it can see a change there, else a refusal."""
    shape = "[N, " + ", ".join(str(d) for d in fp32.shape[1:]) + "]"
    per_sample = int(np.prod(fp32.shape[1:])) if fp32.ndim > 1 else 1
    hint = "; choose another with --metric OUTPUT=METRIC (or --metric auto), or pass --metric-fn module:function"
    if metric in ("top1", "cosine", "sequence", "channels") and per_sample == 1:
        raise PlanError(f"--metric {metric} cannot see a change in output {output!r} {shape}: it holds one value per "
                        f"sample (its argmax is always 0, the cosine of a one-element vector always 1); "
                        f"use {output}=sqnr or {output}=mse{hint}")
    if metric == "top1" and _positions(fp32) > 1:
        raise PlanError(f"--metric top1 on output {output!r} {shape} counts every one of its {_positions(fp32)} positions "
                        f"per sample, not what a decoder reads; use {output}=sequence (argmax sequence, CTC-collapsed){hint}")
    if metric == "sequence" and _positions(fp32) <= 1:
        raise PlanError(f"--metric sequence needs an output with positions and classes ([N, T, C]); {output!r} is {shape}{hint}")
    if metric == "sequence":
        return _sequence(output, fp32, "asked for")
    spread = _channel_spread(fp32)
    if metric == "cosine" and spread > CHANNEL_SPREAD:
        raise PlanError(f"--metric cosine on output {output!r} {shape} is dominated by its largest channels: its "
                        f"{fp32.shape[-1]} last-axis channels differ {spread:.0f}× in magnitude (e.g. box coordinates "
                        f"beside class scores), so it cannot see the small ones; use {output}=channels{hint}")
    return OutputMetric(output, metric, "asked for")


def resolve(spec: str, outputs: Sequence[str], fp32: Mapping[str, np.ndarray]) -> list[OutputMetric]:
    """One metric per model output, from ``--metric`` and the FP32 outputs on the search data."""
    default, named = parse_spec(spec)
    unknown = sorted(set(named) - set(outputs))
    if unknown:
        raise PlanError(f"--metric names output(s) {', '.join(map(repr, unknown))} the model does not have; "
                        f"its outputs: {', '.join(outputs)}")
    chosen = []
    for name in outputs:
        metric = named.get(name, default)
        value = np.asarray(fp32[name])
        chosen.append(choose(name, value) if metric == "auto" else check(name, metric, value))
    return chosen


# ============================================================================ streaming sums
def batch_sums(metric: OutputMetric, fp32: np.ndarray, quant: np.ndarray) -> np.ndarray:
    """The metric's sums over one batch; :func:`drop_of_sums` turns the total into a drop."""
    f = fp32.astype(np.float64)
    q = quant.astype(np.float64)
    kind = metric.metric
    if kind == "top1":
        return np.array([float(np.sum(np.argmax(f, axis=-1) == np.argmax(q, axis=-1))), float(f.shape[0])])
    if kind == "sequence":
        matches = sum(_decode(a, metric.blank) == _decode(b, metric.blank) for a, b in
                      zip(np.argmax(f, axis=-1).reshape(f.shape[0], -1), np.argmax(q, axis=-1).reshape(q.shape[0], -1)))
        return np.array([float(matches), float(f.shape[0])])
    if kind == "cosine":
        f2, q2 = _per_sample(f), _per_sample(q)
        denom = np.linalg.norm(f2, axis=1) * np.linalg.norm(q2, axis=1)
        both_zero = (np.linalg.norm(f2, axis=1) == 0) & (np.linalg.norm(q2, axis=1) == 0)
        cos = np.where(denom > 0, np.sum(f2 * q2, axis=1) / np.maximum(denom, 1e-300), np.where(both_zero, 1.0, 0.0))
        return np.array([float(np.sum(cos)), float(f.shape[0])])
    if kind == "channels":
        f2, q2 = f.reshape(-1, f.shape[-1]), q.reshape(-1, q.shape[-1])
        return np.concatenate([np.sum((q2 - f2) ** 2, axis=0), np.sum(f2 * f2, axis=0)])
    if kind == "sqnr":
        return np.array([float(np.sum((q - f) ** 2)), float(np.sum(f * f))])
    if kind == "mse":
        return np.array([float(np.sum((q - f) ** 2)), float(f.size)])
    raise PlanError(f"unknown metric {kind!r}; valid: {', '.join(METRICS)}")


def drop_of_sums(metric: OutputMetric, sums: np.ndarray) -> float:
    """How much worse than FP32, in the metric's own units (0 = identical, never NaN)."""
    kind = metric.metric
    if kind in ("top1", "sequence", "cosine"):
        return 1.0 - float(sums[0] / sums[1]) if sums[1] else 0.0
    if kind == "channels":
        noise, signal = np.split(sums, 2)
        # A channel FP32 keeps at zero counts by its absolute noise power: any value there is a change.
        ratios = np.where(signal > 0, noise / np.where(signal > 0, signal, 1.0), noise)
        return float(np.mean(ratios)) if ratios.size else 0.0
    if kind == "sqnr":
        return float(sums[0] / sums[1]) if sums[1] > 0 else float(sums[0])
    if kind == "mse":
        return float(sums[0] / sums[1]) if sums[1] else 0.0
    raise PlanError(f"unknown metric {kind!r}")


def noise_sums(fp32: np.ndarray, quant: np.ndarray) -> np.ndarray:
    """(noise power, signal power) per last-axis channel: the continuous error a search ranks by."""
    f = fp32.astype(np.float64).reshape(fp32.shape[0], -1) if fp32.ndim < 2 else fp32.astype(np.float64)
    q = quant.astype(np.float64).reshape(f.shape)
    channels = f.shape[-1] if f.shape[-1] <= MAX_CHANNELS else 1
    f2, q2 = f.reshape(-1, channels), q.reshape(-1, channels)
    return np.concatenate([np.sum((q2 - f2) ** 2, axis=0), np.sum(f2 * f2, axis=0)])


def noise_of_sums(sums: np.ndarray) -> float:
    """Mean over channels of noise/signal: every channel of an output weighs the same."""
    noise, signal = np.split(sums, 2)
    return float(np.mean(np.where(signal > 0, noise / np.where(signal > 0, signal, 1.0), noise)))


def _decode(labels: np.ndarray, blank: int | None) -> tuple[int, ...]:
    keep = np.ones(labels.shape, bool)
    keep[1:] = labels[1:] != labels[:-1]
    if blank is not None:
        keep &= labels != blank
    return tuple(int(v) for v in labels[keep])
