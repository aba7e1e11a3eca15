"""Run a ``.tflite`` artifact with the LiteRT interpreter, in the plan's (ONNX) terms.

Feeds arrive as the ONNX model takes them (float32, NCHW); results leave dequantized to
float32 in the ONNX layout, so the conformance suite compares them with the reference
directly. Quantization parameters come from the flatbuffer itself (``flatbuffer.read_tensors``),
not from the interpreter's tensor details.

XNNPACK runs by default. Intermediates need ``experimental_preserve_all_tensors``, and a
delegate computes its partition's tensors internally, so runs that read intermediates use
the built-in kernels without the default delegate (or the reference kernels on request).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from mpcompile.backends.api import Artifact, BackendError, DataError, Runner
from mpcompile_tflite.flatbuffer import TensorRecord, read_tensors
from mpcompile_tflite.layout import TensorLayout
from mpcompile_tflite.model import QuantParams


def quantize(x: np.ndarray, q: QuantParams, dtype: str) -> np.ndarray:
    """The numerics contract's quantizer (ONNX QuantizeLinear, float32 division, half to even)."""
    info = np.iinfo(np.dtype(dtype))
    values = np.rint(np.asarray(x, np.float32) / q.scale[0]).astype(np.float64) + float(q.zero_point[0])
    return np.clip(values, info.min, info.max).astype(dtype)


def dequantize(values: np.ndarray, q: QuantParams) -> np.ndarray:
    if q.scale.size == 1:
        return ((values.astype(np.int64) - int(q.zero_point[0])).astype(np.float32) * q.scale[0]).astype(np.float32)
    shape = [1] * values.ndim
    shape[q.dim] = -1
    zp, scale = q.zero_point.reshape(shape), q.scale.reshape(shape)
    return ((values.astype(np.int64) - zp).astype(np.float32) * scale).astype(np.float32)


