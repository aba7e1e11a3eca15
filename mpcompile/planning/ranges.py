"""Range-aware planning: joins of quantities that one activation scale cannot represent.

A per-tensor activation scale spans the whole tensor. When a ``Concat`` joins tensors of very
different ranges (a detector head joining box offsets in the hundreds with class probabilities
in [0, 1]) the narrow part keeps only a few levels of the grid: with box coordinates up to 320
an int8 class score can only be 0 or 1.26. The rule here keeps such a join in float: every
input stays quantized at its own scale by its producer, the join itself dequantizes, and the
data-movement ops right after it (reshape, transpose, a further concat of such joins) follow it
into float instead of quantizing the joined tensor again.

The mirror case is one tensor split into parts that carry different quantities (a detector head
conv whose output channels are class logits and box-distribution logits, split apart): the
producer stays float, so the whole is never quantized, and the split follows it; every part is
then quantized at its own range by the integer op that reads it. (Per-channel activation scales
would keep the producer integer, but not every target runs them.) Both are planning rules fed by
the calibration statistics; they never look at a model's or a node's name.
"""

from __future__ import annotations

from mpcompile.ir import ops
from mpcompile.ir.graph import Graph, Node
from mpcompile.ir.types import Precision, QType
from mpcompile.planning.config import PlanConfig
from mpcompile.planning.stats import TensorStatistics

#: A join is kept in float when its narrowest input would get fewer levels than this of the
#: joined tensor's grid: 16 levels (4 bits) of an 8-bit grid is a 16× range ratio. Feature-pyramid
#: concats of CNNs measure 1–4× and stay integer; a 16-bit grid tolerates 4096×.
MIN_LEVELS = 16

#: Ops that join their inputs along an axis; their output scale is one scale for every part.
JOINS = {"Concat"}
#: Ops that take parts of a tensor; parts of very different ranges mean the tensor carries different quantities.
PARTS = {"Split", "Slice"}

FLOAT_JOIN = "float join"


def _width(stats: TensorStatistics, name: str, qtype: QType, symmetric: bool) -> float:
    lo, hi = stats.range(name, qtype, symmetric)
    return float(hi) - float(lo)


def _mixed(plan: Graph, names: list[str], stats: TensorStatistics, qtype: QType, symmetric: bool) -> tuple[str, str, float, float, int] | None:
    """(narrowest, widest, their widths, levels left to the narrowest) when one scale over ``names`` starves the narrowest."""
    widths = {}
    for name in names:
        tensor = plan.tensors.get(name) if name else None
        if tensor is None or tensor.is_constant or not tensor.is_float or name not in stats:
            continue
        width = _width(stats, name, qtype, symmetric)
        if width > 0:  # an all-zero input is representable at any scale
            widths[name] = width
    if len(widths) < 2:
        return None
    wide = max(widths, key=widths.__getitem__)
    narrow = min(widths, key=widths.__getitem__)
    levels = int(2 ** qtype.bits * widths[narrow] / widths[wide])
    return None if levels >= MIN_LEVELS else (narrow, wide, widths[narrow], widths[wide], levels)


def _describe(what: str, found: tuple[str, str, float, float, int], bits: int) -> str:
    narrow, wide, w_narrow, w_wide, levels = found
    return (f"{what} {narrow!r} spans {w_narrow:.3g}, {what} {wide!r} spans {w_wide:.3g} ({w_wide / w_narrow:.0f}×); "
            f"one {bits}-bit scale over both would leave {narrow!r} {levels} levels")


def mixed_range_reason(plan: Graph, node: Node, stats: TensorStatistics, qtype: QType, symmetric: bool) -> str | None:
    """Why ``node`` (a join) must not share one scale over its inputs, or None when it may."""
    if node.op_type not in JOINS:
        return None
    found = _mixed(plan, list(node.inputs), stats, qtype, symmetric)
    if found is None:
        return None
    return f"kept FP32 ({FLOAT_JOIN}): {_describe('input', found, qtype.bits)}, so each input keeps its own scale and the join runs in float"


def mixed_parts_reason(plan: Graph, node: Node, consumers: dict[str, list[Node]], stats: TensorStatistics,
                       qtype: QType, symmetric: bool) -> str | None:
    """Why ``node``'s output must not be quantized with one scale: it is split into parts of very different ranges.

    The node stays float, so its output is never quantized whole; each part is quantized at its own
    range where it is next used (the split follows into float).
    """
    for out in node.outputs:
        parts = [p for c in consumers.get(out, []) if c.op_type in PARTS and c.inputs and c.inputs[0] == out
                 for p in c.outputs if p]
        if len(parts) < 2:
            continue
        found = _mixed(plan, parts, stats, qtype, symmetric)
        if found is not None:
            return (f"kept FP32 ({FLOAT_JOIN}, split): its output {out!r} is split into parts of different ranges: "
                    f"{_describe('part', found, qtype.bits)}, so each part is quantized on its own")
    return None


def follows_float_join(plan: Graph, node: Node, producers: dict[str, Node], joins: set[str]) -> str | None:
    """A data-movement op or join whose every computed input comes from a float join follows it into float.

    Quantizing there would put the joined quantities back under one scale, undoing the join's rule.
    """
    if node.op_type not in ops.SCALE_PRESERVING and node.op_type not in JOINS:
        return None
    computed = [i for i in node.inputs if i and i in plan.tensors and not plan.tensors[i].is_constant]
    sources = [producers.get(i) for i in computed]
    if not computed or any(s is None or s.name not in joins for s in sources):
        return None
    first = sources[0]
    return f"kept FP32: follows the {FLOAT_JOIN} at {first.name!r} (its inputs carry different ranges)"


class RangeRule:
    """Applied node by node in topological order by ``assign_precisions``; remembers the float joins."""

    def __init__(self, plan: Graph, stats: TensorStatistics, config: PlanConfig) -> None:
        self.plan = plan
        self.stats = stats
        self.config = config
        self.producers = plan.producers()
        self.consumers = plan.consumers()
        self.joins: set[str] = set()

    def apply(self, node: Node, precision: Precision, reason: str) -> tuple[Precision, str]:
        if not precision.is_integer:
            return precision, reason
        # The grid the join would be quantized on: the node's own width, else the policy's 8-bit type.
        qtype = QType.INT16 if precision == Precision.INT16 else (
            self.config.activation_type if self.config.activation_type != QType.INT16 else QType.INT8)
        symmetric = self.config.symmetric_activations or qtype == QType.INT16
        why = (follows_float_join(self.plan, node, self.producers, self.joins)
               or mixed_range_reason(self.plan, node, self.stats, qtype, symmetric)
               or mixed_parts_reason(self.plan, node, self.consumers, self.stats, qtype, symmetric))
        if why is None:
            return precision, reason
        self.joins.add(node.name)
        return Precision.FP32, why
