"""One small emitter per ONNX op type, registered with the precisions TFLite runs it in.

An emitter receives a node of the NHWC graph (``layout.py``: stored axes, TFLite weight
layouts) and a ``NodeContext`` (``writer.py``) that hands out its inputs realized for the
node's precision; it adds TFLite operators and their outputs. Operator names and option
fields are schema names; ``flatbuffer.py`` resolves them. Operator versions follow
``tensorflow/lite/tools/versioning/op_version.cc`` for the features used (int8 kernels
version 2/3/4, int16 kernels higher), within the ranges ``register.cc`` accepts.

Each registration also says why a node *cannot* be written (``check``), so that
legalization can fall back to float or list the node, before anything is lowered.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np

from mpcompile.backends.api import Graph, Node, Precision, UnsupportedOperatorError
from mpcompile_tflite import recurrent, spatial1d
from mpcompile_tflite.emit import (
    STATIC_SHAPE_HINT,
    NodeContext,
    clip_bounds,
    fused_activation_name,
    quant_params,
    same_numbers,
)
from mpcompile_tflite.resize import ResizeAxis, choose, choose_any_size

I8, I16, F16, F32 = Precision.INT8, Precision.INT16, Precision.FP16, Precision.FP32
INTEGER = (I8, I16)
FLOAT = (F16, F32)
ALL = (I8, I16, F16, F32)

#: check(graph, node, integer) -> why the node cannot be written that way, or None
Check = Callable[[Graph, Node, bool], "str | None"]


@dataclasses.dataclass(frozen=True)
class OpSupport:
    op_type: str
    emit: Callable[[NodeContext, Node], None]
    precisions: frozenset[Precision]
    check: Check | None = None
    #: fuses(graph, node) -> True when the TFLite operator takes a fused activation
    fuses: Callable[[Graph, Node], bool] | None = None
    #: why the op is not written in integer precision, where "no kernel" would not be the whole truth
    integer_reason: str | None = None


EMITTERS: dict[str, OpSupport] = {}


def emitter(*op_types: str, precisions: tuple[Precision, ...] = ALL, check: Check | None = None,
            fuses: Callable[[Graph, Node], bool] | None = None, integer_reason: str | None = None) -> Callable:
    def register(fn: Callable[[NodeContext, Node], None]) -> Callable[[NodeContext, Node], None]:
        for op in op_types:
            EMITTERS[op] = OpSupport(op, fn, frozenset(precisions), check, fuses, integer_reason)
        return fn

    return register


def why_not(graph: Graph, node: Node, integer: bool) -> str | None:
    """Why ``node`` cannot be written in integer (``integer``) or float arithmetic; None if it can."""
    support = EMITTERS.get(node.op_type)
    if support is None:
        if node.op_type in REFUSED:
            return f"{node.op_type} {node.name!r}: {REFUSED[node.op_type]}"
        return f"the TFLite writer has no emitter for {node.op_type}"
    if integer:
        wanted = node.precision if node.precision in INTEGER else I8
        if wanted not in support.precisions:
            if support.integer_reason:
                return f"{node.op_type} {node.name!r}: {support.integer_reason}"
            return f"TFLite has no {wanted.value} kernel for {node.op_type}"
    elif not (set(FLOAT) & support.precisions):
        return f"the TFLite writer emits {node.op_type} in integer precision only"
    if support.check is None:
        return None
    if spatial1d.is_1d(graph, node):  # checked as the lowering writes it
        graph, node = spatial1d.lifted_view(graph, node)
    return support.check(graph, node, integer)


def _always(graph: Graph, node: Node) -> bool:
    return True


# ============================================================================ helpers
def _ints(values: object, n: int, default: int) -> list[int]:
    if values is None:
        return [default] * n
    return [int(v) for v in values]  # type: ignore[union-attr]


def _onnx_pads(node: Node, in_hw: tuple[int | None, int | None], kernel: tuple[int, int], strides: list[int],
               dilations: list[int]) -> list[int | None]:
    """[top, left, bottom, right] as ONNX means them, ``auto_pad`` resolved; None where that depends on a
    dynamic size (SAME_* with a stride > 1)."""
    auto = _auto_pad(node)
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        pads: list[int | None] = [0, 0, 0, 0]
        for i in range(2):
            k_eff = (kernel[i] - 1) * dilations[i] + 1
            if in_hw[i] is None:
                if strides[i] != 1:
                    pads[i] = pads[i + 2] = None
                    continue
                total = k_eff - 1  # stride 1: out = in, whatever in is
            else:
                out = -(-in_hw[i] // strides[i])
                total = max((out - 1) * strides[i] + k_eff - in_hw[i], 0)
            small = total // 2
            pads[i], pads[i + 2] = (small, total - small) if auto == "SAME_UPPER" else (total - small, small)
        return pads
    if auto == "VALID":
        return [0, 0, 0, 0]
    return _ints(node.attr("pads"), 4, 0)


def _auto_pad(node: Node) -> str:
    auto = node.attr("auto_pad", "NOTSET")
    return auto.decode() if isinstance(auto, bytes) else auto


def _pad_plan(node: Node, in_hw: tuple[int | None, int | None], out_hw: tuple[int | None, int | None],
              kernel: tuple[int, ...]) -> tuple[list[int | None], list[int | None], bool]:
    """(begin, end) padding that makes a VALID window produce ONNX's output size, and whether it is TFLite's SAME.

    A dynamic axis (size None) keeps ONNX's pads as they are: VALID windows over ``in + begin + end`` give
    ONNX's floor-mode size for every ``in`` (a pad no window reads is read by none). It is TFLite's SAME for
    every size only at stride 1, or under SAME_UPPER (TFLite's SAME is ONNX's SAME_UPPER); a SAME_* pad with a
    stride > 1 depends on the size and stays None (``_dynamic_window_reason`` refuses what SAME cannot cover).
    """
    strides = _ints(node.attr("strides"), 2, 1)
    dilations = _ints(node.attr("dilations"), 2, 1)
    pads = _onnx_pads(node, in_hw, (int(kernel[0]), int(kernel[1])), strides, dilations)
    begin: list[int | None] = [0, 0]
    end: list[int | None] = [0, 0]
    same = True
    for i in range(2):
        k_eff = (kernel[i] - 1) * dilations[i] + 1
        if in_hw[i] is None or out_hw[i] is None:
            begin[i], end[i] = pads[i], pads[i + 2]
            if begin[i] is None:
                same = same and _auto_pad(node) == "SAME_UPPER"
            else:
                same = same and strides[i] == 1 and begin[i] == (k_eff - 1) // 2 and end[i] == k_eff - 1 - (k_eff - 1) // 2
            continue
        needed = (out_hw[i] - 1) * strides[i] + k_eff
        begin[i] = pads[i]
        end[i] = max(needed - in_hw[i] - pads[i], 0)  # ceil_mode windows need more; unused pads are dropped
        total = max((-(-in_hw[i] // strides[i]) - 1) * strides[i] + k_eff - in_hw[i], 0)
        same = same and out_hw[i] == -(-in_hw[i] // strides[i]) and begin[i] == total // 2 and end[i] == total - total // 2
    return begin, end, same


def _hw(ctx: NodeContext, name: str) -> tuple[int | None, int | None]:
    """The stored (NHWC) spatial sizes of ``name``; None for a dynamic one."""
    shape = ctx.shape(name)
    return tuple(int(d) if isinstance(d, int) else None for d in shape[1:3])  # type: ignore[return-value]


def _padding(ctx: NodeContext, x: int, kernel: tuple[int, int], pad_value: str = "zero") -> tuple[str, int]:
    """TFLite padding for an NHWC spatial node: "SAME" or "VALID", or an explicit PAD in front and "VALID".

    ``pad_value``: "zero" (conv; SAME allowed), "zero-count" (average pool counting the pads:
    never SAME, which excludes them) or "lowest" (max pool).
    """
    node = ctx.node
    in_shape = ctx.shape(node.inputs[0])
    in_hw, out_hw = _hw(ctx, node.inputs[0]), _hw(ctx, node.outputs[0])
    begin, end, same = _pad_plan(node, in_hw, out_hw, kernel)
    if begin == [0, 0] and end == [0, 0]:
        return "VALID", x
    if same and pad_value != "zero-count":
        return "SAME", x
    if None in begin or None in end:
        raise UnsupportedOperatorError(f"node {node.name!r}: its padding depends on a dynamic spatial size; {STATIC_SHAPE_HINT}")
    paddings = [[0, 0], [begin[0], end[0]], [begin[1], end[1]], [0, 0]]
    padded = (in_shape[0], *(None if n is None else n + b + e for n, b, e in zip(in_hw, begin, end)), in_shape[3])
    out = ctx.temp(x, padded, "pad")
    if pad_value == "lowest":
        src = ctx.w.model.tensors[x]
        info = np.iinfo(src.dtype) if src.dtype.startswith("int") else None
        low = np.array([info.min if info else np.finfo(np.float32).min], dtype=src.dtype)
        value = ctx.w.new_tensor(f"{node.name}/pad_value", src.dtype, (1,), src.quant, low)
        ctx.op("PADV2", [x, ctx.param(paddings, suffix="paddings"), value], [out], "PadV2Options",
               ctx.version(int8=2, int16=3))
    else:
        ctx.op("PAD", [x, ctx.param(paddings, suffix="paddings")], [out], "PadOptions", ctx.version(int8=2, int16=3))
    return "VALID", out


def _spatial_check(graph: Graph, node: Node, integer: bool) -> str | None:
    """Rank-4 data. Dynamic spatial sizes are fine here: TFLite's kernels size their outputs when the runner
    resizes the inputs; what a node computes from a size is checked by its own check."""
    x = graph.tensors.get(node.inputs[0])
    if x is None or x.rank != 4:
        return f"{node.op_type} {node.name!r}: only 2-D spatial operators (rank-4 data) map to TFLite"
    return None


def _dynamic_axes(graph: Graph, node: Node) -> list[int]:
    """The spatial axes (0: height, 1: width) where the node's (NCHW) input has a dynamic size."""
    shape = graph.tensors[node.inputs[0]].shape
    return [i for i in range(2) if shape is None or not isinstance(shape[2 + i], int)]


def _dynamic_window_reason(graph: Graph, node: Node) -> str | None:
    """Why a conv or pool window over a dynamic spatial size cannot be written once for every size, or None.

    ONNX's explicit pads in front of a VALID window give ONNX's floor-mode output for any size, and so do
    TFLite's SAME (= ONNX SAME_UPPER) and any stride-1 padding. What depends on the size itself is refused.
    """
    strides = _ints(node.attr("strides"), 2, 1)
    auto = _auto_pad(node)
    for i in _dynamic_axes(graph, node):
        if strides[i] == 1:
            continue
        if auto == "SAME_LOWER":
            return (f"{node.op_type} {node.name!r}: SAME_LOWER padding with stride {strides[i]} depends on the "
                    f"dynamic spatial size; {STATIC_SHAPE_HINT}")
        if node.attr("ceil_mode", 0):
            return (f"{node.op_type} {node.name!r}: ceil_mode with stride {strides[i]} pads by an amount that depends "
                    f"on the dynamic spatial size; {STATIC_SHAPE_HINT}")
        if auto == "SAME_UPPER" and node.op_type == "AveragePool" and node.attr("count_include_pad", 0):
            return (f"AveragePool {node.name!r}: SAME_UPPER pads counted in the average depend on the dynamic "
                    f"spatial size; {STATIC_SHAPE_HINT}")
    return None


def _bias(ctx: NodeContext, node: Node, index: int, channels: int | None = None) -> int:
    """The bias input; with ``channels``, zeros when the node has none (CONV_2D and DEPTHWISE_CONV_2D need one)."""
    if len(node.inputs) > index and node.inputs[index]:
        return ctx.input(node.inputs[index])
    if channels is None:
        return -1
    if not ctx.integer:
        return ctx.param(np.zeros(channels, np.float32), "float32", "zero_bias")
    from mpcompile_tflite.model import QuantParams

    x_spec, w_spec = ctx.spec(node.inputs[0]), ctx.tensor(node.inputs[1]).quant
    scale = (np.float32(x_spec.scale) * w_spec.scale.astype(np.float32)).astype(np.float32).reshape(-1)
    dtype = "int64" if ctx.kind == "int16" else "int32"
    return ctx.w.new_tensor(f"{node.name}/zero_bias", dtype, (channels,),
                            QuantParams.from_arrays(np.broadcast_to(scale, (channels,)) if scale.size == 1 else scale,
                                                    np.zeros(channels, np.int64)),
                            np.zeros(channels, dtype))


# ============================================================================ convolution
def _conv_check(graph: Graph, node: Node, integer: bool) -> str | None:
    reason = _spatial_check(graph, node, integer) or _dynamic_window_reason(graph, node)
    if reason:
        return reason
    w = graph.tensors.get(node.inputs[1])
    if w is None or not w.is_constant:
        return f"Conv {node.name!r}: TFLite needs constant weights"
    if integer and len(node.inputs) > 2 and node.inputs[2] and graph.tensors[node.inputs[2]].quant is None:
        return f"Conv {node.name!r}: the plan has no bias spec"
    return None


@emitter("Conv", check=_conv_check, fuses=_always)
def conv(ctx: NodeContext, node: Node) -> None:
    x = ctx.input(node.inputs[0])
    weight = node.inputs[1]
    w_shape = ctx.tensor(weight).value.shape
    kernel = (int(w_shape[1]), int(w_shape[2]))
    w = ctx.input(weight)
    channels = int(w_shape[3] if node.attr("weight_layout") == "1HWO" else w_shape[0])
    b = _bias(ctx, node, 2, channels)
    padding, x = _padding(ctx, x, kernel)
    strides = _ints(node.attr("strides"), 2, 1)
    dilations = _ints(node.attr("dilations"), 2, 1)
    out = ctx.output(node.outputs[0])
    common = dict(padding=padding, strideH=strides[0], strideW=strides[1], dilationHFactor=dilations[0],
                  dilationWFactor=dilations[1], fusedActivationFunction=ctx.fused_activation)
    if node.attr("weight_layout") == "1HWO":
        ctx.op("DEPTHWISE_CONV_2D", [x, w, b], [out], "DepthwiseConv2DOptions",
               ctx.version(int8=3, int16=5, float=2 if dilations != [1, 1] else 1),
               depthMultiplier=int(node.attr("depth_multiplier", 1)), **common)
    else:
        # 16x8 CONV_2D is version 4 in TFLite's versioning table (runtime_version.cc: "2.3.0").
        version = 6 if int(node.attr("group", 1)) > 1 else ctx.version(int8=3, int16=4)
        ctx.op("CONV_2D", [x, w, b], [out], "Conv2DOptions", version, **common)


def _transpose_crops(node: Node, in_hw: tuple[int | None, int | None], out_hw: tuple[int | None, int | None],
                     kernel: tuple[int, int]) -> list[tuple[int, int]] | str:
    """Per spatial axis, what to cut from the start and the end of TRANSPOSE_CONV's full (VALID) output
    ``(in - 1)·stride + kernel`` to get ONNX's output, or why that cannot be written.

    On a dynamic axis the cuts must not depend on the size: ONNX's output is ``in·stride`` under SAME_* (cut
    ``kernel - stride`` in all) and ``full - begin - end + output_padding`` otherwise (cut ``end - output_padding``
    at the end), whatever ``in`` is. An ``output_shape`` attribute fixes the output while the input varies.
    """
    strides = _ints(node.attr("strides"), 2, 1)
    pads = _ints(node.attr("pads"), 4, 0)
    extra = _ints(node.attr("output_padding"), 2, 0)
    auto = _auto_pad(node)
    crops = []
    for i in range(2):
        if in_hw[i] is not None and out_hw[i] is not None:
            full = (in_hw[i] - 1) * strides[i] + kernel[i]
            total = full - out_hw[i]
            if auto in ("SAME_UPPER", "SAME_LOWER"):
                begin = total // 2 if auto == "SAME_UPPER" else total - total // 2
            else:
                begin = pads[i]
        elif node.attr("output_shape") is not None:
            return "an output_shape attribute with a dynamic input size is not written for TFLite"
        elif auto in ("SAME_UPPER", "SAME_LOWER"):
            total = kernel[i] - strides[i]
            begin = total // 2 if auto == "SAME_UPPER" else total - total // 2
        else:
            total = pads[i] + pads[i + 2] - extra[i]
            begin = pads[i]
        if total < 0 or begin < 0 or total - begin < 0:
            return "output_padding beyond the full output is not written for TFLite"
        crops.append((begin, total - begin))
    return crops


def _nchw_hw(graph: Graph, name: str) -> tuple[int | None, int | None]:
    shape = graph.tensors[name].shape
    if shape is None:
        return None, None
    return tuple(int(d) if isinstance(d, int) else None for d in shape[2:4])  # type: ignore[return-value]


def _conv_transpose_check(graph: Graph, node: Node, integer: bool) -> str | None:
    reason = _spatial_check(graph, node, integer)
    if reason:
        return reason
    if int(node.attr("group", 1)) != 1:
        return f"ConvTranspose {node.name!r}: grouped transposed convolution is not written for TFLite"
    if _ints(node.attr("dilations"), 2, 1) != [1, 1]:
        return f"ConvTranspose {node.name!r}: TFLite TRANSPOSE_CONV has no dilation"
    w = graph.tensors.get(node.inputs[1])
    if w is None or not w.is_constant:
        return f"ConvTranspose {node.name!r}: TFLite needs constant weights"
    in_hw, out_hw = _nchw_hw(graph, node.inputs[0]), _nchw_hw(graph, node.outputs[0])
    if any((a is None) != (b is None) for a, b in zip(in_hw, out_hw)):
        return f"ConvTranspose {node.name!r}: TFLite needs the output size static where the input's is"
    crops = _transpose_crops(node, in_hw, out_hw, (int(w.value.shape[2]), int(w.value.shape[3])))
    if isinstance(crops, str):
        return f"ConvTranspose {node.name!r}: {crops}"
    return None


@emitter("ConvTranspose", check=_conv_transpose_check, fuses=_always)
def conv_transpose(ctx: NodeContext, node: Node) -> None:
    x = ctx.input(node.inputs[0])
    w_shape = ctx.tensor(node.inputs[1]).value.shape  # OHWI
    w = ctx.input(node.inputs[1])
    b = _bias(ctx, node, 2)
    in_shape, out_shape = ctx.shape(node.inputs[0]), ctx.shape(node.outputs[0])
    in_hw, out_hw = _hw(ctx, node.inputs[0]), _hw(ctx, node.outputs[0])
    strides = _ints(node.attr("strides"), 2, 1)
    kernel = (int(w_shape[1]), int(w_shape[2]))
    crops = _transpose_crops(node, in_hw, out_hw, kernel)
    if isinstance(crops, str):
        raise UnsupportedOperatorError(f"ConvTranspose {node.name!r}: {crops}")
    full = [None if n is None else (n - 1) * strides[i] + kernel[i] for i, n in enumerate(in_hw)]
    crop = any(begin or end for begin, end in crops)
    out = ctx.output(node.outputs[0])
    target = out
    if crop:
        target = ctx.temp(out, (in_shape[0], full[0], full[1], out_shape[3]), "full")
    channels = int(out_shape[3])
    if None in in_hw:
        # The full output of any input size, read when the runner sizes the inputs: SHAPE(x)·stride + kernel - stride
        shape = ctx.runtime_shape(x, [1, strides[0], strides[1], 0],
                                  [0, kernel[0] - strides[0], kernel[1] - strides[1], channels], "output_shape")
    else:
        # TRANSPOSE_CONV checks output_shape against its input's batch: a dynamic batch is read at run time
        shape = ctx.batch_shape(x, 0, in_shape[0], [full[0], full[1], channels], "output_shape")
    version = ctx.version(int8=2, int16=2)
    if b >= 0:
        version = max(version, 3)
    if ctx.fused_activation != "NONE":
        version = 4
    ctx.op("TRANSPOSE_CONV", [shape, w, x] + ([b] if b >= 0 else []), [target], "TransposeConvOptions", version,
           padding="VALID", strideH=strides[0], strideW=strides[1], fusedActivationFunction=ctx.fused_activation)
    if crop:
        # ends counted from the end (negative), so the same cut holds for every size; 0 = to the end (mask)
        begin = [0, crops[0][0], crops[1][0], 0]
        end = [0, -crops[0][1], -crops[1][1], 0]
        end_mask = 0b1001 | (0b0010 if not crops[0][1] else 0) | (0b0100 if not crops[1][1] else 0)
        ctx.op("STRIDED_SLICE", [target, ctx.param(begin, suffix="begin"), ctx.param(end, suffix="end"),
                                 ctx.param([1, 1, 1, 1], suffix="strides")], [out], "StridedSliceOptions",
               ctx.version(int8=2, int16=2), beginMask=0b1001, endMask=end_mask)


# ============================================================================ fully connected / matmul
def _fc_weight_ok(graph: Graph, node: Node) -> bool:
    w = graph.tensors.get(node.inputs[1]) if len(node.inputs) > 1 else None
    return w is not None and w.is_constant and w.value.ndim == 2


def _gemm_check(graph: Graph, node: Node, integer: bool) -> str | None:
    if not integer:
        return None
    if float(node.attr("alpha", 1.0)) != 1.0 or float(node.attr("beta", 1.0)) != 1.0:
        return f"Gemm {node.name!r}: alpha/beta ≠ 1 has no integer FULLY_CONNECTED form"
    if len(node.inputs) > 2 and node.inputs[2]:
        c = graph.tensors[node.inputs[2]]
        if not c.is_constant or c.value.ndim != 1 or c.quant is None:
            return f"Gemm {node.name!r}: only a 1-D constant bias fits integer FULLY_CONNECTED"
    if not _fc_weight_ok(graph, node) and len(node.inputs) > 2 and node.inputs[2]:
        return f"Gemm {node.name!r}: a bias on activation × activation has no integer form"
    return None


def _matmul_check(graph: Graph, node: Node, integer: bool) -> str | None:
    b = graph.tensors.get(node.inputs[1])
    if integer and b is not None and b.is_constant and b.value.ndim != 2:
        return f"MatMul {node.name!r}: a batched constant operand runs as BATCH_MATMUL, float only"
    return None


