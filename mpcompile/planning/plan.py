"""Write a plan onto the IR: a precision on every node, a ``QuantSpec`` on every quantized tensor.

The plan is backend-neutral. It follows the numerics contract (docs/design.md): weights
symmetric narrow-range per output channel, biases int32 at ``s_in × s_w``, activations
per-tensor from calibration, fixed output ranges for softmax/sigmoid/tanh, and data-
movement ops (reshape, max-pool, …) sharing their input's quantization.
"""

from __future__ import annotations

import numpy as np

from mpcompile.errors import PlanError
from mpcompile.ir import ops
from mpcompile.ir.graph import Graph, Node, Tensor
from mpcompile.ir.numerics import bias_spec, fixed_output_spec
from mpcompile.ir.quant import QuantSpec, spec_from_range, weight_spec
from mpcompile.ir.types import Precision, QType
from mpcompile.planning.config import PlanConfig
from mpcompile.planning.logdomain import log_domain_nodes
from mpcompile.planning.normalization import input_nodes, statistics_nodes, statistics_reason
from mpcompile.planning.ranges import RangeRule
from mpcompile.planning.stats import TensorStatistics

FP16_MAX = 65504.0
BF16_MAX = 3.38e38
#: Keep a node FP32 if its values come within this factor of the FP16 maximum.
FP16_HEADROOM = 0.5
#: Values whose magnitude is below this are flushed by FP16 (smallest subnormal ≈ 6e-8).
FP16_TINY = 6.0e-8
#: An activation reaching this magnitude is a sentinel (attention masks use -3.4e38), not a
#: range to quantize: one such value would flatten every other value of the tensor to zero.
INTEGER_RANGE_LIMIT = 1.0e5


def make_plan(graph: Graph, stats: TensorStatistics | None, config: PlanConfig) -> Graph:
    """Annotate a copy of ``graph`` according to ``config``; ``stats`` are required for integer precisions."""
    plan = graph.copy()
    for tensor in plan.tensors.values():
        tensor.quant = None
    assign_precisions(plan, stats, config)
    if any(n.precision is not None and n.precision.is_integer for n in plan.nodes):
        if stats is None:
            raise PlanError("an integer plan needs calibration data: pass --data")
        annotate_tensors(plan, stats, config)
    plan.metadata["mpcompile.policy"] = config.precision
    return plan


def tensors_next_to_integer_nodes(graph: Graph, config: PlanConfig) -> set[str]:
    """Every tensor at a node that may run in integer under ``config``: all a plan can annotate.

    Precisions are assigned without statistics. Statistics can only keep more nodes in float
    (sentinel values, half-precision overflow), never fewer, so the real plan's integer nodes
    are among these, and calibration need not observe any other tensor.
    """
    plan = graph.copy()
    assign_precisions(plan, None, config)
    return {
        name
        for node in plan.nodes
        if node.precision is not None and node.precision.is_integer
        for name in node.inputs + node.outputs
        if name
    }


# ============================================================================ node precisions
def _has_float_io(graph: Graph, node: Node) -> bool:
    names = [n for n in node.inputs + node.outputs if n]
    return any(graph.tensors[n].is_float for n in names if n in graph.tensors)


def _policy_precision(config: PlanConfig) -> Precision:
    if config.precision in ("int8", "mixed", "auto"):
        return Precision.INT16 if config.activation_type == QType.INT16 else Precision.INT8
    return Precision(config.precision)


def _policy_bits(config: PlanConfig) -> int:
    return 16 if _policy_precision(config) == Precision.INT16 else 8


