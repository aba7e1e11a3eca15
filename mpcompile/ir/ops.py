"""How the planner treats each ONNX operator. One table, shared by every policy and backend."""

from __future__ import annotations

#: Ops with a weight input: op -> (weight input index, bias input index or None).
WEIGHTED = {
    "Conv": (1, 2),
    "ConvTranspose": (1, 2),
    "Gemm": (1, 2),
    "MatMul": (1, None),
}

#: Outputs that take exactly the input's quantization (pure data movement / max selection):
#: requantizing them would only add error, and TFLite requires equal scales for most.
SCALE_PRESERVING = {
    "MaxPool",
    "GlobalMaxPool",
    "AveragePool",
    "Reshape",
    "Flatten",
    "Transpose",
    "Squeeze",
    "Unsqueeze",
    "Identity",
    "Dropout",
    "Slice",
    "Gather",
    "Split",
    "Pad",
    "Resize",
    "DepthToSpace",
    "SpaceToDepth",
    "Expand",
    "Tile",
    "ReduceMax",
    "ReduceMin",
}

#: Ops whose quantized output range is fixed by the numerics contract (lookup-table kernels).
FIXED_OUTPUT = {"Softmax", "Sigmoid", "Tanh", "LogSoftmax"}

#: Ops the planner may run in integer precision.
INTEGER_OPS = (
    set(WEIGHTED)
    | SCALE_PRESERVING
    | FIXED_OUTPUT
    | {
        "Add",
        "Sub",
        "Mul",
        "Concat",
        "GlobalAveragePool",
        "Relu",
        "Clip",
        "LeakyRelu",
        "HardSwish",
        "HardSigmoid",
        "ReduceMean",
        "Gelu",
        "PRelu",
    }
)

#: Ops that always stay float: they need float range (normalization, exp/log/pow), or are not arithmetic.
FLOAT_ONLY_REASONS = {
    "LayerNormalization": "normalization needs float range (mean/variance of the row)",
    "Div": "no integer division kernel in the target runtimes",
    "Pow": "power is not quantization-friendly",
    "Sqrt": "square root of small variances needs float range",
    "Exp": "exponential output range is unbounded",
    "Log": "logarithm near zero needs float range",
    "Erf": "erf is evaluated in float by every runtime",
    "ReduceSum": "large fan-in reductions overflow integer accumulators",
    "Reciprocal": "reciprocal needs float range",
    "LSTM": "recurrent state needs float range (the runtimes' integer LSTMs need internal scales a plan does not define)",
    "GRU": "recurrent state needs float range (no integer GRU kernel in the target runtimes)",
    "LpNormalization": "normalization needs float range (the norm of the row)",
}

#: Inputs that parameterize an op rather than carry data: never quantized (op -> input indices).
PARAMETER_INPUTS = {
    "Resize": {1, 2, 3},  # roi, scales, sizes
    "Clip": {1, 2},  # min, max
    "Pad": {1, 2, 3},  # pads, constant value, axes
    "Slice": {1, 2, 3, 4},
    "Reshape": {1},
    "Expand": {1},
    "Tile": {1},
    "Split": {1},
    "Squeeze": {1},
    "Unsqueeze": {1},
    "ReduceMean": {1},
    "ReduceMax": {1},
    "ReduceMin": {1},
    "Gather": {1},
}

#: Integer ops whose output a backend may leave as the dequantized accumulator (``Capabilities.float_output_ops``).
ACCUMULATING = {"Conv", "ConvTranspose", "Gemm", "MatMul"}

#: Single-input activations that a producer can absorb (fused activation, or Q clamping for Relu).
FUSABLE_ACTIVATIONS = {"Relu", "Clip"}
FUSING_PRODUCERS = {"Conv", "ConvTranspose", "Gemm", "MatMul", "Add"}

#: Ops that compute shapes at run time from other tensors' shapes. Left in a graph, they mean a backend with
#: static shapes cannot run it as it is: their Shape → ... → Reshape chains fold away once the inputs' dims are known.
RUNTIME_SHAPE_OPS = frozenset({"Shape", "Size", "ConstantOfShape", "Range", "NonZero"})

#: Ops that only move or select integer data (shape computations) and never need specs.
SHAPE_OPS = {"Shape", "ConstantOfShape", "Range", "NonZero", "Size", "Cast", "Equal", "Where", "Less", "Greater", "Not"}


def weight_axis(op_type: str, attrs: dict, weight_rank: int) -> int:
    """The output-channel axis of a weight tensor (the axis per-channel scales run along)."""
    if op_type == "Conv":
        return 0
    if op_type == "ConvTranspose":
        return 1
    if op_type == "Gemm":
        return 0 if attrs.get("transB", 0) else 1
    if op_type == "MatMul":
        return weight_rank - 1
    raise KeyError(op_type)
