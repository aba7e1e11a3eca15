"""Log-domain front-ends: the linear chain a logarithm reads stays float when its values span more than a grid.

A logarithm turns relative error into absolute error: ``log(x + δ) - log(x) ≈ δ / x``. An 8-bit grid has
a fixed absolute step, ``(max - min) / 255``, so every value below one step loses all its resolution, and
a value a few steps above it still carries tens of percent of error, which the log then spreads over
its whole output range. Spectral front-ends are the usual case (``log(|CQT|² + eps)``, log-mel): their
magnitudes span ten or more decades, and quantizing any tensor of the linear chain before the log (the
audio, the filter-bank convolutions, the squared magnitudes) puts a noise floor under the quiet bins
that the log makes as large as the loud ones. (Basic Pitch: note F1 0.782 in int8 against 0.919 in FP32;
the log reads 1.3e-10 to 410, 12.5 decades, where an 8-bit grid holds 2.4. Float from the audio to the
log gives 0.921 with 92 % of its MACs still INT8.) Keeping only the last tensors float is not enough: the
quantization noise of the convolutions before them then shows through the log (0.651 there).

So when the calibrated input of a ``Log`` spans more than the grid's levels (its largest value over its
smallest positive one above ``2**bits - 1``), every node on the paths into it runs in float, back to the
graph inputs. The walk ends at an op whose output range does not follow its input's (a sigmoid, softmax
or tanh: its own output is still float, it is what the log reads; a normalization). What the log's
output feeds stays integer: log values span a few tens of units and quantize well.
"""

from __future__ import annotations

import math

from mpcompile.ir import ops
from mpcompile.ir.graph import Graph
from mpcompile.planning.stats import TensorStatistics

LOG_DOMAIN = "log-domain input"
#: Ops that read their input through a logarithm.
LOGS = {"Log"}
#: Ops whose output range is their own, not their input's: the walk up from a log stops after them.
BOUNDED = set(ops.FIXED_OUTPUT) | {"LayerNormalization", "LpNormalization", "InstanceNormalization",
                                   "GroupNormalization", "HardSigmoid"}


def log_span(stats: TensorStatistics, name: str) -> tuple[float, float] | None:
    """(smallest positive, largest) value of a tensor a log reads, from its calibration statistics."""
    if name not in stats:
        return None
    summary = stats.summary(name)
    hi = summary["max"]
    lo = summary["min"] if summary["min"] > 0 else summary.get("min_abs_nonzero", math.inf)
    if not (hi > 0 and 0 < lo < math.inf):
        return None
    return lo, hi


def log_domain_nodes(graph: Graph, stats: TensorStatistics, bits: int = 8) -> dict[str, str]:
    """Every node on the paths into a log whose input spans more than a ``bits``-bit grid: node name -> why."""
    producers = graph.producers()
    levels = 2 ** bits - 1
    found: dict[str, str] = {}
    for log in graph.nodes:
        if log.op_type not in LOGS or not log.inputs or not log.inputs[0]:
            continue
        span = log_span(stats, log.inputs[0])
        if span is None or span[1] / span[0] <= levels:
            continue
        lo, hi = span
        reason = (f"kept FP32 ({LOG_DOMAIN}): on the path into the logarithm {log.name!r}, whose input spans {lo:.3g} "
                  f"to {hi:.3g} ({math.log10(hi / lo):.1f} decades) where a {bits}-bit grid holds "
                  f"{math.log10(levels):.1f}: rounding anywhere before it puts a noise floor under the small values "
                  f"that the log makes as large as the others")
        frontier, seen = [log.inputs[0]], set()
        while frontier:
            node = producers.get(frontier.pop())
            if node is None or node.name in seen:
                continue
            seen.add(node.name)
            found.setdefault(node.name, reason)
            if node.op_type in BOUNDED:
                continue
            frontier += [i for i in node.inputs if i and i in graph.tensors and not graph.tensors[i].is_constant]
    return found