def assign_precisions(plan: Graph, stats: TensorStatistics | None, config: PlanConfig) -> None:
    target = _policy_precision(config)
    producers = plan.producers()
    ranges = None if stats is None else RangeRule(plan, stats, config)
    statistics = statistics_nodes(plan)
    rows = input_nodes(plan, statistics)
    log_domain = {} if stats is None else log_domain_nodes(plan, stats, _policy_bits(config))
    for node in plan.nodes:
        if node.op_type in ops.SHAPE_OPS or not _has_float_io(plan, node):
            node.precision, node.precision_reason = None, "no floating-point values"
            continue
        precision, reason = target, f"policy {config.precision}"
        if precision.is_integer:
            if node.op_type in ops.FLOAT_ONLY_REASONS:
                precision, reason = Precision.FP32, ops.FLOAT_ONLY_REASONS[node.op_type]
            elif node.op_type not in ops.INTEGER_OPS:
                precision, reason = Precision.FP32, f"{node.op_type} has no integer implementation in mpcompile's op set"
            elif node.name in statistics:
                precision, reason = Precision.FP32, statistics_reason(statistics[node.name])
            elif node.name in rows:
                precision, reason = Precision.FP32, rows[node.name]
        for override in config.overrides:
            if override.matches(node.name, node.op_type):
                precision, reason = override.precision, f"override {override.pattern}={override.precision.value}"
        overridden = any(o.matches(node.name, node.op_type) for o in config.overrides)
        if precision.is_integer and stats is not None:
            precision, reason = _integer_safety(plan, node, precision, reason, stats)
        if precision.is_integer and node.name in log_domain and not overridden:
            precision, reason = Precision.FP32, log_domain[node.name]
        if ranges is not None and not overridden:
            precision, reason = ranges.apply(node, precision, reason)
        if precision.is_integer and node.op_type in ELEMENTWISE and not overridden:
            precision, reason = _float_island(plan, node, precision, reason, producers)
        if precision in (Precision.FP16, Precision.BF16):
            precision, reason = _float_safety(plan, node, precision, reason, stats)
        node.precision, node.precision_reason = precision, reason
    _check_overrides_matched(plan, config)


def _check_overrides_matched(plan: Graph, config: PlanConfig) -> None:
    for override in config.overrides:
        if not any(override.matches(n.name, n.op_type) for n in plan.nodes):
            names = ", ".join(n.name for n in plan.nodes[:8])
            raise PlanError(
                f"override {override.pattern}={override.precision.value} matches no node or op type in "
                f"graph {plan.name!r} (nodes include: {names}…)"
            )


#: Element-wise ops that only make sense in integer next to integer producers.
ELEMENTWISE = {"Add", "Sub", "Mul"}


def _float_island(
    plan: Graph, node: Node, precision: Precision, reason: str, producers: dict[str, Node]
) -> tuple[Precision, str]:
    """An element-wise op whose every computed input comes from a float node stays float.

    Quantizing there only adds rounding between float ops; worse, with a constant operand
    (GELU's ``1 + erf(x)``) the sum lands on rounding ties, which runtimes break differently.
    Nodes are visited in topological order, so producers already have their precision.
    """
    computed = [i for i in node.inputs if i and not plan.tensors[i].is_constant]
    if computed and all(
        i not in plan.inputs and producers.get(i) is not None and producers[i].precision is not None
        and producers[i].precision.is_float
        for i in computed
    ):
        return Precision.FP32, "kept FP32: every computed input comes from a float node (no integer island)"
    return precision, reason


def _integer_safety(
    plan: Graph, node: Node, precision: Precision, reason: str, stats: TensorStatistics
) -> tuple[Precision, str]:
    """Keep a node FP32 when one of its activations holds sentinel-sized values (e.g. -3.4e38 masks)."""
    for name in [n for n in node.inputs + node.outputs if n]:
        tensor = plan.tensors.get(name)
        if tensor is None or tensor.is_constant or not tensor.is_float or name not in stats:
            continue
        amax = stats.summary(name)["abs_max"]
        if amax >= INTEGER_RANGE_LIMIT:
            return Precision.FP32, (
                f"kept FP32: tensor {name!r} reaches |x| = {amax:.3g} (a sentinel such as an attention mask); "
                f"an integer scale covering it would flush every other value to zero"
            )
    return precision, reason


def _float_safety(
    plan: Graph, node: Node, precision: Precision, reason: str, stats: TensorStatistics | None
) -> tuple[Precision, str]:
    """Keep a node FP32 when its values would overflow (or vanish in) the half-precision format."""
    limit = FP16_MAX if precision == Precision.FP16 else BF16_MAX
    for name in [n for n in node.inputs + node.outputs if n]:
        tensor = plan.tensors.get(name)
        if tensor is None or not tensor.is_float:
            continue
        if tensor.is_constant:
            amax = float(np.abs(tensor.value).max()) if tensor.value.size else 0.0
            nonzero = np.abs(tensor.value[tensor.value != 0])
            tiny = float(nonzero.min()) if nonzero.size else np.inf
        elif stats is not None and name in stats:
            summary = stats.summary(name)
            amax, tiny = summary["abs_max"], summary.get("min_abs_nonzero", np.inf)
        else:
            continue
        if amax > limit * FP16_HEADROOM:
            return Precision.FP32, (
                f"kept FP32: tensor {name!r} reaches |x| = {amax:.4g}, beyond {FP16_HEADROOM:g}× the "
                f"{precision.value} maximum {limit:.4g}"
            )
        if precision == Precision.FP16 and tensor.is_constant and 0 < tiny < FP16_TINY and amax < 1e-3:
            return Precision.FP32, f"kept FP32: constant {name!r} would underflow in fp16 (all |x| < 1e-3, smallest {tiny:.3g})"
    if node.op_type in ("ReduceSum", "ReduceMean") and precision == Precision.FP16:
        data = plan.tensors.get(node.inputs[0])
        if data is not None and data.shape is not None and all(isinstance(d, int) for d in data.shape):
            fan_in = int(np.prod(data.shape[1:])) if len(data.shape) > 1 else int(data.shape[0])
            if fan_in > 4096:
                return Precision.FP32, f"kept FP32: reduction over {fan_in} values loses precision in fp16"
    return precision, reason


