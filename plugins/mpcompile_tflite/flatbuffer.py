"""The only module that touches the TFLite flatbuffer schema: ``TflModel`` → ``.tflite`` bytes and back.

Written with the schema's object API (``ModelT``, ``SubGraphT``, ``TensorT``, ``OperatorT``,
``BufferT``, ``QuantizationParametersT``, ``OperatorCodeT``), finished with the ``TFL3``
file identifier. Scales are written as the float32 values given (no arithmetic here), so
every number in the file is the plan's number. ``read_tensors`` reads the quantization
parameters back from the file, which is what the runner and the tests trust (the
interpreter's tensor details repeat a per-tensor scale per channel; docs/design.md).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from mpcompile_tflite.model import QuantParams, TflModel

FILE_IDENTIFIER = b"TFL3"
SCHEMA_VERSION = 3
#: TFLite requires constant buffers 16-byte aligned (``data:[ubyte] (force_align: 16)`` in the schema).
BUFFER_ALIGNMENT = 16

_DTYPES = {
    "float32": "FLOAT32",
    "float16": "FLOAT16",
    "int32": "INT32",
    "uint8": "UINT8",
    "int64": "INT64",
    "bool": "BOOL",
    "int16": "INT16",
    "int8": "INT8",
}

#: Option fields whose values are schema enums, given by name in ``TflOperator.fields``.
_ENUM_FIELDS = {
    "padding": "Padding",
    "fusedActivationFunction": "ActivationFunctionType",
    "quantizedBiasType": "TensorType",
    "outType": "TensorType",
    "outputType": "TensorType",
    "mode": "MirrorPadMode",
    "weightsFormat": "FullyConnectedOptionsWeightsFormat",
}


def _schema():  # noqa: ANN202 - the generated module
    from ai_edge_litert import schema_py_generated

    return schema_py_generated


def tensor_type(dtype: str) -> int:
    return getattr(_schema().TensorType, _DTYPES[dtype])


def _options(schema: Any, name: str, fields: dict[str, Any]) -> Any:
    obj = getattr(schema, f"{name}T")()
    for key, value in fields.items():
        if not hasattr(obj, key):
            raise AttributeError(f"{name} has no field {key!r}")
        if isinstance(value, str) and key in _ENUM_FIELDS:
            value = getattr(getattr(schema, _ENUM_FIELDS[key]), value)
        elif isinstance(value, (list, tuple)):
            value = [int(v) for v in value]
        setattr(obj, key, value)
    return obj


class _AlignedBuffer:
    """Stands in for ``BufferT`` when packing: the data vector starts on a 16-byte boundary."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def Pack(self, builder: Any) -> int:  # noqa: N802 - the object API's method name
        schema = _schema()
        builder.StartVector(1, len(self.data), BUFFER_ALIGNMENT)
        builder.head = builder.head - len(self.data)
        builder.Bytes[builder.head : builder.head + len(self.data)] = self.data
        vector = builder.EndVector()
        schema.BufferStart(builder)
        schema.BufferAddData(builder, vector)
        return schema.BufferEnd(builder)


