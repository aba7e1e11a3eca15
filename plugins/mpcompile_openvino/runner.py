"""Run an OpenVINO IR artifact with ``openvino.Core().compile_model``, intermediates included.

Feeds and results are the plan's (ONNX) names, layouts and float32 values. Intermediates are
IR tensors exposed by adding them as outputs of the model before compiling
(``model.add_outputs``), found through ``Artifact.metadata["tensor_map"]``: a tensor made an
output can no longer be fused away, so a run with intermediates compiles its own model (the
FakeQuantize it exposes is computed on its own, with the same rounding).
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Collection, Iterable, Mapping
from typing import Any

import numpy as np

from mpcompile.backends.api import (
    Artifact,
    BackendError,
    Layer,
    LayerProfile,
    ProfilingUnavailable,
    Runner,
    attribute,
    per_run,
    serde,
)
from mpcompile_openvino.lowering import TENSOR_MAP_RT_INFO
from mpcompile_openvino.options import OpenVINOOptions

#: inference_precision_hint -> the device capability (OPTIMIZATION_CAPABILITIES) it needs
NEEDS = {"f32": "FP32", "bf16": "BF16", "f16": "FP16"}


def compile_config(core: Any, options: OpenVINOOptions) -> dict[str, Any]:
    """The ``compile_model`` properties for ``options`` (only those the device has)."""
    device = options.device
    if device not in core.available_devices and device.split(".")[0] not in {d.split(".")[0] for d in core.available_devices}:
        raise BackendError(f"OpenVINO has no device {device!r} here (available: {', '.join(core.available_devices)})")
    supported = set(core.get_property(device, "SUPPORTED_PROPERTIES"))
    caps = set(core.get_property(device, "OPTIMIZATION_CAPABILITIES")) if "OPTIMIZATION_CAPABILITIES" in supported else set()
    if options.inference_precision_hint != "f32" and NEEDS[options.inference_precision_hint] not in caps:
        raise BackendError(f"OpenVINO device {device} cannot run inference_precision_hint={options.inference_precision_hint}"
                           f" (its OPTIMIZATION_CAPABILITIES: {', '.join(sorted(caps))})")
    wanted: dict[str, Any] = {"INFERENCE_PRECISION_HINT": options.inference_precision_hint}
    if options.num_streams is not None:
        wanted["NUM_STREAMS"] = str(options.num_streams)
    if options.num_threads is not None:
        wanted["INFERENCE_NUM_THREADS"] = options.num_threads
    if options.performance_hint is not None:
        wanted["PERFORMANCE_HINT"] = options.performance_hint
    if not options.dynamic_quantization:
        wanted["DYNAMIC_QUANTIZATION_GROUP_SIZE"] = 0
    return {k: v for k, v in wanted.items() if k in supported}


def tensor_map(model: Any, metadata: Mapping[str, Any]) -> dict[str, str]:
    """Plan tensor -> IR tensor holding its value: the lowering's (artifact metadata, else the IR's rt_info);
    for an IR mpcompile did not write, the names that a FakeQuantize produces (a quantized value by that name).

    Never a bare name match: once convert_model sinks a graph input's FakeQuantize, the input's name is the raw
    Parameter, which is not the plan's quantized input.
    """
    if metadata.get("tensor_map"):
        return dict(metadata["tensor_map"])
    if model.has_rt_info(list(TENSOR_MAP_RT_INFO)):
        return dict(json.loads(model.get_rt_info(list(TENSOR_MAP_RT_INFO)).astype(str)))
    return {name: name for op in model.get_ops() if op.get_type_name() == "FakeQuantize"
            for out in op.outputs() for name in out.get_names()}


class OpenVINORunner(Runner):
    supports_intermediates = True
    supports_profile = True

    def __init__(self, artifact: Artifact, options: OpenVINOOptions) -> None:
        import openvino as ov

        self.artifact = artifact
        self.options = options
        self.core = ov.Core()
        self.tensor_map = tensor_map(self.core.read_model(str(artifact.path)), artifact.metadata)
        self.config = compile_config(self.core, options)
        self._compiled: dict[tuple[str, ...], tuple[Any, Any, dict[str, Any]]] = {}
        self._outputs: list[str] | None = None

    def compiled(self, intermediates: tuple[str, ...] = ()) -> tuple[Any, Any, dict[str, Any]]:
        """(compiled model, infer request, result name -> output port) for these intermediates, cached."""
        if intermediates in self._compiled:
            return self._compiled[intermediates]
        try:
            model = self.core.read_model(str(self.artifact.path))
            outputs = {name: port for port in model.outputs for name in port.get_names()}
            known = {n for op in model.get_ops() for out in op.outputs() for n in out.get_names()}
            # Only tensors the lowering mapped: a plan name that also names another IR tensor (a graph input
            # whose FakeQuantize convert_model moved, so the name is the raw Parameter) is not the plan's value.
            extra = [n for n in intermediates if self.tensor_map.get(n) in known and n not in outputs]
            if extra:
                model.add_outputs([self.tensor_map[n] for n in extra])
            compiled = self.core.compile_model(model, self.options.device, self.config)
        except BackendError:
            raise
        except Exception as exc:
            raise BackendError(f"OpenVINO could not compile {self.artifact.path.name}: {_first_line(exc)}") from None
        ports: dict[str, Any] = {}
        for port in compiled.outputs:
            for name in port.get_names():
                ports.setdefault(name, port)
        by_ir = {n: ports[self.tensor_map[n]] for n in intermediates if self.tensor_map.get(n) in ports}
        for name in ports:
            by_ir.setdefault(name, ports[name])
        entry = (compiled, compiled.create_infer_request(), by_ir)
        self._compiled[intermediates] = entry
        return entry

    def run(self, feeds: Mapping[str, np.ndarray], intermediates: Iterable[str] = ()) -> dict[str, np.ndarray]:
        inter = tuple(intermediates)
        compiled, request, ports = self.compiled(inter)
        inputs = {name for port in compiled.inputs for name in port.get_names()}
        given = {k: np.ascontiguousarray(v) for k, v in feeds.items() if k in inputs}
        try:
            values = request.infer(given)
        except Exception as exc:
            raise BackendError(f"OpenVINO failed on {self.artifact.path.name}: {_first_line(exc)}") from None
        result = {}
        for name in [*self.plan_outputs(compiled), *inter]:
            port = ports.get(name)
            if port is not None:
                result[name] = np.array(values[port], copy=True)
        return result

    def plan_outputs(self, compiled: Any) -> list[str]:
        """The plan's output names (recorded by the lowering; else the first name of each output of the IR)."""
        names = self.artifact.metadata.get("outputs")
        if names:
            return list(names)
        if self._outputs is None:
            self._outputs = [sorted(port.get_names())[0] for port in self.core.read_model(str(self.artifact.path)).outputs]
        return self._outputs

    def profile(self, feeds: Mapping[str, np.ndarray], repeats: int = 50,
                plan_nodes: Collection[str] | None = None) -> LayerProfile:
        """Per-layer times from OpenVINO's performance counters (``PERF_COUNT``): ``get_profiling_info()`` after
        each run gives every executed layer's ``real_time``; the compiled model's runtime graph gives its
        neighbours and ``originalLayersNames`` (the IR layers it was fused from, named after the source ONNX
        nodes: ``/conv1/Conv/WithoutBiases`` absorbs ``/conv1/Conv_output_0_DequantizeLinear``, a FakeQuantize)."""
        source = self.artifact.path.with_name(str(self.artifact.metadata.get("source") or self.artifact.path.stem + ".qdq.onnx"))
        if not source.is_file():
            raise ProfilingUnavailable(f"OpenVINO per-layer cost of {self.artifact.path.name} needs the ONNX file it was "
                                       f"converted from ({source.name}), which the lowering writes beside it")
        model = self.core.read_model(str(self.artifact.path))
        try:
            compiled = self.core.compile_model(model, self.options.device, {**self.config, "PERF_COUNT": True})
        except Exception as exc:
            raise BackendError(f"OpenVINO could not compile {self.artifact.path.name}: {_first_line(exc)}") from None
        request = compiled.create_infer_request()
        inputs = {name for port in compiled.inputs for name in port.get_names()}
        given = {k: np.ascontiguousarray(v) for k, v in feeds.items() if k in inputs}
        samples: dict[str, list[float]] = defaultdict(list)
        for i in range(WARMUP + repeats):
            request.infer(given)
            if i < WARMUP:
                continue
            for info in request.get_profiling_info():
                if str(info.status).endswith("EXECUTED") and not str(info.status).endswith("NOT_EXECUTED"):
                    samples[info.node_name].append(info.real_time.total_seconds() * 1e6)
        return attribute(runtime_layers(compiled.get_runtime_model()), per_run(samples), serde.read_graph(source),
                         plan_nodes, backend="openvino", artifact=str(self.artifact.path), repeats=repeats)

    def close(self) -> None:
        self._compiled.clear()


#: untimed runs before the profiled ones
WARMUP = 5


def runtime_layers(runtime: Any) -> list[Layer]:
    """The executed graph of a compiled model (``get_runtime_model()``) as layers, with the IR names each came from."""
    layers = []
    for op in runtime.get_ordered_ops():
        info = op.get_rt_info()
        origins = str(info["originalLayersNames"].astype(str)) if "originalLayersNames" in info else ""
        kind = str(info["layerType"].astype(str)) if "layerType" in info else op.get_type_name()
        inputs = tuple(f"{port.get_source_output().get_node().get_friendly_name()}:{port.get_source_output().get_index()}"
                       for port in op.inputs())
        outputs = tuple(f"{op.get_friendly_name()}:{i}" for i in range(op.get_output_size()))
        layers.append(Layer(op.get_friendly_name(), kind, inputs, outputs, tuple(n for n in origins.split(",") if n)))
    return layers


def _first_line(exc: BaseException) -> str:
    lines = [line for line in str(exc).splitlines() if line.strip()]
    return lines[-1].strip() if lines else type(exc).__name__