# ============================================================================ tensor specs
class _Annotator:
    def __init__(self, plan: Graph, stats: TensorStatistics, config: PlanConfig) -> None:
        self.plan = plan
        self.stats = stats
        self.config = config
        self.consumers = plan.consumers()
        self.producers = plan.producers()

    def qtype_for(self, node: Node) -> QType:
        if node.precision == Precision.INT16:
            return QType.INT16
        return self.config.activation_type if self.config.activation_type != QType.INT16 else QType.INT8

    def symmetric_for(self, qtype: QType) -> bool:
        # 16-bit activations are symmetric (zero-point 0) everywhere: TFLite requires it.
        return self.config.symmetric_activations or qtype == QType.INT16

    def activation(self, name: str, qtype: QType) -> QuantSpec:
        tensor = self.plan.tensors[name]
        symmetric = self.symmetric_for(qtype)
        if tensor.is_constant:
            value = tensor.value  # min/max are exact in the stored dtype: no float64 copy of a large weight
            lo, hi = (float(value.min()), float(value.max())) if value.size else (0.0, 0.0)
            provenance = {"role": "constant", "method": "minmax"}
        else:
            if name not in self.stats:
                raise PlanError(
                    f"no calibration statistics for tensor {name!r}; the calibration run did not observe it "
                    f"(re-run calibration with this model)"
                )
            lo, hi = self.stats.range(name, qtype, symmetric)
            provenance = {"role": "activation", **self.stats.provenance(), "range": [lo, hi]}
            if not symmetric:
                # Kept so a backend that needs zero-point 0 re-derives from the statistics, not the asymmetric range.
                s_lo, s_hi = self.stats.range(name, qtype, True)
                provenance["symmetric_amax"] = max(abs(s_lo), abs(s_hi))
        return spec_from_range(lo, hi, qtype, symmetric=symmetric, provenance=provenance)

    def fixed_output(self, node: Node, qtype: QType) -> QuantSpec:
        return fixed_output_spec(node.op_type, qtype)

    def is_fused_intermediate(self, name: str) -> bool:
        """A producer output that only feeds a fusable activation stays unquantized (fused in every backend)."""
        producer = self.producers.get(name)
        users = self.consumers.get(name, [])
        if producer is None or name in self.plan.outputs or len(users) != 1:
            return False
        user = users[0]
        return (
            producer.op_type in ops.FUSING_PRODUCERS
            and user.op_type in ops.FUSABLE_ACTIVATIONS
            and bool(producer.precision and producer.precision.is_integer)
            and bool(user.precision and user.precision.is_integer)
        )

    def read_only_by_float(self, name: str) -> bool:
        """Every reader of ``name`` is a float node: its spec only requantizes an accumulator for float math.

        Such a spec is kept in the plan (a backend whose integer kernels must write integers needs it: TFLite)
        but marked, and a backend that can write the dequantized accumulator directly drops it when it
        legalizes (``Capabilities.float_output_ops``). For MiniLM's attention-output and FFN-output MatMuls,
        whose outputs carry BERT's outlier channels ([−3, 196] at one scale) into a float bias Add and the
        residual sum, that requantization was most of the int8 plan's error (embedding cosine 0.92 → 0.98).
        """
        users = self.consumers.get(name, [])
        return bool(users) and name not in self.plan.outputs and all(
            u.precision is None or not u.precision.is_integer for u in users
        )

    def set(self, name: str, spec: QuantSpec) -> None:
        tensor = self.plan.tensors[name]
        spec.validate_for_shape(tensor.shape, name)
        tensor.quant = spec

    def annotate(self) -> None:
        for node in self.plan.nodes:
            if node.precision is None or not node.precision.is_integer:
                continue
            qtype = self.qtype_for(node)
            skip = self._annotate_weights(node) | ops.PARAMETER_INPUTS.get(node.op_type, set())
            for index, name in enumerate(node.inputs):
                if not name or index in skip:
                    continue
                tensor = self.plan.tensors[name]
                if not tensor.is_float or tensor.quant is not None or self.is_fused_intermediate(name):
                    continue
                self.set(name, self.activation(name, qtype))
            for index, name in enumerate(node.outputs):
                if not name or not self.plan.tensors[name].is_float or self.is_fused_intermediate(name):
                    continue
                if node.op_type == "Dropout" and index > 0:
                    continue
                if node.op_type in ops.FIXED_OUTPUT:
                    spec = self.fixed_output(node, qtype)
                elif node.op_type in ops.SCALE_PRESERVING and self.plan.tensors[node.inputs[0]].quant is not None:
                    source = self.plan.tensors[node.inputs[0]].quant
                    spec = source.replace(provenance={**dict(source.provenance), "role": "shared", "from": node.inputs[0]})
                else:
                    spec = self.activation(name, qtype)
                if node.op_type in ops.ACCUMULATING and self.read_only_by_float(name):
                    spec = spec.replace(provenance={**dict(spec.provenance), "readers": "float"})
                self.set(name, spec)
        for node in self.plan.nodes:
            if node.precision is not None and node.precision.is_integer:
                self._annotate_bias(node)

    def _annotate_weights(self, node: Node) -> set[int]:
        """Weight and bias inputs of Conv/Gemm/MatMul. Returns the input indices handled here."""
        if node.op_type not in ops.WEIGHTED:
            return set()
        w_index, b_index = ops.WEIGHTED[node.op_type]
        handled: set[int] = set()
        if len(node.inputs) > w_index and node.inputs[w_index]:
            weight = self.plan.tensors[node.inputs[w_index]]
            if weight.is_constant and weight.is_float and weight.value.ndim >= 1:
                if weight.quant is None:
                    axis = self._weight_axis(node, weight)
                    self.set(weight.name, weight_spec(
                        weight.value, axis, provenance={"role": "weight", "method": self.config.weight_method},
                        amax=_mse_amax(weight.value, axis) if self.config.weight_method == "mse" else None,
                    ))
                handled.add(w_index)
        if b_index is not None and len(node.inputs) > b_index and node.inputs[b_index]:
            handled.add(b_index)
        return handled

    def _weight_axis(self, node: Node, weight: Tensor) -> int | None:
        if not self.config.per_channel or weight.value.ndim < 2:
            return None
        if node.op_type == "ConvTranspose" and int(node.attr("group", 1)) != 1:
            return None
        return ops.weight_axis(node.op_type, node.attrs, weight.value.ndim)

    def _annotate_bias(self, node: Node) -> None:
        if node.op_type not in ops.WEIGHTED:
            return
        w_index, b_index = ops.WEIGHTED[node.op_type]
        if b_index is None or len(node.inputs) <= b_index or not node.inputs[b_index]:
            return
        bias = self.plan.tensors[node.inputs[b_index]]
        spec = bias_spec(self.plan, node)
        if spec is not None and bias.is_constant:
            self.set(bias.name, spec)


def _mse_amax(w: np.ndarray, axis: int | None, grid: int = 64) -> np.ndarray:
    """Per-channel clip value minimising the quantization MSE of symmetric int8 weights."""
    w = np.asarray(w, dtype=np.float64)
    moved = w.reshape(1, -1) if axis is None else np.moveaxis(w, axis, 0).reshape(w.shape[axis], -1)
    amax = np.abs(moved).max(axis=1)
    best = amax.copy()
    best_err = np.full(amax.shape, np.inf)
    for ratio in np.linspace(0.5, 1.0, grid):
        clip = np.maximum(amax * ratio, 1e-12)
        scale = clip / 127.0
        q = np.clip(np.rint(moved / scale[:, None]), -127, 127) * scale[:, None]
        err = ((q - moved) ** 2).mean(axis=1)
        better = err < best_err
        best[better], best_err[better] = clip[better], err[better]
    return best if axis is not None else best.reshape(())


def annotate_tensors(plan: Graph, stats: TensorStatistics, config: PlanConfig) -> None:
    _Annotator(plan, stats, config).annotate()
