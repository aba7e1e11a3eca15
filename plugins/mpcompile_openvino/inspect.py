"""Read an OpenVINO model back and hold it to the plan: FakeQuantize ranges, integer weights, op counts.

``convert_model`` writes an activation's Q/DQ pair as ``FakeQuantize(x, il, ih, ol, oh, levels)``
with ``il = ol = (qmin − zp)·s`` and ``ih = oh = (qmax − zp)·s`` in float32, and a weight's
DequantizeLinear as ``Multiply(Convert(Constant(int8)), scale)`` (a ``Subtract`` of the zero-point
in between when it is not 0). ``check_fake_quantize`` compares both with the plan's numbers.
"""

from __future__ import annotations

import collections
from typing import Any

import numpy as np

from mpcompile.backends.api import Graph, QType, QuantSpec, uint8_storage


def _producers(model: Any) -> dict[str, Any]:
    return {name: op for op in model.get_ops() for out in op.outputs() for name in out.get_names()}


def _constant(node: Any) -> np.ndarray | None:
    return np.asarray(node.get_data()) if node.get_type_name() == "Constant" else None


def fake_quantize_params(op: Any) -> dict[str, Any]:
    """``levels`` and the four ranges (float32 arrays) of one FakeQuantize node."""
    ranges = [_constant(op.input_value(i).get_node()) for i in range(1, 5)]
    return {"levels": int(op.get_levels()), "ranges": ranges}


def expected_ranges(spec: QuantSpec) -> tuple[np.float32, np.float32]:
    """The FakeQuantize range of a Q/DQ pair: ONNX QuantizeLinear clips to the type's range."""
    lo, hi = spec.qtype.qmin - int(spec.zero_point), spec.qtype.qmax - int(spec.zero_point)
    s = np.float32(spec.scale)
    return np.float32(np.float32(lo) * s), np.float32(np.float32(hi) * s)


def _ulps(a: np.ndarray, b: np.float32) -> int:
    a = np.asarray(a, np.float32).reshape(-1)
    return int(np.max(np.abs(a.view(np.int32).astype(np.int64) - np.full(a.shape, b, np.float32).view(np.int32).astype(np.int64))))


def check_fake_quantize(model: Any, plan: Graph, tensor_map: dict[str, str]) -> list[str]:
    """Every quantized tensor of ``plan`` against the IR; one message per mismatch (empty: the IR is the plan).

    ``convert_model`` rewrites four things without changing a number, and the check allows exactly those:
    a per-tensor FakeQuantize sunk past data movement; an ``Add/Sub/Mul/Div`` by a constant folded into the
    FakeQuantize's input range (``FQ(x·a + c, lo, hi) = FQ(x, (lo − c)/a, (hi − c)/a)``, verified against the
    plan's own constants); a FakeQuantize that lost the tensor's name (a redundant one merged with its
    input's, or one whose neighbours were fused into an ``LSTMSequence``): then the plan's grid must still be in
    the IR, as a FakeQuantize with the same levels and output range; and a Q/DQ pair left unfused
    (``FakeQuantize → Convert<int> → Convert<f32> → Subtract(zp) → Multiply(s)``, ``_check_unfused_qdq``), every
    number of it the plan's.
    """
    producers = _producers(model)
    plan_producers = plan.producers()
    grids = _output_grids(model)
    problems = []
    for t in plan.tensors.values():
        spec = t.quant
        if spec is None:
            continue
        if t.is_constant:
            op = producers.get(t.name)
            if op is None:
                continue  # folded into a float constant (no integer node reads it): nothing to hold
            problems += _check_weight(t.name, t.value, spec, op)
            continue
        if spec.qtype.bits > 16:
            continue
        art = tensor_map.get(t.name)
        op = producers.get(art) if art else None
        if op is None:
            if spec.axis is None and _grid_key(2 ** spec.qtype.bits, *expected_ranges(spec)) not in grids:
                problems.append(f"tensor {t.name!r} has no FakeQuantize in the IR (none with its levels and range)")
            continue
        while op.get_type_name() in DATA_MOVEMENT and spec.axis is None:
            op = op.input_value(0).get_node()  # convert_model moves per-tensor FakeQuantize across data movement
        folded = _folded_ranges(plan, plan_producers, t.name)
        if op.get_type_name() == "Multiply" and spec.axis is None:
            problems += _check_unfused_qdq(t.name, spec, op, folded)
            continue
        if op.get_type_name() != "FakeQuantize":
            problems.append(f"tensor {t.name!r} is produced by {op.get_type_name()}, not FakeQuantize")
            continue
        problems += _check_ranges(t.name, spec, fake_quantize_params(op), folded)
    return problems