def _fc_fuses(graph: Graph, node: Node) -> bool:
    # FULLY_CONNECTED has a fused activation; BATCH_MATMUL has none. A broadcast bias adds an ADD after.
    if node.attr("weight_layout") != "OI":
        return False
    if len(node.inputs) > 2 and node.inputs[2]:
        c = graph.tensors[node.inputs[2]]
        return c.is_constant and c.value.ndim == 1
    return True


@emitter("Gemm", check=_gemm_check, fuses=_fc_fuses)
@emitter("MatMul", check=_matmul_check, fuses=_fc_fuses)
def fully_connected(ctx: NodeContext, node: Node) -> None:
    if node.attr("weight_layout") != "OI":
        _batch_matmul(ctx, node)
        return
    x = ctx.input(node.inputs[0])
    w = ctx.input(node.inputs[1])
    bias_name = node.inputs[2] if len(node.inputs) > 2 else ""
    extra_bias = bias_name and not (ctx.is_constant(bias_name) and ctx.tensor(bias_name).value.ndim == 1)
    b = -1 if (not bias_name or extra_bias) else ctx.input(bias_name)
    keep = len(ctx.shape(node.inputs[0])) > 2
    out = ctx.output(node.outputs[0])
    target = ctx.temp(out, ctx.shape(node.outputs[0]), "matmul") if extra_bias else out
    version = 5 if keep else ctx.version(int8=4, int16=1)
    ctx.op("FULLY_CONNECTED", [x, w, b], [target], "FullyConnectedOptions", version,
           fusedActivationFunction="NONE" if extra_bias else ctx.fused_activation, keepNumDims=keep)
    if extra_bias:
        ctx.op("ADD", [target, ctx.input(bias_name)], [out], "AddOptions", 1, fusedActivationFunction="NONE")


def _batch_matmul(ctx: NodeContext, node: Node) -> None:
    a, b = ctx.input(node.inputs[0]), ctx.input(node.inputs[1])
    out = ctx.output(node.outputs[0])
    adj_x = bool(node.attr("transA", 0)) if node.op_type == "Gemm" else False
    adj_y = bool(node.attr("transB", 0)) if node.op_type == "Gemm" else False
    bias = node.inputs[2] if node.op_type == "Gemm" and len(node.inputs) > 2 else ""
    target = ctx.temp(out, ctx.shape(node.outputs[0]), "matmul") if bias else out
    ctx.op("BATCH_MATMUL", [a, b], [target], "BatchMatMulOptions", ctx.version(int8=2, int16=3), adjX=adj_x, adjY=adj_y)
    if bias:
        ctx.op("ADD", [target, ctx.input(bias)], [out], "AddOptions", 1, fusedActivationFunction="NONE")


# ============================================================================ elementwise
def _binary(op: str, options: str | None, versions: dict[str, int], pot_scale: bool = False) -> Callable:
    def emit(ctx: NodeContext, node: Node) -> None:
        a, b = ctx.input(node.inputs[0]), ctx.input(node.inputs[1])
        out = ctx.output(node.outputs[0])
        fields: dict[str, object] = {}
        if options in ("AddOptions", "SubOptions", "MulOptions", "DivOptions"):
            fields["fusedActivationFunction"] = ctx.fused_activation
        if pot_scale:
            fields["potScaleInt16"] = False  # general int16 scales, not power-of-two only
        ctx.op(op, [a, b], [out], options, ctx.version(**versions), **fields)

    return emit


def _binary_check(graph: Graph, node: Node, integer: bool) -> str | None:
    if len([i for i in node.inputs if i]) != 2:
        return f"{node.op_type} {node.name!r}: TFLite's {node.op_type} takes exactly two operands"
    return None


def _mul_versions(ctx: NodeContext, node: Node) -> dict[str, int]:
    int8 = 2
    specs = [ctx.spec(node.inputs[0]), ctx.spec(node.inputs[1]), ctx.spec(node.outputs[0])]
    if all(s is not None for s in specs):
        if float(specs[0].scale) * float(specs[1].scale) / float(specs[2].scale) >= 1.0:  # type: ignore[union-attr]
            int8 = 3
    return {"int8": int8, "int16": 4}


emitter("Add", check=_binary_check, fuses=_always)(_binary("ADD", "AddOptions", {"int8": 2, "int16": 3}, pot_scale=True))
emitter("Sub", check=_binary_check, fuses=_always)(_binary("SUB", "SubOptions", {"int8": 2, "int16": 5}, pot_scale=True))
emitter("Div", precisions=FLOAT, check=_binary_check)(_binary("DIV", "DivOptions", {}))
emitter("Pow", precisions=FLOAT, check=_binary_check)(_binary("POW", "PowOptions", {}))
emitter("Max", precisions=FLOAT, check=_binary_check)(_binary("MAXIMUM", "MaximumMinimumOptions", {}))
emitter("Min", precisions=FLOAT, check=_binary_check)(_binary("MINIMUM", "MaximumMinimumOptions", {}))


def _broadcast_shape(a: tuple, b: tuple) -> tuple:
    """Numpy broadcasting of two shapes whose dims may be symbolic (a size-1 dim takes the other's)."""
    a, b = (1,) * (len(b) - len(a)) + a, (1,) * (len(a) - len(b)) + b
    return tuple(y if x == 1 else x for x, y in zip(a, b))


def _add_all(ctx: NodeContext, node: Node, out: int) -> int:
    """The sum of the node's inputs into ``out`` (one: a copy; three or more of one shape: ADD_N; else ADDs); their count."""
    names = [i for i in node.inputs if i]
    inputs = [ctx.input(i) for i in names]
    if len(inputs) == 1:
        ctx.op("RESHAPE", [inputs[0], ctx.param(_dims(ctx, node.outputs[0]), suffix="shape")], [out], "ReshapeOptions")
    elif len(inputs) > 2 and len({tuple(ctx.shape(i)) for i in names}) == 1:
        ctx.op("ADD_N", inputs, [out])
    else:  # ADD_N does not broadcast: ((a + b) + c)..., ONNX Runtime's order
        total, shape = inputs[0], tuple(ctx.shape(names[0]))
        for k, term in enumerate(inputs[1:], start=1):
            shape = _broadcast_shape(shape, tuple(ctx.shape(names[k])))
            target = out if k == len(inputs) - 1 else ctx.temp(out, shape, f"partial_sum_{k}")
            ctx.op("ADD", [total, term], [target], "AddOptions", 1, fusedActivationFunction="NONE")
            total = target
    return len(inputs)


@emitter("Sum", precisions=FLOAT)
def sum_(ctx: NodeContext, node: Node) -> None:
    _add_all(ctx, node, ctx.output(node.outputs[0]))


@emitter("Mean", precisions=FLOAT)
def mean(ctx: NodeContext, node: Node) -> None:
    """The sum divided by the input count, in that order (ONNX Runtime's Mean)."""
    out = ctx.output(node.outputs[0])
    if len([i for i in node.inputs if i]) == 1:
        _add_all(ctx, node, out)
        return
    total = ctx.temp(out, ctx.shape(node.outputs[0]), "sum")
    count = _add_all(ctx, node, total)
    ctx.op("DIV", [total, ctx.param([float(count)], "float32", "count")], [out], "DivOptions", 1,
           fusedActivationFunction="NONE")


@emitter("Mul", check=_binary_check, fuses=_always)
def mul(ctx: NodeContext, node: Node) -> None:
    a, b = ctx.input(node.inputs[0]), ctx.input(node.inputs[1])
    out = ctx.output(node.outputs[0])
    ctx.op("MUL", [a, b], [out], "MulOptions", ctx.version(**_mul_versions(ctx, node)),
           fusedActivationFunction=ctx.fused_activation)


def _unary(op: str, options: str | None = None, int8: int = 1, int16: int = 1, **fixed: object) -> Callable:
    def emit(ctx: NodeContext, node: Node) -> None:
        x = ctx.input(node.inputs[0])
        out = ctx.output(node.outputs[0])
        ctx.op(op, [x], [out], options, ctx.version(int8=int8, int16=int16), **fixed)

    return emit


emitter("Sigmoid")(_unary("LOGISTIC", None, int8=2, int16=3))
emitter("Tanh")(_unary("TANH", None, int8=2, int16=3))
emitter("HardSwish", precisions=(I8, F16, F32))(_unary("HARD_SWISH", None))
emitter("Sqrt", precisions=FLOAT)(_unary("SQRT"))
emitter("Rsqrt", precisions=FLOAT)(_unary("RSQRT"))  # Reciprocal(Sqrt(x)) fused by fuse.py
emitter("Exp", precisions=FLOAT)(_unary("EXP"))
emitter("Log", precisions=FLOAT)(_unary("LOG"))
emitter("Abs", precisions=FLOAT)(_unary("ABS"))
emitter("Neg", precisions=FLOAT)(_unary("NEG"))
emitter("Floor", precisions=FLOAT)(_unary("FLOOR"))


@emitter("Reciprocal", precisions=FLOAT)
def reciprocal(ctx: NodeContext, node: Node) -> None:
    # no RECIPROCAL builtin: 1 / x (correctly rounded, as ONNX Runtime computes it)
    x = ctx.input(node.inputs[0])
    out = ctx.output(node.outputs[0])
    ctx.op("DIV", [ctx.param([1.0], "float32", "one"), x], [out], "DivOptions", 1, fusedActivationFunction="NONE")


@emitter("Ceil", precisions=FLOAT)
def ceil(ctx: NodeContext, node: Node) -> None:
    # LiteRT's built-in resolver registers no CEIL: ceil(x) = −floor(−x)
    x = ctx.input(node.inputs[0])
    out = ctx.output(node.outputs[0])
    shape = ctx.shape(node.outputs[0])
    negated, floored = ctx.temp(out, shape, "negated"), ctx.temp(out, shape, "floored")
    ctx.op("NEG", [x], [negated])
    ctx.op("FLOOR", [negated], [floored])
    ctx.op("NEG", [floored], [out])


@emitter("LeakyRelu")
def leaky_relu(ctx: NodeContext, node: Node) -> None:
    x = ctx.input(node.inputs[0])
    out = ctx.output(node.outputs[0])
    ctx.op("LEAKY_RELU", [x], [out], "LeakyReluOptions", ctx.version(int16=2), alpha=float(node.attr("alpha", 0.01)))


@emitter("PRelu", precisions=(I8, F16, F32))
def prelu(ctx: NodeContext, node: Node) -> None:
    x, slope = ctx.input(node.inputs[0]), ctx.input(node.inputs[1])
    out = ctx.output(node.outputs[0])
    ctx.op("PRELU", [x, slope], [out])


def _gelu_check(graph: Graph, node: Node, integer: bool) -> str | None:
    approx = node.attr("approximate", "none")
    approx = approx.decode() if isinstance(approx, bytes) else approx
    return None if approx in ("none", "tanh") else f"Gelu {node.name!r}: approximate={approx!r} is unknown"


@emitter("Gelu", precisions=(I8, F16, F32), check=_gelu_check)
def gelu(ctx: NodeContext, node: Node) -> None:
    approx = node.attr("approximate", "none")
    approx = approx.decode() if isinstance(approx, bytes) else approx
    x = ctx.input(node.inputs[0])
    out = ctx.output(node.outputs[0])
    ctx.op("GELU", [x], [out], "GeluOptions", ctx.version(int8=2), approximate=approx == "tanh")


def _hard_sigmoid_weights(alpha: float, x_scale: float) -> tuple[np.ndarray, float, float]:
    """(int8 weight [[±127]], its scale |alpha|/127, the bias scale s_x·s_w) that compute alpha·x exactly."""
    w_scale = np.float32(abs(alpha) / 127.0) if alpha != 0.0 else np.float32(1.0)
    q = np.array([[127 if alpha > 0 else -127 if alpha < 0 else 0]], np.int8)
    return q, float(w_scale), float(np.float32(x_scale) * w_scale)


def _hard_sigmoid_check(graph: Graph, node: Node, integer: bool) -> str | None:
    if not integer:
        return None
    x = graph.tensors[node.inputs[0]].quant
    if x is None or x.axis is not None:
        return None  # legalization handles unquantized inputs; per-tensor activations only
    _, _, bias_scale = _hard_sigmoid_weights(float(node.attr("alpha", 0.2)), float(x.scale))
    if abs(float(node.attr("beta", 0.5)) / bias_scale) >= 2**31 - 1:
        return f"HardSigmoid {node.name!r}: beta does not fit the int32 bias of the integer form at this input scale"
    return None


@emitter("HardSigmoid", check=_hard_sigmoid_check)
def hard_sigmoid(ctx: NodeContext, node: Node) -> None:
    """max(0, min(1, alpha·x + beta)).

    Float: MUL, ADD, RELU_0_TO_1. Integer: alpha·x + beta in one requantization, as a 1×1
    FULLY_CONNECTED (weight ±127 at scale |alpha|/127, int32 bias beta at s_x·s_w: the accumulator is
    exact, rounded once to the output's spec), then MAXIMUM/MINIMUM with the quantized 0 and 1 (exact:
    clamping commutes with quantizing).
    """
    alpha, beta = float(node.attr("alpha", 0.2)), float(node.attr("beta", 0.5))
    x = ctx.input(node.inputs[0])
    out = ctx.output(node.outputs[0])
    shape = ctx.shape(node.outputs[0])
    if not ctx.integer:
        scaled = ctx.temp(out, shape, "scaled")
        shifted = ctx.temp(out, shape, "shifted")
        ctx.op("MUL", [x, ctx.param([alpha], "float32", "alpha")], [scaled], "MulOptions")
        ctx.op("ADD", [scaled, ctx.param([beta], "float32", "beta")], [shifted], "AddOptions")
        ctx.op("RELU_0_TO_1", [shifted], [out])
        return
    from mpcompile_tflite.model import QuantParams

    x_spec = ctx.spec(node.inputs[0])
    q_w, w_scale, bias_scale = _hard_sigmoid_weights(alpha, float(x_spec.scale))
    rows = int(np.prod(shape)) if all(isinstance(d, int) for d in shape) else -1
    column = ctx.temp(x, (rows, 1), "column")
    ctx.op("RESHAPE", [x, ctx.param([rows, 1], suffix="column_shape")], [column], "ReshapeOptions", 1, newShape=[rows, 1])
    weight = ctx.w.new_tensor(f"{node.name}/alpha", "int8", (1, 1), QuantParams.from_arrays([w_scale], [0]), q_w)
    bias_type = "int64" if ctx.kind == "int16" else "int32"
    bias = ctx.w.new_tensor(f"{node.name}/beta", bias_type, (1,), QuantParams.from_arrays([bias_scale], [0]),
                            np.array([np.rint(beta / bias_scale)], bias_type))
    affine = ctx.temp(out, (rows, 1), "affine")
    ctx.op("FULLY_CONNECTED", [column, weight, bias], [affine], "FullyConnectedOptions", ctx.version(int8=4, int16=1),
           fusedActivationFunction="NONE", keepNumDims=False)
    low = ctx.temp(out, (rows, 1), "at_least_0")
    high = ctx.temp(out, (rows, 1), "at_most_1")
    ctx.op("MAXIMUM", [affine, ctx.scalar_like(node.outputs[0], 0.0, "zero")], [low], "MaximumMinimumOptions",
           ctx.version(int8=2, int16=4))
    ctx.op("MINIMUM", [low, ctx.scalar_like(node.outputs[0], 1.0, "one")], [high], "MaximumMinimumOptions",
           ctx.version(int8=2, int16=4))
    _reshape_like(ctx, high, x, out, node.outputs[0])


def _reshape_like(ctx: NodeContext, source: int, like: int, out: int, name: str) -> None:
    """RESHAPE ``source`` back to the shape of tensor ``like`` (graph tensor ``name``'s shape): a constant shape
    with at most one -1, or, with more dynamic dimensions (a dynamic batch and H×W), ``like``'s run-time shape."""
    dims = [d if isinstance(d, int) and d >= 0 else -1 for d in ctx.shape(name)]
    if dims.count(-1) <= 1:
        ctx.op("RESHAPE", [source, ctx.param(dims, suffix="shape")], [out], "ReshapeOptions", 1, newShape=dims)
        return
    ctx.op("RESHAPE", [source, ctx.runtime_shape(like, None, None, "shape")], [out], "ReshapeOptions", 1)


# ============================================================================ relu / clip
def _clip_check(graph: Graph, node: Node, integer: bool) -> str | None:
    for index in (1, 2):
        if len(node.inputs) > index and node.inputs[index]:
            t = graph.tensors.get(node.inputs[index])
            if t is None or not t.is_constant:
                return f"Clip {node.name!r}: TFLite needs constant bounds"
    return None


@emitter("Relu", "Clip", check=_clip_check)
def relu(ctx: NodeContext, node: Node) -> None:
    x = ctx.input(node.inputs[0])
    out = ctx.output(node.outputs[0])
    act = fused_activation_name(ctx.graph, node)
    if act is not None:
        ctx.op(act, [x], [out], None, ctx.version(int8=2, int16=3) if act != "RELU_N1_TO_1" else 1)
        return
    lo, hi = clip_bounds(ctx.graph, node)
    src = node.inputs[0]
    if ctx.integer and not same_numbers(ctx.spec(src), ctx.spec(node.outputs[0])):
        # MAXIMUM/MINIMUM keep the quantization: requantize first (exact: clamping commutes with quantizing)
        requant = ctx.temp(out, ctx.shape(node.outputs[0]), "requantized")
        ctx.op("QUANTIZE", [x], [requant], None, ctx.version(int16=2))
        x = requant
    steps = [(op, bound) for op, bound in (("MAXIMUM", lo), ("MINIMUM", hi)) if bound is not None]
    if not steps:
        ctx.op("RESHAPE", [x, ctx.param(list(_dims(ctx, node.outputs[0])), suffix="shape")], [out], "ReshapeOptions")
        return
    for k, (op, bound) in enumerate(steps):
        target = out if k == len(steps) - 1 else ctx.temp(out, ctx.shape(node.outputs[0]), op.lower())
        ctx.op(op, [x, ctx.scalar_like(node.outputs[0], bound, op.lower())], [target], "MaximumMinimumOptions",
               ctx.version(int8=2, int16=4))
        x = target


# ============================================================================ lookup-table ops
@emitter("Softmax", check=lambda g, n, i: _softmax_check(g, n))
def softmax(ctx: NodeContext, node: Node) -> None:
    x = ctx.input(node.inputs[0])
    out = ctx.output(node.outputs[0])
    ctx.op("SOFTMAX", [x], [out], "SoftmaxOptions", ctx.version(int8=2, int16=3), beta=1.0)


@emitter("LogSoftmax", precisions=(I8, F16, F32), check=lambda g, n, i: _softmax_check(g, n))
def log_softmax(ctx: NodeContext, node: Node) -> None:
    x = ctx.input(node.inputs[0])
    out = ctx.output(node.outputs[0])
    ctx.op("LOG_SOFTMAX", [x], [out], "LogSoftmaxOptions", ctx.version(int8=2))


def _softmax_check(graph: Graph, node: Node) -> str | None:
    rank = graph.tensors[node.inputs[0]].rank or 0
    if graph.opset_imports.get("", 17) < 13:
        axis = int(node.attr("axis", 1))
        if (axis + rank if axis < 0 else axis) != rank - 1:
            return f"{node.op_type} {node.name!r}: opset < 13 coerces to 2-D from axis {axis}; only the last axis maps"
    return None


# ============================================================================ pooling and reductions
def _excludes_explicit_pads(node: Node, in_hw: tuple[int | None, int | None], out_hw: tuple[int | None, int | None]) -> bool:
    """An AveragePool that must not count pads, with padding TFLite's SAME does not reproduce."""
    if node.op_type != "AveragePool" or node.attr("count_include_pad", 0):
        return False
    begin, end, same = _pad_plan(node, in_hw, out_hw, tuple(_ints(node.attr("kernel_shape"), 2, 1)))
    return not same and (begin != [0, 0] or end != [0, 0])


def _pool_check(graph: Graph, node: Node, integer: bool) -> str | None:
    reason = _spatial_check(graph, node, integer)
    if reason:
        return reason
    if _ints(node.attr("dilations"), 2, 1) != [1, 1]:
        return f"{node.op_type} {node.name!r}: TFLite pooling has no dilation"
    if len([o for o in node.outputs if o]) > 1:
        return f"{node.op_type} {node.name!r}: TFLite MAX_POOL_2D has no indices output"
    reason = _dynamic_window_reason(graph, node)
    if reason:
        return reason
    x, out = graph.tensors[node.inputs[0]].shape, graph.tensors[node.outputs[0]].shape
    in_hw = tuple(int(d) if isinstance(d, int) else None for d in x[2:4])
    out_hw = tuple(int(d) if isinstance(d, int) else None for d in out[2:4]) if out is not None else (None, None)
    if _excludes_explicit_pads(node, in_hw, out_hw):
        if None in in_hw or None in out_hw:
            return (f"AveragePool {node.name!r}: padding excluded from the count that TFLite's SAME does not "
                    f"reproduce needs a correction sized by the output, and its spatial size is dynamic; {STATIC_SHAPE_HINT}")
        if integer:
            return (f"AveragePool {node.name!r}: padding excluded from the count that TFLite's SAME does not reproduce "
                    f"needs a float correction")
    return None


