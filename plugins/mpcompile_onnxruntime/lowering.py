"""Lower a plan to a QDQ ONNX model that ONNX Runtime's CPU provider turns into integer kernels.

Placement follows what ORT's QDQ fusion recognises (QLinearConv, QLinearMatMul, QGemm,
QLinearAdd…), and never changes a number of the plan:

* weights and biases are stored as integers (int8 per channel, int32 bias) feeding a
  DequantizeLinear with an explicit axis;
* every annotated activation gets QuantizeLinear → DequantizeLinear right after its
  producer;
* **activations are written as uint8** when the plan says int8: the same scale with the
  zero-point moved by +128 gives bit-identical dequantized values. ORT's x86 kernels are
  u8 × s8 (VNNI ``vpdpbusd``); its selectors refuse an int8 activation (``int8_allowed`` is
  false on x86), and its own s8 → u8 rewrite only converts a Q whose one consumer is a DQ.
  An int8 tensor read by several nodes (a LayerNorm output feeding Q, K, V and the
  residual) therefore kept every consumer in float, its weights dequantized at each run.
  Constants read as data (Add/Mul operands) follow the activations; weights stay int8, except
  on x86 CPUs without VNNI, where ORT's u8 × s8 kernels saturate (``mpcompile.backends.cpu``): there weights are
  written as uint8 with zero-point + 128 as well (option ``weights``), the same numbers again;
* an embedding table (a quantized constant read only by ``Gather``) is gathered as integers
  and the gathered rows are dequantized: dequantizing the whole table first cost a full
  pass over it at every run (30522 × 384 values for MiniLM);
* a Relu whose input the plan left unquantized (fused activation) gets the Relu's own
  Q/DQ on its producer's output too: with the Relu's zero-point at the bottom of the
  integer range, the quantizer itself clamps negatives, so ORT can fuse the producer
  into an integer kernel and the numbers do not change;
* a plan legalized with ``quantization=dynamic`` (``legalize.py``) carries
  ``DynamicQuantizeLinear → DequantizeLinear`` before its MatMuls; they are written as
  ``MatMulInteger → Cast → Mul``, the form ORT fuses into ``DynamicQuantizeMatMul``;
* a residual ``Add`` read only by a ``LayerNormalization`` is written as ``Sum``, which keeps
  ORT from fusing the pair into its (here much slower) ``SkipLayerNormalization``.

Every producer ORT can fuse is left fusable, also where a high-gain op after it (a Sigmoid at
1/256 behind a coarse Conv) multiplies the fused kernel's rare 1-LSB near-tie rounding into many
LSB at the outputs: that is within the contract kernel by kernel, and conformance certifies it so
(``mpcompile.conformance.kernels``). An earlier lowering kept such producers in float to be exact end
to end, at the cost of most of a detector's integer kernels.

After writing, ``fusion_report`` loads the artifact in ORT once and records what became an
integer kernel, what stayed float next to Q/DQ, and whether any weight is dequantized at run
time, with a speed note (an estimate; ``mpcompile bench`` measures).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mpcompile.backends.api import (
    Artifact,
    Graph,
    Node,
    Precision,
    QDQWriter,
    QType,
    QuantSpec,
    Tensor,
    ops,
    serde,
    uint8_storage,
)

#: ORT's x86 kernels want activations as uint8 (see the module docstring); the same numbers.
ort_storage = uint8_storage


def _same_numbers(spec: QuantSpec | None, table: QuantSpec) -> bool:
    """No spec, or the table's scale, zero-point and type (provenance aside)."""
    return spec is None or (
        spec.qtype == table.qtype
        and spec.axis == table.axis
        and np.array_equal(spec.scale, table.scale)
        and np.array_equal(spec.zero_point, table.zero_point)
    )


def _as_uint8(values: np.ndarray) -> np.ndarray:
    return (values.astype(np.int16) + 128).astype(np.uint8)