#: OpenVINO integer element type of each plan integer type (the ``Convert`` of an unfused QuantizeLinear)
_INT_TYPES = {"int8": "i8", "uint8": "u8", "int16": "i16", "uint16": "u16"}


def _check_unfused_qdq(name: str, spec: QuantSpec, op: Any, folded: list[tuple[np.ndarray, np.ndarray]]) -> list[str]:
    """A Q/DQ pair that convert_model left as ONNX wrote it, in OpenVINO ops: ``FakeQuantize(x, il, ih, qmin, qmax)
    → Convert<int> → Convert<f32> → [Subtract(zp)] → Multiply(s)``.

    Seen on ddddocr_det's plan cut at its quantized tensors: its focus layer slices the image twice identically
    (``467`` and ``477``: both ``images[:, :, ::2]``); in the cut plan each is only a graph output, so
    convert_model's shared-op elimination merges the two chains up to the ``Subtract`` and keeps the two
    ``Multiply``s apart (each names a Result); the Q/DQ → FakeQuantize fusion needs a ``Subtract`` with one
    consumer and leaves both unfused. Nothing changes a number: it is ``rint(x/s) + zp`` clipped, then
    ``(q − zp)·s``, ONNX's own Q/DQ. So the chain is accepted exactly when every number in it is the plan's:
    the integer type, ``levels``, the integer output range bit-exact, the input range as for a fused
    FakeQuantize (the plan's, or folded through the plan's constants), the zero-point and the scale bit-exact.
    Any other Multiply (a real op the plan's Q/DQ was moved behind) still fails as before.

    Why the check and not the lowering: the lowering could merge identical plan subgraphs itself so that
    convert_model fuses the pair, but that would drop a tensor of the plan (``477`` would have no node of its
    own to compare) and only hide this one trigger; an unfused pair is ONNX's Q/DQ, not an approximation of it,
    so holding its numbers to the plan is the same guarantee as for a FakeQuantize.
    """
    scale, sub = _constant(op.input_value(1).get_node()), op.input_value(0).get_node()
    zero_point = None
    if sub.get_type_name() == "Subtract":
        zp_node, sub = sub.input_value(1).get_node(), sub.input_value(0).get_node()
        if zp_node.get_type_name() == "Convert":
            zp_node = zp_node.input_value(0).get_node()
        zero_point = _constant(zp_node)
        if zero_point is None:
            return [f"tensor {name!r} is produced by Multiply(Subtract) whose zero-point is not a constant, not FakeQuantize"]
    widen = sub
    narrow = widen.input_value(0).get_node() if widen.get_type_name() == "Convert" else None
    fq = narrow.input_value(0).get_node() if narrow is not None and narrow.get_type_name() == "Convert" else None
    if fq is None or fq.get_type_name() != "FakeQuantize":
        return [f"tensor {name!r} is produced by Multiply, not FakeQuantize (nor an unfused Q/DQ pair)"]
    problems = []
    int_type = narrow.get_output_element_type(0).get_type_name()
    if int_type != _INT_TYPES.get(spec.qtype.value) or widen.get_output_element_type(0).get_type_name() != "f32":
        problems.append(f"tensor {name!r}: unfused Q/DQ through {int_type}, the plan's type is {spec.qtype.value}")
    if scale is None or scale.size != 1 or scale.astype(np.float32).reshape(-1).view(np.uint32)[0] != \
            np.float32(spec.scale).view(np.uint32):
        problems.append(f"tensor {name!r}: unfused Q/DQ scale {scale} ≠ the plan's {np.float32(spec.scale)}")
    zp = 0 if zero_point is None else zero_point.reshape(-1)
    if np.size(zp) != 1 or float(np.asarray(zp).reshape(-1)[0]) != float(int(spec.zero_point)):
        problems.append(f"tensor {name!r}: unfused Q/DQ zero-point {zp} ≠ the plan's {int(spec.zero_point)}")
    out_range = (np.float32(spec.qtype.qmin), np.float32(spec.qtype.qmax))  # a QuantizeLinear's FakeQuantize: integers
    return problems + _check_ranges(name, spec, fake_quantize_params(fq), folded, out_range)


#: ops that move per-tensor quantized values without changing them (convert_model sinks FakeQuantize past them)
DATA_MOVEMENT = {"Transpose", "Reshape", "Squeeze", "Unsqueeze"}

