"""OpenVINO's rules on top of the shared legalization, each change a ``Deviation``.

What was measured on OpenVINO 2026.4's CPU plugin (``README.md`` beside this file, and
``tests/test_openvino_facts.py``, which re-measures each fact):

1. **Float precision is one setting per compiled model** (``INFERENCE_PRECISION_HINT``). With
   the default ``inference_precision_hint="f32"`` the plan's FP32 nodes are FP32 and its FP16
   nodes store FP16 weights (computed in FP32, like TFLite's FP16 nodes); BF16 nodes run in FP32.
   With ``"bf16"`` (or ``"f16"``) every float node of the plan runs in that precision, and the
   legalized plan says so, node by node.
2. **No 16-bit integer kernels**: the CPU plugin strips 16-bit Q/DQ pairs (its ``qdq_stripping``
   pass, levels 65536) and computes those tensors in float; an int16 Q/DQ that feeds a graph
   output does not compile at all. INT16 nodes are legalized to FP32 (accuracy first).
3. **Rounding**: FakeQuantize (what ``convert_model`` makes of a Q/DQ pair) and the integer
   kernels' requantization round half to even on the *shifted* grid: ``q = rint(x/s + zp − qmin)
   + qmin``, where ONNX rounds ``rint(x/s) + zp``. The two agree exactly when ``zp − qmin`` is
   even and differ on every tie otherwise (1 LSB). Activation zero-points with ``zp − qmin`` odd
   are therefore moved by one step towards the middle of the integer range (the scale is kept;
   the representable range moves by one LSB), so that OpenVINO computes the legalized plan exactly.
4. Per-channel weights (int8, symmetric, any axis) and asymmetric int8/uint8 activations run in
   the integer kernels as the plan has them: no change.
"""

from __future__ import annotations

import numpy as np

from mpcompile.backends.api import (
    Capabilities,
    Deviation,
    Graph,
    Precision,
    QuantSpec,
    legalize_with_capabilities,
    refresh_bias_specs,
)

BACKEND = "openvino"

HINT_PRECISION = {"f32": Precision.FP32, "bf16": Precision.BF16, "f16": Precision.FP16}


def legalize_for_openvino(plan: Graph, caps: Capabilities, hint: str = "f32") -> tuple[Graph, list[Deviation]]:
    g = plan.copy()
    deviations: list[Deviation] = []
    _float_nodes(g, hint, deviations)
    _int16_nodes(g, hint, deviations)
    g, shared = legalize_with_capabilities(g, caps, backend_name=BACKEND)
    deviations += shared
    _even_zero_points(g, deviations)
    refresh_bias_specs(g)
    return g, deviations


def _float_nodes(g: Graph, hint: str, out: list[Deviation]) -> None:
    target = HINT_PRECISION[hint]
    for node in g.nodes:
        p = node.precision
        if p is None or p.is_integer or p == target:
            continue
        if target == Precision.FP32:
            if p != Precision.BF16:
                continue  # FP16 nodes: FP16 weights, FP32 arithmetic (see the module doc)
            new, why = Precision.FP32, ("OpenVINO runs float nodes in one precision per compiled model; BF16 "
                                        "arithmetic needs openvino.inference_precision_hint=bf16")
        else:
            new, why = target, f"inference_precision_hint={hint}: OpenVINO runs every float node in {target.value}"
        out.append(Deviation(node.name, "node", f"{p.value} → {new.value}", why))
        node.precision = new
        node.precision_reason = f"{node.precision_reason}; legalized for {BACKEND}: {why}".lstrip("; ")


def _int16_nodes(g: Graph, hint: str, out: list[Deviation]) -> None:
    """INT16 nodes run in float (the hint's precision; FP32 by default): accuracy first, as the shared rule."""
    new = HINT_PRECISION[hint]
    why = ("OpenVINO's CPU plugin has no 16-bit integer kernels: it strips 16-bit Q/DQ pairs (qdq_stripping) and "
           "computes those tensors in float")
    for node in g.nodes:
        if node.precision != Precision.INT16:
            continue
        out.append(Deviation(node.name, "node", f"{node.precision.value} → {new.value}", why))
        node.precision = new
        node.precision_reason = f"{node.precision_reason}; legalized for {BACKEND}: {why}".lstrip("; ")


def even_zero_point(spec: QuantSpec) -> int | None:
    """The zero-point OpenVINO rounds like ONNX (``zp − qmin`` even), or None when ``spec`` already has one."""
    zp, qmin, qmax = int(spec.zero_point), spec.qtype.qmin, spec.qtype.qmax  # ONNX Q clips to the type's range
    if (zp - qmin) % 2 == 0:
        return None
    middle = (qmin + qmax) / 2
    return zp - 1 if zp > middle else zp + 1


def _even_zero_points(g: Graph, out: list[Deviation]) -> None:
    for t in g.tensors.values():
        spec = t.quant
        if spec is None or t.is_constant or spec.axis is not None or spec.qtype.bits > 8:
            continue
        new_zp = even_zero_point(spec)
        if new_zp is None:
            continue
        zp = np.asarray(new_zp, dtype=spec.zero_point.dtype)
        t.quant = spec.replace(zero_point=zp, provenance={**dict(spec.provenance), "legalized": f"{BACKEND} even zero-point"})
        out.append(Deviation(
            t.name, "tensor", f"zero-point {int(spec.zero_point)} → {new_zp} (scale {float(spec.scale):.6g} kept)",
            "OpenVINO rounds half to even after adding the zero-point (rint(x/s + zp − qmin)); with zp − qmin odd "
            "every tie would land 1 LSB from ONNX's rint(x/s) + zp",
        ))
