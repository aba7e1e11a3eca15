"""Fold ``Add(Conv(x), c)`` by a per-channel constant into the Conv's bias (also ConvTranspose and Gemm).

Exporters that keep a layer's bias apart from its convolution write it as a separate ``Add``:
PaddlePaddle's squeeze-excitation convolutions are ``Conv`` (no bias) then ``Add(Reshape(bias))``
(18 in the PP-OCR direction classifier). As two nodes, the plan quantizes the convolution's output
before the bias, every backend runs an extra integer ``Add`` with a requantization, and OpenVINO
2026.4 crashes (segfault) on that pattern: a 1×1 Conv behind a GlobalAveragePool with an
asymmetric input, then the Add, with a dynamic batch run below ~31 samples. As the Conv's own bias
it is one node, one rounding, exactly what the exporter meant.

Folded when the Add's other input is a float constant that broadcasts along the output channels
only (``[O]`` at the channel axis, every other dim 1, or a scalar) and the producer's output is read
by the Add alone, is not a graph output and carries no quantization of a QDQ model (there the
pre-bias tensor is a quantization point the user trained with). The sum is computed in float64,
rounded once to the weight's dtype: at most one float32 ulp from the two-step float result.
"""

from __future__ import annotations

import numpy as np

from mpcompile.ir.graph import Graph, Node, Tensor
from mpcompile.passes.base import GraphPass, PassResult

#: producers with a bias input, and the axis of their output channels
_CHANNEL_AXIS = {"Conv": 1, "ConvTranspose": 1, "Gemm": -1}


def _channels(producer: Node, graph: Graph) -> int | None:
    weight = graph.tensors.get(producer.inputs[1]) if len(producer.inputs) > 1 else None
    if weight is None or weight.value is None:
        return None
    w = weight.value
    if producer.op_type == "Conv":
        return int(w.shape[0])
    if producer.op_type == "ConvTranspose":
        return int(w.shape[1]) * int(producer.attr("group", 1))
    return int(w.shape[0] if producer.attr("transB", 0) else w.shape[-1])


def _per_channel(value: np.ndarray, channels: int, rank: int, axis: int) -> np.ndarray | None:
    """``value`` as a ``[channels]`` vector when it broadcasts against a rank-``rank`` output along ``axis`` only."""
    if value.dtype.kind != "f" or value.ndim > rank:
        return None
    if value.size == 1:
        return np.full(channels, value.reshape(()), value.dtype)
    position = (axis % rank) - (rank - value.ndim)  # the channel axis, right-aligned onto value's dims
    if not 0 <= position < value.ndim or value.shape[position] != channels:
        return None
    if any(d != 1 for i, d in enumerate(value.shape) if i != position):
        return None
    return value.reshape(channels)


def _foldable(producer: Node | None, graph: Graph, consumers: dict) -> bool:
    if producer is None or producer.op_type not in _CHANNEL_AXIS or producer.domain:
        return False
    out = producer.outputs[0]
    if len(consumers.get(out, [])) != 1 or out in graph.outputs or graph.tensors[out].quant is not None:
        return False
    if producer.op_type == "Gemm" and (float(producer.attr("beta", 1.0)) != 1.0 or graph.tensors[out].shape is None):
        return False
    return True


class FoldBiasAdd(GraphPass):
    name = "fold-bias-add"

    def call(self, graph: Graph) -> PassResult:
        producers, consumers = graph.producers(), graph.consumers()
        removed: list[Node] = []
        notes: list[str] = []
        for add in list(graph.nodes):
            if add.op_type != "Add" or add.domain or len(add.inputs) != 2:
                continue
            for data, other in (add.inputs, add.inputs[::-1]):
                producer, constant = producers.get(data), graph.tensors.get(other)
                if constant is None or constant.value is None or constant.quant is not None:
                    continue
                if not _foldable(producer, graph, consumers):
                    continue
                channels, out = _channels(producer, graph), graph.tensors[producer.outputs[0]]
                rank = len(out.shape) if out.shape is not None else None
                if channels is None or rank is None:
                    continue
                extra = _per_channel(np.asarray(constant.value), channels, rank, _CHANNEL_AXIS[producer.op_type])
                if extra is None:
                    continue
                weight = graph.tensors[producer.inputs[1]].value
                old = producer.inputs[2] if len(producer.inputs) > 2 and producer.inputs[2] else None
                bias = extra.astype(np.float64)
                if old is not None:
                    old_value = graph.tensors[old].value
                    if old_value is not None and producer.op_type == "Gemm":  # C broadcasts to [M, O]
                        old_value = _per_channel(old_value, channels, rank, -1)
                    if old_value is None:
                        continue  # a bias computed at run time, or a Gemm C that is not one row
                    bias = bias + old_value.astype(np.float64)  # a Conv's bias is [O] by definition
                name = graph.add_tensor(Tensor(graph.unique_name(f"{producer.name}_bias_folded"),
                                               value=bias.astype(weight.dtype))).name
                producer.inputs = [*producer.inputs[:2], name, *producer.inputs[3:]]
                graph.tensors.pop(producer.outputs[0], None)
                producer.outputs[0] = add.outputs[0]  # the producer now writes the sum directly
                removed.append(add)
                notes.append(f"folded {add.name} into the bias of {producer.name}")
                break
        if removed:
            ids = {id(n) for n in removed}
            graph.nodes = [n for n in graph.nodes if id(n) not in ids]
            graph.remove_unused()
        return PassResult(graph, bool(removed), notes)
