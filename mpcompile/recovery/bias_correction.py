"""Empirical bias correction (Nagel et al. 2019; AIMET's "empirical" variant uses data like this).

Rounding a layer's weights moves the mean of its output: ``E[W x] - E[Wq x] = (W - Wq) E[x]``
per output channel. With ``E[x]`` measured on the plan's own quantized inputs over the
calibration data, adding that difference to the bias removes the mean error the layer's weight
quantization introduces; the bias keeps its scale (``s_in · s_w``) so the plan's numerics are
otherwise untouched. Border positions of a padded conv see fewer taps: the correction uses the
interior's mean, the usual approximation.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from mpcompile.ir.graph import Graph
from mpcompile.recovery.layers import input_means, integer_layers
from mpcompile.recovery.weights import gemm_matrix, replace_constant


def weight_error_shift(plan: Graph, layer, mean_x: np.ndarray) -> np.ndarray:  # noqa: ANN001
    """``(W - Wq) · E[x]`` per output channel: the mean output error of the layer's weight rounding."""
    tensor = plan.tensors[layer.weight]
    w = tensor.value.astype(np.float64)
    dw = w - tensor.quant.fake_quantize(tensor.value).astype(np.float64)
    node = layer.node
    if node.op_type == "Conv":
        group = int(node.attr("group", 1))
        per_tap = dw.reshape(dw.shape[0], dw.shape[1], -1).sum(axis=2)  # [O, I/g]
        means = mean_x.reshape(group, -1)[np.arange(dw.shape[0]) // (dw.shape[0] // group)]  # [O, I/g]
        return (per_tap * means).sum(axis=1)
    return gemm_matrix(node, dw) @ mean_x


def correct_biases(plan: Graph, batches: Sequence[dict[str, np.ndarray]]) -> dict:
    """Correct in place every integer Conv/Gemm bias; returns how many and the largest shift in bias LSB."""
    layers = integer_layers(plan, need_bias=True)
    if not layers:
        return {"changed": 0}
    means = input_means(plan, layers, batches)
    largest = 0.0
    for layer in layers:
        shift = weight_error_shift(plan, layer, means[layer.data])
        bias = plan.tensors[layer.bias]
        replace_constant(plan, layer.bias, bias.value.astype(np.float64) + shift)
        if bias.quant is not None:
            largest = max(largest, float(np.max(np.abs(shift) / np.asarray(bias.quant.scale, np.float64))))
    return {"changed": len(layers), "largest_shift_lsb": round(largest, 2)}
