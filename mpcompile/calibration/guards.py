"""Calibration guards: warnings about ranges and scales that waste or destroy precision.

Each guard reads the annotated plan and the calibration statistics and returns one message per
problem, naming the tensor and the fix. They never change the plan (the user chose it); the
pipeline warns with them and records them in the manifest.

- a per-tensor weight whose output channels span very different ranges: the narrow channels
  keep a few levels of the one scale;
- a calibrated range (entropy, percentile, mse) that clips most of the values it was observed on;
- a symmetric activation range on a tensor that is never negative: half the grid is never used.
"""

from __future__ import annotations

import warnings

import numpy as np

from mpcompile.ir import ops
from mpcompile.ir.graph import Graph

#: A per-tensor weight is flagged when its widest output channel spans this many times its median one.
CHANNEL_SPREAD = 16.0
#: A range is flagged when more than this share of the observed values lies outside it.
CLIPPED_SHARE = 0.5
#: At most this many tensors are named per guard; the rest are counted.
NAMED = 5


class CalibrationWarning(UserWarning):
    """A plan that is legal but loses precision for a reason the user can fix."""


def _names(items: list[str]) -> str:
    shown = ", ".join(repr(n) for n in items[:NAMED])
    return shown + (f" and {len(items) - NAMED} more" if len(items) > NAMED else "")


def weight_channel_spread(plan: Graph) -> list[str]:
    flagged: list[tuple[str, float]] = []
    for node in plan.nodes:
        if node.op_type not in ops.WEIGHTED or len(node.inputs) <= ops.WEIGHTED[node.op_type][0]:
            continue
        tensor = plan.tensors.get(node.inputs[ops.WEIGHTED[node.op_type][0]])
        if tensor is None or tensor.quant is None or not tensor.is_constant or tensor.quant.axis is not None:
            continue
        w = tensor.value
        if w.ndim < 2:
            continue
        axis = ops.weight_axis(node.op_type, node.attrs, w.ndim)
        per_channel = np.abs(np.moveaxis(w, axis, 0).reshape(w.shape[axis], -1)).max(axis=1)
        median = float(np.median(per_channel))
        if median > 0 and per_channel.max() / median >= CHANNEL_SPREAD:
            flagged.append((tensor.name, float(per_channel.max() / median)))
    if not flagged:
        return []
    flagged.sort(key=lambda item: -item[1])
    return [
        f"{len(flagged)} per-tensor weight(s) have output channels of very different ranges (widest/median up to "
        f"{flagged[0][1]:.0f}×: {_names([n for n, _ in flagged])}); their narrow channels keep few levels of one scale. "
        f"Use per-channel weights (--per-channel) or --recover equalize"
    ]


def clipped_ranges(plan: Graph, stats) -> list[str]:  # noqa: ANN001 - CalibrationResult (same package)
    flagged: list[tuple[str, float]] = []
    for tensor in plan.tensors.values():
        spec = tensor.quant
        if spec is None or tensor.is_constant or spec.provenance.get("role") != "activation" or tensor.name not in stats:
            continue
        observer = stats.observers.get(stats.aliases.get(tensor.name, tensor.name))
        histogram = getattr(observer, "histogram", None)
        if histogram is None or histogram.exponent is None:
            continue
        lo, hi = (float(v) for v in spec.representable_range())
        snap = histogram.snapshot()
        total = snap.total
        if total == 0:
            continue
        centers = (snap.edges[:-1] + snap.edges[1:]) / 2
        outside = int(snap.counts[(centers < lo) | (centers > hi)].sum())
        if outside / total > CLIPPED_SHARE:
            flagged.append((tensor.name, outside / total))
    if not flagged:
        return []
    flagged.sort(key=lambda item: -item[1])
    return [
        f"the {stats.method} ranges of {len(flagged)} tensor(s) clip most of their calibration values (up to "
        f"{flagged[0][1]:.0%}: {_names([n for n, _ in flagged])}); use --method minmax or percentile for them "
        f"(or pin their ranges with --overrides)"
    ]


def wasted_sign(plan: Graph, stats) -> list[str]:  # noqa: ANN001
    flagged = []
    for tensor in plan.tensors.values():
        spec = tensor.quant
        if spec is None or tensor.is_constant or not spec.symmetric or spec.qtype.bits != 8 or spec.provenance.get("role") != "activation":
            continue
        if tensor.name in stats and stats.summary(tensor.name)["min"] >= 0 and stats.summary(tensor.name)["max"] > 0:
            flagged.append(tensor.name)
    if not flagged:
        return []
    return [
        f"{len(flagged)} symmetric activation range(s) are on tensors that are never negative ({_names(flagged)}): half "
        f"of their grid is never used (one bit lost). Use --asymmetric where the target allows it"
    ]


def check(plan: Graph, stats) -> list[str]:  # noqa: ANN001
    """Every guard's messages for ``plan`` calibrated with ``stats`` (a ``CalibrationResult``)."""
    if stats is None:
        return []
    return weight_channel_spread(plan) + clipped_ranges(plan, stats) + wasted_sign(plan, stats)


def warn(messages: list[str]) -> None:
    for message in messages:
        warnings.warn(message, CalibrationWarning, stacklevel=3)
