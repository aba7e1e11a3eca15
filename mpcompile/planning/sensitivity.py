"""Per-layer sensitivity: how much error quantizing each node causes.

Two measurements, both on real data:

* ``local`` (default): the FP32 model runs once and every activation is cached; then
  each integer node runs alone on its cached FP32 inputs, once in float and once with
  the plan's fake quantization (inputs, weights, output). The SQNR between the two is
  that node's own contribution. Cost: one model run plus one tiny single-node run per
  layer, so it scales to hundreds of layers.
* ``global``: for each node, the whole model runs with only that node kept in FP32
  (everything else as planned); the gain in the output metric is the node's
  contribution at the output. Cost: one full reference run per layer.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

from mpcompile.calibration.collect import observed_tensors
from mpcompile.data import Dataset
from mpcompile.execution import Executor, SequentialExecutor
from mpcompile.ir.cost import node_cost
from mpcompile.ir.graph import Graph, Node, Tensor
from mpcompile.ortsession import make_session
from mpcompile.reference.metrics import sqnr_db


@dataclasses.dataclass
class LayerSensitivity:
    node: str
    op_type: str
    sqnr_db: float  # local: node output SQNR; global: output metric gain when kept FP32
    macs: int
    weight_bytes: int

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "sqnr_db": None if math.isinf(self.sqnr_db) else round(self.sqnr_db, 3)}


def _single_node_graph(plan: Graph, node: Node, quantized: bool) -> tuple[Graph, list[str]]:
    g = Graph(f"{plan.name}:{node.name}", opset_imports=plan.opset_imports)
    inputs = []
    for name in node.inputs:
        if not name or name in g.tensors:
            continue
        t = plan.tensors[name]
        if t.is_constant:
            value = t.quant.fake_quantize(t.value).astype(t.value.dtype) if quantized and t.quant is not None else t.value
            g.tensors[name] = Tensor(name, value=value)
        else:
            g.tensors[name] = Tensor(name, t.dtype, None)
            inputs.append(name)
    for name in node.outputs:
        if name:
            g.tensors[name] = Tensor(name, plan.tensors[name].dtype, None)
    g.nodes = [Node(node.name, node.op_type, node.inputs, node.outputs, node.attrs, node.domain)]
    g.inputs = inputs
    g.outputs = [o for o in node.outputs if o][:1]
    return g, inputs


def local_sensitivity(plan: Graph, dataset: Dataset, *, samples: int = 32, batch_size: int = 8,
                      progress: bool = False, executor: Executor | None = None) -> list[LayerSensitivity]:
    """SQNR of each integer node's output when it alone is fake-quantized, from cached FP32 activations.

    The FP32 model runs once here; the per-layer runs are tasks of ``executor`` (default:
    sequential), which receive the plan and the cached activations once per worker. The
    numbers do not depend on the executor or on the number of workers.
    """
    from mpcompile.progress import progress_bar

    names = observed_tensors(plan)
    session = make_session(plan, names)
    out_names = [o.name for o in session.get_outputs()]
    cache: dict[str, list[np.ndarray]] = {n: [] for n in out_names}
    for feeds in dataset.batches(batch_size, limit=samples):
        for name, value in zip(out_names, session.run(out_names, feeds)):
            cache[name].append(value)
        for name, value in feeds.items():  # graph inputs that are not exposed outputs
            if name not in out_names:
                cache.setdefault(name, []).append(value)
    del session
    layers = [i for i, n in enumerate(plan.nodes) if n.precision is not None and n.precision.is_integer]
    executor = executor if executor is not None else SequentialExecutor()
    shared = executor.share((plan, cache))
    try:
        with progress_bar(progress, total=len(layers), description="sensitivity", unit="layers") as bar:
            labels = [f"sensitivity of layer {plan.nodes[i].name!r} ({plan.nodes[i].op_type})" for i in layers]
            return executor.map(_layer_task, shared, layers, labels=labels, progress=bar)
    finally:
        executor.release(shared)


def _layer_task(shared: tuple[Graph, dict[str, list[np.ndarray]]], position: int) -> LayerSensitivity:
    """The sensitivity of ``plan.nodes[position]``: one task of the executor (on a worker)."""
    plan, cache = shared
    return _one_node(plan, plan.nodes[position], cache)


def _one_node(plan: Graph, node: Node, cache: dict[str, list[np.ndarray]]) -> LayerSensitivity:
    macs, wbytes = node_cost(plan, node)
    out = next((o for o in node.outputs if o), None)
    if out is None or out not in cache or any(i not in cache for i in node.inputs if i and not plan.tensors[i].is_constant):
        return LayerSensitivity(node.name, node.op_type, math.inf, macs, wbytes)
    graph_q, inputs = _single_node_graph(plan, node, quantized=True)
    session = make_session(graph_q, [], optimize=False)
    spec_out = plan.tensors[out].quant
    signal = noise = 0.0
    for index in range(len(cache[out])):
        feeds = {}
        for name in inputs:
            value = cache[name][index]
            spec = plan.tensors[name].quant
            feeds[name] = spec.fake_quantize(value) if spec is not None else value
        got = session.run([graph_q.outputs[0]], feeds)[0]
        if spec_out is not None:
            got = spec_out.fake_quantize(got)
        ref = cache[out][index].astype(np.float64)
        signal += float(np.sum(ref * ref))
        noise += float(np.sum((got.astype(np.float64) - ref) ** 2))
    return LayerSensitivity(node.name, node.op_type, sqnr_db(signal, noise), macs, wbytes)