#: how many constant Add/Sub/Mul/Div producers convert_model may fold into one FakeQuantize's input range
MAX_FOLDS = 4


def _grid_key(levels: int, low: Any, high: Any) -> tuple[int, int, int]:
    as_bits = [int(np.asarray(v, np.float32).reshape(-1)[0].view(np.int32)) for v in (low, high)]
    return levels, as_bits[0], as_bits[1]


def _output_grids(model: Any) -> set[tuple[int, int, int]]:
    """(levels, output_low, output_high) of every per-tensor FakeQuantize of the model, bit-exact."""
    grids = set()
    for op in model.get_ops():
        if op.get_type_name() != "FakeQuantize":
            continue
        params = fake_quantize_params(op)
        ol, oh = params["ranges"][2:]
        if ol is not None and oh is not None and ol.size == 1 and oh.size == 1:
            grids.add(_grid_key(params["levels"], ol, oh))
    return grids


def _folded_ranges(plan: Graph, producers: dict[str, Any], name: str) -> list[tuple[np.ndarray, np.ndarray]]:
    """The input ranges a FakeQuantize of ``name`` may have once convert_model folds the plan's constant
    ``Add/Sub/Mul/Div`` producers (one per fold depth) into it: the plan's range pulled back through them."""
    spec = plan.tensors[name].quant
    lo, hi = (np.asarray(v, np.float64) for v in expected_ranges(spec))
    ranges = []
    if name in plan.inputs:  # lowering's exact input quantizer: its final Mul(s) folds in, the FakeQuantize reads steps
        ranges.append((lo / float(spec.scale), hi / float(spec.scale)))
    for _ in range(MAX_FOLDS):
        node = producers.get(name)
        if node is not None and node.op_type == "LayerNormalization":
            ranges += _through_layernorm_affine(plan, node, lo, hi)
            break
        if node is None or node.op_type not in ("Add", "Sub", "Mul", "Div") or len(node.inputs) != 2:
            break
        consts = [plan.tensors[i].value if plan.tensors[i].is_constant else None for i in node.inputs]
        if (consts[0] is None) == (consts[1] is None):
            break
        k = 0 if consts[0] is None else 1  # the variable input
        c = np.asarray(consts[1 - k], np.float64)
        if node.op_type == "Add":
            lo, hi = lo - c, hi - c
        elif node.op_type == "Sub":
            lo, hi = (lo + c, hi + c) if k == 0 else (c - lo, c - hi)
        elif node.op_type == "Mul":
            lo, hi = lo / c, hi / c
        elif k == 0:  # x / c
            lo, hi = lo * c, hi * c
        else:  # c / x is not affine in x
            break
        ranges.append((lo, hi))
        name = node.inputs[k]
        if plan.tensors[name].quant is not None:
            break  # a quantized input keeps its own FakeQuantize: nothing folds past it
    return ranges


