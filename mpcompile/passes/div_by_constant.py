"""Write ``Div(x, c)`` by a float constant as ``Mul(x, 1/c)``: the same function up to one float rounding.

No target runtime has an integer division kernel, so a ``Div`` stays float and splits the integer graph
with a dequantize and a quantize pass on each side. Exporters write many of them: PaddlePaddle's
HardSwish is ``x · relu6(x + 3) / 6`` (94 in PicoDet, 18 in the PP-OCR classifier), attention divides
its scores by √d. Every runtime has an integer ``Mul``, and ORT fuses a Q/DQ ``Mul`` into ``QLinearMul``.

``x / c`` and ``x · (1/c)`` differ by at most one unit in the last place of float32 (exact when ``c`` is a
power of two), far below any quantization step; the plan, its reference and every backend then compute
the ``Mul``. A divisor that is not a float constant, or whose reciprocal is not a normal float32 (zero,
Inf, NaN, denormal reciprocals), or one a QDQ model quantized, is left alone; so is a ``Div`` read by an
op that turns that last bit into a whole unit (``Floor``, ``Ceil``, ``Round``, ``Cast``, ``Mod``: ``ceil(9 / 3)``
is 3, ``ceil(9 · 0.33333334)`` is 4), which is shape arithmetic, not data.
"""

from __future__ import annotations

import numpy as np

from mpcompile.ir.graph import Graph, Tensor
from mpcompile.passes.base import GraphPass, PassResult


def _reciprocal(value: np.ndarray) -> np.ndarray | None:
    """``1 / value`` in ``value``'s float dtype, or None when any element has no normal reciprocal."""
    if value.dtype.kind != "f" or value.size == 0 or not np.all(np.isfinite(value)) or np.any(value == 0):
        return None
    reciprocal = (1.0 / value.astype(np.float64)).astype(value.dtype)
    tiny = np.finfo(value.dtype).tiny
    if not np.all(np.isfinite(reciprocal)) or np.any(np.abs(reciprocal) < tiny):
        return None
    return reciprocal


#: readers for which one float32 ulp can change the result by a whole unit
ROUNDING_READERS = frozenset({"Floor", "Ceil", "Round", "Cast", "Mod"})


class DivByConstant(GraphPass):
    name = "div-by-constant"

    def call(self, graph: Graph) -> PassResult:
        written: dict[str, str] = {}  # divisor -> its reciprocal's tensor (shared divisors share it)
        count = 0
        consumers = graph.consumers()
        for node in graph.nodes:
            if node.op_type != "Div" or node.domain or len(node.inputs) != 2:
                continue
            x, divisor = (graph.tensors.get(name) for name in node.inputs)
            if x is None or x.is_constant or divisor is None or divisor.value is None or divisor.quant is not None:
                continue
            if any(reader.op_type in ROUNDING_READERS for reader in consumers.get(node.outputs[0], [])):
                continue
            if divisor.name not in written:
                reciprocal = _reciprocal(np.asarray(divisor.value))
                if reciprocal is None:
                    continue
                written[divisor.name] = graph.add_tensor(
                    Tensor(graph.unique_name(f"{divisor.name}_reciprocal"), value=reciprocal)).name
            node.op_type = "Mul"
            node.inputs = [node.inputs[0], written[divisor.name]]
            count += 1
        if not count:
            return PassResult(graph, False)
        graph.remove_unused()
        return PassResult(graph, True, [f"{count} Div by a constant written as Mul by its reciprocal (integer Mul kernels "
                                        f"exist on every target; at most 1 ulp of float32 apart)"])
