"""Runners: a TensorRT engine on the GPU, and the TensorRT-ready QDQ ONNX on the CPU.

``TensorRTRunner`` deserializes the ``.engine``, sets each input's shape and every I/O
tensor's device address (``set_input_shape``/``set_tensor_address``) and runs
``execute_async_v3`` on the stream its device buffers share.

``OnnxOnlyRunner`` runs the TensorRT-ready QDQ ONNX in ONNX Runtime on the CPU, with every
graph optimization off by default, so each QuantizeLinear/DequantizeLinear is evaluated as
written: what the conformance suite holds against the plan's reference when no GPU is at
hand. If ONNX Runtime has no CPU kernel for a half-precision node (BF16 mostly), the graph is
evaluated with those nodes emulated in float32 between the same roundings (``emulated``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np

from mpcompile.backends.api import Artifact, BackendError, Graph, Node, OnnxFileRunner, Runner, Tensor
from mpcompile_tensorrt.qdq import half_cast_code

_HALF = (10, 16)  # Cast "to" codes of FLOAT16 and BFLOAT16


def qdq_onnx_path(artifact: Artifact) -> Path:
    qdq = artifact.metadata.get("files", {}).get("qdq_onnx")
    path = Path(artifact.path)
    if qdq:
        candidate = path.parent / qdq
        if candidate.is_file():
            return candidate
    if path.suffix == ".onnx":
        return path
    raise BackendError(f"{path}: no TensorRT-ready QDQ ONNX next to this artifact (metadata files: {qdq!r})")


# ============================================================================ CPU (ONNX Runtime)
def emulate_half_precision(graph: Graph) -> Graph:
    """The same graph computed in float32: every Cast to FP16/BF16 becomes a rounding (Cast there and back).

    Values are rounded exactly where the artifact rounds them: at the Casts into half
    precision and at FP16 constants (stored as their float32 values). Arithmetic inside a
    half-precision node runs in float32, as in the plan's reference.
    """
    g = graph.copy()
    g.toposort()
    half: dict[str, int] = {}  # tensor -> Cast "to" code of the half type it has in the artifact
    for t in g.tensors.values():
        code = half_cast_code(t.dtype)
        if code is not None:
            half[t.name] = code
    nodes: list[Node] = []

    def rounding(node: Node, source: str, target: str, to: int) -> None:
        rounded = g.unique_name(f"{target}_rounded")
        g.add_tensor(Tensor(rounded, None, g.tensors[target].shape if target in g.tensors else None))
        nodes.append(Node(node.name, "Cast", [source], [rounded], {"to": to}))
        nodes.append(Node(g.unique_name(f"{node.name}_to_float"), "Cast", [rounded], [target], {"to": 1}))

    for node in g.nodes:
        to = int(node.attr("to", 0)) if node.op_type == "Cast" else 0
        if to in _HALF:  # into half precision: round, stay in float32
            rounding(node, node.inputs[0], node.outputs[0], to)
            half[node.outputs[0]] = to
            continue
        codes = [half[i] for i in node.inputs if i in half]
        if not codes or node.op_type in ("Cast", "QuantizeLinear", "DequantizeLinear"):
            nodes.append(node)
            continue
        # A node computing in half precision: float32 arithmetic, results rounded to the half type.
        outputs = []
        for out in node.outputs:
            if not out:
                outputs.append(out)
                continue
            raw = g.unique_name(f"{out}_wide")
            g.add_tensor(Tensor(raw, None, g.tensors[out].shape if out in g.tensors else None))
            outputs.append(raw)
        nodes.append(Node(node.name, node.op_type, node.inputs, outputs, node.attrs, node.domain))
        for raw, out in zip(outputs, node.outputs):
            if out:
                rounding(Node(g.unique_name(f"{out}_round"), "Cast", [], []), raw, out, codes[0])
                half[out] = codes[0]
    g.nodes = nodes
    for name in half:  # every value is float32 now (holding half-precision values)
        t = g.tensors.get(name)
        if t is None:
            continue
        if t.is_constant:
            assert t.value is not None
            t.value = t.value.astype(np.float32)
        t.dtype = np.dtype(np.float32)
    return g


class OnnxOnlyRunner(OnnxFileRunner):
    """Runs the TensorRT-ready QDQ ONNX of an artifact with ONNX Runtime's CPU provider."""

    def __init__(self, artifact: Artifact, *, optimize: bool = False, emulate_half: bool | None = None) -> None:
        super().__init__(artifact, path=qdq_onnx_path(artifact), optimize=optimize)
        self.emulate_half = emulate_half  # None: only if ONNX Runtime cannot run the half-precision nodes
        self.emulated = False
        self._variants: list[bool] = []

    def graph_variants(self, graph: Graph) -> Iterable[Graph]:
        self._variants = [True] if self.emulate_half else [False] if self.emulate_half is False else [False, True]
        for emulate in self._variants:
            yield emulate_half_precision(graph) if emulate else graph

    def accepted(self, index: int) -> None:
        self.emulated = self._variants[index]


