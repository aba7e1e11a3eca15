"""Lower a legalized plan to the graphs TensorRT builds engines from.

``tensorrt_qdq_graph(plan)`` — the *TensorRT-ready QDQ ONNX* (explicit quantization: the
only INT8 path on TensorRT 11, and the ``quantization="explicit"`` path on 10.x). It is an
IR transformation of a copy of the plan, written by ``mpcompile.ir.serde.save_onnx``:

* **Weights**: stored as int8 initializers (the plan's integers, symmetric narrow range)
  feeding a DequantizeLinear with an int8 zero-point 0 and an explicit ``axis`` (the
  output-channel axis: 0 for Conv and Gemm(transB=1), 1 for ConvTranspose, Gemm(transB=0)
  and MatMul). TensorRT documents both this form and float weights + Q/DQ; both fuse into
  the same INT8 kernels. The stored form is chosen because the engine then holds exactly
  the plan's integers (TensorRT's own weight quantization cannot round a tie differently),
  and the file is 4× smaller.
* **Biases** stay float32 — TensorRT adds them in float inside the fused kernel, and its
  DequantizeLinear takes no int32 input — holding the plan's int32 bias dequantized
  (``q·s_in·s_w``), so the numbers are the plan's.
* **Activations**: per-tensor QuantizeLinear → DequantizeLinear (int8 zero-point 0) right
  after the producer of every annotated tensor (after the graph input for inputs). The
  dequantized value keeps the tensor's name, so graph outputs keep theirs. A residual Add
  therefore reads Q/DQ on both inputs, which TensorRT needs to fuse it into the preceding
  convolution; ``notes`` lists any integer Add that does not.
* **FP16/BF16 nodes** compute on FP16/BF16-typed tensors: Cast at the boundaries, their
  float constants stored in FP16/BF16; back-to-back casts between two half-precision nodes
  are removed. A strongly typed network honours exactly
  these types.

``float_graph(plan)`` and ``cache_scales(plan)`` — the plain float model and the plan's
scales for TensorRT 10's implicit INT8 (calibration cache). Both pure IR; nothing here
imports TensorRT.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from mpcompile.backends.api import Graph, Node, PlanError, Precision, QDQWriter, QType, QuantSpec, Tensor, ops

MIN_OPSET = 13  # per-channel QuantizeLinear/DequantizeLinear (``axis``)
#: Conv, ConvTranspose and the pooling ops accept bfloat16 from opset 22 on.
BF16_OPSET = 22
#: Opset 18 moved ``axes`` of these reductions from an attribute to an input.
_AXES_TO_INPUT = {
    "ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1", "ReduceL2",
    "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare",
}
#: Ops whose meaning changed between opsets 13 and 22: a graph with them keeps its opset.
_CHANGED_BEFORE_22 = {"GridSample", "GroupNormalization", "DFT"}
_CAST_TO = {Precision.FP16: 10, Precision.BF16: 16}  # TensorProto.FLOAT16, BFLOAT16
_FLOAT = 1  # TensorProto.FLOAT
_SUFFIX = {Precision.FP16: "fp16", Precision.BF16: "bf16"}
_ADDS = {"Add", "Sub"}


def half_numpy_dtype(precision: Precision) -> np.dtype | None:
    """numpy dtype of FP16/BF16 tensors (bfloat16 through ml_dtypes, which onnx depends on; None without it)."""
    if precision == Precision.FP16:
        return np.dtype(np.float16)
    try:
        import ml_dtypes
    except ImportError:
        return None
    return np.dtype(ml_dtypes.bfloat16)


def half_cast_code(dtype: np.dtype | None) -> int | None:
    """The Cast ``to`` code of a half-precision dtype, None for any other."""
    if dtype is None:
        return None
    if dtype == np.dtype(np.float16):
        return _CAST_TO[Precision.FP16]
    return _CAST_TO[Precision.BF16] if dtype.name == "bfloat16" else None


@dataclasses.dataclass
class TensorRTGraph:
    """A graph ready to serialize, with the IR tensor → artifact tensor map and placement notes."""

    graph: Graph
    tensor_map: dict[str, str]
    notes: list[str] = dataclasses.field(default_factory=list)


# ============================================================================ checks
def tensorrt_violations(plan: Graph) -> list[str]:
    """What keeps ``plan`` from lowering to TensorRT as it is (empty when it is legal)."""
    from mpcompile_tensorrt.legalize import weight_tensors

    weights = weight_tensors(plan)
    problems = []
    for t in plan.tensors.values():
        spec = t.quant
        if spec is None or spec.qtype in (QType.INT32, QType.INT64):
            continue
        if spec.qtype != QType.INT8:
            problems.append(f"tensor {t.name!r} is {spec.qtype.value}; TensorRT quantizes to int8 only")
        if np.any(spec.zero_point != 0):
            problems.append(f"tensor {t.name!r} has zero-point {spec.zero_point.tolist()}; TensorRT needs 0")
        if spec.axis is not None and t.name not in weights:
            problems.append(f"tensor {t.name!r} is quantized per channel but is not a weight")
    for node in plan.nodes:
        if node.precision == Precision.INT16:
            problems.append(f"node {node.name!r} is planned int16; TensorRT has no int16 kernels")
    return problems


def check_tensorrt_ready(plan: Graph) -> None:
    problems = tensorrt_violations(plan)
    if problems:
        listing = "; ".join(problems[:5]) + (f"; … ({len(problems)} in all)" if len(problems) > 5 else "")
        raise PlanError(
            f"plan {plan.name!r} is not legal for TensorRT: {listing}. Legalize it first "
            f"(backend.legalize(plan), which `mpcompile lower` does)"
        )


# ============================================================================ the QDQ graph
class _Builder(QDQWriter):
    """TensorRT's placement on top of the shared Q/DQ writer (specs are symmetric int8 here)."""

    def __init__(self, plan: Graph) -> None:
        super().__init__(plan)
        self.g.opset_imports[""] = max(int(self.g.opset_imports.get("", MIN_OPSET)), MIN_OPSET)
        self.notes: list[str] = []

    def fold_bias(self, tensor: Tensor, spec: QuantSpec) -> None:
        # TensorRT's DequantizeLinear takes no int32 input: the bias stays float, holding the plan's values.
        assert tensor.value is not None
        tensor.value = spec.fake_quantize(tensor.value).astype(np.float32)
        tensor.dtype = np.dtype(np.float32)

    # --------------------------------------------------------------- half precision
    def type_half_nodes(self) -> None:
        g = self.g
        cast_of: dict[tuple[str, Precision], str] = {}
        for node in list(g.nodes):
            precision = node.precision
            if precision not in _CAST_TO:
                continue
            suffix, to, half_dtype = _SUFFIX[precision], _CAST_TO[precision], half_numpy_dtype(precision)
            for i, name in enumerate(node.inputs):
                t = g.tensors.get(name) if name else None
                if t is None or not t.is_float:
                    continue
                key = (name, precision)
                if key not in cast_of:
                    if t.is_constant and half_dtype is not None:
                        assert t.value is not None
                        half = Tensor(g.unique_name(f"{name}_{suffix}"), value=t.value.astype(np.float32).astype(half_dtype))
                        cast_of[key] = g.add_tensor(half).name
                    else:  # activations (and BF16 constants without ml_dtypes: TensorRT folds the Cast)
                        out = g.unique_name(f"{name}_{suffix}")
                        self.node("Cast", [name], out, half_dtype, t.shape, to=to)
                        cast_of[key] = out
                node.inputs[i] = cast_of[key]
            for j, name in enumerate(node.outputs):
                t = g.tensors.get(name) if name else None
                if t is None or not t.is_float:
                    continue
                half = g.add_tensor(Tensor(g.unique_name(f"{name}_{suffix}"), half_dtype, t.shape)).name
                node.outputs[j] = half
                self.node("Cast", [half], name, np.dtype(np.float32), t.shape, to=_FLOAT)

    def drop_round_trip_casts(self) -> None:
        """Cast(half→float) → Cast(float→half) of the same type is the identity: read the half tensor directly."""
        g = self.g
        producers = g.producers()
        replaced = 0
        for node in g.nodes:
            if node.op_type != "Cast" or int(node.attr("to", 0)) not in _CAST_TO.values():
                continue
            wide = producers.get(node.inputs[0])
            if wide is None or wide.op_type != "Cast" or int(wide.attr("to", 0)) != _FLOAT:
                continue
            half = wide.inputs[0]
            half_producer = producers.get(half)
            source_to = self._half_type_of(half, half_producer)
            if source_to != int(node.attr("to")):
                continue
            for consumer in g.nodes:
                consumer.inputs = [half if i == node.outputs[0] else i for i in consumer.inputs]
            g.outputs = [half if o == node.outputs[0] else o for o in g.outputs]
            replaced += 1
        if replaced:
            g.toposort()  # remove_unused walks the nodes backwards from the outputs
            g.remove_unused()

    def _half_type_of(self, name: str, producer: Node | None) -> int | None:
        if producer is not None and producer.op_type == "Cast":
            return int(producer.attr("to", 0))
        t = self.g.tensors.get(name)
        return None if t is None else half_cast_code(t.dtype)

    def raise_opset_for_bf16(self) -> None:
        """BF16 Conv/pooling is valid ONNX only from opset 22: move the graph there when that keeps its meaning."""
        g = self.g
        opset = int(g.opset_imports.get("", MIN_OPSET))
        if opset >= BF16_OPSET or not any(n.precision == Precision.BF16 for n in g.nodes):
            return
        blockers = sorted({n.op_type for n in g.nodes if n.op_type in _CHANGED_BEFORE_22})
        if blockers:
            self.notes.append(
                f"BF16 nodes kept at opset {opset} because of {blockers}: TensorRT parses the file, but ONNX "
                f"declares bfloat16 Conv/pooling only from opset {BF16_OPSET}"
            )
            return
        for node in g.nodes:
            if node.op_type in _AXES_TO_INPUT and "axes" in node.attrs:
                axes = g.add_tensor(Tensor(g.unique_name(f"{node.name}_axes"), value=np.array(node.attrs.pop("axes"), dtype=np.int64)))
                node.inputs = [node.inputs[0], axes.name]
            elif node.op_type == "Split" and (len(node.inputs) < 2 or not node.inputs[1]) and "num_outputs" not in node.attrs:
                node.attrs["num_outputs"] = len(node.outputs)
        g.opset_imports[""] = BF16_OPSET
        self.notes.append(f"opset {opset} → {BF16_OPSET}: ONNX declares bfloat16 Conv/pooling from opset {BF16_OPSET}")

    # --------------------------------------------------------------- checks
    def note_residual_adds(self) -> None:
        for node in self.g.nodes:
            if node.op_type not in _ADDS or node.precision is None or not node.precision.is_integer:
                continue
            activations = [self.g.tensors[i] for i in node.inputs if i and not self.g.tensors[i].is_constant]
            missing = [t.name for t in activations if t.quant is None]
            if len(activations) == 2 and missing:
                self.notes.append(
                    f"integer {node.op_type} {node.name!r}: input(s) {missing} carry no Q/DQ, so TensorRT cannot fuse "
                    f"it into the producing convolution (it runs as a separate layer)"
                )

    # --------------------------------------------------------------- driver
    def build(self) -> TensorRTGraph:
        g = self.g
        check_tensorrt_ready(g)
        self.note_residual_adds()
        self.raise_opset_for_bf16()
        self.type_half_nodes()  # before Q/DQ, like the reference: half rounding, then quantization
        self.reindex()
        folded = 0
        for tensor in list(g.tensors.values()):
            spec = tensor.quant
            if spec is None or not tensor.is_constant:
                continue
            if spec.qtype in (QType.INT32, QType.INT64):
                self.fold_bias(tensor, spec)
                folded += 1
            else:
                self.store_constant(tensor, spec)
        for tensor in list(g.tensors.values()):
            if tensor.quant is not None and not tensor.is_constant:
                self.quantize_activation(tensor.name, tensor.quant)
        self.clear_plan()
        for n in g.nodes:
            n.precision_reason = ""
        self.drop_round_trip_casts()
        g.toposort()
        if folded:
            self.notes.append(f"{folded} bias(es) stored as float32 holding the plan's int32 values dequantized")
        g.metadata = {k: v for k, v in g.metadata.items() if not k.startswith("mpcompile.")}
        g.metadata["mpcompile.artifact"] = "TensorRT-ready QDQ ONNX"
        return TensorRTGraph(g, self.tensor_map, self.notes)