def _through_layernorm_affine(plan: Graph, node: Any, lo: np.ndarray, hi: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """A LayerNormalization is MVN → Multiply(scale) → Add(bias) in OpenVINO: the ranges once its bias, then its
    scale, fold into the FakeQuantize after it (a zero bias is dropped, and the scale then folds alone)."""
    values = [plan.tensors[i].value if i and plan.tensors[i].is_constant else None for i in node.inputs[1:3]]
    if not values or values[0] is None:
        return []
    gamma = np.asarray(values[0], np.float64)
    beta = np.asarray(values[1], np.float64) if len(values) > 1 and values[1] is not None else np.zeros_like(gamma)
    if np.any(gamma == 0):
        return []
    return [(lo - beta, hi - beta), ((lo - beta) / gamma, (hi - beta) / gamma)]


def _check_ranges(name: str, spec: QuantSpec, params: dict[str, Any],
                  folded: list[tuple[np.ndarray, np.ndarray]] = (),
                  out_range: tuple[np.float32, np.float32] | None = None) -> list[str]:
    """Levels and output range must be the plan's, bit-exact. The input range is the plan's, or the plan's
    pulled back through constant producers that convert_model folded into it (``folded``): the same
    ``rint((x' − il') · (levels − 1) / (ih' − il'))`` up to float32 rounding of the folded constants.
    ``out_range``: the output range expected instead of the plan's float range (an unfused QuantizeLinear's
    FakeQuantize outputs the integers ``[qmin, qmax]``)."""
    problems = []
    if params["levels"] != 2 ** spec.qtype.bits:
        problems.append(f"tensor {name!r}: FakeQuantize levels {params['levels']}, the plan's {spec.qtype.value} "
                        f"has {2 ** spec.qtype.bits}")
    lo, hi = expected_ranges(spec)
    il, ih, ol, oh = params["ranges"]
    for label, got, want in (("output_low", ol, (out_range or (lo, hi))[0]), ("output_high", oh, (out_range or (lo, hi))[1])):
        if got is None or _ulps(got, want) > 0:
            problems.append(f"tensor {name!r}: FakeQuantize {label} {got} ≠ the plan's {want}")
    if il is None or ih is None:
        return problems + [f"tensor {name!r}: FakeQuantize input range is not constant"]
    if _ulps(il, lo) == 0 and _ulps(ih, hi) == 0:
        return problems
    for flo, fhi in folded:
        tol = 1e-5 * float(np.max(np.abs(fhi - flo)))
        try:
            if np.allclose(il, flo, rtol=1e-5, atol=tol) and np.allclose(ih, fhi, rtol=1e-5, atol=tol):
                return problems
        except ValueError:  # shapes that do not broadcast: not this fold
            continue
    problems.append(f"tensor {name!r}: FakeQuantize input range [{il.reshape(-1)[:4]}, {ih.reshape(-1)[:4]}] is "
                    f"neither the plan's [{lo}, {hi}] nor that range folded through the plan's constant producers")
    return problems


def _check_weight(name: str, value: np.ndarray, spec: QuantSpec, op: Any) -> list[str]:
    """The weight's dequantization in the IR against the plan's spec, or its uint8 storage (the same numbers)."""
    problems = _check_weight_as(name, value, spec, op)
    if problems and spec.qtype == QType.INT8:
        as_uint8 = _check_weight_as(name, value, uint8_storage(spec), op)
        return as_uint8 if not as_uint8 else problems
    return problems


def _check_weight_as(name: str, value: np.ndarray, spec: QuantSpec, op: Any) -> list[str]:
    if op.get_type_name() != "Multiply":
        return [f"weight {name!r} is produced by {op.get_type_name()}, not a dequantizing Multiply"]
    source, scale = (op.input_value(i).get_node() for i in range(2))
    zero_point = None
    if source.get_type_name() == "Subtract":
        source, zp_node = (source.input_value(i).get_node() for i in range(2))
        if zp_node.get_type_name() == "Convert":
            zp_node = zp_node.input_value(0).get_node()
        zero_point = _constant(zp_node)
    stored = _constant(source.input_value(0).get_node()) if source.get_type_name() == "Convert" else None
    scales = _constant(scale)
    want = spec.quantize(value)
    problems = []
    if stored is None or stored.dtype != want.dtype or not np.array_equal(stored.reshape(want.shape), want):
        problems.append(f"weight {name!r}: the IR's integers are not the plan's {spec.qtype.value} values")
    if scales is None or not np.array_equal(scales.reshape(-1).view(np.uint32), np.broadcast_to(spec.scale, scales.reshape(-1).shape).view(np.uint32)):
        problems.append(f"weight {name!r}: the IR's dequantization scales are not the plan's")
    if zero_point is not None and np.any(zero_point.reshape(-1) != np.broadcast_to(spec.zero_point, zero_point.reshape(-1).shape)):
        problems.append(f"weight {name!r}: the IR's zero-points are not the plan's")
    if zero_point is None and np.any(spec.zero_point != 0):
        problems.append(f"weight {name!r}: the plan's zero-points are not 0 but the IR subtracts none")
    return problems


def summary(model: Any) -> dict[str, int]:
    """Op counts of an OpenVINO model, plus its integer and FP16 constants."""
    counts: collections.Counter[str] = collections.Counter(op.get_type_name() for op in model.get_ops())
    for op in model.get_ops():
        if op.get_type_name() == "Constant":
            counts[f"Constant<{op.get_element_type().get_type_name()}>"] += 1
    return dict(sorted(counts.items()))


def runtime_precisions(compiled: Any) -> dict[str, str]:
    """Layer name → the precision the compiled model runs it in (``runtimePrecision``), compute layers only."""
    result = {}
    for op in compiled.get_runtime_model().get_ops():
        info = op.get_rt_info()
        kind = info["layerType"].astype(str)
        if kind in ("Const", "Input", "Output", "Reorder"):
            continue
        result[op.get_friendly_name()] = f"{kind}:{info['runtimePrecision'].astype(str)}"
    return result
