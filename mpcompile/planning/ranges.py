"""Range-aware planning: joins of quantities that one activation scale cannot represent.

A per-tensor activation scale spans the whole tensor. When a ``Concat`` joins tensors of very
different ranges (a detector head joining box offsets in the hundreds with class probabilities
in [0, 1]) the narrow part keeps only a few levels of the grid: with box coordinates up to 320
an int8 class score can only be 0 or 1.26. The rule here keeps such a join in float: every
input stays quantized at its own scale by its producer, the join itself dequantizes, and the
data-movement ops right after it (reshape, transpose, a further concat of such joins) follow it
into float instead of quantizing the joined tensor again. It is a planning rule fed by the
calibration statistics; it never looks at a model's or a node's name.
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

FLOAT_JOIN = "float join"


def _width(stats: TensorStatistics, name: str, qtype: QType, symmetric: bool) -> float:
    lo, hi = stats.range(name, qtype, symmetric)
    return float(hi) - float(lo)


def mixed_range_reason(plan: Graph, node: Node, stats: TensorStatistics, qtype: QType, symmetric: bool) -> str | None:
    """Why ``node`` (a join) must not share one scale over its inputs, or None when it may."""
    if node.op_type not in JOINS:
        return None
    widths = {}
    for name in node.inputs:
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
    ratio = widths[wide] / widths[narrow]
    levels = int(2 ** qtype.bits / ratio)
    if levels >= MIN_LEVELS:
        return None
    return (
        f"kept FP32 ({FLOAT_JOIN}): input {narrow!r} spans {widths[narrow]:.3g}, input {wide!r} spans "
        f"{widths[wide]:.3g} ({ratio:.0f}×); one {qtype.bits}-bit scale over the joined tensor would leave {narrow!r} "
        f"{levels} levels"
        f", so each input keeps its own scale and the join runs in float"
    )


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
        self.joins: set[str] = set()

    def apply(self, node: Node, precision: Precision, reason: str) -> tuple[Precision, str]:
        if not precision.is_integer:
            return precision, reason
        # The grid the join would be quantized on: the node's own width, else the policy's 8-bit type.
        qtype = QType.INT16 if precision == Precision.INT16 else (
            self.config.activation_type if self.config.activation_type != QType.INT16 else QType.INT8)
        symmetric = self.config.symmetric_activations or qtype == QType.INT16
        why = follows_float_join(self.plan, node, self.producers, self.joins) or mixed_range_reason(
            self.plan, node, self.stats, qtype, symmetric
        )
        if why is None:
            return precision, reason
        self.joins.add(node.name)
        return Precision.FP32, why