class QDQPlacer(QDQWriter):
    """ORT's storage choices on the shared placement (``QDQWriter.place``): hooks only."""

    #: Let ORT fuse ``Add → LayerNormalization`` into ``SkipLayerNormalization`` (see ``residual_sums``).
    skip_layernorm = False

    def prepare(self) -> None:
        self.dynamic_matmuls()
        self._consumers = self.g.consumers()
        self._gathers = self._integer_gathers(self._consumers)
        self._gathered = {out for nodes in self._gathers.values() for node in nodes for out in node.outputs}

    def place_constant(self, tensor: Tensor, spec: QuantSpec) -> None:
        if tensor.name in self._gathers:
            self.gather_integers(tensor, spec, self._gathers[tensor.name])
        elif self.weight_only(tensor.name):
            self.store_constant(tensor, self.weight_storage(tensor.name, spec))
        else:
            self.store_data_constant(tensor, spec)

    def activation_storage(self, name: str, spec: QuantSpec) -> QuantSpec | None:
        if name in self._gathered:
            return None  # dequantized from the integer rows by ``gather_integers``
        return ort_storage(spec)

    def finish(self) -> None:
        self.float_output_matmuls()
        if not self.skip_layernorm:
            self.residual_sums()

    def float_output_matmuls(self) -> None:
        """``DQ(x) → MatMul ← DQ(weight)`` with no Q after it (an output only float nodes read, legalized
        unquantized) written as ORT's ``MatMulIntegerToFloat``: the integer kernel that scales its int32
        sums to float. ORT forms it itself from a 3-D MatMul, but not from a 2-D one followed by a bias Add
        (measured: that MatMul stayed float, its weight dequantized at every run). The same numbers: exact
        int32 sums × (x scale · weight scale)."""
        g = self.g
        producers, consumers = g.producers(), g.consumers()
        rewritten = False
        for node in g.nodes:
            if node.op_type != "MatMul" or node.domain:
                continue
            if any(c.op_type == "QuantizeLinear" for c in consumers.get(node.outputs[0], [])):
                continue  # requantized: QLinearMatMul
            inputs = self._integer_matmul_inputs(node, producers)
            if inputs is None:
                continue
            node.op_type, node.domain, node.inputs = "MatMulIntegerToFloat", "com.microsoft", inputs
            rewritten = True
        if rewritten:
            g.opset_imports.setdefault("com.microsoft", 1)
            g.toposort()  # the Q/DQ nodes were appended: ``remove_unused`` walks the graph in order
            g.remove_unused()  # the weights' DequantizeLinears nobody reads any more
            self.reindex()

    def _integer_matmul_inputs(self, node: Node, producers: dict[str, Node]) -> list[str] | None:
        """``MatMulIntegerToFloat``'s inputs for ``node`` (a per-tensor quantized input, a constant 2-D weight
        quantized per tensor or per column), or None where it does not take them."""
        g = self.g
        x_dq, w_dq = (producers.get(i) for i in node.inputs)
        if any(dq is None or dq.op_type != "DequantizeLinear" or dq.domain or len(dq.inputs) < 3 for dq in (x_dq, w_dq)):
            return None
        quantized, x_scale, x_zero = x_dq.inputs
        w_int, w_scale, w_zero = w_dq.inputs
        scale, weight = g.tensors[x_scale], g.tensors[w_int]
        if not scale.is_constant or scale.value.size != 1 or not weight.is_constant or weight.value.ndim != 2:
            return None
        if int(w_dq.attrs.get("axis", 1)) not in (1, -1):
            return None
        return [quantized, w_int, x_scale, w_scale, x_zero, w_zero]

    def residual_sums(self) -> None:
        """A float ``Add`` of two computed tensors read only by a ``LayerNormalization`` is written as
        ``Sum`` (the same IEEE addition). ORT fuses ``Add → LayerNormalization`` into its
        ``SkipLayerNormalization``, which measured 4–6× slower than the two ops on this project's CPUs
        (ORT 1.32, AVX-512, [32, 32, 384]: 3.9 ms vs 0.68 ms on one thread): 12 of them cost a dynamic
        MiniLM 20 % at batch 32. It leaves ``Sum`` alone. Static QDQ artifacts rarely have the pattern
        (a Q/DQ sits between the residual and the norm)."""
        g = self.g
        consumers = g.consumers()
        constants = {t.name for t in g.initializers()}
        for node in g.nodes:
            if node.op_type != "Add" or node.domain or len(node.inputs) != 2 or any(i in constants for i in node.inputs):
                continue
            readers = consumers.get(node.outputs[0], [])
            if (len(readers) == 1 and readers[0].op_type == "LayerNormalization" and readers[0].inputs[0] == node.outputs[0]
                    and node.outputs[0] not in g.outputs):
                node.op_type = "Sum"

    # ------------------------------------------------------------------ what goes where
    def _integer_gathers(self, consumers: dict[str, list[Node]]) -> dict[str, list[Node]]:
        """Quantized per-tensor constants read only as the data of integer Gathers whose output has the
        table's quantization (the plan's scale-preserving rule) or none: table name -> the Gathers."""
        g = self.g
        found: dict[str, list[Node]] = {}
        for tensor in g.tensors.values():
            spec = tensor.quant
            if spec is None or not tensor.is_constant or spec.axis is not None or spec.qtype not in (QType.INT8, QType.UINT8):
                continue
            readers = consumers.get(tensor.name, [])
            if not readers or any(
                n.op_type != "Gather" or n.inputs[0] != tensor.name or tensor.name in n.inputs[1:] for n in readers
            ):
                continue
            if all(_same_numbers(g.tensors[n.outputs[0]].quant, spec) for n in readers):
                found[tensor.name] = readers
        return found

    # ------------------------------------------------------------------ placements
    def dynamic_matmuls(self) -> None:
        """``DynamicQuantizeLinear → DequantizeLinear → MatMul(·, int8 weight)`` (a plan legalized with
        ``quantization=dynamic``) written as ORT's ``quantize_dynamic`` writes it: ``MatMulInteger →
        Cast → Mul(scale_x × scale_w)``. ORT fuses that form (bias Add included) into
        ``DynamicQuantizeMatMul`` also for 2-D inputs, where a float ``MatMul + Add`` would first become a
        ``Gemm`` that no dynamic kernel takes. Same values up to float rounding: exact int32 sums scaled once."""
        g = self.g
        producers = g.producers()
        rewritten = False
        for node in list(g.nodes):
            if node.op_type != "MatMul":
                continue
            dq = producers.get(node.inputs[0])
            dql = producers.get(dq.inputs[0]) if dq is not None and dq.op_type == "DequantizeLinear" else None
            weight = g.tensors.get(node.inputs[1])
            if (
                dql is None
                or dql.op_type != "DynamicQuantizeLinear"
                or list(dq.inputs) != list(dql.outputs)
                or weight is None
                or not weight.is_constant
                or weight.quant is None
                or weight.quant.qtype != QType.INT8
                or weight.quant.axis not in (None, weight.value.ndim - 1)
            ):
                continue
            spec = self.weight_storage(weight.name, weight.quant)
            quantized, x_scale, x_zero = dql.outputs
            out = node.outputs[0]
            shape = g.tensors[out].shape
            w_int = g.add_tensor(Tensor(g.unique_name(f"{weight.name}_quantized"), value=spec.quantize(weight.value)))
            w_scale, w_zero = self.params(weight.name, spec)
            accum = g.add_tensor(Tensor(g.unique_name(f"{out}_int32"), np.int32, shape))
            as_float = g.add_tensor(Tensor(g.unique_name(f"{out}_int32_float"), np.float32, shape))
            scale = g.add_tensor(Tensor(g.unique_name(f"{out}_scale"), np.float32, None))
            index = g.nodes.index(node)
            g.nodes[index : index + 1] = [
                Node(g.unique_name(f"{node.name}_MatMulInteger"), "MatMulInteger", [quantized, w_int.name, x_zero, w_zero], [accum.name]),
                Node(g.unique_name(f"{node.name}_Cast"), "Cast", [accum.name], [as_float.name], {"to": 1}),
                Node(g.unique_name(f"{node.name}_scales"), "Mul", [x_scale, w_scale], [scale.name]),
                Node(g.unique_name(f"{node.name}_scale"), "Mul", [as_float.name, scale.name], [out]),
            ]
            rewritten = True
        if rewritten:
            g.remove_unused()  # DequantizeLinears and float weights nobody reads any more
            self.reindex()

    def store_data_constant(self, tensor: Tensor, spec: QuantSpec) -> None:
        """A constant read as data (an Add or Mul operand): stored like the activations it meets (uint8)."""
        if spec.qtype != QType.INT8:
            self.store_constant(tensor, spec)
            return
        g = self.g
        assert tensor.value is not None
        stored = g.add_tensor(Tensor(g.unique_name(f"{tensor.name}_quantized"), value=_as_uint8(spec.quantize(tensor.value))))
        storage = ort_storage(spec)
        scale, zero = self.params(tensor.name, storage)
        g.tensors[tensor.name] = Tensor(tensor.name, np.float32, tensor.shape)
        self.node("DequantizeLinear", [stored.name, scale, zero], tensor.name, np.float32, tensor.shape, **self.attrs(storage))

    def gather_integers(self, tensor: Tensor, spec: QuantSpec, gathers: list[Node]) -> None:
        """Integer table → Gather → DequantizeLinear of the gathered rows (the output keeps its name).

        Gathering dequantized rows or dequantizing gathered rows gives the same values; the output's
        own Q/DQ (same spec) would round-trip them unchanged, so none is written.
        """
        g = self.g
        assert tensor.value is not None
        storage = ort_storage(spec)
        q = spec.quantize(tensor.value)
        stored = g.add_tensor(Tensor(g.unique_name(f"{tensor.name}_quantized"), value=_as_uint8(q) if storage is not spec else q))
        scale, zero = self.params(tensor.name, storage)
        del g.tensors[tensor.name]
        for node in gathers:
            out = node.outputs[0]
            shape = g.tensors[out].shape
            gathered = g.unique_name(f"{out}_quantized")
            g.add_tensor(Tensor(gathered, storage.qtype.numpy_dtype, shape))
            node.inputs = [stored.name, *node.inputs[1:]]
            node.outputs = [gathered]
            self._producers[gathered] = node
            self.node("DequantizeLinear", [gathered, scale, zero], out, np.float32, shape, **self.attrs(storage))


