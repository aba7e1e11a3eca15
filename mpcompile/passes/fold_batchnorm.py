"""Fold an inference-mode BatchNormalization into the Conv or Gemm that feeds it."""

from __future__ import annotations

import numpy as np

from mpcompile.ir.graph import Graph, Tensor
from mpcompile.passes.base import GraphPass, PassResult


class FoldBatchNorm(GraphPass):
    name = "fold-batchnorm"

    def call(self, graph: Graph) -> PassResult:
        producers = graph.producers()
        consumers = graph.consumers()
        notes: list[str] = []
        removed = []
        for bn in list(graph.nodes):
            if bn.op_type != "BatchNormalization" or len(bn.outputs) > 1 and any(bn.outputs[1:]):
                continue
            src = producers.get(bn.inputs[0])
            params = [graph.tensors.get(n) for n in bn.inputs[1:5]]
            if src is None or src.op_type not in ("Conv", "ConvTranspose", "Gemm") or any(
                p is None or not p.is_constant for p in params
            ):
                continue
            if len(consumers.get(bn.inputs[0], [])) != 1 or bn.inputs[0] in graph.outputs:
                notes.append(f"{bn.name}: not folded, the {src.op_type} output has other consumers")
                continue
            weight = graph.tensors.get(src.inputs[1])
            if weight is None or not weight.is_constant:
                continue
            if src.op_type == "Gemm" and (src.attr("transB", 0) != 1 or src.attr("alpha", 1.0) != 1.0):
                notes.append(f"{bn.name}: not folded, Gemm {src.name} is not transB=1, alpha=1")
                continue
            gamma, beta, mean, var = (p.value.astype(np.float64) for p in params)  # type: ignore[union-attr]
            factor = gamma / np.sqrt(var + float(bn.attr("epsilon", 1e-5)))
            w = weight.value.astype(np.float64)
            if src.op_type == "ConvTranspose":
                group = int(src.attr("group", 1))
                shape = w.shape
                w = w.reshape(group, shape[0] // group, shape[1], *shape[2:])
                w = w * factor.reshape(group, 1, shape[1], *([1] * (len(shape) - 2)))
                w = w.reshape(shape)
            else:
                w = w * factor.reshape(-1, *([1] * (w.ndim - 1)))
            bias_name = src.inputs[2] if len(src.inputs) > 2 and src.inputs[2] else None
            old_bias = graph.tensors[bias_name].value.astype(np.float64) if bias_name else 0.0
            bias = (old_bias - mean) * factor + beta
            new_w = graph.unique_name(weight.name + "_bnfolded")
            new_b = graph.unique_name((bias_name or src.name + "_bias") + "_bnfolded")
            graph.add_tensor(Tensor(new_w, value=w.astype(weight.value.dtype)))
            graph.add_tensor(Tensor(new_b, value=bias.astype(weight.value.dtype)))
            inputs = list(src.inputs) + [""] * (3 - len(src.inputs))
            inputs[1], inputs[2] = new_w, new_b
            src.inputs = inputs
            # The folded producer now writes the BatchNorm's output tensor directly.
            old_out = src.outputs[0]
            src.outputs[0] = bn.outputs[0]
            graph.tensors.pop(old_out, None)
            removed.append(bn)
            notes.append(f"folded {bn.name} into {src.name}")
        if removed:
            ids = {id(n) for n in removed}
            graph.nodes = [n for n in graph.nodes if id(n) not in ids]
            graph.remove_unused()
        return PassResult(graph, bool(removed), notes)