def _pool(op: str) -> Callable:
    def emit(ctx: NodeContext, node: Node) -> None:
        x = ctx.input(node.inputs[0])
        kernel = tuple(_ints(node.attr("kernel_shape"), 2, 1))
        in_hw, out_hw = _hw(ctx, node.inputs[0]), _hw(ctx, node.outputs[0])
        corrected = _excludes_explicit_pads(node, in_hw, out_hw)
        fill = "lowest" if op == "MAX_POOL_2D" else ("zero-count" if node.attr("count_include_pad", 0) or corrected else "zero")
        padding, x = _padding(ctx, x, kernel, fill)  # type: ignore[arg-type]
        strides = _ints(node.attr("strides"), 2, 1)
        out = ctx.output(node.outputs[0])
        target = ctx.temp(out, ctx.shape(node.outputs[0]), "sum_over_window") if corrected else out
        ctx.op(op, [x], [target], "Pool2DOptions", ctx.version(int8=2, int16=3), padding=padding, strideH=strides[0],
               strideW=strides[1], filterHeight=kernel[0], filterWidth=kernel[1], fusedActivationFunction="NONE")
        if corrected:
            # The window average counted the zero pads: rescale by window size / real cells (float only).
            begin = _pad_plan(node, in_hw, out_hw, kernel)[0]
            counts = [np.array([min(o * strides[i] - begin[i] + kernel[i], in_hw[i]) - max(o * strides[i] - begin[i], 0)
                                for o in range(out_hw[i])], np.float64) for i in range(2)]
            factor = (kernel[0] * kernel[1]) / np.outer(counts[0], counts[1])
            ctx.op("MUL", [target, ctx.param(factor.reshape(1, out_hw[0], out_hw[1], 1), "float32", "count_correction")],
                   [out], "MulOptions", 1, fusedActivationFunction="NONE")

    return emit


emitter("MaxPool", check=_pool_check)(_pool("MAX_POOL_2D"))
emitter("AveragePool", check=_pool_check)(_pool("AVERAGE_POOL_2D"))


def _reduce(op: str, axes_of: Callable[[NodeContext, Node], list[int]], keep_of: Callable[[Node], bool]) -> Callable:
    def emit(ctx: NodeContext, node: Node) -> None:
        x = ctx.input(node.inputs[0])
        out = ctx.output(node.outputs[0])
        ctx.op(op, [x, ctx.param(axes_of(ctx, node), suffix="axes")], [out], "ReducerOptions",
               ctx.version(int8=2, int16=3), keepDims=keep_of(node))

    return emit


emitter("GlobalAveragePool", check=_spatial_check)(_reduce("MEAN", lambda c, n: [1, 2], lambda n: True))
emitter("GlobalMaxPool", check=_spatial_check)(_reduce("REDUCE_MAX", lambda c, n: [1, 2], lambda n: True))


def _axes(ctx: NodeContext, node: Node) -> list[int]:
    return [int(a) for a in node.attr("axes")]


def _keep(node: Node) -> bool:
    return bool(node.attr("keepdims", 1))


emitter("ReduceMean", precisions=(I8, I16, F16, F32))(_reduce("MEAN", _axes, _keep))
emitter("ReduceMax", precisions=(I8, I16, F16, F32))(_reduce("REDUCE_MAX", _axes, _keep))
emitter("ReduceMin", precisions=(I8, I16, F16, F32))(_reduce("REDUCE_MIN", _axes, _keep))
emitter("ReduceSum", precisions=FLOAT)(_reduce("SUM", _axes, _keep))
emitter("ReduceProd", precisions=FLOAT)(_reduce("REDUCE_PROD", _axes, _keep))


def _norm_reduce_check(graph: Graph, node: Node, integer: bool) -> str | None:
    axes = node.attr("axes")
    if axes is None and len(node.inputs) > 1 and node.inputs[1]:
        t = graph.tensors.get(node.inputs[1])
        if t is None or not t.is_constant:
            return f"{node.op_type} {node.name!r}: TFLite needs constant axes"
        axes = t.value.reshape(-1).tolist()
    if not axes and node.attr("noop_with_empty_axes", 0):
        return f"{node.op_type} {node.name!r}: noop_with_empty_axes with no axes is not written for TFLite"
    return None


#: ReduceL1 = SUM(|x|), ReduceSumSquare = SUM(x·x), ReduceL2 = SQRT(SUM(x·x)): float operators, the
#: order ONNX Runtime computes them in.
_NORM_REDUCTIONS = {"ReduceL1": ("ABS", None), "ReduceSumSquare": ("MUL", None), "ReduceL2": ("MUL", "SQRT")}


@emitter(*_NORM_REDUCTIONS, precisions=FLOAT, check=_norm_reduce_check)
def norm_reduce(ctx: NodeContext, node: Node) -> None:
    first, last = _NORM_REDUCTIONS[node.op_type]
    x = ctx.input(node.inputs[0])
    out = ctx.output(node.outputs[0])
    elementwise = ctx.temp(out, ctx.shape(node.inputs[0]), "elementwise")
    if first == "MUL":
        ctx.op("MUL", [x, x], [elementwise], "MulOptions", 1, fusedActivationFunction="NONE")
    else:
        ctx.op(first, [x], [elementwise])
    total = ctx.temp(out, ctx.shape(node.outputs[0]), "sum") if last else out
    ctx.op("SUM", [elementwise, ctx.param(_axes(ctx, node), suffix="axes")], [total], "ReducerOptions", 1,
           keepDims=_keep(node))
    if last:
        ctx.op(last, [total], [out])


def _lp_norm_check(graph: Graph, node: Node, integer: bool) -> str | None:
    p = int(node.attr("p", 2))
    if p not in (1, 2):
        return f"LpNormalization {node.name!r}: p must be 1 or 2, got {p}"
    return None


@emitter("LpNormalization", precisions=FLOAT, check=_lp_norm_check)
def lp_normalization(ctx: NodeContext, node: Node) -> None:
    """x / ‖x‖ₚ along ``axis``: L2_NORMALIZATION for p = 2 along the last stored axis, else SUM and DIV.

    TFLite's L2_NORMALIZATION divides by max(‖x‖₂, 1e-6) (l2norm.cc), ONNX by ‖x‖₂: they differ only
    on rows whose norm is below 1e-6 (ONNX: a unit vector or NaN for a zero row; TFLite: x·1e6, 0).
    """
    x = ctx.input(node.inputs[0])
    shape = ctx.shape(node.inputs[0])
    rank = len(shape)
    axis = int(node.attr("axis", -1))
    axis = axis + rank if axis < 0 else axis
    p = int(node.attr("p", 2))
    out = ctx.output(node.outputs[0])
    if p == 2 and axis == rank - 1 and rank <= 4:
        ctx.op("L2_NORMALIZATION", [x], [out], "L2NormOptions", 1, fusedActivationFunction="NONE")
        return
    reduced = tuple(1 if i == axis else d for i, d in enumerate(shape))
    elementwise, total = ctx.temp(out, shape, "elementwise"), ctx.temp(out, reduced, "sum")
    if p == 2:
        ctx.op("MUL", [x, x], [elementwise], "MulOptions", 1, fusedActivationFunction="NONE")
    else:
        ctx.op("ABS", [x], [elementwise])
    ctx.op("SUM", [elementwise, ctx.param([axis], suffix="axis")], [total], "ReducerOptions", 1, keepDims=True)
    if p == 2:
        norm = ctx.temp(out, reduced, "norm")
        ctx.op("SQRT", [total], [norm])
        total = norm
    ctx.op("DIV", [x, total], [out], "DivOptions", 1, fusedActivationFunction="NONE")


# ============================================================================ data movement
def _dtype(ctx: NodeContext, index: int) -> str:
    """The dtype of TFLite tensor ``index`` (float32, int8, int16, int64, bool...)."""
    return ctx.w.model.tensors[index].dtype


def _by_dtype(ctx: NodeContext, index: int, default: int = 1, **versions: int) -> int:
    """An operator version chosen by the dtype of its data input (op_version.cc tests the tensor type)."""
    return versions.get(_dtype(ctx, index), default)


def _dims(ctx: NodeContext, name: str) -> list[int]:
    shape = ctx.shape(name)
    dims = [d if isinstance(d, int) and d >= 0 else -1 for d in shape]
    if dims.count(-1) > 1:
        raise UnsupportedOperatorError(
            f"node {ctx.node.name!r}: TFLite RESHAPE allows one dynamic dimension, {name!r} has {shape}; {STATIC_SHAPE_HINT}"
        )
    return dims


def _copied_dims(ctx: NodeContext, x: int, source: str, name: str) -> int | None:
    """A run-time shape for ``name`` when its dynamic dims (beyond one, which RESHAPE infers) are dims of ``source``
    carried over (shape inference keeps their names: a Squeeze/Unsqueeze of [N, C, H, W]): GATHER from
    ``SHAPE(x)`` and the static sizes, which LiteRT computes when it sizes the inputs. None if they are not."""
    in_shape, out_shape = list(ctx.shape(source)), list(ctx.shape(name))
    static = [int(d) for d in out_shape if isinstance(d, int) and d >= 0]
    indices, inferred = [], 0
    for d in out_shape:
        if isinstance(d, int) and d >= 0:
            indices.append(len(in_shape) + static.index(int(d)))
        elif d in in_shape and d is not None:
            indices.append(in_shape.index(d))
        else:
            inferred += 1
            indices.append(-1)
    if inferred > 1:
        return None
    shape = ctx.runtime_shape(x, None, None, "shape")
    if inferred:  # the one unknown dim: -1, RESHAPE infers it
        static.append(-1)
        indices = [len(in_shape) + len(static) - 1 if i < 0 else i for i in indices]
    if static:
        joined = ctx.w.new_tensor(f"{ctx.node.name}/shape/with_sizes", "int32", (len(in_shape) + len(static),))
        ctx.op("CONCATENATION", [shape, ctx.param(static, suffix="shape/sizes")], [joined], "ConcatenationOptions", 1,
               axis=0, fusedActivationFunction="NONE")
        shape = joined
    dims = ctx.w.new_tensor(f"{ctx.node.name}/shape/dims", "int32", (len(out_shape),))
    ctx.op("GATHER", [shape, ctx.param(indices, suffix="shape/indices")], [dims], "GatherOptions", 1, axis=0)
    return dims


@emitter("Reshape", "Flatten", "Squeeze", "Unsqueeze")
def reshape(ctx: NodeContext, node: Node) -> None:
    x = ctx.input(node.inputs[0])
    dims = [d if isinstance(d, int) and d >= 0 else -1 for d in ctx.shape(node.outputs[0])]
    if dims.count(-1) > 1:
        shape = _copied_dims(ctx, x, node.inputs[0], node.outputs[0])
        if shape is None:
            _dims(ctx, node.outputs[0])  # raises, naming the shape
        ctx.op("RESHAPE", [x, shape], [ctx.output(node.outputs[0])], "ReshapeOptions", 1)
        return
    out = ctx.output(node.outputs[0])
    ctx.op("RESHAPE", [x, ctx.param(dims, suffix="shape")], [out], "ReshapeOptions", 1, newShape=dims)


def _same_spec(ctx: NodeContext, node: Node) -> bool:
    """True when output 0 may be an alias of input 0: every consumer then reads the same numbers.

    A float node whose output the plan leaves unquantized passes its input's value on as it is;
    otherwise input and output must be quantized alike (a float node may have a quantized output
    that its input lacks, e.g. a float Transpose in front of an integer MatMul).
    """
    out = ctx.spec(node.outputs[0])
    return (out is None and not ctx.integer) or same_numbers(ctx.spec(node.inputs[0]), out)


def _copy(ctx: NodeContext, node: Node) -> None:
    """Output 0 = input 0 with the output's own quantization: requantize (integer) or copy (float)."""
    x = ctx.input(node.inputs[0])
    out = ctx.output(node.outputs[0])
    if ctx.integer:
        ctx.op("QUANTIZE", [x], [out], None, ctx.version(int16=2))
    else:
        dims = _dims(ctx, node.outputs[0])
        ctx.op("RESHAPE", [x, ctx.param(dims, suffix="shape")], [out], "ReshapeOptions", 1, newShape=dims)


@emitter("Identity", "Dropout")
def identity(ctx: NodeContext, node: Node) -> None:
    if _same_spec(ctx, node):
        ctx.alias(node.outputs[0], node.inputs[0])
        return
    _copy(ctx, node)


@emitter("Transpose")
def transpose(ctx: NodeContext, node: Node) -> None:
    perm = [int(p) for p in node.attr("perm")]
    if perm == sorted(perm) and _same_spec(ctx, node):
        ctx.alias(node.outputs[0], node.inputs[0])
        return
    x = ctx.input(node.inputs[0])
    out = ctx.output(node.outputs[0])
    rank = len(perm)
    # op_version.cc: rank > 5 6, int16 5, rank 5 4, bool 3, int8 2
    version = 6 if rank > 5 else 5 if _dtype(ctx, x) == "int16" else 4 if rank > 4 else _by_dtype(ctx, x, bool=3, int8=2)
    ctx.op("TRANSPOSE", [x, ctx.param(perm, suffix="perm")], [out], "TransposeOptions", version)


@emitter("Concat")
def concat(ctx: NodeContext, node: Node) -> None:
    out_name = node.outputs[0]
    inputs = []
    for name in (i for i in node.inputs if i):
        x = ctx.input(name)
        if ctx.integer and not same_numbers(ctx.spec(name), ctx.spec(out_name)):
            # Integer CONCATENATION requires every input quantized like the output (concatenation.cc):
            # requantize, which is what the plan means (concatenate, then quantize with the output's spec).
            requant = ctx.temp(x, ctx.shape(name), f"requantize_{len(inputs)}", quant=_quant_of(ctx, out_name))
            ctx.op("QUANTIZE", [x], [requant], None, ctx.version(int16=2))
            x = requant
        inputs.append(x)
    out = ctx.output(out_name)
    ctx.op("CONCATENATION", inputs, [out], "ConcatenationOptions", ctx.version(int8=2, int16=3),
           axis=int(node.attr("axis")), fusedActivationFunction="NONE")


def _quant_of(ctx: NodeContext, name: str):  # noqa: ANN202
    spec = ctx.spec(name)
    return None if spec is None else quant_params(spec)


def _has_computed_input(graph: Graph, node: Node, indices: tuple[int, ...]) -> bool:
    """Whether one of the node's (present) inputs at ``indices`` is computed at run time."""
    return any(
        len(node.inputs) > index and node.inputs[index] and not graph.tensors[node.inputs[index]].is_constant
        for index in indices
    )


def _pad_mode(node: Node) -> str:
    mode = node.attr("mode", "constant")
    return mode.decode() if isinstance(mode, bytes) else mode


def _pad_node_pads(graph: Graph, node: Node) -> list[int] | None:
    """The full ``[begin..., end...]`` pads of a Pad node in ONNX axis order (``axes`` resolved), or None."""
    rank = graph.tensors[node.inputs[0]].rank
    pads = node.attr("pads")
    if pads is None and len(node.inputs) > 1 and node.inputs[1]:
        t = graph.tensors.get(node.inputs[1])
        pads = t.value.reshape(-1).tolist() if t is not None and t.is_constant else None
    if pads is None or rank is None:
        return None
    axes = list(range(rank))
    if len(node.inputs) > 3 and node.inputs[3]:
        axes = [int(a) + rank if int(a) < 0 else int(a) for a in graph.tensors[node.inputs[3]].value.reshape(-1)]
    full = [0] * (2 * rank)
    for k, a in enumerate(axes):
        full[a], full[a + rank] = int(pads[k]), int(pads[k + len(axes)])
    return full


def _pad_check(graph: Graph, node: Node, integer: bool) -> str | None:
    mode = _pad_mode(node)
    if mode not in ("constant", "reflect", "edge", "wrap"):
        return f"Pad {node.name!r}: mode {mode!r} has no TFLite operator"
    if _has_computed_input(graph, node, (1, 2, 3)):
        return f"Pad {node.name!r}: TFLite needs constant pads"
    pads = _pad_node_pads(graph, node)
    shape = graph.tensors[node.inputs[0]].shape
    if pads is None or shape is None:
        return f"Pad {node.name!r}: TFLite needs the pads and the data rank"
    rank = len(shape)
    if mode in ("constant", "reflect") and min(pads) < 0:
        return f"Pad {node.name!r}: negative pads (cropping) are not written for TFLite's PAD/MIRROR_PAD"
    for axis in range(rank):
        if mode == "constant" or not (pads[axis] or pads[axis + rank]):
            continue
        if not isinstance(shape[axis], int):
            return f"Pad {node.name!r}: {mode} padding needs a static size on axis {axis}"
        if mode == "reflect" and max(pads[axis], pads[axis + rank]) > shape[axis] - 1:
            return f"Pad {node.name!r}: reflect pads beyond the axis size - 1 have no MIRROR_PAD form"
    return None


@emitter("Pad", check=_pad_check)
def pad(ctx: NodeContext, node: Node) -> None:
    x = ctx.input(node.inputs[0])
    pads = [int(p) for p in node.attr("pads")]
    rank = len(pads) // 2
    mode = _pad_mode(node)
    out = ctx.output(node.outputs[0])
    if mode in ("edge", "wrap"):
        _gather_pad(ctx, node, x, out, pads, mode)
        return
    paddings = ctx.param([[pads[i], pads[i + rank]] for i in range(rank)], suffix="paddings")
    version = 4 if rank > 4 else ctx.version(int8=2, int16=3)
    if mode == "reflect":
        ctx.op("MIRROR_PAD", [x, paddings], [out], "MirrorPadOptions", ctx.version(int8=2, int16=3), mode="REFLECT")
    elif float(node.attr("value", 0.0)) == 0.0:
        ctx.op("PAD", [x, paddings], [out], "PadOptions", version)
    else:
        value = ctx.scalar_like(node.outputs[0], float(node.attr("value")), "pad_value")
        ctx.op("PADV2", [x, paddings, value], [out], "PadV2Options", version)


def _gather_pad(ctx: NodeContext, node: Node, x: int, out: int, pads: list[int], mode: str) -> None:
    """Edge and wrap padding (no TFLite operator) as one GATHER per padded axis: exact data movement.

    The indices along an axis of size n are ``clip(range(-begin, n + end), 0, n - 1)`` (edge: the
    border element repeated) or ``range(-begin, n + end) mod n`` (wrap); negative pads crop.
    """
    rank = len(pads) // 2
    shape = list(ctx.shape(node.inputs[0]))
    axes = [a for a in range(rank) if pads[a] or pads[a + rank]]
    if not axes:
        dims = _dims(ctx, node.outputs[0])
        ctx.op("RESHAPE", [x, ctx.param(dims, suffix="shape")], [out], "ReshapeOptions", 1, newShape=dims)
        return
    for k, axis in enumerate(axes):
        n = int(shape[axis])
        positions = np.arange(-pads[axis], n + pads[axis + rank])
        indices = np.clip(positions, 0, n - 1) if mode == "edge" else np.mod(positions, n)
        shape[axis] = len(positions)
        target = out if k == len(axes) - 1 else ctx.temp(x, tuple(shape), f"{mode}_pad_{axis}")
        version = _by_dtype(ctx, x, int16=4, bool=3, int8=2)
        ctx.op("GATHER", [x, ctx.param(indices, suffix=f"{mode}_indices_{axis}")], [target], "GatherOptions", version,
               axis=axis)
        x = target


@emitter("Split")
def split(ctx: NodeContext, node: Node) -> None:
    x = ctx.input(node.inputs[0])
    sizes = [int(s) for s in node.attr("split")]
    outs = [ctx.output(o) for o in node.outputs]
    axis = ctx.param(int(node.attr("axis")), suffix="axis")
    if len(set(sizes)) == 1:
        ctx.op("SPLIT", [axis, x], outs, "SplitOptions", ctx.version(int8=2, int16=4), numSplits=len(sizes))
    else:
        ctx.op("SPLIT_V", [x, ctx.param(sizes, suffix="sizes"), axis], outs, "SplitVOptions", ctx.version(int8=2, int16=2),
               numSplits=len(sizes))


def _slice_check(graph: Graph, node: Node, integer: bool) -> str | None:
    if _has_computed_input(graph, node, (1, 2, 3, 4)):
        return f"Slice {node.name!r}: TFLite needs constant starts/ends/axes/steps"
    return None


@emitter("Slice", check=_slice_check)
def slice_(ctx: NodeContext, node: Node) -> None:
    x = ctx.input(node.inputs[0])
    rank = len(ctx.shape(node.inputs[0]))
    begin, end, strides = [0] * rank, [0] * rank, [1] * rank
    begin_mask = end_mask = (1 << rank) - 1
    limit = 2**31 - 1
    for s, e, a, st in zip(node.attr("starts"), node.attr("ends"), node.attr("axes"), node.attr("steps")):
        a = int(a)
        strides[a] = int(st)
        if -limit <= int(s) <= limit:
            begin[a] = int(s)
            begin_mask &= ~(1 << a)
        if -limit <= int(e) <= limit:
            end[a] = int(e)
            end_mask &= ~(1 << a)
    out = ctx.output(node.outputs[0])
    ctx.op("STRIDED_SLICE", [x, ctx.param(begin, suffix="begin"), ctx.param(end, suffix="end"),
                             ctx.param(strides, suffix="strides")], [out], "StridedSliceOptions",
           4 if rank > 4 else ctx.version(int8=2, int16=2), beginMask=begin_mask, endMask=end_mask)


@emitter("Gather")
def gather(ctx: NodeContext, node: Node) -> None:
    data = ctx.input(node.inputs[0])
    idx_name = node.inputs[1]
    axis = int(node.attr("axis", 0))
    if ctx.is_constant(idx_name):
        values = ctx.value(idx_name).astype(np.int64)
        if np.any(values < 0):  # ONNX counts negative indices from the end; TFLite's GATHER refuses them
            shape = ctx.shape(node.inputs[0])
            dim = shape[axis if axis >= 0 else axis + len(shape)]
            if not isinstance(dim, int):
                raise UnsupportedOperatorError(f"Gather {node.name!r}: negative indices need a static size on axis {axis}, "
                                               f"got {shape}: {STATIC_SHAPE_HINT}")
            values = np.where(values < 0, values + dim, values)
        indices = ctx.w.new_tensor(f"{node.name}/indices", "int32", values.shape, data=values.astype(np.int32))
    else:
        indices = ctx.w.realize(idx_name, "raw")  # int32 or int64 ids (a model input stays int64)
    out = ctx.output(node.outputs[0])
    # op_version.cc: int16 indices 6, int16 data 4, bool data 3, int8 data 2
    version = 6 if _dtype(ctx, indices) == "int16" else _by_dtype(ctx, data, int16=4, bool=3, int8=2)
    ctx.op("GATHER", [data, indices], [out], "GatherOptions", version, axis=axis)


