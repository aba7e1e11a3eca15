"""The fake-quant reference: the plan itself, evaluated in float.

Every annotated activation passes through QuantizeLinear → DequantizeLinear with its
spec, every annotated constant is replaced by its quantize-dequantized value, and nodes
planned in FP16/BF16 see their inputs and outputs rounded to that format. This is what
the plan *means*; each backend's artifact is compared against it.

Deliberately independent of any backend's placement code (the ORT backend places Q/DQ
differently: integer initializers, fused activations), so that a placement bug cannot
hide in both.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np

from mpcompile.errors import MpcompileError
from mpcompile.ir import serde
from mpcompile.ir.graph import Graph, Node, Tensor
from mpcompile.ir.quant import QuantSpec
from mpcompile.ir.types import Precision, QType

_FLOAT_CAST = {Precision.FP16: 10, Precision.BF16: 16}  # TensorProto.FLOAT16, BFLOAT16


class FakeQuantGraph:
    """A float graph that computes the plan's numbers, and the name of every IR tensor inside it."""

    def __init__(self, plan: Graph, *, float_reference: bool = False) -> None:
        self.graph = plan.copy()
        self.float_reference = float_reference
        #: IR tensor name -> name in ``graph`` holding its (fake-quantized) value
        self.names: dict[str, str] = {t.name: t.name for t in self.graph.tensors.values() if not t.is_constant}
        if not float_reference:
            self._emulate_float_precisions()
            self._fake_quantize()
        for t in self.graph.tensors.values():
            t.quant = None
        for n in self.graph.nodes:
            n.precision = None

    # ------------------------------------------------------------------ construction
    def _add_node(self, op: str, inputs: list[str], output: str, dtype: np.dtype, shape, domain: str = "", **attrs) -> None:  # noqa: ANN001
        g = self.graph
        if output not in g.tensors:
            g.add_tensor(Tensor(output, dtype, shape))
        g.nodes.append(Node(g.unique_name(f"ref_{op}_{output}"), op, inputs, [output], attrs, domain=domain))

    def _qdq(self, source: str, spec: QuantSpec, target: str, shape) -> None:  # noqa: ANN001
        g = self.graph
        scale = g.unique_name(f"{source}__ref_scale")
        zp = g.unique_name(f"{source}__ref_zp")
        g.add_tensor(Tensor(scale, value=np.array(spec.scale, dtype=np.float32)))
        g.add_tensor(Tensor(zp, value=np.array(spec.zero_point)))
        qname = g.unique_name(f"{source}__ref_q")
        # int16 Q/DQ exist in the standard domain only from opset 21; ORT's contrib ops have them earlier.
        domain = "com.microsoft" if spec.qtype == QType.INT16 else ""
        if domain:
            g.opset_imports.setdefault("com.microsoft", 1)
        axis = {} if spec.axis is None else {"axis": spec.axis}
        self._add_node("QuantizeLinear", [source, scale, zp], qname, spec.qtype.numpy_dtype, shape, domain, **axis)
        self._add_node("DequantizeLinear", [qname, scale, zp], target, np.dtype(np.float32), shape, domain, **axis)

    def _fake_quantize(self) -> None:
        g = self.graph
        producers = g.producers()  # once: each tensor is rewired at most once below
        for tensor in list(g.tensors.values()):
            spec = tensor.quant
            if spec is None:
                continue
            if tensor.is_constant:
                tensor.value = spec.fake_quantize(tensor.value).astype(tensor.value.dtype)
                continue
            if tensor.name in g.inputs:
                fq = g.unique_name(f"{tensor.name}__ref_fq")
                g.replace_uses(tensor.name, fq)
                g.outputs = [tensor.name if o == fq else o for o in g.outputs]
                self._qdq(tensor.name, spec, fq, tensor.shape)
                self.names[tensor.name] = fq
            else:
                raw = g.unique_name(f"{tensor.name}__ref_raw")
                producer = producers.get(tensor.name)
                if producer is None:
                    continue
                producer.outputs = [raw if o == tensor.name else o for o in producer.outputs]
                g.add_tensor(Tensor(raw, tensor.dtype, tensor.shape))
                self._qdq(raw, spec, tensor.name, tensor.shape)
        g.toposort()

    def _emulate_float_precisions(self) -> None:
        """FP16/BF16 nodes: round their float inputs and outputs through the format (Cast there and back)."""
        g = self.graph
        for node in list(g.nodes):
            to = _FLOAT_CAST.get(node.precision)  # type: ignore[arg-type]
            if to is None:
                continue
            for i, name in enumerate(node.inputs):
                t = g.tensors.get(name)
                if not name or t is None or not t.is_float:
                    continue
                if t.is_constant:
                    half = np.float16 if node.precision == Precision.FP16 else None
                    if half is not None:
                        rounded = g.unique_name(f"{name}__ref_fp16")
                        g.add_tensor(Tensor(rounded, value=t.value.astype(half).astype(t.value.dtype)))
                        node.inputs[i] = rounded
                        continue
                lo = g.unique_name(f"{name}__ref_{node.precision.value}")
                back = g.unique_name(f"{name}__ref_{node.precision.value}_f32")
                self._add_node("Cast", [name], lo, None, t.shape, to=to)
                self._add_node("Cast", [lo], back, np.dtype(np.float32), t.shape, to=1)
                node.inputs[i] = back
            for j, name in enumerate(node.outputs):
                t = g.tensors.get(name)
                if not name or t is None or not t.is_float:
                    continue
                raw = g.unique_name(f"{name}__ref_wide")
                node.outputs[j] = raw
                g.add_tensor(Tensor(raw, t.dtype, t.shape))
                lo = g.unique_name(f"{name}__ref_{node.precision.value}_out")
                self._add_node("Cast", [raw], lo, None, t.shape, to=to)
                g.nodes.append(Node(g.unique_name(f"ref_Cast_{name}"), "Cast", [lo], [name], {"to": 1}))
        g.toposort()


