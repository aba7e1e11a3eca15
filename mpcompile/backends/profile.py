"""Per-layer cost on a backend, in the plan's terms: microseconds per run for each plan node.

A backend's profiler names what it executed, not the plan: ONNX Runtime's fused ``QLinearConv``
is ``Conv@5_token_19`` (the plan's ``Conv@5`` after its layout transformation), OpenVINO's is
``/conv1/Conv/WithoutBiases`` and lists the FakeQuantize it absorbed in ``originalLayersNames``;
both run layers that no plan node stands for (the lowering's QuantizeLinear/DequantizeLinear, the
runtime's own Transpose or Reorder). A runner that can profile (``Runner.profile``) hands the layers
it executed and their times to ``attribute``, which gives every layer to one plan node in two steps,
the same rule for every backend:

1. **the source graph** (the ONNX file the backend compiled, as the lowering wrote it): its nodes that
   are plan nodes own themselves; a node the lowering inserted (Q/DQ, OpenVINO's input quantizer) or the
   plan folded away (a BatchNormalization, when the source is the FP32 model) belongs to a plan node next
   to it (``owners``; a folded node to its producer first);
2. **the executed layers**: a layer whose name (or one of its ``origins``) is a plan node's is that node;
   else one that reads a constant of the source graph (a weight, under its own name) belongs to the plan
   node reading it; else its name or an origin names a source node (with a suffix the runtime appended
   after ``_``, ``/`` or ``:``) or a source tensor (OpenVINO names a graph output's layer by the tensor);
   a layer that names none belongs to a plan node next to it in the executed graph, by the same rule.

Next to means (``owners``): a quantizer (and a layout reorder back to the plan's layout) belongs to the
node it comes from, since a fused kernel requantizes its own output; anything else to the node it
feeds, where the value is read (a weight's DequantizeLinear, the dequantize before a float node, a
layout change before a convolution); the other direction when that one finds no plan node. A value
read by several plan nodes is given to the first of them. A layer that reaches no plan node at all
is reported in ``LayerProfile.unmapped``.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from collections.abc import Collection, Mapping, Sequence
from typing import Any

import numpy as np

from mpcompile.errors import BackendError
from mpcompile.ir import ops
from mpcompile.ir.graph import Graph, Node

#: nodes a QDQ lowering inserts: never plan nodes
QDQ_OPS = frozenset({"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear"})
#: executed layers that quantize: a QuantizeLinear, OpenVINO's FakeQuantize (one Q→DQ pair of the source)
QUANTIZERS = frozenset({"QuantizeLinear", "DynamicQuantizeLinear", "FakeQuantize"})
#: layers that belong to the node they come from first (a requantization, a reorder back to NCHW)
UPSTREAM_FIRST = QUANTIZERS | {"ReorderOutput"}
#: executed layer types that are a weighted kernel (a runtime's names): one named after the bias Add or activation fused
#: into it (OpenVINO's ``FullyConnected`` named ``Add@43`` for ``MatMul@0 → Add@43``) is the weighted node's cost
WEIGHTED_KERNELS = frozenset({"Conv", "Convolution", "FullyConnected", "MatMul", "Gemm", "FusedConv", "FusedGemm",
                              "FusedMatMul", "QLinearConv", "QLinearMatMul", "QGemm", "ConvolutionBackpropData"})
#: what a runtime puts between a source node's name and its own suffix
SEPARATORS = "_/:"


class ProfilingUnavailable(BackendError):
    """The backend (or this runner) has no per-layer profiler: time whole plans instead."""


@dataclasses.dataclass(frozen=True)
class Layer:
    """One layer a backend executed (or would have: a layer fused away still links its neighbours)."""

    name: str
    op_type: str
    inputs: tuple[str, ...] = ()
    outputs: tuple[str, ...] = ()
    #: source-graph names this layer was made from, besides its own name (OpenVINO's ``originalLayersNames``)
    origins: tuple[str, ...] = ()


@dataclasses.dataclass
class LayerProfile:
    """Microseconds per run of each plan node on one backend (Q/DQ and runtime layers included, see module doc)."""

    backend: str
    artifact: str
    #: timed runs (after warm-up) the per-layer figures are medians of
    repeats: int
    #: plan node -> µs per run
    nodes: dict[str, float]
    #: executed layer that no plan node took -> µs per run
    unmapped: dict[str, float] = dataclasses.field(default_factory=dict)
    #: executed layer -> the plan node it was given to
    layers: dict[str, str] = dataclasses.field(default_factory=dict)

    @property
    def total_us(self) -> float:
        return float(sum(self.nodes.values()) + sum(self.unmapped.values()))

    def cost_of(self, nodes: Collection[str]) -> float:
        """µs per run of these plan nodes together (a plan node that ran no layer costs 0)."""
        return float(sum(self.nodes.get(n, 0.0) for n in nodes))

    def to_dict(self) -> dict[str, Any]:
        return {"backend": self.backend, "artifact": self.artifact, "repeats": self.repeats,
                "total_us": round(self.total_us, 3), "nodes": {k: round(v, 3) for k, v in self.nodes.items()},
                "unmapped": {k: round(v, 3) for k, v in self.unmapped.items()}}


def per_run(samples: Mapping[str, Sequence[float]]) -> dict[str, float]:
    """One figure per layer from its per-run times: the median (a shared machine's outliers do not count)."""
    return {name: float(np.median(values)) for name, values in samples.items() if len(values)}


def owners(layers: Sequence[Layer], direct: Mapping[str, str], upstream_first: Collection[str] = ()) -> dict[str, str]:
    """The plan node of each layer: ``direct`` where given, else a plan node next to it (module doc).

    ``upstream_first``: more layer names that belong to the node they come from first (besides ``UPSTREAM_FIRST``
    by op type)."""
    producers: dict[str, list[Layer]] = defaultdict(list)
    consumers: dict[str, list[Layer]] = defaultdict(list)
    for layer in layers:
        for name in layer.outputs:
            producers[name].append(layer)
        for name in layer.inputs:
            consumers[name].append(layer)
    order = {layer.name: i for i, layer in enumerate(layers)}

    def reach(start: Layer, down: bool) -> list[str]:
        """Plan nodes of the nearest owned layers in one direction, walking through unowned ones."""
        found: dict[str, int] = {}
        seen = {start.name}
        frontier = [start]
        while frontier:
            step = []
            for layer in frontier:
                for tensor in (layer.outputs if down else layer.inputs):
                    for other in (consumers if down else producers).get(tensor, ()):
                        if other.name in seen:
                            continue
                        seen.add(other.name)
                        if other.name in direct:
                            found.setdefault(direct[other.name], order[other.name])
                        else:
                            step.append(other)
            frontier = step
        return sorted(found, key=found.__getitem__)

    result = dict(direct)
    for layer in layers:
        if layer.name in result:
            continue
        directions = (False, True) if layer.op_type in UPSTREAM_FIRST or layer.name in upstream_first else (True, False)
        for down in directions:
            near = reach(layer, down)
            if near:
                result[layer.name] = near[0]
                break
    return result


def source_owners(source: Graph, plan_nodes: Collection[str] | None = None) -> dict[str, str]:
    """Source node -> plan node. ``plan_nodes``: the plan's node names (None: every node but a Q/DQ is one)."""
    layers = [Layer(n.name, n.op_type, tuple(i for i in n.inputs if i), tuple(o for o in n.outputs if o))
              for n in source.nodes]
    if plan_nodes is None:
        direct = {n.name: n.name for n in source.nodes if n.op_type not in QDQ_OPS}
        return owners(layers, direct)
    wanted = set(plan_nodes)
    direct = {n.name: n.name for n in source.nodes if n.name in wanted}
    # A node of the source that is neither a plan node nor a Q/DQ was folded into its producer by the plan
    # (a BatchNormalization after a Conv, when the source is the FP32 model) or inserted before a graph input
    # (which has no producer: it then goes to the node it feeds).
    folded = {n.name for n in source.nodes if n.name not in wanted and n.op_type not in QDQ_OPS}
    return owners(layers, direct, folded)


def _resolve(name: str, nodes: Collection[str], tensors: Mapping[str, str]) -> str | None:
    """The source node ``name`` stands for: itself, the producer of a tensor so named, or the longest source node
    (or tensor) name it starts with followed by a separator (a runtime's suffix: ``_token_19``, ``/WithoutBiases``)."""
    if name in nodes:
        return name
    if name in tensors:
        return tensors[name]
    for i in range(len(name) - 1, 0, -1):
        if name[i] in SEPARATORS and name[:i] in nodes:
            return name[:i]
        if name[i] in SEPARATORS and name[:i] in tensors:  # ORT's NCHWc kernels: ``<output tensor>_nchwc``
            return tensors[name[:i]]
    return None


def _fused_producer(node: Node | None, layer: Layer, producers: Mapping[str, Node], own: Collection[str]) -> str | None:
    """A layer named after an activation's output that is not that activation (ORT's NCHWc ``Conv`` with
    ``activation=Relu`` or ``HardSigmoid``, named ``<the activation's output>_nchwc``) is the producer of the
    same op fused with it: that producer's plan node."""
    if node is None or layer.op_type == node.op_type or not node.inputs:
        return None
    producer = producers.get(node.inputs[0])
    while producer is not None and producer.name not in own and producer.inputs:  # a BatchNormalization the plan folded
        producer = producers.get(producer.inputs[0])
    return producer.name if producer is not None and producer.op_type == layer.op_type else None


def _weighted_producer(node: Node, layer: Layer, producers: Mapping[str, Node], own: Collection[str]) -> str | None:
    """A weighted kernel named after the unweighted plan node fused into it (``WEIGHTED_KERNELS``): the weighted
    plan node it computes, found up the chain of its first input."""
    if layer.op_type not in WEIGHTED_KERNELS or node.op_type in ops.WEIGHTED or not node.inputs:
        return None
    producer = producers.get(node.inputs[0])
    while producer is not None and producer.name not in own and producer.inputs:
        producer = producers.get(producer.inputs[0])
    return producer.name if producer is not None and producer.op_type in ops.WEIGHTED else None


def _quantizer_of_pair(node: Node, layer: Layer, producers: Mapping[str, Node]) -> str:
    """A quantizing layer named after a DequantizeLinear (OpenVINO's FakeQuantize ``<x>_DequantizeLinear``) is the
    whole Q→DQ pair, a requantization of its producer's output: the pair's QuantizeLinear names it."""
    if layer.op_type in QUANTIZERS and node.op_type == "DequantizeLinear" and node.inputs:
        quantizer = producers.get(node.inputs[0])
        if quantizer is not None and quantizer.op_type == "QuantizeLinear":
            return quantizer.name
    return node.name


def attribute(executed: Sequence[Layer], times_us: Mapping[str, float], source: Graph,
              plan_nodes: Collection[str] | None = None, *, backend: str, artifact: str, repeats: int) -> LayerProfile:
    """Give the ``executed`` layers' ``times_us`` (µs per run, by layer name) to the plan nodes (module doc).

    ``source`` is the ONNX graph the backend compiled; ``plan_nodes`` the plan's node names (None: every source
    node but a Q/DQ)."""
    by_source = source_owners(source, plan_nodes)
    nodes = {n.name for n in source.nodes if n.name}
    tensors = {out: n.name for n in source.nodes for out in n.outputs if out}
    own = {name for name, owner in by_source.items() if name == owner}
    source_nodes = {n.name: n for n in source.nodes}
    producers = source.producers()
    readers: dict[str, set[str]] = defaultdict(set)
    for n in source.nodes:
        for i in n.inputs:
            if i in source.tensors and source.tensors[i].is_constant and n.name in by_source:
                readers[i].add(by_source[n.name])
    weights = {name: next(iter(owned)) for name, owned in readers.items() if len(owned) == 1}
    direct: dict[str, str] = {}
    for layer in executed:
        names = [c for c in (layer.name, *layer.origins) if c]
        exact = [c for c in names if c in own]
        read = [weights[i] for i in layer.inputs if i in weights]
        resolved = [r for r in (_resolve(c, nodes, tensors) for c in names) if r in by_source]
        if exact:
            direct[layer.name] = _weighted_producer(source_nodes[exact[0]], layer, producers, own) or exact[0]
        elif read:
            # a fused kernel named after its output (ORT's ``<tensor>_nchwc``, which after a Conv+Relu fusion is the
            # Relu's): the weights it reads name its compute node
            direct[layer.name] = read[0]
        elif resolved:
            # a fused layer lists its compute node and the Q/DQ it absorbed: the compute node names it
            first = next((r for r in resolved if r in own), resolved[0])
            direct[layer.name] = (_fused_producer(source_nodes.get(first), layer, producers, own)
                                  or by_source[_quantizer_of_pair(source_nodes[first], layer, producers)])
    owner = owners(executed, direct)
    per_node: dict[str, float] = {}
    unmapped: dict[str, float] = {}
    for name, us in times_us.items():
        if name in owner:
            per_node[owner[name]] = per_node.get(owner[name], 0.0) + float(us)
        else:
            unmapped[name] = unmapped.get(name, 0.0) + float(us)
    return LayerProfile(backend, artifact, repeats, per_node, unmapped, {k: v for k, v in owner.items() if k in times_us})


__all__ = ["QDQ_OPS", "QUANTIZERS", "Layer", "LayerProfile", "ProfilingUnavailable", "attribute", "owners", "per_run", "source_owners"]