def _resize_axes(graph: Graph, node: Node) -> tuple[list[ResizeAxis | int], bool] | str:
    """The two spatial axes of a Resize with the scale ONNX uses (and whether sizes, not scales, were
    given), or why TFLite cannot take it. A dynamic axis is its integer scale ``k`` (output ``k·input``)."""
    x, out = graph.tensors[node.inputs[0]], graph.tensors[node.outputs[0]]
    # the plan's NCHW node, or the same node after layout.py (NHWC data; scales still in ONNX axis order)
    spatial = (1, 2) if node.attr("data_layout") == "NHWC" else (2, 3)
    kept = [i for i in range(4) if i not in spatial]
    # (shape inference names a dynamic batch anew at each Resize: only static sizes can be seen to differ)
    if out.shape is None or any(x.shape[i] != out.shape[i] and isinstance(x.shape[i], int) and isinstance(out.shape[i], int)
                                for i in kept):
        return "TFLite resizes the two spatial axes only"
    rank = len(x.shape)
    axes = [int(a) + rank if int(a) < 0 else int(a) for a in (node.attr("axes") or range(rank))]
    scales = None
    if len(node.inputs) > 2 and node.inputs[2]:
        t = graph.tensors[node.inputs[2]]
        if not t.is_constant:
            return "TFLite needs constant scales"
        if t.value.size:
            scales = dict(zip(axes, (float(v) for v in t.value.reshape(-1).astype(np.float32))))
    # computed sizes are fine where the output shape is static, and ONNX's scale is output/input there
    result: list[ResizeAxis | int] = []
    for a, stored in zip((2, 3), spatial):
        if not isinstance(x.shape[stored], int):
            # The size follows the input: written as SHAPE·k, for an integer scale k (any other scale would need
            # ONNX's float floor(n·scale) at run time)
            scale = scales.get(a) if scales is not None else None
            if scale is None or scale < 1.0 or scale != int(scale):
                return ("a dynamic spatial size is resized only by a constant whole-number scale "
                        f"(got {'sizes' if scale is None else f'scale {scale}'}); {STATIC_SHAPE_HINT}")
            result.append(int(scale))
            continue
        if not isinstance(out.shape[stored], int):
            return "TFLite resizes a static input to a static size"
        n_in, n_out = int(x.shape[stored]), int(out.shape[stored])
        scale = scales[a] if scales is not None and a in scales else float(np.float32(n_out) / np.float32(n_in))
        result.append(ResizeAxis(n_in, n_out, scale))
    return result, scales is None


def _resize_plan(graph: Graph, node: Node) -> tuple[bool, bool] | str:
    """(align_corners, half_pixel_centers) of the TFLite resize that computes this Resize, or a reason."""
    mode, coord, nearest = _resize_modes(node)
    if mode not in ("nearest", "linear"):
        return f"mode {mode!r} has no TFLite equivalent (TFLite resizes nearest or bilinear)"
    if coord == "tf_crop_and_resize":
        return "tf_crop_and_resize (a region of interest) has no TFLite equivalent"
    policy = node.attr("keep_aspect_ratio_policy", "stretch")
    if (policy.decode() if isinstance(policy, bytes) else policy) != "stretch":
        return "keep_aspect_ratio_policy other than stretch is not written for TFLite"
    found = _resize_axes(graph, node)
    if isinstance(found, str):
        return found
    axes, sizes = found
    if node.attr("antialias", 0) and mode == "linear" and any(isinstance(a, ResizeAxis) and a.scale < 1.0 for a in axes):
        return "antialiased downscaling has no TFLite equivalent"
    if any(isinstance(a, int) for a in axes):
        return choose_any_size(axes, mode, coord, nearest)
    return choose(axes, mode, coord, nearest, sizes)  # type: ignore[arg-type]


def _resize_check(graph: Graph, node: Node, integer: bool) -> str | None:
    reason = _spatial_check(graph, node, integer)
    if reason:
        return reason
    plan = _resize_plan(graph, node)
    if isinstance(plan, str):
        return f"Resize {node.name!r}: {plan}"
    if integer and node.precision == I16 and _resize_modes(node)[0] == "linear":
        inexact = _inexact_16x8_bilinear(graph, node, *plan)
        if inexact:
            return f"Resize {node.name!r}: {inexact}"
    return None