def tensorrt_qdq_graph(plan: Graph) -> TensorRTGraph:
    """The TensorRT-ready QDQ graph of a legalized plan (see the module docstring)."""
    return _Builder(plan).build()


# ============================================================================ implicit INT8 (TensorRT 10)
def float_graph(plan: Graph) -> Graph:
    """The plan's float model for TensorRT 10's implicit INT8: precisions go to the builder, scales to the cache."""
    g = plan.copy()
    for t in g.tensors.values():
        t.quant = None
    for n in g.nodes:
        n.precision = None
        n.precision_reason = ""
    g.metadata = {k: v for k, v in g.metadata.items() if not k.startswith("mpcompile.")}
    return g


def cache_scales(plan: Graph) -> dict[str, np.float32]:
    """Tensor name → the plan's int8 scale, for a calibration cache, in topological order.

    A producer output the plan leaves unquantized because a Relu/Clip fuses onto it gets the
    activation's scale: TensorRT wants a range on every tensor of an INT8 layer, and clipping
    there at the activation's range changes no quantized output.
    """
    check_tensorrt_ready(plan)
    scales: dict[str, np.float32] = {}
    consumers = plan.consumers()
    producers = plan.producers()
    order = list(plan.inputs) + [o for n in plan.nodes for o in n.outputs if o]
    for name in order:
        t = plan.tensors.get(name)
        if t is None or name in scales:
            continue
        if t.quant is not None:
            scales[name] = np.float32(t.quant.scale)
            continue
        users = consumers.get(name, [])
        producer = producers.get(name)
        if (
            producer is not None
            and producer.op_type in ops.FUSING_PRODUCERS
            and producer.precision is not None
            and producer.precision.is_integer
            and len(users) == 1
            and users[0].op_type in ops.FUSABLE_ACTIVATIONS
        ):
            fused = plan.tensors[users[0].outputs[0]].quant
            if fused is not None:
                scales[name] = np.float32(fused.scale)
    return scales


def node_precisions(plan: Graph) -> dict[str, Precision]:
    """Node name → planned precision, for TensorRT 10 layer-precision constraints."""
    return {n.name: n.precision for n in plan.nodes if n.precision is not None}


def uses_precision(plan: Graph, precision: Precision) -> bool:
    return any(n.precision == precision for n in plan.nodes)