class LiteRTRunner(Runner):
    supports_intermediates = True

    def __init__(self, artifact: Artifact, *, reference_kernels: bool = False, xnnpack: bool = True,
                 num_threads: int | None = None) -> None:
        self.artifact = artifact
        self.reference_kernels = reference_kernels
        self.xnnpack = xnnpack
        self.num_threads = num_threads
        self.data = artifact.path.read_bytes()
        self.records: dict[str, TensorRecord] = {}
        for record in read_tensors(self.data):
            self.records.setdefault(record.name, record)
        meta = artifact.metadata
        self.inputs: list[dict[str, Any]] = list(meta.get("inputs", []))
        self.outputs: list[dict[str, Any]] = list(meta.get("outputs", []))
        self.tensor_map: dict[str, str] = dict(meta.get("tensor_map", {}))
        self.layouts = {k: TensorLayout.from_dict(v) for k, v in meta.get("layouts", {}).items()}
        #: an input with a dynamic dimension: the file stores 1 there (as the TFLite converter does), which need not
        #: be a size the model can run at (an FPN's levels disagree at 1x1), so tensors are allocated only once the
        #: first feed has sized the inputs
        self._dynamic = any(self.records[spec["tensor"]].signature is not None for spec in self.inputs
                            if spec["tensor"] in self.records)
        self._interpreters: dict[bool, Any] = {}
        self._shapes: dict[bool, dict[str, tuple[int, ...]]] = {}

    @property
    def max_batch(self) -> int | None:  # type: ignore[override]
        """The batch every input is stored at when none of them is dynamic (a frozen batch), else None."""
        sizes = set()
        for spec in self.inputs:
            record = self.records.get(spec["tensor"])
            if record is None or record.signature is not None or not record.shape:
                return None
            perm = list(TensorLayout.from_dict(spec["layout"]).perm)
            sizes.add(int(record.shape[perm.index(0) if len(perm) == len(record.shape) and 0 in perm else 0]))
        return sizes.pop() if len(sizes) == 1 else None

    # ------------------------------------------------------------------ interpreter
    def _interpreter(self, preserve: bool) -> Any:
        if preserve in self._interpreters:
            return self._interpreters[preserve]
        from ai_edge_litert.interpreter import Interpreter, OpResolverType

        if self.reference_kernels:
            resolver = OpResolverType.BUILTIN_REF
        elif self.xnnpack and not preserve:
            resolver = OpResolverType.AUTO
        else:
            resolver = OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
        try:
            interpreter = Interpreter(
                model_content=self.data,
                num_threads=self.num_threads,
                experimental_op_resolver_type=resolver,
                experimental_preserve_all_tensors=preserve,
            )
            if not self._dynamic:
                interpreter.allocate_tensors()
        except (RuntimeError, ValueError) as exc:
            raise BackendError(f"LiteRT could not load {self.artifact.path}: {str(exc).strip().splitlines()[0]}") from None
        self._interpreters[preserve] = interpreter
        self._shapes[preserve] = {}
        return interpreter

    def _index(self, name: str) -> int:
        record = self.records.get(name)
        if record is None:
            raise BackendError(f"{self.artifact.path} has no tensor {name!r}")
        return record.index

    # ------------------------------------------------------------------ run
    def run(self, feeds: Mapping[str, np.ndarray], intermediates: Iterable[str] = ()) -> dict[str, np.ndarray]:
        inter = tuple(intermediates)
        preserve = bool(inter)
        interpreter = self._interpreter(preserve)
        shapes = self._shapes[preserve]
        prepared: list[tuple[int, np.ndarray]] = []
        resize = False
        for spec in self.inputs:
            name = spec["name"]
            if name not in feeds:
                raise DataError(f"no feed for input {name!r} of {self.artifact.path}")
            record = self.records[spec["tensor"]]
            value = np.asarray(feeds[name])
            layout = TensorLayout.from_dict(spec["layout"])
            stored = layout.to_stored(value)
            if record.quant is not None and record.dtype in ("int8", "int16"):
                stored = quantize(stored, record.quant, record.dtype)
            else:
                stored = stored.astype(record.dtype)
            if shapes.get(spec["tensor"]) != stored.shape:
                _check_resizable(self.artifact.path, name, record, value.shape, stored.shape, layout)
                interpreter.resize_tensor_input(record.index, list(stored.shape), strict=False)
                shapes[spec["tensor"]] = stored.shape
                resize = True
            prepared.append((record.index, stored))
        if resize:
            try:
                interpreter.allocate_tensors()
            except RuntimeError as exc:
                shapes.clear()  # the next run resizes again
                fed = ", ".join(f"{spec['name']}={'x'.join(map(str, np.shape(feeds[spec['name']])))}" for spec in self.inputs)
                raise BackendError(f"LiteRT could not size {self.artifact.path} for {fed}: "
                                   f"{str(exc).strip().splitlines()[0]}") from None
        for index, value in prepared:
            interpreter.set_tensor(index, value)
        try:
            interpreter.invoke()
        except RuntimeError as exc:
            raise BackendError(f"LiteRT failed running {self.artifact.path}: {str(exc).strip().splitlines()[0]}") from None
        result: dict[str, np.ndarray] = {}
        for spec in self.outputs:
            result[spec["name"]] = self._read(interpreter, spec["tensor"], TensorLayout.from_dict(spec["layout"]))
        for name in inter:
            tensor = self.tensor_map.get(name)
            if tensor is None or tensor not in self.records:
                continue
            layout = self.layouts.get(name)
            result[name] = self._read(interpreter, tensor, layout)
        return result

    def _read(self, interpreter: Any, tensor: str, layout: TensorLayout | None) -> np.ndarray:
        record = self.records[tensor]
        value = interpreter.get_tensor(record.index)
        if record.quant is not None and record.dtype in ("int8", "int16"):
            value = dequantize(value, record.quant)
        else:
            value = np.asarray(value)
            if value.dtype.kind == "f":
                value = value.astype(np.float32)
        return value if layout is None else layout.to_onnx(value)

    def close(self) -> None:
        self._interpreters.clear()
        self._shapes.clear()


def _check_resizable(path: Any, name: str, record: TensorRecord, fed: tuple[int, ...], stored: tuple[int, ...],
                     layout: TensorLayout) -> None:
    """A feed may differ from the file's shape only where the file stores a dynamic dim (signature −1): the
    kernels of a static model (a frozen batch, a fused LSTM's state) were sized for its shape."""
    signature = record.signature if record.signature is not None else record.shape
    if len(stored) == len(signature) and all(s < 0 or s == d for s, d in zip(signature, stored)):
        return
    expected = [0] * len(signature)
    for k, axis in enumerate(layout.perm if len(layout.perm) == len(signature) else range(len(signature))):
        expected[axis] = signature[k]
    dims = "x".join("-1" if d < 0 else str(d) for d in expected)
    raise DataError(f"input {name!r} of {path} has the static shape {dims} (frozen when it was compiled), got "
                    f"{'x'.join(map(str, fed))}: feed that shape, or compile with --input-shape {name}=... giving -1 "
                    f"for the dimensions to keep dynamic")