# ============================================================================ GPU (TensorRT)
class TensorRTRunner(Runner):
    """Runs a serialized TensorRT engine with ``execute_async_v3`` on device buffers."""

    def __init__(self, artifact: Artifact, *, device_library: str | None = None) -> None:
        from mpcompile_tensorrt.cuda_memory import device_buffers
        from mpcompile_tensorrt.environment import import_tensorrt

        trt = import_tensorrt()
        self._trt = trt
        self.artifact = artifact
        path = Path(artifact.path)
        if not path.is_file():
            raise BackendError(f"{path}: no such TensorRT engine")
        self._buffers = device_buffers(device_library)
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        self._engine = self._runtime.deserialize_cuda_engine(path.read_bytes())
        if self._engine is None:
            raise BackendError(
                f"TensorRT {trt.__version__} could not deserialize {path.name}; an engine only runs on the TensorRT "
                f"version and GPU it was built for ({artifact.metadata.get('tensorrt')}, {artifact.metadata.get('gpu')})"
            )
        self._context = self._engine.create_execution_context()
        if self._context is None:
            raise BackendError(f"TensorRT could not create an execution context for {path.name}")
        names = [self._engine.get_tensor_name(i) for i in range(self._engine.num_io_tensors)]
        self.inputs = [n for n in names if self._engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.outputs = [n for n in names if self._engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]

    def _dtype(self, name: str) -> np.dtype:
        try:
            return np.dtype(self._trt.nptype(self._engine.get_tensor_dtype(name)))
        except TypeError:
            raise BackendError(f"engine tensor {name!r} has a type numpy cannot hold; I/O must be float/int") from None

    def run(self, feeds: Mapping[str, np.ndarray], intermediates: Iterable[str] = ()) -> dict[str, np.ndarray]:
        context = self._context
        for name in self.inputs:
            if name not in feeds:
                raise BackendError(f"no feed for engine input {name!r} (got {sorted(feeds)})")
            array = np.ascontiguousarray(feeds[name], dtype=self._dtype(name))
            if not context.set_input_shape(name, tuple(int(d) for d in array.shape)):
                raise BackendError(f"input {name!r}: shape {array.shape} is outside the engine's optimization profile")
            if not context.set_tensor_address(name, self._buffers.upload(name, array)):
                raise BackendError(f"TensorRT rejected the device address of input {name!r}")
        unresolved = context.infer_shapes()
        if unresolved:
            raise BackendError(f"TensorRT cannot infer the shapes of {list(unresolved)} from the inputs given")
        shapes = {}
        for name in self.outputs:
            shape = tuple(int(d) for d in context.get_tensor_shape(name))
            shapes[name] = shape
            nbytes = int(np.prod(shape, dtype=np.int64)) * self._dtype(name).itemsize
            if not context.set_tensor_address(name, self._buffers.allocate(name, nbytes)):
                raise BackendError(f"TensorRT rejected the device address of output {name!r}")
        if not context.execute_async_v3(self._buffers.stream_handle()):
            raise BackendError("TensorRT execute_async_v3 failed; TensorRT's log above says why")
        return {name: self._buffers.download(name, shapes[name], self._dtype(name)) for name in self.outputs}

    def close(self) -> None:
        self._context = None
        self._engine = None
        self._buffers.free()