def lower_to_qdq(plan: Graph, *, skip_layernorm: bool = False, uint8_weights: bool = False) -> tuple[Graph, dict[str, str]]:
    """The QDQ graph and its tensor map."""
    placer = QDQPlacer(plan)
    placer.skip_layernorm = skip_layernorm
    placer.uint8_weights = uint8_weights
    graph = placer.place()
    return graph, placer.tensor_map


def artifact_kind(plan: Graph) -> str:
    """What the file holds, for its name and format label: ``qdq`` with any quantized tensor, else the
    widest float precision the plan asks for (``fp16``, ``bf16``, ``fp32``): a float plan is no QDQ model."""
    if plan.quantized_tensors():
        return "qdq"
    precisions = {node.precision for node in plan.nodes}
    for precision in (Precision.FP16, Precision.BF16):
        if precision in precisions:
            return precision.value.lower()
    return "fp32"


def write_qdq_model(plan: Graph, out_dir: Path, stem: str, version: str, *, fusion: bool = True,
                    skip_layernorm: bool = False, uint8_weights: bool = False) -> Artifact:
    graph, tensor_map = lower_to_qdq(plan, skip_layernorm=skip_layernorm, uint8_weights=uint8_weights)
    kind = artifact_kind(plan)
    path = Path(out_dir) / f"{stem}.{kind}.onnx"
    serde.save_onnx(graph, path)
    metadata = {"onnxruntime": version, "tensor_map": tensor_map, "format": "QDQ ONNX" if kind == "qdq" else f"{kind.upper()} ONNX",
                "weights": "uint8 (u8 x u8 kernels: exact on x86 CPUs without VNNI)" if uint8_weights else "int8"}
    if fusion:
        report = fusion_report(path, plan)
        metadata["ort_fusion"] = report
        metadata["speed_note"] = report["speed_note"]
        if report["runtime_dequantized_weights"] or report["small_convs"]:
            # said at compile time, without --bench: the two causes measured to make INT8 slower than FP32 here
            metadata["speed_warning"] = report["speed_note"]
    return Artifact("onnxruntime", path, [path], metadata=metadata)