def serialize(model: TflModel) -> bytes:
    """The ``.tflite`` bytes of ``model``."""
    import flatbuffers

    schema = _schema()
    buffers = [schema.BufferT()]  # buffer 0: the empty sentinel every model starts with
    tensors = []
    for t in model.tensors:
        tt = schema.TensorT()
        tt.name = t.name
        tt.type = tensor_type(t.dtype)
        tt.shape = np.asarray(t.shape, dtype=np.int32)
        if t.signature is not None:
            tt.shapeSignature = np.asarray(t.signature, dtype=np.int32)
        tt.hasRank = True
        tt.isVariable = bool(t.variable)
        if t.data is not None:
            data = np.ascontiguousarray(np.asarray(t.data, dtype=np.dtype(t.dtype)))
            buffers.append(_AlignedBuffer(data.astype(data.dtype.newbyteorder("<")).tobytes()))
            tt.buffer = len(buffers) - 1
        else:
            tt.buffer = 0
        if t.quant is not None:
            q = schema.QuantizationParametersT()
            q.scale = np.asarray(t.quant.scale, dtype=np.float32)
            q.zeroPoint = np.asarray(t.quant.zero_point, dtype=np.int64)
            q.quantizedDimension = int(t.quant.dim)
            tt.quantization = q
        tensors.append(tt)

    codes: list[tuple[str, int]] = []
    operators = []
    for op in model.operators:
        key = (op.op, op.version)
        if key not in codes:
            codes.append(key)
        ot = schema.OperatorT()
        ot.opcodeIndex = codes.index(key)
        ot.inputs = np.asarray(op.inputs, dtype=np.int32)
        ot.outputs = np.asarray(op.outputs, dtype=np.int32)
        if op.options is not None:
            ot.builtinOptionsType = getattr(schema.BuiltinOptions, op.options)
            ot.builtinOptions = _options(schema, op.options, op.fields)
        operators.append(ot)

    opcodes = []
    for name, version in codes:
        code = schema.OperatorCodeT()
        code.builtinCode = getattr(schema.BuiltinOperator, name)
        # Codes above 127 live only in builtinCode; the deprecated int8 field holds the placeholder.
        code.deprecatedBuiltinCode = min(code.builtinCode, schema.BuiltinOperator.PLACEHOLDER_FOR_GREATER_OP_CODES)
        code.version = int(version)
        opcodes.append(code)

    subgraph = schema.SubGraphT()
    subgraph.name = "main"
    subgraph.tensors = tensors
    subgraph.operators = operators
    subgraph.inputs = np.asarray(model.inputs, dtype=np.int32)
    subgraph.outputs = np.asarray(model.outputs, dtype=np.int32)

    m = schema.ModelT()
    m.version = SCHEMA_VERSION
    m.description = model.description
    m.operatorCodes = opcodes
    m.subgraphs = [subgraph]
    m.buffers = buffers
    if model.metadata:
        m.metadata = []
        for key, payload in model.metadata.items():
            buffers.append(_AlignedBuffer(payload))
            entry = schema.MetadataT()
            entry.name = key
            entry.buffer = len(buffers) - 1
            m.metadata.append(entry)

    builder = flatbuffers.Builder(1024)
    builder.Finish(m.Pack(builder), file_identifier=FILE_IDENTIFIER)
    return bytes(builder.Output())


# ============================================================================ reading back
@dataclasses.dataclass(frozen=True)
class TensorRecord:
    """One tensor of a written model as the file stores it."""

    index: int
    name: str
    dtype: str
    shape: tuple[int, ...]
    signature: tuple[int, ...] | None
    quant: QuantParams | None
    buffer: bytes | None


def read_tensors(data: bytes) -> list[TensorRecord]:
    """Every tensor of subgraph 0 with its quantization parameters, straight from the flatbuffer."""
    schema = _schema()
    if data[4:8] != FILE_IDENTIFIER:
        raise ValueError("not a TFLite flatbuffer (file identifier is not TFL3)")
    model = schema.ModelT.InitFromPackedBuf(bytearray(data), 0)
    names = {v: k for k, v in _DTYPES.items()}
    type_names = {getattr(schema.TensorType, v): v for v in _DTYPES.values()}
    records = []
    for i, t in enumerate(model.subgraphs[0].tensors):
        quant = None
        q = t.quantization
        if q is not None and q.scale is not None and len(q.scale) > 0:
            zp = q.zeroPoint if q.zeroPoint is not None else np.zeros(len(q.scale), np.int64)
            quant = QuantParams.from_arrays(np.asarray(q.scale), np.asarray(zp), int(q.quantizedDimension))
        buf = model.buffers[t.buffer].data if t.buffer < len(model.buffers) else None
        name = t.name.decode() if isinstance(t.name, bytes) else str(t.name)
        records.append(
            TensorRecord(
                i,
                name,
                names.get(type_names.get(t.type, ""), "unknown"),
                tuple(int(d) for d in (t.shape if t.shape is not None else ())),
                None if t.shapeSignature is None else tuple(int(d) for d in t.shapeSignature),
                quant,
                None if buf is None else bytes(np.asarray(buf, dtype=np.uint8)),
            )
        )
    return records


def read_operators(data: bytes) -> list[tuple[str, int]]:
    """(operator name, version) of every operator of subgraph 0, in execution order."""
    schema = _schema()
    model = schema.ModelT.InitFromPackedBuf(bytearray(data), 0)
    by_code = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    result = []
    for op in model.subgraphs[0].operators or []:
        code = model.operatorCodes[op.opcodeIndex]
        builtin = max(code.builtinCode, code.deprecatedBuiltinCode)
        result.append((by_code[builtin], int(code.version)))
    return result
