"""The integer Conv/Gemm/MatMul layers of a plan and the statistics of their quantized inputs.

Plan transforms need what each layer sees in the plan, not in FP32: the inputs come from one run
of the plan's fake-quant reference over the calibration batches (``intermediates``), accumulated
per layer so nothing per sample is kept.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

import numpy as np

from mpcompile.ir.graph import Graph, Node
from mpcompile.recovery.weights import constant, gemm_matrix, uses
from mpcompile.reference.fakequant import ReferenceRunner


@dataclasses.dataclass
class Layer:
    node: Node
    weight: str
    bias: str | None

    @property
    def data(self) -> str:
        return self.node.inputs[0]


def integer_layers(plan: Graph, *, need_bias: bool) -> list[Layer]:
    """Layers whose weight is a quantized constant used by this node only (changing it changes nothing else)."""
    counts = uses(plan)
    found = []
    for node in plan.nodes:
        if node.op_type not in ("Conv", "Gemm", "MatMul") or node.precision is None or not node.precision.is_integer:
            continue
        if len(node.inputs) < 2 or constant(plan, node.inputs[1]) is None or plan.tensors[node.inputs[1]].quant is None:
            continue
        x = plan.tensors.get(node.inputs[0])
        if x is None or x.is_constant or x.quant is None or counts.get(node.inputs[1], 0) != 1:
            continue
        if node.op_type == "Gemm" and (int(node.attr("transA", 0)) or float(node.attr("alpha", 1.0)) != 1.0):
            continue
        if node.op_type == "MatMul" and plan.tensors[node.inputs[1]].value.ndim != 2:
            continue
        bias = node.inputs[2] if node.op_type != "MatMul" and len(node.inputs) > 2 and node.inputs[2] else None
        if bias is not None and (constant(plan, bias) is None or counts.get(bias, 0) != 1
                                 or plan.tensors[bias].value.ndim != 1
                                 or (node.op_type == "Gemm" and float(node.attr("beta", 1.0)) != 1.0)):
            bias = None
        if need_bias and bias is None:
            continue
        found.append(Layer(node, node.inputs[1], bias))
    return found


def channel_axis(layer: Layer, value: np.ndarray) -> int:
    return 1 if layer.node.op_type == "Conv" else value.ndim - 1


def input_means(plan: Graph, layers: list[Layer], batches: Iterable[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Per input channel, the mean of each layer's quantized input over the batches."""
    names = sorted({layer.data for layer in layers})
    runner = ReferenceRunner(plan)
    sums: dict[str, np.ndarray] = {}
    counts: dict[str, int] = {}
    by_name = {layer.data: layer for layer in layers}
    for feeds in batches:
        values = runner.run(feeds, intermediates=names)
        for name in names:
            v = np.asarray(values[name], dtype=np.float64)
            axis = channel_axis(by_name[name], v)
            moved = np.moveaxis(v, axis, -1).reshape(-1, v.shape[axis])
            sums[name] = sums.get(name, 0) + moved.sum(axis=0)
            counts[name] = counts.get(name, 0) + moved.shape[0]
    return {name: sums[name] / counts[name] for name in sums}


def weight_as_rows(layer: Layer, w: np.ndarray) -> np.ndarray:
    """The weight as [output channel, everything an output reads]."""
    if layer.node.op_type == "Conv":
        return w.reshape(w.shape[0], -1)
    return gemm_matrix(layer.node, w)