# ---------------------------------------------------------------------------- what ORT made of it
#: Kernels of ORT's CPU provider that compute in integers (what its QDQ and dynamic fusions produce).
INTEGER_KERNELS = frozenset({
    "QLinearConv", "QLinearMatMul", "QGemm", "QLinearAdd", "QLinearMul", "QLinearSigmoid", "QLinearSoftmax",
    "QLinearConcat", "QLinearAveragePool", "QLinearGlobalAveragePool", "QLinearLeakyRelu", "QLinearReduceMean",
    "QLinearWhere", "QLinearConvTranspose", "DynamicQuantizeMatMul", "MatMulIntegerToFloat", "MatMulInteger",
    "ConvInteger", "NhwcMaxPool", "QAttention", "QEmbedLayerNormalization",
})
#: Float kernels that take a weight at input 1 (ORT's fused variants included).
FLOAT_WEIGHTED = frozenset({"Conv", "FusedConv", "NchwcConv", "ConvTranspose", "MatMul", "FusedMatMul", "Gemm", "FusedGemm"})
#: Moving or shaping data only: not counted as float compute.
DATA_MOVEMENT = ops.SCALE_PRESERVING | ops.SHAPE_OPS | {"Concat", "ReorderInput", "ReorderOutput", "Unsqueeze"}
#: Measured on this project's x86 machines (AVX-512 VNNI, ORT 1.32, 1 thread, benchmarks/README.md):
#: QLinearConv vs float Conv, 3×3, fp32/int8 time 0.22 (K = 9), 0.31 (18), 0.35–0.82 (27), 0.75 (36),
#: 1.24 (72), 2.25 (144), 2.83 (288), with K = input channels per group × kernel area.
SMALL_CONV_K = 64