def _inexact_16x8_bilinear(graph: Graph, node: Node, align: bool, half: bool) -> str | None:
    """Why TFLite's int16 bilinear kernel does not reproduce the plan, or None.

    ``ResizeBilinearInteger`` samples at coordinates in 1/1024 pixel: the ratio rounded to 10 bits
    (``(1024·in + out/2) / out``, align_corners with in − 1 and out − 1) and, for half-pixel centres,
    that ratio halved (truncated). Where those are exact the interpolation weights are the plan's;
    otherwise a sample moves by up to 2⁻¹⁰ pixel, which across a 16-bit edge is tens of LSB (measured
    82 LSB for 6 → 9). In int8 the same error stays below a quarter LSB.
    """
    found = _resize_axes(graph, node)
    if isinstance(found, str):
        return found
    for axis in found[0]:
        if isinstance(axis, int):  # a dynamic size n resized by k: the ratio is n / (k·n) = 1 / k at every size
            if align or 1024 % axis or (half and (1024 // axis) % 2):
                return (f"TFLite's 16x8 bilinear resize samples at 1/1024 pixel and a dynamic size scaled by {axis} is not "
                        f"exact there at every size (16-bit errors of tens of LSB)")
            continue
        n_in, n_out = (axis.input - 1, axis.output - 1) if align and axis.output > 1 else (axis.input, axis.output)
        exact = (1024 * n_in) % n_out == 0 and (not half or (1024 * n_in // n_out) % 2 == 0)
        if not exact:
            return (f"TFLite's 16x8 bilinear resize samples at 1/1024 pixel and {axis.input} → {axis.output} is not "
                    f"exact there (16-bit errors of tens of LSB)")
    return None


def _resize_modes(node: Node) -> tuple[str, str, str]:
    def text(key: str, default: str) -> str:
        value = node.attr(key, default)
        return value.decode() if isinstance(value, bytes) else value

    return text("mode", "nearest"), text("coordinate_transformation_mode", "half_pixel"), text("nearest_mode", "round_prefer_floor")


@emitter("Resize", check=_resize_check)
def resize(ctx: NodeContext, node: Node) -> None:
    x = ctx.input(node.inputs[0])
    out_shape = ctx.shape(node.outputs[0])
    mode = _resize_modes(node)[0]
    plan = _resize_plan(ctx.graph, node)
    if isinstance(plan, str):
        raise UnsupportedOperatorError(f"Resize {node.name!r}: {plan}")
    found = _resize_axes(ctx.graph, node)
    axes = found[0] if not isinstance(found, str) else []
    if any(isinstance(a, int) for a in axes):
        # a dynamic size follows its input: SHAPE(x)[1:3]·k (a static axis: 0·n + its size)
        size = ctx.runtime_shape(x, [a if isinstance(a, int) else 0 for a in axes],
                                 [0 if isinstance(a, int) else int(out_shape[1 + i]) for i, a in enumerate(axes)],
                                 "size", begin=1, end=3)
    else:
        size = ctx.param([int(out_shape[1]), int(out_shape[2])], suffix="size")
    out = ctx.output(node.outputs[0])
    align, half = plan
    if mode == "nearest":
        ctx.op("RESIZE_NEAREST_NEIGHBOR", [x, size], [out], "ResizeNearestNeighborOptions",
               ctx.version(int8=3 if (align or half) else 2, int16=4, float=3 if (align or half) else 1),
               alignCorners=align, halfPixelCenters=half)
    else:
        ctx.op("RESIZE_BILINEAR", [x, size], [out], "ResizeBilinearOptions",
               ctx.version(int8=3 if half else 2, int16=4, float=3 if half else 1), alignCorners=align, halfPixelCenters=half)


def _depth_check(graph: Graph, node: Node, integer: bool) -> str | None:
    mode = node.attr("mode", "DCR")
    mode = mode.decode() if isinstance(mode, bytes) else mode
    if node.op_type == "DepthToSpace" and mode != "DCR":
        return f"DepthToSpace {node.name!r}: TFLite implements the DCR order only, not {mode}"
    return _spatial_check(graph, node, integer)


@emitter("DepthToSpace", "SpaceToDepth", precisions=(I8, F16, F32), check=_depth_check)
def depth_space(ctx: NodeContext, node: Node) -> None:
    x = ctx.input(node.inputs[0])
    out = ctx.output(node.outputs[0])
    op = "DEPTH_TO_SPACE" if node.op_type == "DepthToSpace" else "SPACE_TO_DEPTH"
    options = "DepthToSpaceOptions" if node.op_type == "DepthToSpace" else "SpaceToDepthOptions"
    # DEPTH_TO_SPACE/SPACE_TO_DEPTH int8 run at version 1 in LiteRT 2.x (version 2 is not registered)
    ctx.op(op, [x], [out], options, 1, blockSize=int(node.attr("blocksize")))


# ============================================================================ normalization (float)
def _normalize(ctx: NodeContext, x: int, out: int, shape: tuple, axes: list[int], eps: float, scale: int,
               bias: int) -> None:
    """(x - mean) · rsqrt(var + eps) [· scale] [+ bias] over ``axes`` (``scale``/``bias``: tensors, or -1): float ops."""
    reduced = tuple(1 if i in axes else d for i, d in enumerate(shape))

    def tmp(suffix: str, shp: tuple = shape) -> int:
        return ctx.temp(out, shp, suffix)

    axes_t = ctx.param(axes, suffix="axes")
    mean, centered, var, std_inv, normed = tmp("mean", reduced), tmp("centered"), tmp("var", reduced), tmp("rstd", reduced), tmp("normed")
    ctx.op("MEAN", [x, axes_t], [mean], "ReducerOptions", keepDims=True)
    ctx.op("SUB", [x, mean], [centered], "SubOptions")
    squared = tmp("squared")
    ctx.op("MUL", [centered, centered], [squared], "MulOptions")
    ctx.op("MEAN", [squared, axes_t], [var], "ReducerOptions", keepDims=True)
    var_eps = tmp("var_eps", reduced)
    ctx.op("ADD", [var, ctx.param([eps], "float32", "epsilon")], [var_eps], "AddOptions")
    ctx.op("RSQRT", [var_eps], [std_inv])
    target = normed if (scale >= 0 or bias >= 0) else out
    ctx.op("MUL", [centered, std_inv], [target], "MulOptions")
    if scale >= 0:
        scaled = tmp("scaled") if bias >= 0 else out
        ctx.op("MUL", [target, scale], [scaled], "MulOptions")
        target = scaled
    if bias >= 0:
        ctx.op("ADD", [target, bias], [out], "AddOptions")


@emitter("LayerNormalization", precisions=FLOAT)
def layer_norm(ctx: NodeContext, node: Node) -> None:
    """(x - mean) · rsqrt(var + eps) · gamma + beta over the axes from ``axis``: TFLite float ops."""
    shape = ctx.shape(node.inputs[0])
    rank = len(shape)
    axis = int(node.attr("axis", -1))
    axes = list(range(axis + rank if axis < 0 else axis, rank))
    optional = [ctx.input(node.inputs[i]) if len(node.inputs) > i and node.inputs[i] else -1 for i in (1, 2)]
    _normalize(ctx, ctx.input(node.inputs[0]), ctx.output(node.outputs[0]), shape, axes,
               float(node.attr("epsilon", 1e-5)), *optional)


@emitter("InstanceNormalization", precisions=FLOAT)
def instance_norm(ctx: NodeContext, node: Node) -> None:
    """Per sample and channel over the spatial axes, then the per-channel scale and bias: the LayerNormalization
    ops. NHWC data (after a conv) normalizes over axes 1..rank-2 and broadcasts [C] as it is; ONNX-layout data
    over axes 2.. with scale and bias reshaped to [C, 1, ...]."""
    shape = ctx.shape(node.inputs[0])
    rank = len(shape)
    nhwc = node.attr("data_layout") == "NHWC"
    axes = list(range(1, rank - 1)) if nhwc else list(range(2, rank))
    per_channel = []
    for name in node.inputs[1:3]:
        t = ctx.input(name)
        if not nhwc and rank > 2:
            dims = [-1] + [1] * (rank - 2)
            shaped = ctx.temp(t, (shape[1],) + (1,) * (rank - 2), f"{name}/per_channel")
            ctx.op("RESHAPE", [t, ctx.param(dims, suffix=f"{name}/shape")], [shaped], "ReshapeOptions", 1, newShape=dims)
            t = shaped
        per_channel.append(t)
    _normalize(ctx, ctx.input(node.inputs[0]), ctx.output(node.outputs[0]), shape, axes,
               float(node.attr("epsilon", 1e-5)), *per_channel)


def _lrn_check(graph: Graph, node: Node, integer: bool) -> str | None:
    if int(node.attr("size")) % 2 == 0:
        return f"LRN {node.name!r}: an even window is asymmetric; TFLite's LOCAL_RESPONSE_NORMALIZATION is symmetric"
    return _spatial_check(graph, node, integer)


@emitter("LRN", precisions=FLOAT, check=_lrn_check)
def local_response_norm(ctx: NodeContext, node: Node) -> None:
    # ONNX divides alpha by the window size; TFLite takes the radius and alpha as is.
    size = int(node.attr("size"))
    x = ctx.input(node.inputs[0])
    out = ctx.output(node.outputs[0])
    ctx.op("LOCAL_RESPONSE_NORMALIZATION", [x], [out], "LocalResponseNormalizationOptions", 1, radius=(size - 1) // 2,
           bias=float(node.attr("bias", 1.0)), alpha=float(node.attr("alpha", 1e-4)) / size, beta=float(node.attr("beta", 0.75)))


def _batchnorm_check(graph: Graph, node: Node, integer: bool) -> str | None:
    for name in node.inputs[1:5]:
        if not graph.tensors[name].is_constant:
            return f"BatchNormalization {node.name!r}: TFLite needs constant statistics"
    if len([o for o in node.outputs if o]) > 1:
        return f"BatchNormalization {node.name!r}: training outputs have no TFLite equivalent"
    return None


@emitter("BatchNormalization", precisions=FLOAT, check=_batchnorm_check)
def batch_norm(ctx: NodeContext, node: Node) -> None:
    """A BatchNormalization the importer could not fold into a conv: x · s + b per channel, in float."""
    gamma, beta, mean, var = (ctx.value(n).astype(np.float64) for n in node.inputs[1:5])
    scale = gamma / np.sqrt(var + float(node.attr("epsilon", 1e-5)))
    shift = beta - mean * scale
    rank = len(ctx.shape(node.inputs[0]))
    shape = (-1,) if node.attr("data_layout") == "NHWC" or rank <= 2 else (-1,) + (1,) * (rank - 2)
    x = ctx.input(node.inputs[0])
    out = ctx.output(node.outputs[0])
    scaled = ctx.temp(out, ctx.shape(node.outputs[0]), "scaled")
    ctx.op("MUL", [x, ctx.param(scale.astype(np.float32).reshape(shape), "float32", "scale")], [scaled], "MulOptions")
    ctx.op("ADD", [scaled, ctx.param(shift.astype(np.float32).reshape(shape), "float32", "shift")], [out], "AddOptions")


@emitter("Erf", precisions=FLOAT)
def erf(ctx: NodeContext, node: Node) -> None:
    """erf(x) = sign(x)·(1 − t·poly(t)·exp(−x²)), t = 1/(1 + p|x|) (Abramowitz & Stegun 7.1.26, |error| < 1.5e-7)."""
    x = ctx.input(node.inputs[0])
    shape = ctx.shape(node.inputs[0])
    out = ctx.output(node.outputs[0])
    a = [0.254829592, -0.284496736, 1.421413741, -1.453152027, 1.061405429]

    def tmp(suffix: str) -> int:
        return ctx.temp(out, shape, suffix)

    def const(value: float, suffix: str) -> int:
        return ctx.param([value], "float32", suffix)

    ax, sign = tmp("abs"), tmp("sign")
    ctx.op("ABS", [x], [ax])
    ctx.op("SIGN", [x], [sign])
    px, denom, t = tmp("px"), tmp("denom"), tmp("t")
    ctx.op("MUL", [ax, const(0.3275911, "p")], [px], "MulOptions")
    ctx.op("ADD", [px, const(1.0, "one")], [denom], "AddOptions")
    ctx.op("DIV", [const(1.0, "one_num"), denom], [t], "DivOptions")
    poly = const(a[4], "a4")
    for k in (3, 2, 1, 0):
        m, s = tmp(f"poly_mul{k}"), tmp(f"poly_add{k}")
        ctx.op("MUL", [poly, t], [m], "MulOptions")
        ctx.op("ADD", [m, const(a[k], f"a{k}")], [s], "AddOptions")
        poly = s
    tpoly, sq, neg_sq, e, tail, body = tmp("tpoly"), tmp("sq"), tmp("neg_sq"), tmp("exp"), tmp("tail"), tmp("body")
    ctx.op("MUL", [poly, t], [tpoly], "MulOptions")
    ctx.op("MUL", [x, x], [sq], "MulOptions")
    ctx.op("NEG", [sq], [neg_sq])
    ctx.op("EXP", [neg_sq], [e])
    ctx.op("MUL", [tpoly, e], [tail], "MulOptions")
    ctx.op("SUB", [const(1.0, "one_sub"), tail], [body], "SubOptions")
    ctx.op("MUL", [sign, body], [out], "MulOptions")


@emitter("Cast", precisions=FLOAT)
def cast(ctx: NodeContext, node: Node) -> None:
    src, dst = ctx.tensor(node.inputs[0]), ctx.tensor(node.outputs[0])
    if src.is_float and dst.is_float:  # activations are float32 throughout
        if _same_spec(ctx, node):
            ctx.alias(node.outputs[0], node.inputs[0])
        else:
            _copy(ctx, node)
        return
    x = ctx.input(node.inputs[0])
    out = ctx.output(node.outputs[0])
    if _dtype(ctx, x) == _dtype(ctx, out):  # bool → bool, int64 → int64 (a mask cast twice)
        ctx.alias(node.outputs[0], node.inputs[0])
        return
    types = {_dtype(ctx, x), _dtype(ctx, out)}
    # op_version.cc: float16/float64 5, uint16 4, int8 3, uint32 2, else 1 (int64/int32/bool ↔ float32 ...)
    version = 5 if types & {"float16", "float64"} else 4 if "uint16" in types else 3 if "int8" in types else \
        2 if "uint32" in types else 1
    ctx.op("CAST", [x], [out], None, version)


# ============================================================================ logic, comparison and selection (not quantized)
#: Ranks measured to broadcast correctly in LiteRT 2.3's comparison, logical and SELECT_V2 kernels
#: (every resolver: XNNPACK, built-in, reference).
BROADCAST_RANK = 6


def _broadcast_check(graph: Graph, node: Node, limit: int = BROADCAST_RANK) -> str | None:
    shapes = [graph.tensors[name].shape for name in node.inputs if name and name in graph.tensors]
    if any(s is None for s in shapes):
        return f"{node.op_type} {node.name!r}: TFLite needs the operands' ranks"
    if len({tuple(s) for s in shapes}) > 1 and max(len(s) for s in shapes) > limit:
        return f"{node.op_type} {node.name!r}: TFLite's broadcasting {node.op_type} is verified up to rank {limit}"
    return None


def _logical_check(graph: Graph, node: Node, integer: bool) -> str | None:
    for name in node.inputs + node.outputs:
        t = graph.tensors.get(name) if name else None
        if t is not None and t.dtype is not None and np.dtype(t.dtype) != np.bool_:
            return f"{node.op_type} {node.name!r}: TFLite's logical operators take bool tensors"
    return _broadcast_check(graph, node)


_LOGICAL = {"And": ("LOGICAL_AND", "LogicalAndOptions"), "Or": ("LOGICAL_OR", "LogicalOrOptions"),
            "Xor": ("NOT_EQUAL", "NotEqualOptions")}  # a ≠ b is exclusive or on bools


@emitter("And", "Or", "Xor", precisions=FLOAT, check=_logical_check)
def logical_binary(ctx: NodeContext, node: Node) -> None:
    a, b = ctx.input(node.inputs[0]), ctx.input(node.inputs[1])
    out = ctx.output(node.outputs[0])
    op, options = _LOGICAL[node.op_type]
    ctx.op(op, [a, b], [out], options, 1)


@emitter("Not", precisions=FLOAT, check=_logical_check)
def logical_not(ctx: NodeContext, node: Node) -> None:
    x = ctx.input(node.inputs[0])
    out = ctx.output(node.outputs[0])
    ctx.op("LOGICAL_NOT", [x], [out], "LogicalNotOptions", 1)


_COMPARISONS = {
    "Equal": ("EQUAL", "EqualOptions"), "Less": ("LESS", "LessOptions"), "LessOrEqual": ("LESS_EQUAL", "LessEqualOptions"),
    "Greater": ("GREATER", "GreaterOptions"), "GreaterOrEqual": ("GREATER_EQUAL", "GreaterEqualOptions"),
    "NotEqual": ("NOT_EQUAL", "NotEqualOptions"),  # not an ONNX operator: Not(Equal) fused by fuse.py
}
#: Operand types of LiteRT's comparison kernels (comparisons.cc); bool only for EQUAL/NOT_EQUAL.
_COMPARED = {"float32", "float16", "float64", "int32", "int64", "int8", "int16", "uint8"}

#: Why integer comparisons run in float: LiteRT's int8 kernels rescale both operands with a rounding
#: fixed-point multiplier (comparisons.cc, left shift 8), which merges neighbouring values when the
#: scale is small (measured: int8 EQUAL at scale 1e-3 is true for 189 of 255 neighbouring pairs).
#: DEQUANTIZE is exact, so comparing the dequantized values is what the plan means.
INTEGER_COMPARISON = ("LiteRT's int8 comparisons rescale both operands with a rounding multiplier and can merge "
                      "neighbouring values; the dequantized values are compared in float (exact)")


def _comparison_check(graph: Graph, node: Node, integer: bool) -> str | None:
    for name in node.inputs[:2]:
        t = graph.tensors.get(name)
        if t is None or t.dtype is None:
            continue
        kind = np.dtype(t.dtype)
        if kind == np.bool_ and node.op_type not in ("Equal", "NotEqual"):
            return f"{node.op_type} {node.name!r}: TFLite orders numbers, not bools"
        if kind != np.bool_ and kind.name not in _COMPARED:
            return f"{node.op_type} {node.name!r}: TFLite's comparisons take no {kind.name} operands"
    return _broadcast_check(graph, node)


#: operators that pass values on unchanged: a value they carry is as rounded as their input
_PASS_THROUGH = {"Transpose", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity", "Dropout"}


def _half_rounded_in_plan(ctx: NodeContext, name: str) -> bool:
    """Whether the plan rounds activation ``name`` to float16 before this node reads it.

    The reference rounds an FP16 node's inputs and outputs; TFLite's FP16 nodes compute in float32, which
    only matters (beyond fp16 noise) where a value is compared: a value within half an fp16 step of the
    other operand compares differently in float32.
    """
    if ctx.fp16:
        return True
    if ctx.spec(name) is not None:
        return False  # the consumer reads the dequantized value, rounded by the quantization only
    producer = ctx.w.producers.get(name)
    while producer is not None and producer.op_type in _PASS_THROUGH and producer.precision not in (F16, Precision.BF16):
        producer = ctx.w.producers.get(producer.inputs[0])
    return producer is not None and producer.precision in (F16, Precision.BF16)


def _rounded_to_fp16(ctx: NodeContext, index: int, name: str) -> int:
    """A float activation rounded through float16 where the plan rounds it (CAST there and back)."""
    if ctx.is_constant(name) or _dtype(ctx, index) != "float32" or not _half_rounded_in_plan(ctx, name):
        return index  # constants of FP16 nodes are float16 already
    shape = ctx.shape(name)
    half = ctx.temp(index, shape, f"{name}/fp16", dtype="float16", quant=None)
    back = ctx.temp(index, shape, f"{name}/fp16_f32", dtype="float32", quant=None)
    ctx.op("CAST", [index], [half], None, 5)
    ctx.op("CAST", [half], [back], None, 5)
    return back


@emitter(*_COMPARISONS, precisions=FLOAT, check=_comparison_check, integer_reason=INTEGER_COMPARISON)
def comparison(ctx: NodeContext, node: Node) -> None:
    """EQUAL/LESS/... on float values (dequantized when the plan quantized them), ids or bools; a bool output.

    Float operands that the plan rounds to float16 (an FP16 comparison, or an FP16 producer) are rounded
    to float16 here too, so that the comparison sees the plan's values.
    """
    a, b = (_rounded_to_fp16(ctx, ctx.input(name), name) for name in node.inputs[:2])
    out = ctx.output(node.outputs[0])
    op, options = _COMPARISONS[node.op_type]
    ctx.op(op, [a, b], [out], options, 1)


def _where_check(graph: Graph, node: Node, integer: bool) -> str | None:
    return _broadcast_check(graph, node)


@emitter("Where", precisions=FLOAT, check=_where_check)
def where(ctx: NodeContext, node: Node) -> None:
    """SELECT_V2 (broadcasting select). Float data, or raw integer/bool data; never quantized."""
    cond, x, y = (ctx.input(name) for name in node.inputs[:3])
    out = ctx.output(node.outputs[0])
    ctx.op("SELECT_V2", [cond, x, y], [out], "SelectV2Options", _by_dtype(ctx, x, uint32=2))


def _expand_check(graph: Graph, node: Node, integer: bool) -> str | None:
    out = graph.tensors.get(node.outputs[0])
    if out is None or out.shape is None or not all(isinstance(d, int) and d >= 0 for d in out.shape):
        return f"Expand {node.name!r}: TFLite's BROADCAST_TO needs a static output shape"
    if len(out.shape) > 8:
        return f"Expand {node.name!r}: TFLite's BROADCAST_TO supports up to rank 8"
    return None


@emitter("Expand", check=_expand_check)
def expand(ctx: NodeContext, node: Node) -> None:
    """BROADCAST_TO the (static) output shape; an Expand that broadcasts nothing is an alias."""
    in_shape, out_shape = ctx.shape(node.inputs[0]), ctx.static_shape(node.outputs[0])
    if tuple(in_shape) == out_shape and _same_spec(ctx, node):
        ctx.alias(node.outputs[0], node.inputs[0])
        return
    x = ctx.input(node.inputs[0])
    out = ctx.output(node.outputs[0])
    # BROADCAST_TO copies elements: integer in and out share their quantization (legalization).
    # op_version.cc: int8/int16 3, else 2 (version 1 was withdrawn).
    ctx.op("BROADCAST_TO", [x, ctx.param(list(out_shape), suffix="shape")], [out], None,
           _by_dtype(ctx, x, 2, int8=3, int16=3))


# ============================================================================ float math (issue 14: onnx2tf's list)
def _scaled_elu(ctx: NodeContext, node: Node, alpha: float, inner: float = 1.0, gamma: float = 1.0) -> None:
    """gamma · (max(0, x) + alpha · (exp(min(0, x) / inner) − 1)): Elu (inner 1, gamma 1), Selu (gamma), Celu
    (inner alpha). The positive side adds exp(0) − 1 = 0; the negative side is ONNX Runtime's alpha·(eˣ − 1).
    LiteRT 2.3 registers no ELU kernel (the interpreter refuses the builtin), so it is composed.
    """
    x = ctx.input(node.inputs[0])
    out = ctx.output(node.outputs[0])
    shape = ctx.shape(node.outputs[0])

    def tmp(suffix: str) -> int:
        return ctx.temp(out, shape, suffix)

    def const(value: float, suffix: str) -> int:
        return ctx.param([value], "float32", suffix)

    negative, exp, excess, weighted, positive = tmp("negative"), tmp("exp"), tmp("expm1"), tmp("weighted"), tmp("positive")
    ctx.op("MINIMUM", [x, const(0.0, "zero")], [negative], "MaximumMinimumOptions", 1)
    if inner != 1.0:
        scaled = tmp("scaled")
        ctx.op("DIV", [negative, const(inner, "inner")], [scaled], "DivOptions", 1, fusedActivationFunction="NONE")
        negative = scaled
    ctx.op("EXP", [negative], [exp])
    ctx.op("SUB", [exp, const(1.0, "one")], [excess], "SubOptions", 1, fusedActivationFunction="NONE")
    ctx.op("MUL", [excess, const(alpha, "alpha")], [weighted], "MulOptions", 1, fusedActivationFunction="NONE")
    ctx.op("RELU", [x], [positive])
    total = tmp("sum") if gamma != 1.0 else out
    ctx.op("ADD", [positive, weighted], [total], "AddOptions", 1, fusedActivationFunction="NONE")
    if gamma != 1.0:
        ctx.op("MUL", [total, const(gamma, "gamma")], [out], "MulOptions", 1, fusedActivationFunction="NONE")


@emitter("Elu", precisions=FLOAT)
def elu(ctx: NodeContext, node: Node) -> None:
    _scaled_elu(ctx, node, float(node.attr("alpha", 1.0)))


@emitter("Selu", precisions=FLOAT)
def selu(ctx: NodeContext, node: Node) -> None:
    _scaled_elu(ctx, node, float(node.attr("alpha", 1.67326319217681884765625)),
                gamma=float(node.attr("gamma", 1.05070102214813232421875)))


def _celu_check(graph: Graph, node: Node, integer: bool) -> str | None:
    if float(node.attr("alpha", 1.0)) <= 0.0:
        return f"Celu {node.name!r}: alpha must be positive (x / alpha), got {node.attr('alpha')}"
    return None


@emitter("Celu", precisions=FLOAT, check=_celu_check)
def celu(ctx: NodeContext, node: Node) -> None:
    alpha = float(node.attr("alpha", 1.0))
    _scaled_elu(ctx, node, alpha, inner=alpha)


def _softplus(ctx: NodeContext, x: int, target: int, shape: tuple) -> None:
    """log(1 + eˣ) as max(x, 0) + log(1 + e^-|x|): no overflow for large x (ONNX Runtime's form, log1p aside)."""
    def tmp(suffix: str) -> int:
        return ctx.temp(target, shape, suffix)

    magnitude, negated, exp, shifted, log, positive = (tmp(s) for s in ("abs", "neg_abs", "exp", "one_plus", "log", "relu"))
    ctx.op("ABS", [x], [magnitude])
    ctx.op("NEG", [magnitude], [negated])
    ctx.op("EXP", [negated], [exp])
    ctx.op("ADD", [exp, ctx.param([1.0], "float32", "one")], [shifted], "AddOptions", 1, fusedActivationFunction="NONE")
    ctx.op("LOG", [shifted], [log])
    ctx.op("RELU", [x], [positive])
    ctx.op("ADD", [positive, log], [target], "AddOptions", 1, fusedActivationFunction="NONE")


@emitter("Softplus", precisions=FLOAT)
def softplus(ctx: NodeContext, node: Node) -> None:
    _softplus(ctx, ctx.input(node.inputs[0]), ctx.output(node.outputs[0]), ctx.shape(node.outputs[0]))


@emitter("Mish", precisions=FLOAT)
def mish(ctx: NodeContext, node: Node) -> None:
    """x · tanh(softplus(x))."""
    x = ctx.input(node.inputs[0])
    out = ctx.output(node.outputs[0])
    shape = ctx.shape(node.outputs[0])
    soft, squashed = ctx.temp(out, shape, "softplus"), ctx.temp(out, shape, "tanh")
    _softplus(ctx, x, soft, shape)
    ctx.op("TANH", [soft], [squashed])
    ctx.op("MUL", [x, squashed], [out], "MulOptions", 1, fusedActivationFunction="NONE")


@emitter("Softsign", precisions=FLOAT)
def softsign(ctx: NodeContext, node: Node) -> None:
    """x / (1 + |x|)."""
    x = ctx.input(node.inputs[0])
    out = ctx.output(node.outputs[0])
    shape = ctx.shape(node.outputs[0])
    magnitude, denominator = ctx.temp(out, shape, "abs"), ctx.temp(out, shape, "one_plus_abs")
    ctx.op("ABS", [x], [magnitude])
    ctx.op("ADD", [magnitude, ctx.param([1.0], "float32", "one")], [denominator], "AddOptions", 1,
           fusedActivationFunction="NONE")
    ctx.op("DIV", [x, denominator], [out], "DivOptions", 1, fusedActivationFunction="NONE")


@emitter("ThresholdedRelu", precisions=FLOAT)
def thresholded_relu(ctx: NodeContext, node: Node) -> None:
    """x where x > alpha, else 0: GREATER, SELECT_V2."""
    x = ctx.input(node.inputs[0])
    out = ctx.output(node.outputs[0])
    above = ctx.temp(out, ctx.shape(node.outputs[0]), "above", dtype="bool", quant=None)
    ctx.op("GREATER", [_plan_values(ctx), ctx.param([float(node.attr("alpha", 1.0))], "float32", "alpha")], [above],
           "GreaterOptions", 1)
    ctx.op("SELECT_V2", [above, x, ctx.param([0.0], "float32", "zero")], [out], "SelectV2Options", 1)


emitter("Sin", precisions=FLOAT)(_unary("SIN"))
emitter("Cos", precisions=FLOAT)(_unary("COS"))
emitter("Sign", precisions=FLOAT)(_unary("SIGN"))


def _plan_values(ctx: NodeContext, index: int = 0) -> int:
    """Input ``index`` as the plan holds it where a step function reads it (a rounding, a threshold, an order):
    rounded through float16 where the plan rounds it (``_rounded_to_fp16``), so that no step falls elsewhere."""
    name = ctx.node.inputs[index]
    return _rounded_to_fp16(ctx, ctx.input(name), name)


@emitter("Round", precisions=FLOAT)
def round_(ctx: NodeContext, node: Node) -> None:
    """Half to even, as ONNX: f = floor(x), d = x − f (exact), f + 1 where d > ½, or d = ½ and f is odd.

    LiteRT 2.3 registers no ROUND kernel (the interpreter refuses the builtin), so it is composed; every step
    is exact (infinities stay, NaN stays NaN).
    """
    x = _plan_values(ctx)
    out = ctx.output(node.outputs[0])
    shape = ctx.shape(node.outputs[0])

    def tmp(suffix: str, dtype: str = "float32") -> int:
        return ctx.temp(out, shape, suffix, dtype=dtype, quant=None)

    def const(value: float, suffix: str) -> int:
        return ctx.param([value], "float32", suffix)

    floor, fraction, parity, step = tmp("floor"), tmp("fraction"), tmp("parity"), tmp("step")
    above, tie, odd, odd_tie, up = (tmp(suffix, "bool") for suffix in ("above_half", "half", "odd", "odd_half", "up"))
    ctx.op("FLOOR", [x], [floor])
    ctx.op("SUB", [x, floor], [fraction], "SubOptions", 1, fusedActivationFunction="NONE")
    ctx.op("GREATER", [fraction, const(0.5, "half")], [above], "GreaterOptions", 1)
    ctx.op("EQUAL", [fraction, const(0.5, "half_tie")], [tie], "EqualOptions", 1)
    ctx.op("FLOOR_MOD", [floor, const(2.0, "two")], [parity], "FloorModOptions", 1)
    ctx.op("EQUAL", [parity, const(1.0, "one")], [odd], "EqualOptions", 1)
    ctx.op("LOGICAL_AND", [tie, odd], [odd_tie], "LogicalAndOptions", 1)
    ctx.op("LOGICAL_OR", [above, odd_tie], [up], "LogicalOrOptions", 1)
    ctx.op("CAST", [up], [step], None, 1)
    ctx.op("ADD", [floor, step], [out], "AddOptions", 1, fusedActivationFunction="NONE")


@emitter("IsNaN", precisions=FLOAT)
def is_nan(ctx: NodeContext, node: Node) -> None:
    """x ≠ x: true exactly for NaN."""
    x = ctx.input(node.inputs[0])
    ctx.op("NOT_EQUAL", [x, x], [ctx.output(node.outputs[0])], "NotEqualOptions", 1)


def _is_inf_check(graph: Graph, node: Node, integer: bool) -> str | None:
    if not (node.attr("detect_positive", 1) or node.attr("detect_negative", 1)):
        return f"IsInf {node.name!r}: detecting neither infinity is a constant false, not written for TFLite"
    return None


@emitter("IsInf", precisions=FLOAT, check=_is_inf_check)
def is_inf(ctx: NodeContext, node: Node) -> None:
    """EQUAL(|x|, inf), or EQUAL(x, ±inf) when one sign only is detected."""
    x = _plan_values(ctx)  # float16 overflows to inf where the plan rounds
    out = ctx.output(node.outputs[0])
    positive, negative = bool(node.attr("detect_positive", 1)), bool(node.attr("detect_negative", 1))
    if positive and negative:
        magnitude = ctx.temp(x, ctx.shape(node.inputs[0]), "abs", quant=None)
        ctx.op("ABS", [x], [magnitude])
        x, infinity = magnitude, np.inf
    else:
        infinity = np.inf if positive else -np.inf
    ctx.op("EQUAL", [x, ctx.param([infinity], "float32", "infinity")], [out], "EqualOptions", 1)


def _mod_check(graph: Graph, node: Node, integer: bool) -> str | None:
    dtype = graph.tensors[node.inputs[0]].dtype
    is_float = dtype is None or np.dtype(dtype).kind == "f"
    if node.attr("fmod", 0) and not is_float:
        return f"Mod {node.name!r}: fmod=1 on integers (a truncated remainder) is not written for TFLite"
    if not node.attr("fmod", 0) and is_float:
        return f"Mod {node.name!r}: ONNX requires fmod=1 for floating-point operands"
    if not is_float and np.dtype(dtype).name not in ("int32", "int64", "int16", "int8"):
        return f"Mod {node.name!r}: TFLite's FLOOR_MOD takes no {np.dtype(dtype).name} operands"
    return None


@emitter("Mod", precisions=FLOAT, check=_mod_check)
def mod(ctx: NodeContext, node: Node) -> None:
    """Integers (fmod=0): FLOOR_MOD, the divisor's sign, as ONNX. Floats (fmod=1, C's fmod, the dividend's sign):
    sign(a) · FLOOR_MOD(|a|, |b|), exact, since FLOOR_MOD of non-negative operands is fmod itself."""
    a, b = ctx.input(node.inputs[0]), ctx.input(node.inputs[1])
    out = ctx.output(node.outputs[0])
    if not node.attr("fmod", 0):
        ctx.op("FLOOR_MOD", [a, b], [out], "FloorModOptions", 1)
        return
    shape = ctx.shape(node.outputs[0])
    abs_a = ctx.temp(a, ctx.shape(node.inputs[0]), "abs_a", quant=None)
    abs_b = ctx.temp(b, ctx.shape(node.inputs[1]), "abs_b", quant=None)
    rest, sign = ctx.temp(out, shape, "remainder"), ctx.temp(a, ctx.shape(node.inputs[0]), "sign", quant=None)
    ctx.op("ABS", [a], [abs_a])
    ctx.op("ABS", [b], [abs_b])
    ctx.op("FLOOR_MOD", [abs_a, abs_b], [rest], "FloorModOptions", 1)
    ctx.op("SIGN", [a], [sign])
    ctx.op("MUL", [sign, rest], [out], "MulOptions", 1, fusedActivationFunction="NONE")


# ============================================================================ indices, selection, scans (issue 14)
def _constant_input_check(indices: tuple[int, ...], what: str) -> Check:
    def check(graph: Graph, node: Node, integer: bool) -> str | None:
        if _has_computed_input(graph, node, indices):
            return f"{node.op_type} {node.name!r}: TFLite needs constant {what}"
        return None

    return check


@emitter("Tile", check=_constant_input_check((1,), "repeats"))
def tile(ctx: NodeContext, node: Node) -> None:
    """TILE: copies elements, so integer input and output share their quantization (legalization)."""
    x = ctx.input(node.inputs[0])
    out = ctx.output(node.outputs[0])
    repeats = ctx.param(ctx.value(node.inputs[1]).reshape(-1).astype(np.int32), suffix="multiples")
    ctx.op("TILE", [x, repeats], [out], "TileOptions", 1)


def _axis_of(ctx: NodeContext, node: Node, rank: int, default: int = 0) -> int:
    axis = int(node.attr("axis", default))
    return axis + rank if axis < 0 else axis


def _arg_check(graph: Graph, node: Node, integer: bool) -> str | None:
    if node.attr("select_last_index", 0):
        return (f"{node.op_type} {node.name!r}: select_last_index=1 (the last of equal values) has no TFLite form; "
                f"ARG_MAX/ARG_MIN return the first")
    return None


@emitter("ArgMax", "ArgMin", precisions=FLOAT, check=_arg_check)
def arg_max_min(ctx: NodeContext, node: Node) -> None:
    """ARG_MAX/ARG_MIN (int64 indices, the first of equal values, as ONNX's default), then RESHAPE for keepdims.

    An integer plan's input is read dequantized: a monotone map, so the same index as the int8 kernel's."""
    x = _plan_values(ctx)
    out = ctx.output(node.outputs[0])
    shape = ctx.shape(node.inputs[0])
    axis = _axis_of(ctx, node, len(shape))
    op = "ARG_MAX" if node.op_type == "ArgMax" else "ARG_MIN"
    options = "ArgMaxOptions" if node.op_type == "ArgMax" else "ArgMinOptions"
    keep = bool(node.attr("keepdims", 1))
    target = ctx.temp(out, tuple(d for i, d in enumerate(shape) if i != axis), "reduced") if keep else out
    ctx.op(op, [x, ctx.param([axis], suffix="axis")], [target], options, 1, outputType="INT64")
    if keep:
        dims = _dims(ctx, node.outputs[0])
        ctx.op("RESHAPE", [target, ctx.param(dims, suffix="shape")], [out], "ReshapeOptions", 1, newShape=dims)


def _topk_check(graph: Graph, node: Node, integer: bool) -> str | None:
    rank = graph.tensors[node.inputs[0]].rank
    axis = int(node.attr("axis", -1))
    if rank is None or (axis + rank if axis < 0 else axis) != rank - 1:
        return f"TopK {node.name!r}: TFLite's TOPK_V2 selects along the last axis only (axis {axis}, rank {rank})"
    if not node.attr("largest", 1):
        return f"TopK {node.name!r}: largest=0 (the k smallest) has no TFLite form; TOPK_V2 returns the largest"
    if not node.attr("sorted", 1):
        return f"TopK {node.name!r}: sorted=0 leaves the order to the runtime; only sorted results are written"
    return _constant_input_check((1,), "k")(graph, node, integer)


@emitter("TopK", precisions=FLOAT, check=_topk_check)
def top_k(ctx: NodeContext, node: Node) -> None:
    """TOPK_V2 along the last axis, largest first, equal values in index order (as ONNX); int32 indices CAST to
    ONNX's int64."""
    x = _plan_values(ctx)
    k = ctx.param(int(ctx.value(node.inputs[1]).reshape(-1)[0]), suffix="k")
    values_name, indices_name = (list(node.outputs) + ["", ""])[:2]
    shape = ctx.shape(indices_name or values_name)
    values = ctx.output(values_name) if values_name else ctx.temp(x, shape, "values", quant=None)
    out_indices = ctx.output(indices_name) if indices_name else -1
    indices = ctx.w.new_tensor(f"{node.name}/indices_int32", "int32", shape)
    ctx.op("TOPK_V2", [x, k], [values, indices], "TopKV2Options", 1)
    if out_indices >= 0:
        ctx.op("CAST", [indices], [out_indices], None, 1)


@emitter("CumSum", precisions=FLOAT, check=_constant_input_check((1,), "axis"))
def cumsum(ctx: NodeContext, node: Node) -> None:
    x = ctx.input(node.inputs[0])
    out = ctx.output(node.outputs[0])
    axis = int(ctx.value(node.inputs[1]).reshape(-1)[0])
    axis = axis + len(ctx.shape(node.inputs[0])) if axis < 0 else axis
    ctx.op("CUMSUM", [x, ctx.param(axis, suffix="axis")], [out], "CumsumOptions", 1,
           exclusive=bool(node.attr("exclusive", 0)), reverse=bool(node.attr("reverse", 0)))


def _gather_indices(ctx: NodeContext, name: str, sizes: list, suffix: str) -> int:
    """Indices into axes of sizes ``sizes`` (the last index axis runs over them), negative ones counted from the end
    as ONNX does: constant ones fixed here (int32), computed ones through FLOOR_MOD(i, size), exact for
    ONNX's range [-size, size - 1] (TFLite's gathers refuse negative indices)."""
    if ctx.is_constant(name):
        values = ctx.value(name).astype(np.int64)
        if np.any(values < 0):
            if not all(isinstance(d, int) for d in sizes):
                raise UnsupportedOperatorError(f"{ctx.node.op_type} {ctx.node.name!r}: negative indices need static "
                                               f"sizes, got {sizes}: {STATIC_SHAPE_HINT}")
            values = np.mod(values, np.asarray(sizes, np.int64))
        return ctx.w.new_tensor(f"{ctx.node.name}/{suffix}", "int32", values.shape, data=values.astype(np.int32))
    indices = ctx.w.realize(name, "raw")
    if not all(isinstance(d, int) for d in sizes):
        return indices  # negative computed indices along a dynamic axis fail at run time in LiteRT
    shape = ctx.shape(name)
    wrapped = ctx.temp(indices, shape, f"{suffix}/wrapped", quant=None)
    ctx.op("FLOOR_MOD", [indices, ctx.param(sizes, _dtype(ctx, indices), f"{suffix}/sizes")], [wrapped],
           "FloorModOptions", 1)
    return wrapped


def _gather_nd_check(graph: Graph, node: Node, integer: bool) -> str | None:
    if int(node.attr("batch_dims", 0)) != 0:
        return f"GatherND {node.name!r}: batch_dims > 0 has no TFLite GATHER_ND form"
    indices = graph.tensors[node.inputs[1]]
    if indices.shape is None or not isinstance(indices.shape[-1], int):
        return f"GatherND {node.name!r}: TFLite needs the index depth (the indices' last dimension) static"
    return None


@emitter("GatherND", precisions=FLOAT, check=_gather_nd_check)
def gather_nd(ctx: NodeContext, node: Node) -> None:
    data = ctx.input(node.inputs[0])
    depth = int(ctx.shape(node.inputs[1])[-1])
    indices = _gather_indices(ctx, node.inputs[1], list(ctx.shape(node.inputs[0])[:depth]), "indices")
    ctx.op("GATHER_ND", [data, indices], [ctx.output(node.outputs[0])], "GatherNdOptions", 1)


def _gather_elements_check(graph: Graph, node: Node, integer: bool) -> str | None:
    shape = graph.tensors[node.inputs[1]].shape
    if shape is None or not all(isinstance(d, int) for d in shape):
        return (f"GatherElements {node.name!r}: its GATHER_ND form needs the indices' shape static (a coordinate "
                f"grid), got {shape}; {STATIC_SHAPE_HINT}")
    return None


@emitter("GatherElements", precisions=FLOAT, check=_gather_elements_check)
def gather_elements(ctx: NodeContext, node: Node) -> None:
    """out[p] = data[p with p[axis] := indices[p]]: GATHER_ND with full coordinates, exact data movement.

    The coordinates are the index grid of the indices' (static) shape with the ``axis`` column replaced by the
    indices: one constant for constant indices, else CONCATENATION of constant columns and the (int32) indices.
    """
    data = ctx.input(node.inputs[0])
    out = ctx.output(node.outputs[0])
    data_shape = ctx.shape(node.inputs[0])
    shape = [int(d) for d in ctx.shape(node.inputs[1])]
    rank = len(shape)
    axis = _axis_of(ctx, node, rank)
    grid = np.indices(shape, np.int32)
    indices = _gather_indices(ctx, node.inputs[1], [data_shape[axis]], "indices")
    if ctx.is_constant(node.inputs[1]):
        grid[axis] = ctx.w.model.tensors[indices].data
        coords = ctx.param(np.stack(list(grid), axis=-1), suffix="coordinates")
    else:
        coords = _element_coordinates(ctx, node, indices, shape, axis)
    ctx.op("GATHER_ND", [data, coords], [out], "GatherNdOptions", 1)


def _element_coordinates(ctx: NodeContext, node: Node, indices: int, shape: list[int], axis: int) -> int:
    """Full int32 coordinates ``[*shape, rank]`` for computed ``indices`` along ``axis`` (GatherElements,
    ScatterElements): the index grid of the static ``shape`` with the ``axis`` column replaced by the indices."""
    rank = len(shape)
    if _dtype(ctx, indices) != "int32":
        narrow = ctx.temp(indices, tuple(shape), "indices/int32", dtype="int32", quant=None)
        ctx.op("CAST", [indices], [narrow], None, 1)
        indices = narrow
    column = ctx.temp(indices, (*shape, 1), "indices/column")
    ctx.op("RESHAPE", [indices, ctx.param([*shape, 1], suffix="column_shape")], [column], "ReshapeOptions", 1,
           newShape=[*shape, 1])
    grid = np.indices(shape, np.int32)
    parts = [column if k == axis else ctx.param(grid[k][..., None], suffix=f"grid_{k}") for k in range(rank)]
    coords = ctx.w.new_tensor(f"{node.name}/coordinates", "int32", (*shape, rank))
    ctx.op("CONCATENATION", parts, [coords], "ConcatenationOptions", 1, axis=rank, fusedActivationFunction="NONE")
    return coords


# ============================================================================ einsum (as one BATCH_MATMUL)
@dataclasses.dataclass(frozen=True)
class EinsumPlan:
    """``a, b -> out`` as batch × free_a × contracted @ batch × contracted × free_b (each group's letters in order)."""

    a: str
    b: str
    out: str
    batch: str
    free_a: str
    free_b: str
    contracted: str


def _einsum_plan(graph: Graph, node: Node) -> EinsumPlan | str:
    """How a two-operand Einsum is one BATCH_MATMUL between transposes and reshapes, or why it is not."""
    equation = node.attr("equation", "")
    equation = (equation.decode() if isinstance(equation, bytes) else equation).replace(" ", "")
    if "..." in equation:
        return "an ellipsis (broadcast batch dimensions) is not written for TFLite"
    lhs, _, out = equation.partition("->")
    operands = lhs.split(",")
    if len(operands) != 2 or len([i for i in node.inputs if i]) != 2:
        return f"only two operands map to one BATCH_MATMUL (equation {equation!r})"
    a, b = operands
    if "->" not in equation:  # implicit output: the letters that appear once, in alphabetical order
        out = "".join(sorted(c for c in set(a + b) if (a + b).count(c) == 1))
    if any(len(set(s)) != len(s) for s in (a, b, out)):
        return f"a repeated index (a diagonal or trace) has no BATCH_MATMUL form (equation {equation!r})"
    if any(c not in a and c not in b for c in out) or any(c not in out and c not in other for s, other in ((a, b), (b, a))
                                                         for c in s):
        return f"an index summed over one operand only (a reduction) has no BATCH_MATMUL form (equation {equation!r})"
    plan = EinsumPlan(a, b, out, batch="".join(c for c in out if c in a and c in b),
                      free_a="".join(c for c in out if c in a and c not in b),
                      free_b="".join(c for c in out if c in b and c not in a),
                      contracted="".join(c for c in a if c in b and c not in out))
    shapes = [graph.tensors[name].shape for name in node.inputs[:2]]
    if any(s is None or len(s) != len(letters) for s, letters in zip(shapes, (a, b))):
        return "TFLite needs the operands' shapes"
    sizes_a, sizes_b = dict(zip(a, shapes[0])), dict(zip(b, shapes[1]))
    for c in plan.batch + plan.contracted:
        if sizes_a[c] != sizes_b[c]:
            return f"index {c!r} has sizes {sizes_a[c]} and {sizes_b[c]}: broadcasting is not written for TFLite"
    dynamic = [c for c, d in {**sizes_b, **sizes_a}.items() if not isinstance(d, int)]
    reshaped = len(plan.batch) > 1 or any(len(g) != 1 for g in (plan.free_a, plan.contracted, plan.free_b))
    if reshaped and len(dynamic) > 1:
        return f"its RESHAPEs would have several dynamic dimensions ({', '.join(dynamic)}); {STATIC_SHAPE_HINT}"
    return plan


def _einsum_check(graph: Graph, node: Node, integer: bool) -> str | None:
    plan = _einsum_plan(graph, node)
    return f"Einsum {node.name!r}: {plan}" if isinstance(plan, str) else None


def _group_size(sizes: dict, group: str) -> object:
    """The size of a run of indices merged into one dimension: the letter's own size (maybe dynamic) or the
    product of static sizes, -1 when one of them is dynamic (RESHAPE infers it)."""
    if len(group) == 1:
        return sizes[group]
    values = [sizes[c] for c in group]
    return int(np.prod(values)) if all(isinstance(v, int) for v in values) else -1


def _arranged(ctx: NodeContext, x: int, letters: str, order: str, groups: list[str], sizes: dict, suffix: str) -> int:
    """Operand ``x`` (indices ``letters``) transposed to ``order`` and reshaped to one dimension per group."""
    shape = tuple(sizes[c] for c in letters)
    perm = [letters.index(c) for c in order]
    if perm != sorted(perm):
        moved = ctx.temp(x, tuple(sizes[c] for c in order), f"{suffix}/transposed")
        ctx.op("TRANSPOSE", [x, ctx.param(perm, suffix=f"{suffix}/perm")], [moved], "TransposeOptions",
               4 if len(perm) > 4 else 1)
        x, shape = moved, tuple(sizes[c] for c in order)
    target = tuple(_group_size(sizes, g) for g in groups)
    if target != shape:
        dims = [d if isinstance(d, int) else -1 for d in target]
        merged = ctx.temp(x, target, f"{suffix}/merged")
        ctx.op("RESHAPE", [x, ctx.param(dims, suffix=f"{suffix}/shape")], [merged], "ReshapeOptions", 1, newShape=dims)
        x = merged
    return x


@emitter("Einsum", precisions=FLOAT, check=_einsum_check)
def einsum(ctx: NodeContext, node: Node) -> None:
    """A two-operand contraction as TRANSPOSE/RESHAPE to [batch, M, K] and [batch, K, N], one BATCH_MATMUL, and
    RESHAPE/TRANSPOSE back to the output's indices. Float (the planner keeps Einsum in float)."""
    plan = _einsum_plan(ctx.graph, node)
    if isinstance(plan, str):
        raise UnsupportedOperatorError(f"Einsum {node.name!r}: {plan}")
    sizes = {**dict(zip(plan.b, ctx.shape(node.inputs[1]))), **dict(zip(plan.a, ctx.shape(node.inputs[0])))}
    lead = [plan.batch] if plan.batch else []
    a = _arranged(ctx, ctx.input(node.inputs[0]), plan.a, plan.batch + plan.free_a + plan.contracted,
                  lead + [plan.free_a, plan.contracted], sizes, "a")
    b = _arranged(ctx, ctx.input(node.inputs[1]), plan.b, plan.batch + plan.contracted + plan.free_b,
                  lead + [plan.contracted, plan.free_b], sizes, "b")
    out = ctx.output(node.outputs[0])
    computed = plan.batch + plan.free_a + plan.free_b
    product = tuple(_group_size(sizes, g) for g in lead + [plan.free_a, plan.free_b])
    unmerged = tuple(sizes[c] for c in computed)
    perm = [computed.index(c) for c in plan.out]
    steps = [product != unmerged, perm != sorted(perm)]
    target = out if not any(steps) else ctx.temp(out, product, "matmul")
    ctx.op("BATCH_MATMUL", [a, b], [target], "BatchMatMulOptions", 1, adjX=False, adjY=False)
    if steps[0]:
        dims = [d if isinstance(d, int) else -1 for d in unmerged]
        split = out if not steps[1] else ctx.temp(out, unmerged, "split")
        ctx.op("RESHAPE", [target, ctx.param(dims, suffix="shape")], [split], "ReshapeOptions", 1, newShape=dims)
        target = split
    if steps[1]:
        ctx.op("TRANSPOSE", [target, ctx.param(perm, suffix="perm")], [out], "TransposeOptions", 4 if len(perm) > 4 else 1)


# ============================================================================ onnx2tf's list, third round (issue 14)
def _zero_like(ctx: NodeContext, index: int, suffix: str = "zero") -> int:
    """A scalar 0 of TFLite tensor ``index``'s type (float32 for float activations, else the raw type)."""
    return ctx.param([0], _dtype(ctx, index), suffix)


def _trilu_check(graph: Graph, node: Node, integer: bool) -> str | None:
    shape = graph.tensors[node.inputs[0]].shape
    if shape is None or len(shape) < 2 or not all(isinstance(d, int) for d in shape[-2:]):
        return f"Trilu {node.name!r}: TFLite needs the last two dimensions static (a constant mask), got {shape}"
    return _constant_input_check((1,), "k (the diagonal offset)")(graph, node, integer)


@emitter("Trilu", check=_trilu_check)
def trilu(ctx: NodeContext, node: Node) -> None:
    """SELECT_V2(constant triangular mask, x, 0): exact for every value (a −inf mask entry stays −inf; x·mask
    would turn −inf·0 into NaN). Float data, raw ids and bools, or integers (an imported QDQ model's node: input and
    output quantized alike, 0 is the zero-point)."""
    x = ctx.input(node.inputs[0])
    rows, cols = (int(d) for d in ctx.shape(node.inputs[0])[-2:])
    k = int(ctx.value(node.inputs[1]).reshape(-1)[0]) if len(node.inputs) > 1 and node.inputs[1] else 0
    ones = np.ones((rows, cols), bool)
    mask = np.triu(ones, k) if node.attr("upper", 1) else np.tril(ones, k)
    if ctx.integer:
        zero = ctx.scalar_like(node.outputs[0], 0.0, "zero")
    else:
        zero = ctx.param([False], "bool", "zero") if _dtype(ctx, x) == "bool" else _zero_like(ctx, x)
    ctx.op("SELECT_V2", [ctx.param(mask, "bool", "mask"), x, zero], [ctx.output(node.outputs[0])], "SelectV2Options", 1)


def _one_hot_check(graph: Graph, node: Node, integer: bool) -> str | None:
    reason = _constant_input_check((1,), "depth (the output size)")(graph, node, integer)
    if reason:
        return reason
    indices = graph.tensors[node.inputs[0]]
    if indices.dtype is not None and np.dtype(indices.dtype).kind == "f":
        return f"OneHot {node.name!r}: float indices are not written for TFLite (ONE_HOT takes int32/int64)"
    return None


def _one_hot(ctx: NodeContext, node: Node, indices: int, depth: int, axis: int, on: int, off: int, out: int) -> None:
    """ONE_HOT with ONNX's negative indices: i + depth where i < 0, so that [−depth, −1] count from the end and
    anything else out of range stays out of range (an all-off row, as in ONNX and TFLite)."""
    shape = ctx.shape(node.inputs[0])
    dtype = _dtype(ctx, indices)
    negative = ctx.temp(indices, shape, "negative", dtype="bool", quant=None)
    shifted = ctx.temp(indices, shape, "from_the_end", quant=None)
    wrapped = ctx.temp(indices, shape, "wrapped", quant=None)
    ctx.op("LESS", [indices, ctx.param([0], dtype, "zero_index")], [negative], "LessOptions", 1)
    ctx.op("ADD", [indices, ctx.param([depth], dtype, "depth_offset")], [shifted], "AddOptions", 1,
           fusedActivationFunction="NONE")
    ctx.op("SELECT_V2", [negative, shifted, indices], [wrapped], "SelectV2Options", 1)
    ctx.op("ONE_HOT", [wrapped, ctx.param(depth, suffix="depth"), on, off], [out], "OneHotOptions", 1, axis=axis)


@emitter("OneHot", precisions=FLOAT, check=_one_hot_check)
def one_hot(ctx: NodeContext, node: Node) -> None:
    """ONE_HOT(indices, depth, values[1], values[0], axis); constant values as scalars, computed ones sliced."""
    indices = ctx.input(node.inputs[0])
    depth = int(np.asarray(ctx.value(node.inputs[1])).reshape(-1)[0])
    out = ctx.output(node.outputs[0])
    rank = len(ctx.shape(node.outputs[0]))
    axis = int(node.attr("axis", -1))
    axis = axis + rank if axis < 0 else axis
    dtype = _dtype(ctx, out)
    if ctx.is_constant(node.inputs[2]):
        off_value, on_value = np.asarray(ctx.value(node.inputs[2])).reshape(-1)[:2]
        on, off = ctx.param(on_value, dtype, "on_value"), ctx.param(off_value, dtype, "off_value")
    else:
        values = ctx.input(node.inputs[2])
        on, off = (ctx.temp(values, (), suffix, quant=None) for suffix in ("on_value", "off_value"))
        for position, target in ((1, on), (0, off)):
            ctx.op("GATHER", [values, ctx.param(position, suffix=f"value_{position}")], [target], "GatherOptions", 1, axis=0)
    _one_hot(ctx, node, indices, depth, axis, on, off, out)


def _eye_like_check(graph: Graph, node: Node, integer: bool) -> str | None:
    shape = graph.tensors[node.inputs[0]].shape
    if shape is None or len(shape) != 2 or not all(isinstance(d, int) for d in shape):
        return f"EyeLike {node.name!r}: TFLite needs a static 2-D shape (the output is a constant), got {shape}"
    return None


@emitter("EyeLike", precisions=FLOAT, check=_eye_like_check)
def eye_like(ctx: NodeContext, node: Node) -> None:
    """A constant: ones on diagonal ``k`` of the input's (static) shape, written through a RESHAPE."""
    rows, cols = (int(d) for d in ctx.shape(node.inputs[0]))
    out = ctx.output(node.outputs[0])
    eye = np.eye(rows, cols, int(node.attr("k", 0)))
    ctx.op("RESHAPE", [ctx.param(eye, _dtype(ctx, out), "eye"), ctx.param([rows, cols], suffix="shape")], [out],
           "ReshapeOptions", 1, newShape=[rows, cols])


# ---------------------------------------------------------------------------- scatter
def _reduction(node: Node) -> str:
    value = node.attr("reduction", "none")
    return value.decode() if isinstance(value, bytes) else value


def _scatter_check(graph: Graph, node: Node, integer: bool) -> str | None:
    if _reduction(node) not in ("none", "add"):
        return (f"{node.op_type} {node.name!r}: reduction={_reduction(node)!r} has no TFLite form (SCATTER_ND adds "
                f"into zeros: replacing and adding are written, mul/max/min are not)")
    if integer and _reduction(node) == "add":
        return f"{node.op_type} {node.name!r}: reduction='add' is an addition, written in float (integer: replacing only)"
    if integer and not same_numbers(graph.tensors[node.inputs[2]].quant, graph.tensors[node.inputs[0]].quant):
        return (f"{node.op_type} {node.name!r}: its updates are quantized otherwise than its data, and TFLite's "
                f"requantization rounds exact ties otherwise than the plan's half to even (1 LSB, measured)")
    data, indices, updates = (graph.tensors[name] for name in node.inputs[:3])
    if data.shape is None or indices.shape is None or updates.shape is None:
        return f"{node.op_type} {node.name!r}: TFLite needs the ranks of data, indices and updates"
    if data.dtype is not None and np.dtype(data.dtype).name not in ("float32", "float16", "float64", "int32", "int64", "int8"):
        return f"{node.op_type} {node.name!r}: TFLite's SCATTER_ND takes no {np.dtype(data.dtype).name} data"
    if node.op_type == "ScatterND":
        if not isinstance(indices.shape[-1], int):
            return f"ScatterND {node.name!r}: TFLite needs the index depth (the indices' last dimension) static"
        indexed = list(data.shape[:int(indices.shape[-1])])
    else:
        if not all(isinstance(d, int) for d in indices.shape):
            return (f"ScatterElements {node.name!r}: its SCATTER_ND form needs the indices' shape static (a coordinate "
                    f"grid), got {indices.shape}; {STATIC_SHAPE_HINT}")
        axis = int(node.attr("axis", 0))
        indexed = [data.shape[axis + len(data.shape) if axis < 0 else axis]]
    dynamic = [k for k, d in enumerate(indexed) if not isinstance(d, int)]
    if dynamic and indices.is_constant:
        columns = indices.value.reshape(-1, len(indexed)) if node.op_type == "ScatterND" else indices.value.reshape(-1, 1)
        if np.any(columns[:, dynamic] < 0):
            return (f"{node.op_type} {node.name!r}: negative indices into a dynamic axis ({indexed}) need its size; "
                    f"{STATIC_SHAPE_HINT}")
    if _reduction(node) == "none" and indices.is_constant:
        coords = _scatter_coordinates_value(node, tuple(data.shape), indices.value)
        rows = coords.reshape(-1, coords.shape[-1])
        if len(np.unique(rows, axis=0)) != len(rows):
            return (f"{node.op_type} {node.name!r}: duplicate indices with reduction='none' leave the result to the "
                    f"runtime in ONNX, and TFLite's SCATTER_ND would add them")
    return None


def _scatter_coordinates_value(node: Node, data_shape: tuple, indices: np.ndarray) -> np.ndarray:
    """Constant indices as ScatterND coordinates ``[..., depth]``, negative ones counted from the end."""
    indices = np.asarray(indices).astype(np.int64)
    if node.op_type == "ScatterND":
        depth = indices.shape[-1]
        sizes = [d if isinstance(d, int) else 2**31 - 1 for d in data_shape[:depth]]  # no negatives there (checked)
        return np.mod(indices, np.asarray(sizes, np.int64))
    rank = indices.ndim
    axis = int(node.attr("axis", 0))
    axis = axis + rank if axis < 0 else axis
    grid = np.indices(indices.shape, np.int64)
    size = data_shape[axis]
    grid[axis] = np.mod(indices, int(size)) if isinstance(size, int) else indices
    return np.stack(list(grid), axis=-1)


def _scatter_coordinates(ctx: NodeContext, node: Node) -> int:
    """int32 coordinates for SCATTER_ND: constant ones wrapped here, computed ones through FLOOR_MOD (and, for
    ScatterElements, joined with the index grid of the indices' static shape, as GatherElements does)."""
    data_shape = list(ctx.shape(node.inputs[0]))
    name = node.inputs[1]
    if ctx.is_constant(name):
        coords = _scatter_coordinates_value(node, tuple(data_shape), ctx.value(name))
        return ctx.param(coords.astype(np.int32), suffix="coordinates")
    if node.op_type == "ScatterND":
        depth = int(ctx.shape(name)[-1])
        indices = _gather_indices(ctx, name, data_shape[:depth], "indices")
        if _dtype(ctx, indices) != "int32":
            narrow = ctx.temp(indices, ctx.shape(name), "indices/int32", dtype="int32", quant=None)
            ctx.op("CAST", [indices], [narrow], None, 1)
            indices = narrow
        return indices
    shape = [int(d) for d in ctx.shape(name)]
    axis = _axis_of(ctx, node, len(shape))
    return _element_coordinates(ctx, node, _gather_indices(ctx, name, [data_shape[axis]], "indices"), shape, axis)


def _shape_of(ctx: NodeContext, index: int, name: str, suffix: str) -> int:
    """Graph tensor ``name``'s shape as an int32 tensor: a constant when static, else SHAPE of TFLite tensor ``index``
    (computed while LiteRT allocates)."""
    shape = ctx.shape(name)
    if all(isinstance(d, int) for d in shape):
        return ctx.param([int(d) for d in shape], suffix=suffix)
    tensor = ctx.w.new_tensor(f"{ctx.node.name}/{suffix}", "int32", (len(shape),))
    ctx.op("SHAPE", [index], [tensor], "ShapeOptions", 1, outType="INT32")
    return tensor


@emitter("ScatterND", "ScatterElements", precisions=(I8, F16, F32), check=_scatter_check,
         integer_reason="LiteRT's SCATTER_ND takes no int16 updates (\"Updates of type 'INT16' are not supported by "
                        "scatter_nd\")")
def scatter(ctx: NodeContext, node: Node) -> None:
    """ONNX replaces ``data`` at the indices; TFLite's SCATTER_ND writes ``updates`` into zeros (adding duplicates).

    reduction='none': SELECT_V2(SCATTER_ND(coords, ones) > 0, SCATTER_ND(coords, updates), data), exact for every
    value (no arithmetic touches ``data``). reduction='add': data + SCATTER_ND(coords, updates), ONNX's sum where
    the indices are distinct (duplicates are summed first). ScatterElements scatters full coordinates (its
    indices' grid with the axis column replaced, as GatherElements). Shapes read at run time where dynamic.
    Integer (an imported QDQ model's int8 node, reduction 'none', updates quantized like the data): data, updates
    and output share their quantization, so the integers are copied.
    """
    data = ctx.input(node.inputs[0])
    updates = ctx.input(node.inputs[2])
    out = ctx.output(node.outputs[0])
    data_shape = ctx.shape(node.inputs[0])
    coords = _scatter_coordinates(ctx, node)
    shape = _shape_of(ctx, data, node.inputs[0], "shape")
    scattered = ctx.temp(data, data_shape, "scattered", dtype=_dtype(ctx, updates), quant=None)
    ctx.op("SCATTER_ND", [coords, updates, shape], [scattered])
    if _reduction(node) == "add":
        ctx.op("ADD", [data, scattered], [out], "AddOptions", 1, fusedActivationFunction="NONE")
        return
    update_shape = ctx.shape(node.inputs[2])
    if all(isinstance(d, int) for d in update_shape):
        ones = ctx.param(np.ones([int(d) for d in update_shape], np.int32), suffix="ones")
    else:
        ones = ctx.w.new_tensor(f"{node.name}/ones", "int32", update_shape)
        ctx.op("FILL", [_shape_of(ctx, updates, node.inputs[2], "update_shape"), ctx.param(1, suffix="one")], [ones])
    hits = ctx.temp(data, data_shape, "hits", dtype="int32", quant=None)
    hit = ctx.temp(data, data_shape, "hit", dtype="bool", quant=None)
    ctx.op("SCATTER_ND", [coords, ones, shape], [hits])
    ctx.op("GREATER", [hits, ctx.param([0], suffix="zero_hits")], [hit], "GreaterOptions", 1)
    ctx.op("SELECT_V2", [hit, scattered, data], [out], "SelectV2Options", 1)


def _compress_check(graph: Graph, node: Node, integer: bool) -> str | None:
    if node.attr("axis") is None and not all(isinstance(d, int) for d in graph.tensors[node.inputs[0]].shape or (None,)):
        return f"Compress {node.name!r}: without an axis the input is flattened, which needs its shape static"
    return None


@emitter("Compress", check=_compress_check)
def compress(ctx: NodeContext, node: Node) -> None:
    """GATHER of the selected positions along ``axis`` (of the flattened input without one): constant ones for a
    constant condition, else WHERE(condition) reshaped to 1-D, sized at run time like NonZero's."""
    x = ctx.input(node.inputs[0])
    out = ctx.output(node.outputs[0])
    if ctx.is_constant(node.inputs[1]):
        positions = ctx.param(np.flatnonzero(np.asarray(ctx.value(node.inputs[1])).reshape(-1)).astype(np.int32),
                              suffix="positions")
    else:
        condition = ctx.input(node.inputs[1])
        if _dtype(ctx, condition) != "bool":
            cast = ctx.temp(condition, ctx.shape(node.inputs[1]), "condition", dtype="bool", quant=None)
            ctx.op("NOT_EQUAL", [condition, _zero_like(ctx, condition)], [cast], "NotEqualOptions", 1)
            condition = cast
        out_shape = ctx.shape(node.outputs[0])
        axis = int(node.attr("axis", 0))
        count = out_shape[axis + len(out_shape) if axis < 0 else axis]
        found = ctx.w.new_tensor(f"{node.name}/found", "int64", (count, 1))
        positions = ctx.w.new_tensor(f"{node.name}/positions", "int64", (count,))
        ctx.op("WHERE", [condition], [found], "WhereOptions", 1)
        ctx.op("RESHAPE", [found, ctx.param([-1], suffix="positions_shape")], [positions], "ReshapeOptions", 1,
               newShape=[-1])
    axis = node.attr("axis")
    if axis is None:
        size = int(np.prod([int(d) for d in ctx.shape(node.inputs[0])]))
        flat = ctx.temp(x, (size,), "flat")
        ctx.op("RESHAPE", [x, ctx.param([size], suffix="flat_shape")], [flat], "ReshapeOptions", 1, newShape=[size])
        x, axis = flat, 0
    rank = len(ctx.w.model.tensors[x].shape)
    axis = int(axis) + rank if int(axis) < 0 else int(axis)
    ctx.op("GATHER", [x, positions], [out], "GatherOptions", _by_dtype(ctx, x, int16=4, bool=3, int8=2), axis=axis)


# ---------------------------------------------------------------------------- shapes computed at run time
# The importer folds these wherever shapes are static, and the pipeline freezes a dynamic batch for TFLite before
# lowering (``Capabilities.static_shapes``); what still reaches the backend reads a dynamic size (a spatial size
# that varies) or data. SHAPE of an input is computed while LiteRT allocates.
def _stored_shape(ctx: NodeContext, node: Node, x: int, begin: int, end: int, suffix: str) -> int:
    """int64 ONNX dims ``begin:end`` of node input 0 (TFLite tensor ``x``, stored with layout ``stored_perm``)."""
    rank = len(ctx.shape(node.inputs[0]))
    perm = [int(p) for p in node.attr("stored_perm") or range(rank)]
    stored = ctx.w.new_tensor(f"{node.name}/{suffix}", "int64", (rank,))
    ctx.op("SHAPE", [x], [stored], "ShapeOptions", 1, outType="INT64")
    wanted = [perm.index(i) for i in range(begin, end)]
    if wanted == list(range(rank)):
        return stored
    dims = ctx.w.new_tensor(f"{node.name}/{suffix}/onnx_order", "int64", (len(wanted),))
    ctx.op("GATHER", [stored, ctx.param(wanted, suffix=f"{suffix}/dims")], [dims], "GatherOptions", 1, axis=0)
    return dims


@emitter("Shape", precisions=FLOAT)
def shape_(ctx: NodeContext, node: Node) -> None:
    """SHAPE (int64), the ONNX-order dims ``start:end`` GATHERed where the input is stored in another layout."""
    rank = len(ctx.shape(node.inputs[0]))

    def clamp(value: int) -> int:
        return min(max(value + rank if value < 0 else value, 0), rank)

    begin = clamp(int(node.attr("start", 0)))
    end = clamp(int(node.attr("end", rank)))
    dims = _stored_shape(ctx, node, ctx.input(node.inputs[0]), begin, max(begin, end), "shape")
    out = ctx.output(node.outputs[0])
    ctx.op("RESHAPE", [dims, ctx.param([max(end - begin, 0)], suffix="length")], [out], "ReshapeOptions", 1,
           newShape=[max(end - begin, 0)])


@emitter("Size", precisions=FLOAT)
def size_(ctx: NodeContext, node: Node) -> None:
    """REDUCE_PROD of the int64 SHAPE: a scalar, as ONNX."""
    rank = len(ctx.shape(node.inputs[0]))
    dims = _stored_shape(ctx, node, ctx.input(node.inputs[0]), 0, rank, "shape")
    ctx.op("REDUCE_PROD", [dims, ctx.param([0], suffix="axis")], [ctx.output(node.outputs[0])], "ReducerOptions", 1,
           keepDims=False)


def _constant_of_shape_value(node: Node) -> np.ndarray:
    value = node.attr("value")
    return np.zeros(1, np.float32) if value is None else np.asarray(value).reshape(-1)[:1]


@emitter("ConstantOfShape", precisions=FLOAT)
def constant_of_shape(ctx: NodeContext, node: Node) -> None:
    """FILL(shape, value): the value in the output's type (float32 for float outputs)."""
    dims = ctx.input(node.inputs[0])
    out = ctx.output(node.outputs[0])
    value = ctx.param(_constant_of_shape_value(node)[0], _dtype(ctx, out), "value")
    ctx.op("FILL", [dims, value], [out])


def _range_check(graph: Graph, node: Node, integer: bool) -> str | None:
    for name in node.inputs[:3]:
        t = graph.tensors[name]
        if t.dtype is not None and np.dtype(t.dtype).name not in ("float32", "int32", "int64"):
            return f"Range {node.name!r}: TFLite's RANGE takes float32, int32 or int64, not {np.dtype(t.dtype).name}"
    return None


@emitter("Range", precisions=FLOAT, check=_range_check)
def range_(ctx: NodeContext, node: Node) -> None:
    """RANGE(start, limit, delta): ceil((limit − start) / delta) values, as ONNX (a dynamic output size)."""
    start, limit, delta = (ctx.input(name) for name in node.inputs[:3])
    out = ctx.output(node.outputs[0])
    # op_version.cc gives int64 RANGE version 2, which LiteRT 2.3 does not register; version 1 runs int64
    ctx.op("RANGE", [start, limit, delta], [out], None, 1)


@emitter("NonZero", precisions=FLOAT)
def non_zero(ctx: NodeContext, node: Node) -> None:
    """WHERE(x ≠ 0) gives the [count, rank] int64 coordinates in row-major order; ONNX wants them [rank, count]:
    TRANSPOSE. The count depends on the data: LiteRT makes WHERE's output a dynamic tensor, sized at every
    invocation, and the operators reading it resize theirs (with and without XNNPACK). An FP16 plan's value is
    read as the plan rounds it (a tiny value is 0 in float16)."""
    x = _plan_values(ctx)
    shape = ctx.shape(node.inputs[0])
    if _dtype(ctx, x) == "bool":
        condition = x
    else:
        condition = ctx.temp(x, shape, "non_zero", dtype="bool", quant=None)
        ctx.op("NOT_EQUAL", [x, _zero_like(ctx, x)], [condition], "NotEqualOptions", 1)
    out = ctx.output(node.outputs[0])
    count = ctx.shape(node.outputs[0])[1]
    coordinates = ctx.w.new_tensor(f"{node.name}/coordinates", "int64", (count, len(shape)))
    ctx.op("WHERE", [condition], [coordinates], "WhereOptions", 1)
    ctx.op("TRANSPOSE", [coordinates, ctx.param([1, 0], suffix="perm")], [out], "TransposeOptions", 1)


def _nms_check(graph: Graph, node: Node, integer: bool) -> str | None:
    boxes, scores = (graph.tensors[name].shape for name in node.inputs[:2])
    if boxes is None or scores is None or not all(isinstance(d, int) for d in (*boxes, *scores)):
        return (f"NonMaxSuppression {node.name!r}: one NON_MAX_SUPPRESSION_V4 per batch and class needs static boxes and "
                f"scores shapes, got {boxes} and {scores}; {STATIC_SHAPE_HINT}")
    reason = _constant_input_check((2, 3, 4), "max_output_boxes_per_class, iou_threshold and score_threshold")(
        graph, node, integer)
    if reason:
        return reason
    if len(node.inputs) < 3 or not node.inputs[2] or int(graph.tensors[node.inputs[2]].value.reshape(-1)[0]) <= 0:
        return (f"NonMaxSuppression {node.name!r}: max_output_boxes_per_class 0 (or absent) selects nothing; an empty "
                f"output is not written for TFLite")
    if int(node.attr("center_point_box", 0)) not in (0, 1):
        return f"NonMaxSuppression {node.name!r}: center_point_box must be 0 or 1"
    if len(node.inputs) > 3 and node.inputs[3] and float(graph.tensors[node.inputs[3]].value.reshape(-1)[0]) >= 1.0:
        return (f"NonMaxSuppression {node.name!r}: iou_threshold ≥ 1 suppresses nothing in ONNX, and TFLite's "
                f"NON_MAX_SUPPRESSION_V4 then selects each box again (it re-queues a selected box, which only its own "
                f"IoU of 1 removes)")
    return None


#: Degenerate boxes are moved to [FAR + 4i, FAR, FAR + 4i + 1, FAR + 1]: unit boxes that meet no other box.
NMS_FAR = 1.0e7


def _nms_corners(ctx: NodeContext, node: Node, boxes: int, count: int, suffix: str) -> int:
    """[x_center, y_center, w, h] rows as [y1, x1, y2, x2] (center_point_box=1), ONNX Runtime's arithmetic."""
    columns = [ctx.w.new_tensor(f"{node.name}/{suffix}/column_{k}", "float32", (count, 1)) for k in range(4)]
    ctx.op("SPLIT", [ctx.param(1, suffix=f"{suffix}/axis"), boxes], columns, "SplitOptions", 1, numSplits=4)
    xc, yc, w, h = columns
    half = ctx.param([0.5], "float32", f"{suffix}/half")
    parts = {}
    for name, centre, size, op in (("y1", yc, h, "SUB"), ("x1", xc, w, "SUB"), ("y2", yc, h, "ADD"), ("x2", xc, w, "ADD")):
        halved = ctx.w.new_tensor(f"{node.name}/{suffix}/{name}_half", "float32", (count, 1))
        ctx.op("MUL", [size, half], [halved], "MulOptions", 1, fusedActivationFunction="NONE")
        parts[name] = ctx.w.new_tensor(f"{node.name}/{suffix}/{name}", "float32", (count, 1))
        ctx.op(op, [centre, halved], [parts[name]], "AddOptions" if op == "ADD" else "SubOptions", 1,
               fusedActivationFunction="NONE")
    corners = ctx.w.new_tensor(f"{node.name}/{suffix}/corners", "float32", (count, 4))
    ctx.op("CONCATENATION", [parts["y1"], parts["x1"], parts["y2"], parts["x2"]], [corners], "ConcatenationOptions", 1,
           axis=1, fusedActivationFunction="NONE")
    return corners


def _nms_without_degenerate_boxes(ctx: NodeContext, node: Node, boxes: int, count: int, suffix: str) -> int:
    """Boxes of area ≤ 0 (TFLite's and ONNX Runtime's |y2 − y1|·|x2 − x1|) replaced by far-away unit boxes.

    Neither runtime lets such a box suppress or be suppressed (its IoU is 0), but NON_MAX_SUPPRESSION_V4 re-queues
    every box it selects and relies on the box's IoU of 1 with itself to drop it: a zero-area box is selected
    again until the output is full (measured in LiteRT 2.3, and common in integer plans, whose coordinates collapse
    to equal values). A unit box at ``NMS_FAR`` overlaps no other box (exact for coordinates below 1e7 in
    magnitude) and removes itself.
    """
    def tmp(name: str, shape: tuple, dtype: str = "float32") -> int:
        return ctx.w.new_tensor(f"{node.name}/{suffix}/{name}", dtype, shape)

    columns = [tmp(f"coordinate_{k}", (count, 1)) for k in range(4)]
    ctx.op("SPLIT", [ctx.param(1, suffix=f"{suffix}/split_axis"), boxes], columns, "SplitOptions", 1, numSplits=4)
    extents = []
    for name, (a, b) in (("height", (0, 2)), ("width", (1, 3))):
        difference, extent = tmp(f"{name}_difference", (count, 1)), tmp(name, (count, 1))
        ctx.op("SUB", [columns[b], columns[a]], [difference], "SubOptions", 1, fusedActivationFunction="NONE")
        ctx.op("ABS", [difference], [extent])
        extents.append(extent)
    area, flat = tmp("area", (count, 1)), tmp("degenerate", (count, 1), "bool")
    ctx.op("MUL", extents, [area], "MulOptions", 1, fusedActivationFunction="NONE")
    ctx.op("LESS_EQUAL", [area, ctx.param([[0.0]], "float32", f"{suffix}/zero_area")], [flat], "LessEqualOptions", 1)
    far = np.stack([NMS_FAR + 4.0 * np.arange(count), np.full(count, NMS_FAR), NMS_FAR + 4.0 * np.arange(count) + 1.0,
                    np.full(count, NMS_FAR + 1.0)], axis=1).astype(np.float32)
    moved = tmp("moved", (count, 4))
    ctx.op("SELECT_V2", [flat, ctx.param(far, "float32", f"{suffix}/far_boxes"), boxes], [moved], "SelectV2Options", 1)
    return moved


def _nms_ranks(ctx: NodeContext, node: Node, scores: int, count: int, floor: int, tag: str) -> int:
    """Scores replaced by their ranks: count − k for the box ranked k-th (TOPK_V2: decreasing, equal scores in index
    order), −1 at or below the score threshold, for NON_MAX_SUPPRESSION_V4 with threshold 0.

    ONNX Runtime takes equal scores lowest index first; V4's priority queue orders by score only, so equal scores
    (frequent when an integer plan quantizes them) came out in heap order (measured: 0.6628 at boxes 7 and 23,
    23 first). Distinct ranks keep ONNX's order and its ``score > threshold`` rule."""
    def tmp(name: str, dtype: str = "float32") -> int:
        return ctx.w.new_tensor(f"{node.name}/{name}_{tag}", dtype, (count,))

    values, order = tmp("sorted_scores"), tmp("order", "int32")
    ctx.op("TOPK_V2", [scores, ctx.param(count, suffix=f"all_{tag}")], [values, order], "TopKV2Options", 1)
    positions = ctx.w.new_tensor(f"{node.name}/order_column_{tag}", "int32", (count, 1))
    ctx.op("RESHAPE", [order, ctx.param([count, 1], suffix=f"order_shape_{tag}")], [positions], "ReshapeOptions", 1,
           newShape=[count, 1])
    ranks, kept, ranked = tmp("ranks"), tmp("above_threshold", "bool"), tmp("ranked")
    ctx.op("SCATTER_ND", [positions, ctx.param(np.arange(count, 0, -1, dtype=np.float32), "float32", f"rank_values_{tag}"),
                          ctx.param([count], suffix=f"rank_shape_{tag}")], [ranks])
    ctx.op("GREATER", [scores, floor], [kept], "GreaterOptions", 1)
    ctx.op("SELECT_V2", [kept, ranks, ctx.param([-1.0], "float32", f"removed_{tag}")], [ranked], "SelectV2Options", 1)
    return ranked


@emitter("NonMaxSuppression", precisions=FLOAT, check=_nms_check)
def non_max_suppression(ctx: NodeContext, node: Node) -> None:
    """One NON_MAX_SUPPRESSION_V4 per (batch, class), unrolled: its padded indices SLICEd to the valid count (a
    dynamic size), each row [b, c, i] (FILLed b and c), all CONCATENATEd in ONNX's order (batch, class, then
    decreasing score). V4 is given ranks for scores (``_nms_ranks``: ONNX's order of equal scores), boxes of zero area
    moved out of the way (``_nms_without_degenerate_boxes``) and the next float32 above ONNX's IoU threshold (V4
    suppresses at IoU ≥ threshold, ONNX above it). No score threshold is −FLT_MAX. Boxes and scores are read as the
    plan rounds them."""
    boxes, scores = (_rounded_to_fp16(ctx, ctx.input(name), name) for name in node.inputs[:2])
    batches, classes, count = (int(d) for d in ctx.shape(node.inputs[1]))
    limit = int(ctx.value(node.inputs[2]).reshape(-1)[0])
    iou = float(ctx.value(node.inputs[3]).reshape(-1)[0]) if len(node.inputs) > 3 and node.inputs[3] else 0.0
    # ONNX suppresses where IoU > threshold, TFLite where IoU ≥ threshold: the next float32 up makes them one rule
    iou = float(np.nextafter(np.float32(iou), np.float32(np.inf)))
    floor = (float(ctx.value(node.inputs[4]).reshape(-1)[0]) if len(node.inputs) > 4 and node.inputs[4]
             else float(np.finfo(np.float32).min))
    out = ctx.output(node.outputs[0])
    limit_t, iou_t, floor_t = ctx.param(limit, suffix="max_output"), ctx.param(iou, "float32", "iou"), \
        ctx.param(floor, "float32", "score_threshold")
    zero_t = ctx.param(0.0, "float32", "rank_threshold")
    rows = []
    for b in range(batches):
        per_batch = ctx.w.new_tensor(f"{node.name}/boxes_{b}", "float32", (count, 4))
        ctx.op("GATHER", [boxes, ctx.param(b, suffix=f"batch_{b}")], [per_batch], "GatherOptions", 1, axis=0)
        if int(node.attr("center_point_box", 0)):
            per_batch = _nms_corners(ctx, node, per_batch, count, f"corners_{b}")
        per_batch = _nms_without_degenerate_boxes(ctx, node, per_batch, count, f"boxes_{b}")
        class_scores = ctx.w.new_tensor(f"{node.name}/scores_{b}", "float32", (classes, count))
        ctx.op("GATHER", [scores, ctx.param(b, suffix=f"score_batch_{b}")], [class_scores], "GatherOptions", 1, axis=0)
        for c in range(classes):
            tag = f"{b}_{c}"
            raw = ctx.w.new_tensor(f"{node.name}/scores_{tag}", "float32", (count,))
            ctx.op("GATHER", [class_scores, ctx.param(c, suffix=f"class_{tag}")], [raw], "GatherOptions", 1, axis=0)
            ranked = _nms_ranks(ctx, node, raw, count, floor_t, tag)
            selected = ctx.w.new_tensor(f"{node.name}/selected_{tag}", "int32", (limit,))
            valid = ctx.w.new_tensor(f"{node.name}/valid_{tag}", "int32", ())
            ctx.op("NON_MAX_SUPPRESSION_V4", [per_batch, ranked, limit_t, iou_t, zero_t], [selected, valid],
                   "NonMaxSuppressionV4Options", 1)
            size = ctx.w.new_tensor(f"{node.name}/size_{tag}", "int32", (1,))
            ctx.op("RESHAPE", [valid, ctx.param([1], suffix=f"size_shape_{tag}")], [size], "ReshapeOptions", 1, newShape=[1])
            kept = ctx.w.new_tensor(f"{node.name}/kept_{tag}", "int32", (None,))
            ctx.op("SLICE", [selected, ctx.param([0], suffix=f"begin_{tag}"), size], [kept], "SliceOptions", 1)
            wide = ctx.w.new_tensor(f"{node.name}/kept64_{tag}", "int64", (None,))
            ctx.op("CAST", [kept], [wide], None, 1)
            column = ctx.w.new_tensor(f"{node.name}/box_column_{tag}", "int64", (None, 1))
            ctx.op("RESHAPE", [wide, ctx.param([-1, 1], suffix=f"column_shape_{tag}")], [column], "ReshapeOptions", 1,
                   newShape=[-1, 1])
            dims = ctx.w.new_tensor(f"{node.name}/column_dims_{tag}", "int32", (2,))
            ctx.op("CONCATENATION", [size, ctx.param([1], suffix=f"one_{tag}")], [dims], "ConcatenationOptions", 1, axis=0,
                   fusedActivationFunction="NONE")
            filled = []
            for what, value in (("batch", b), ("class", c)):
                fill = ctx.w.new_tensor(f"{node.name}/{what}_column_{tag}", "int64", (None, 1))
                ctx.op("FILL", [dims, ctx.param(value, "int64", f"{what}_value_{tag}")], [fill])
                filled.append(fill)
            row = ctx.w.new_tensor(f"{node.name}/rows_{tag}", "int64", (None, 3))
            ctx.op("CONCATENATION", [*filled, column], [row], "ConcatenationOptions", 1, axis=1,
                   fusedActivationFunction="NONE")
            rows.append(row)
    if len(rows) == 1:
        ctx.op("RESHAPE", [rows[0], ctx.param([-1, 3], suffix="shape")], [out], "ReshapeOptions", 1, newShape=[-1, 3])
    else:
        ctx.op("CONCATENATION", rows, [out], "ConcatenationOptions", 1, axis=0, fusedActivationFunction="NONE")


#: Operators TFLite cannot express, each with the reason legalization gives (no emitter is registered).
REFUSED = {
    "GridSample": ("TFLite has no sampling operator at computed coordinates; composing bilinear gathers per output "
                   "pixel is not written"),
    "RoiAlign": "TFLite has no region-of-interest pooling operator; composing it from gathers is not written",
    "Unique": ("ONNX sorts the unique values by default and returns four outputs; TFLite's UNIQUE keeps the order of "
               "first occurrence and returns two; the composition is not written"),
    "BitShift": ("ONNX shifts unsigned integers, and TFLite's builtins have RIGHT_SHIFT but no left shift outside "
                 "StableHLO; not written"),
}


# ---------------------------------------------------------------------------- sequences, selection, reductions
def _reverse_sequence_check(graph: Graph, node: Node, integer: bool) -> str | None:
    lengths = graph.tensors[node.inputs[1]]
    if lengths.dtype is not None and np.dtype(lengths.dtype).name not in ("int32", "int64"):
        return f"ReverseSequence {node.name!r}: TFLite takes int32/int64 sequence lengths"
    return None


@emitter("ReverseSequence", precisions=(I16, F16, F32), check=_reverse_sequence_check,
         integer_reason="LiteRT's REVERSE_SEQUENCE takes int16 but not int8 (\"Type 'INT8' is not supported by "
                        "reverse_sequence\")")
def reverse_sequence(ctx: NodeContext, node: Node) -> None:
    """REVERSE_SEQUENCE: the first ``sequence_lens[b]`` elements along ``time_axis`` reversed, the rest kept (an
    imported QDQ model's int16 node copies its integers)."""
    x, lengths = ctx.input(node.inputs[0]), ctx.input(node.inputs[1])
    ctx.op("REVERSE_SEQUENCE", [x, lengths], [ctx.output(node.outputs[0])], "ReverseSequenceOptions", 1,
           seqDim=int(node.attr("time_axis", 0)), batchDim=int(node.attr("batch_axis", 1)))


def _hardmax_check(graph: Graph, node: Node, integer: bool) -> str | None:
    shape = graph.tensors[node.inputs[0]].shape
    rank = len(shape) if shape is not None else 0
    axis = int(node.attr("axis", -1))
    axis = axis + rank if axis < 0 else axis
    if shape is None or not isinstance(shape[axis], int):
        return f"Hardmax {node.name!r}: TFLite's ONE_HOT needs the size of axis {axis} static, got {shape}"
    if graph.opset_imports.get("", 17) < 13 and axis != rank - 1:
        return f"Hardmax {node.name!r}: opset < 13 coerces to 2-D from axis {axis}; only the last axis maps"
    return None


@emitter("Hardmax", precisions=FLOAT, check=_hardmax_check)
def hardmax(ctx: NodeContext, node: Node) -> None:
    """ONE_HOT(ARG_MAX(x, axis), size, 1, 0, axis): 1 at the first maximum, as ONNX."""
    x = _plan_values(ctx)
    out = ctx.output(node.outputs[0])
    shape = ctx.shape(node.inputs[0])
    axis = _axis_of(ctx, node, len(shape), default=-1)
    index = ctx.temp(x, tuple(d for i, d in enumerate(shape) if i != axis), "argmax", dtype="int32", quant=None)
    ctx.op("ARG_MAX", [x, ctx.param([axis], suffix="axis")], [index], "ArgMaxOptions", 1, outputType="INT32")
    ctx.op("ONE_HOT", [index, ctx.param(int(shape[axis]), suffix="depth"), ctx.param(1.0, "float32", "on_value"),
                       ctx.param(0.0, "float32", "off_value")], [out], "OneHotOptions", 1, axis=axis)


@emitter("ReduceLogSum", "ReduceLogSumExp", precisions=FLOAT, check=_norm_reduce_check)
def reduce_log_sum(ctx: NodeContext, node: Node) -> None:
    """ReduceLogSum: LOG(SUM(x)). ReduceLogSumExp, shifted by the maximum m so that no EXP overflows:
    LOG(SUM(EXP(x − m))) + m; where m is infinite, m = 0 and the result is ±inf by its sign (a row of −inf gives
    −inf, +inf +inf, as ONNX Runtime; not NaN, nor the ±FLT_MAX of LiteRT's clamping reference ADD, nor what EXP
    makes of +inf: XNNPACK's EXP on an AVX2-only CPU returns a finite value, so LOG(SUM(EXP(x))) gave 88.4)."""
    x = ctx.input(node.inputs[0])
    out = ctx.output(node.outputs[0])
    shape = ctx.shape(node.inputs[0])
    axes = _axes(ctx, node) or list(range(len(shape)))
    keep = _keep(node)
    reduced_keep = tuple(1 if i in axes else d for i, d in enumerate(shape))
    reduced = ctx.shape(node.outputs[0])
    axes_t = ctx.param(axes, suffix="axes")
    if node.op_type == "ReduceLogSum":
        total = ctx.temp(out, reduced, "sum")
        ctx.op("SUM", [x, axes_t], [total], "ReducerOptions", 1, keepDims=keep)
        ctx.op("LOG", [total], [out])
        return

    def tmp(suffix: str, shp: tuple, dtype: str = "float32") -> int:
        return ctx.temp(out, shp, suffix, dtype=dtype, quant=None)

    peak, magnitude, shift = tmp("max", reduced_keep), tmp("abs_max", reduced_keep), tmp("shift", reduced_keep)
    infinite = tmp("infinite_max", reduced_keep, "bool")
    ctx.op("REDUCE_MAX", [x, axes_t], [peak], "ReducerOptions", 1, keepDims=True)
    ctx.op("ABS", [peak], [magnitude])
    # ±FLT_MAX counts as infinite: LiteRT's reference float ADD/SUB/MUL/DIV clamp ±inf to ±FLT_MAX (their activation
    # range is [lowest, max] even without a fused activation; XNNPACK's keep ±inf), so an infinity can arrive clamped
    ctx.op("GREATER_EQUAL", [magnitude, ctx.param([np.finfo(np.float32).max], "float32", "largest")], [infinite],
           "GreaterEqualOptions", 1)
    ctx.op("SELECT_V2", [infinite, ctx.param([0.0], "float32", "zero"), peak], [shift], "SelectV2Options", 1)
    centered, exp, total, log = tmp("centered", shape), tmp("exp", shape), tmp("sum", reduced), tmp("log", reduced)
    ctx.op("SUB", [x, shift], [centered], "SubOptions", 1, fusedActivationFunction="NONE")
    ctx.op("EXP", [centered], [exp])
    ctx.op("SUM", [exp, axes_t], [total], "ReducerOptions", 1, keepDims=keep)
    ctx.op("LOG", [total], [log])
    if not keep:
        dims = [d if isinstance(d, int) else -1 for d in reduced]
        flat, flat_infinite = tmp("shift_reduced", reduced), tmp("infinite_reduced", reduced, "bool")
        flat_peak = tmp("max_reduced", reduced)  # for its sign where it is infinite
        ctx.op("RESHAPE", [shift, ctx.param(dims, suffix="reduced_shape")], [flat], "ReshapeOptions", 1, newShape=dims)
        ctx.op("RESHAPE", [infinite, ctx.param(dims, suffix="reduced_shape_b")], [flat_infinite], "ReshapeOptions", 1,
               newShape=dims)
        ctx.op("RESHAPE", [peak, ctx.param(dims, suffix="reduced_shape_m")], [flat_peak], "ReshapeOptions", 1,
               newShape=dims)
        shift, infinite, peak = flat, flat_infinite, flat_peak
    shifted = tmp("shifted_back", reduced)
    ctx.op("ADD", [log, shift], [shifted], "AddOptions", 1, fusedActivationFunction="NONE")
    # where the maximum is infinite: +inf for +inf (EXP(+inf) may be finite), LOG(0) = −inf for a row of −inf (whose
    # REDUCE_MAX the reference kernel returns as −FLT_MAX); the reference ADD would clamp either
    positive, at_infinity = tmp("max_positive", reduced, "bool"), tmp("at_infinity", reduced)
    ctx.op("GREATER", [peak, ctx.param([0.0], "float32", "zero_m")], [positive], "GreaterOptions", 1)
    ctx.op("SELECT_V2", [positive, ctx.param([np.inf], "float32", "plus_inf"), log], [at_infinity], "SelectV2Options", 1)
    ctx.op("SELECT_V2", [infinite, at_infinity, shifted], [out], "SelectV2Options", 1)


@emitter("MeanVarianceNormalization", precisions=FLOAT)
def mean_variance_normalization(ctx: NodeContext, node: Node) -> None:
    """(x − mean) / (sqrt(mean(x²) − mean²) + 1e-9) over ``axes`` (default N, H, W): ONNX's function body, in
    its order (MEAN, MUL, MEAN, SUB, SQRT, ADD, DIV)."""
    x = ctx.input(node.inputs[0])
    out = ctx.output(node.outputs[0])
    shape = ctx.shape(node.inputs[0])
    axes = [int(a) + len(shape) if int(a) < 0 else int(a) for a in (node.attr("axes") or [0, 2, 3])]
    reduced = tuple(1 if i in axes else d for i, d in enumerate(shape))

    def tmp(suffix: str, shp: tuple = shape) -> int:
        return ctx.temp(out, shp, suffix)

    axes_t = ctx.param(axes, suffix="axes")
    mean, squared, mean_sq, mean_squared, var, std, denom, centered = (
        tmp("mean", reduced), tmp("squared"), tmp("mean_of_squares", reduced), tmp("squared_mean", reduced),
        tmp("variance", reduced), tmp("std", reduced), tmp("std_eps", reduced), tmp("centered"))
    ctx.op("MEAN", [x, axes_t], [mean], "ReducerOptions", 1, keepDims=True)
    ctx.op("MUL", [x, x], [squared], "MulOptions", 1, fusedActivationFunction="NONE")
    ctx.op("MEAN", [squared, axes_t], [mean_sq], "ReducerOptions", 1, keepDims=True)
    ctx.op("MUL", [mean, mean], [mean_squared], "MulOptions", 1, fusedActivationFunction="NONE")
    ctx.op("SUB", [mean_sq, mean_squared], [var], "SubOptions", 1, fusedActivationFunction="NONE")
    ctx.op("SQRT", [var], [std])
    ctx.op("ADD", [std, ctx.param([1e-9], "float32", "epsilon")], [denom], "AddOptions", 1, fusedActivationFunction="NONE")
    ctx.op("SUB", [x, mean], [centered], "SubOptions", 1, fusedActivationFunction="NONE")
    ctx.op("DIV", [centered, denom], [out], "DivOptions", 1, fusedActivationFunction="NONE")


@emitter("Shrink", precisions=FLOAT)
def shrink(ctx: NodeContext, node: Node) -> None:
    """x + bias where x < −lambd, x − bias where x > lambd, else 0: LESS/GREATER and SELECT_V2 (float)."""
    lambd, bias = float(node.attr("lambd", 0.5)), float(node.attr("bias", 0.0))
    x = ctx.input(node.inputs[0])
    values = _plan_values(ctx)
    out = ctx.output(node.outputs[0])
    shape = ctx.shape(node.outputs[0])

    def tmp(suffix: str, dtype: str = "float32") -> int:
        return ctx.temp(out, shape, suffix, dtype=dtype, quant=None)

    below, above, raised, lowered, inner = tmp("below", "bool"), tmp("above", "bool"), tmp("raised"), tmp("lowered"), tmp("inner")
    ctx.op("LESS", [values, ctx.param([-lambd], "float32", "minus_lambd")], [below], "LessOptions", 1)
    ctx.op("GREATER", [values, ctx.param([lambd], "float32", "lambd")], [above], "GreaterOptions", 1)
    ctx.op("ADD", [x, ctx.param([bias], "float32", "bias")], [raised], "AddOptions", 1, fusedActivationFunction="NONE")
    ctx.op("SUB", [x, ctx.param([bias], "float32", "bias_sub")], [lowered], "SubOptions", 1, fusedActivationFunction="NONE")
    ctx.op("SELECT_V2", [above, lowered, ctx.param([0.0], "float32", "zero")], [inner], "SelectV2Options", 1)
    ctx.op("SELECT_V2", [below, raised, inner], [out], "SelectV2Options", 1)


@emitter("GlobalLpPool", precisions=FLOAT)
def global_lp_pool(ctx: NodeContext, node: Node) -> None:
    """(Σ |x|ᵖ)^(1/p) over the spatial axes (NHWC 1, 2 after layout.py, else 2..): p = 1 SUM(ABS), p = 2
    SQRT(SUM(x·x)), otherwise POW."""
    x = ctx.input(node.inputs[0])
    out = ctx.output(node.outputs[0])
    shape = ctx.shape(node.inputs[0])
    rank = len(shape)
    axes = [1, 2] if node.attr("data_layout") == "NHWC" else list(range(2, rank))
    p = float(node.attr("p", 2))
    reduced = ctx.shape(node.outputs[0])
    elementwise, magnitude = ctx.temp(out, shape, "powered"), ctx.temp(out, shape, "abs")
    if p == 2.0:
        ctx.op("MUL", [x, x], [elementwise], "MulOptions", 1, fusedActivationFunction="NONE")
    else:
        ctx.op("ABS", [x], [magnitude if p != 1.0 else elementwise])
        if p != 1.0:
            ctx.op("POW", [magnitude, ctx.param([p], "float32", "p")], [elementwise])
    total = out if p == 1.0 else ctx.temp(out, reduced, "sum")
    ctx.op("SUM", [elementwise, ctx.param(axes, suffix="axes")], [total], "ReducerOptions", 1, keepDims=True)
    if p == 2.0:
        ctx.op("SQRT", [total], [out])
    elif p != 1.0:
        ctx.op("POW", [total, ctx.param([1.0 / p], "float32", "inverse_p")], [out])


# ---------------------------------------------------------------------------- trigonometric and hyperbolic (float)
def _trig(ctx: NodeContext, node: Node) -> None:
    """Composed from SIN, COS, ATAN2, EXP, LOG, SQRT: the TFLite schema has no other trigonometric builtin."""
    x = ctx.input(node.inputs[0])
    out = ctx.output(node.outputs[0])
    shape = ctx.shape(node.outputs[0])
    n = [0]

    def tmp(suffix: str) -> int:
        n[0] += 1
        return ctx.temp(out, shape, f"{suffix}_{n[0]}")

    def const(value: float, suffix: str) -> int:
        return ctx.param([value], "float32", suffix)

    def unary(op: str, a: int, target: int | None = None) -> int:
        target = tmp(op.lower()) if target is None else target
        ctx.op(op, [a], [target])
        return target

    def binary(op: str, a: int, b: int, target: int | None = None) -> int:
        target = tmp(op.lower()) if target is None else target
        options = {"ADD": "AddOptions", "SUB": "SubOptions", "MUL": "MulOptions", "DIV": "DivOptions"}.get(op)
        fields = {"fusedActivationFunction": "NONE"} if options else {}
        ctx.op(op, [a, b], [target], options, 1, **fields)
        return target

    def one_minus_square(a: int) -> int:  # (1 − a)(1 + a): no cancellation near |a| = 1
        return binary("MUL", binary("SUB", const(1.0, "one_a"), a), binary("ADD", a, const(1.0, "one_b")))

    op = node.op_type
    if op == "Tan":
        binary("DIV", unary("SIN", x), unary("COS", x), out)
    elif op in ("Sinh", "Cosh"):
        up, down = unary("EXP", x), unary("EXP", unary("NEG", x))
        binary("MUL", binary("SUB" if op == "Sinh" else "ADD", up, down), const(0.5, "half"), out)
    elif op == "Atan":  # ATAN2 does not broadcast (a [1, 1, 1, 1] one gave NaN): ones of x's run-time shape
        size = ctx.w.new_tensor(f"{node.name}/shape", "int32", (len(shape),))
        ctx.op("SHAPE", [x], [size], "ShapeOptions", 1, outType="INT32")
        ones = tmp("ones")
        ctx.op("FILL", [size, ctx.param(1.0, "float32", "one")], [ones])
        ctx.op("ATAN2", [x, ones], [out])
    elif op == "Asin":
        ctx.op("ATAN2", [x, unary("SQRT", one_minus_square(x))], [out])
    elif op == "Acos":
        ctx.op("ATAN2", [unary("SQRT", one_minus_square(x)), x], [out])
    elif op == "Asinh":  # sign(x) · log(|x| + sqrt(x² + 1)): no cancellation for negative x
        magnitude = unary("ABS", x)
        root = unary("SQRT", binary("ADD", binary("MUL", x, x), const(1.0, "one")))
        binary("MUL", unary("SIGN", x), unary("LOG", binary("ADD", magnitude, root)), out)
    elif op == "Acosh":  # log(x + sqrt((x − 1)(x + 1)))
        root = unary("SQRT", binary("MUL", binary("SUB", x, const(1.0, "one_a")), binary("ADD", x, const(1.0, "one_b"))))
        unary("LOG", binary("ADD", x, root), out)
    elif op == "Atanh":  # ½ · log((1 + x) / (1 − x))
        ratio = binary("DIV", binary("ADD", const(1.0, "one_a"), x), binary("SUB", const(1.0, "one_b"), x))
        binary("MUL", unary("LOG", ratio), const(0.5, "half"), out)
    else:
        raise UnsupportedOperatorError(f"{op} {node.name!r}: no composition")


TRIGONOMETRIC = ("Tan", "Sinh", "Cosh", "Asin", "Acos", "Atan", "Asinh", "Acosh", "Atanh")
emitter(*TRIGONOMETRIC, precisions=FLOAT)(_trig)


# ============================================================================ recurrent (float)
RECURRENT_INTEGER = ("the plan keeps recurrent operators in float, and TFLite's integer LSTM needs gate and "
                     "cell-state scales that a plan does not define")
emitter("LSTM", precisions=FLOAT, check=recurrent.recurrent_check, integer_reason=RECURRENT_INTEGER)(recurrent.lstm)
emitter("GRU", precisions=FLOAT, check=recurrent.recurrent_check, integer_reason=RECURRENT_INTEGER)(recurrent.gru)


def supported_precisions() -> dict[str, frozenset[Precision]]:
    return {op: support.precisions for op, support in EMITTERS.items()}


__all__ = ["EMITTERS", "OpSupport", "why_not", "supported_precisions"]
