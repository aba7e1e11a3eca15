"""Statistics computed inside ONNX Runtime instead of copying every activation to numpy.

Exposing all intermediate tensors as outputs makes ORT materialize and copy each of them
for every batch, and the numpy work that follows costs more than the model itself. Here
the calibration graph computes ``ReduceMin``/``ReduceMax``/``Size`` per tensor itself and
returns three scalars per tensor. (Histograms were tried the same way, binning with
``ScatterElements(reduction="add")``: exact, but slower than numpy's ``bincount``.)
"""

from __future__ import annotations

import numpy as np

from mpcompile.ir.graph import Graph, Node, Tensor


def _suffix(name: str, what: str) -> str:
    return f"{name}__mpc_{what}"


def _add(graph: Graph, op: str, inputs: list[str], output: str, dtype=None, **attrs) -> str:  # noqa: ANN001
    graph.add_tensor(Tensor(output, dtype))
    graph.nodes.append(Node(graph.unique_name(f"mpc_{op}_{output}"), op, inputs, [output], attrs))
    return output


def _as_float32(graph: Graph, name: str) -> str:
    tensor = graph.tensors[name]
    if tensor.dtype == np.float32:
        return name
    return _add(graph, "Cast", [name], _suffix(name, "f32"), np.float32, to=1)


def extremes_graph(graph: Graph, names: list[str]) -> tuple[Graph, dict[str, tuple[str, str, str, str]]]:
    """The model plus, per tensor, scalar outputs: min, max, element count and a non-finite probe.

    ORT's ReduceMin/ReduceMax may skip NaN, so ``sum(x * 0)`` is returned too: it is NaN
    exactly when some value is NaN or infinite. (Reductions without axes reduce every
    dimension in every opset from 13 on.)
    """
    g = graph.copy()
    zero = g.unique_name("mpc_zero")
    g.add_tensor(Tensor(zero, value=np.zeros((), dtype=np.float32)))
    outputs: dict[str, tuple[str, str, str, str]] = {}
    for name in names:
        src = _as_float32(g, name)
        lo = _add(g, "ReduceMin", [src], _suffix(name, "min"), np.float32, keepdims=0)
        hi = _add(g, "ReduceMax", [src], _suffix(name, "max"), np.float32, keepdims=0)
        size = _add(g, "Size", [name], _suffix(name, "size"), np.int64)
        zeroed = _add(g, "Mul", [src, zero], _suffix(name, "zeroed"), np.float32)
        probe = _add(g, "ReduceSum", [zeroed], _suffix(name, "finite_probe"), np.float32, keepdims=0)
        outputs[name] = (lo, hi, size, probe)
    g.outputs = [o for group in outputs.values() for o in group]
    return g, outputs