def _small_convs(plan: Graph) -> list[tuple[str, int]]:
    found = []
    for node in plan.nodes:
        if node.op_type != "Conv" or node.precision is None or not node.precision.is_integer:
            continue
        weight = plan.tensors.get(node.inputs[1])
        if weight is None or weight.value is None or weight.value.ndim < 3:
            continue
        k = int(np.prod(weight.value.shape[1:]))
        if k < SMALL_CONV_K:
            found.append((node.name, k))
    return found


def fusion_report(path: Path, plan: Graph) -> dict:
    """Load the artifact in ORT (CPU provider, default optimizations) and say what ran how.

    ``integer_kernels``: op counts of integer kernels; ``float_compute``: float compute nodes that
    read a DequantizeLinear or feed a QuantizeLinear; ``runtime_dequantized_weights``: weights that a
    float node dequantizes at every run (the slow case); ``small_convs``: integer Convs with a small
    reduction (K = channels per group × kernel area), measured slower than ORT's float Conv.
    """
    import tempfile

    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    with tempfile.TemporaryDirectory(prefix="mpcompile-ort-fusion-") as tmp:
        optimized_path = Path(tmp) / "optimized.onnx"
        options.optimized_model_filepath = str(optimized_path)
        ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        optimized = serde.read_graph(optimized_path)
    producers = optimized.producers()
    consumers = optimized.consumers()
    integer: dict[str, int] = {}
    islands: dict[str, int] = {}
    slow_weights: list[str] = []
    slow_values = 0
    for node in optimized.nodes:
        if node.op_type in INTEGER_KERNELS:
            integer[node.op_type] = integer.get(node.op_type, 0) + 1
            continue
        if node.op_type in ("QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear") or node.op_type in DATA_MOVEMENT:
            continue
        reads_dq = any(getattr(producers.get(i), "op_type", None) == "DequantizeLinear" for i in node.inputs if i)
        feeds_q = any(c.op_type == "QuantizeLinear" for o in node.outputs for c in consumers.get(o, []))
        if reads_dq or feeds_q:
            islands[node.op_type] = islands.get(node.op_type, 0) + 1
        if node.op_type in FLOAT_WEIGHTED and len(node.inputs) > 1:
            dq = producers.get(node.inputs[1])
            source = optimized.tensors.get(dq.inputs[0]) if dq is not None and dq.op_type == "DequantizeLinear" else None
            if source is not None and source.is_constant:
                slow_weights.append(node.name)
                slow_values += int(source.value.size)
    counts = optimized.op_counts()
    small = _small_convs(plan)
    weighted_plan = sum(1 for n in plan.nodes if n.op_type in ops.WEIGHTED and n.precision is not None and n.precision.is_integer)
    report = {
        "integer_kernels": dict(sorted(integer.items())),
        "float_compute_next_to_qdq": dict(sorted(islands.items(), key=lambda kv: (-kv[1], kv[0]))),
        "quantize_linear": counts.get("QuantizeLinear", 0),
        "dequantize_linear": counts.get("DequantizeLinear", 0),
        "integer_weighted_nodes_in_plan": weighted_plan,
        "runtime_dequantized_weights": slow_weights,
        "small_convs": [{"node": name, "k": k} for name, k in small],
        "optimized_nodes": len(optimized.nodes),
    }
    report["speed_note"] = speed_note(report)
    return report


def speed_note(report: dict) -> str:
    """One honest sentence or three about what to expect, from the fusion report (an estimate, not a measurement)."""
    parts: list[str] = []
    slow = report["runtime_dequantized_weights"]
    if slow:
        parts.append(f"likely SLOWER than FP32: {len(slow)} weighted node(s) stay float and dequantize their weights at "
                     f"every run ({', '.join(slow[:3])}{', …' if len(slow) > 3 else ''})")
    small = report["small_convs"]
    if small:
        names = ", ".join(f"{s['node']} (K={s['k']})" for s in small[:3])
        parts.append(f"integer Conv with a small reduction is slower than ORT's float Conv on x86 (measured 0.2–0.8× for "
                     f"K ≤ 36): {names}; a small CNN made of such layers can be slower than FP32")
    fused = sum(report["integer_kernels"].values())
    islands = report["float_compute_next_to_qdq"]
    if islands:
        listed = ", ".join(f"{op} ×{n}" for op, n in list(islands.items())[:5])
        parts.append(f"{sum(islands.values())} float node(s) run between DequantizeLinear/QuantizeLinear ({listed}); "
                     f"each crossing costs a dequantize and a quantize pass")
    if not slow:
        parts.insert(0, f"{fused} integer kernel(s) after ORT's fusion, no weight dequantized at run time")
    parts.append("an estimate from the fused graph: measure with `mpcompile bench ARTIFACT --baseline MODEL.onnx`")
    return "; ".join(parts)
