"""Learned rounding of Conv/Gemm/MatMul weights onto the plan's own weight grid.

Rounding every weight to its nearest grid point minimizes the weight error, not the layer's
output error. AdaRound (Nagel et al. 2020) learns up/down decisions by gradient descent; this is
the closed-form second-order equivalent (OBQ/GPTQ, Frantar et al. 2022), numpy only: with
``H = E[x xᵀ]`` of the layer's quantized inputs, input columns are rounded one at a time and each
rounding error is pushed onto the columns not yet rounded, in the direction that keeps
``W x`` closest. The result is ``q · s`` with the plan's scales ``s`` and integers ``q`` in the
weight's range, so a backend quantizing it with the plan's spec recovers exactly ``q``.

Covered: Gemm, MatMul with a 2-D weight, Conv with group 1 (input patches by im2col, at most
``ROWS_PER_BATCH`` positions per batch). Layers reading more than ``MAX_COLUMNS`` values per output
are skipped (``H`` would not fit comfortably).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from mpcompile.ir.graph import Graph
from mpcompile.recovery.layers import Layer, integer_layers, weight_as_rows
from mpcompile.recovery.weights import from_gemm_matrix, replace_constant
from mpcompile.reference.fakequant import ReferenceRunner

MAX_COLUMNS = 4608
#: Input rows drawn per calibration batch for ``H``. ``H``'s cost is rows × columns² per batch: at 4096
#: rows ppocr_rec's 33 layers took 365 s on 2 loaded cores, nearly all of it here.
ROWS_PER_BATCH = 1024
#: Added to H's diagonal, relative to its mean: keeps the inverse defined for dead inputs.
DAMPING = 0.01


def _patches(layer: Layer, x: np.ndarray, kernel: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """At most ``ROWS_PER_BATCH`` of the rows a layer multiplies with its [out, columns] weight."""
    node = layer.node
    if node.op_type != "Conv":
        rows = x.reshape(-1, x.shape[-1])
        if rows.shape[0] > ROWS_PER_BATCH:
            rows = rows[np.sort(rng.choice(rows.shape[0], ROWS_PER_BATCH, replace=False))]
        return rows.astype(np.float64)
    spatial = x.ndim - 2
    pads = list(node.attr("pads", [0] * (2 * spatial)))
    strides = list(node.attr("strides", [1] * spatial))
    dil = list(node.attr("dilations", [1] * spatial))
    x = np.pad(x, [(0, 0), (0, 0)] + [(pads[i], pads[i + spatial]) for i in range(spatial)])
    span = [d * (k - 1) + 1 for d, k in zip(dil, kernel)]
    win = np.lib.stride_tricks.sliding_window_view(x, span, axis=tuple(range(2, 2 + spatial)))
    win = win[(slice(None), slice(None)) + tuple(slice(None, None, s) for s in strides)
              + tuple(slice(None, None, d) for d in dil)]  # a view: [N, C, *out, *kernel]
    positions = (win.shape[0],) + win.shape[2:2 + spatial]
    total = int(np.prod(positions))
    pick = np.arange(total) if total <= ROWS_PER_BATCH else np.sort(rng.choice(total, ROWS_PER_BATCH, replace=False))
    where = np.unravel_index(pick, positions)
    # Advanced indices on N and the output positions around C's slice: [rows, C, *kernel], the weight's order.
    rows = win[(where[0], slice(None)) + tuple(where[1:])]
    return rows.reshape(rows.shape[0], -1).astype(np.float64)


def _gptq(w: np.ndarray, h: np.ndarray, scale: np.ndarray, qmin: int, qmax: int) -> np.ndarray:
    """Integers for ``w`` [out, cols] at per-row ``scale`` minimizing ``(w - q s) H (w - q s)ᵀ``."""
    w = w.copy()
    h = h.copy()
    dead = np.diag(h) == 0
    h[dead, dead] = 1.0
    w[:, dead] = 0.0
    h[np.diag_indices_from(h)] += DAMPING * float(np.mean(np.diag(h)))
    hinv = np.linalg.cholesky(np.linalg.inv(h)).T  # upper triangular: row i drives columns > i
    q = np.empty_like(w)
    s = scale.reshape(-1)
    for i in range(w.shape[1]):
        column = w[:, i]
        q[:, i] = np.clip(np.rint(column / s), qmin, qmax)
        err = (column - q[:, i] * s) / hinv[i, i]
        w[:, i + 1:] -= np.outer(err, hinv[i, i + 1:])
    return q


def round_weights(plan: Graph, batches: Sequence[dict[str, np.ndarray]]) -> dict:
    """Round in place every eligible integer layer's weights; returns how many."""
    layers = []
    for layer in integer_layers(plan, need_bias=False):
        w = plan.tensors[layer.weight].value
        if layer.node.op_type == "Conv" and int(layer.node.attr("group", 1)) != 1:
            continue
        spec = plan.tensors[layer.weight].quant
        rows = weight_as_rows(layer, w)
        if rows.shape[1] > MAX_COLUMNS or spec.axis not in (None, _row_axis(layer, w)):
            continue
        layers.append(layer)
    if not layers:
        return {"changed": 0}
    names = sorted({layer.data for layer in layers})
    runner = ReferenceRunner(plan)
    rng = np.random.default_rng(0)
    hessians: dict[str, np.ndarray] = {}
    for feeds in batches:
        values = runner.run(feeds, intermediates=names)
        for layer in layers:
            kernel = tuple(plan.tensors[layer.weight].value.shape[2:])
            rows = _patches(layer, np.asarray(values[layer.data]), kernel, rng)
            hessians[layer.node.name] = hessians.get(layer.node.name, 0) + rows.T @ rows
    for layer in layers:
        tensor = plan.tensors[layer.weight]
        spec = tensor.quant
        w = tensor.value
        rows = weight_as_rows(layer, w).astype(np.float64)
        scale = np.broadcast_to(np.asarray(spec.scale, np.float64).reshape(-1), (rows.shape[0],))
        q = _gptq(rows, hessians[layer.node.name], scale, spec.qmin, spec.qmax)
        values = (q * scale[:, None]).astype(np.float32)
        if layer.node.op_type == "Conv":
            replace_constant(plan, layer.weight, values.reshape(w.shape))
        else:
            replace_constant(plan, layer.weight, from_gemm_matrix(layer.node, values))
    return {"changed": len(layers)}


def _row_axis(layer: Layer, w: np.ndarray) -> int:
    """The weight axis that ``weight_as_rows`` turns into rows (where a per-channel scale must run)."""
    node = layer.node
    if node.op_type == "Conv":
        return 0
    if node.op_type == "Gemm" and int(node.attr("transB", 0)):
        return 0
    return w.ndim - 1