class ReferenceRunner:
    """Evaluates a plan's fake-quant graph: ONNX Runtime with every optimization off, or onnx.reference."""

    def __init__(self, plan: Graph, *, engine: str = "onnxruntime", float_reference: bool = False) -> None:
        self.fq = FakeQuantGraph(plan, float_reference=float_reference)
        self.engine = engine
        self.plan = plan
        self._session = None
        self._evaluator = None
        self._exposed: tuple[str, ...] | None = None

    def _prepare(self, intermediates: tuple[str, ...]) -> None:
        if self._exposed == intermediates:
            return
        graph = self.fq.graph
        wanted = [self.fq.names.get(n, n) for n in intermediates]
        if self.engine == "onnxruntime":
            from mpcompile.ortsession import make_session

            self._session = make_session(graph, wanted, optimize=False)
        elif self.engine == "onnx-reference":
            from mpcompile.reference.onnx_reference import evaluator

            exposed = graph.copy()
            exposed.outputs = list(exposed.outputs) + [w for w in wanted if w not in exposed.outputs]
            self._evaluator = evaluator(serde.to_onnx(exposed))
        else:
            raise MpcompileError(f"unknown reference engine {self.engine!r}; use onnxruntime or onnx-reference")
        self._exposed = intermediates

    def run(self, feeds: Mapping[str, np.ndarray], intermediates: Iterable[str] = ()) -> dict[str, np.ndarray]:
        inter = tuple(intermediates)
        self._prepare(inter)
        if self.engine == "onnxruntime":
            names = [o.name for o in self._session.get_outputs()]  # type: ignore[union-attr]
            values = self._session.run(names, dict(feeds))  # type: ignore[union-attr]
        else:
            names = list(self._evaluator.output_names)  # type: ignore[union-attr]
            values = self._evaluator.run(None, dict(feeds))  # type: ignore[union-attr]
        by_name = dict(zip(names, values))
        result = {o: by_name[o] for o in self.plan.outputs}
        for name in inter:
            key = self.fq.names.get(name, name)
            if key in by_name:
                result[name] = by_name[key]
        return result
