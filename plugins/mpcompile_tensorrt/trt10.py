"""TensorRT 10.x: implicit INT8 through a calibrator (default), or explicit Q/DQ on request.

Implicit (``quantization="implicit"``, the 10.x default): the plan's float ONNX is parsed
into a weakly typed network; ``BuilderFlag.INT8`` (plus ``FP16``/``BF16`` when the plan has
such nodes) lets TensorRT choose per layer. The INT8 scales come from a calibrator:

* ``calibrator="plan"`` (default): a calibrator whose calibration cache holds the plan's
  scales — TensorRT uses exactly the plan's numbers and never calibrates;
* ``"entropy"`` / ``"minmax"``: ``IInt8EntropyCalibrator2`` / ``IInt8MinMaxCalibrator`` fed
  from the calibration data; TensorRT computes its own scales (reported as a deviation).

Nodes the plan keeps in float get a per-layer precision with
``BuilderFlag.PREFER_PRECISION_CONSTRAINTS`` (layers are matched to plan nodes by name, the
ONNX parser names layers after nodes). With a dynamic input the calibrator also needs a
calibration profile: one fixed shape.

Explicit (``quantization="explicit"``): the TensorRT-ready QDQ ONNX on a strongly typed
network, as on 11.x.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

from mpcompile.backends.api import BackendError, Precision
from mpcompile_tensorrt import build_common
from mpcompile_tensorrt.build_common import BuildRequest, BuildResult
from mpcompile_tensorrt.calibrators import dataset_calibrator, plan_calibrator
from mpcompile_tensorrt.profiles import any_dynamic

DEFAULT_QUANTIZATION = "implicit"
QUANTIZATION_MODES = ("implicit", "explicit")
_FLOAT_TYPES = {Precision.FP32: "float32", Precision.FP16: "float16", Precision.BF16: "bfloat16"}


def build(trt: ModuleType, request: BuildRequest) -> BuildResult:
    if request.quantization == "explicit":
        return _build_explicit(trt, request)
    if request.quantization == "implicit":
        return _build_implicit(trt, request)
    raise BackendError(f"quantization={request.quantization!r}; TensorRT 10 supports 'implicit' and 'explicit'")


# ============================================================================ explicit
def _build_explicit(trt: ModuleType, request: BuildRequest) -> BuildResult:
    logger = build_common.make_logger(trt)
    builder = trt.Builder(logger)
    flag = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    details: dict[str, Any] = {"source": request.qdq_onnx.name}
    if flag is not None:
        network = builder.create_network(1 << int(flag))
        details["network"] = "strongly typed"
    else:  # a 10.x too early for strong typing: Q/DQ in a weakly typed network needs the INT8 flag
        network = builder.create_network(0)
        details["network"] = "weakly typed (this TensorRT has no STRONGLY_TYPED flag)"
    parser = build_common.parse_onnx(trt, builder, network, logger, request.qdq_onnx)
    config = builder.create_builder_config()
    profiles = build_common.configure(trt, builder, config, request)
    if flag is None:
        flags = _precision_flags(request)
        for name in flags:
            config.set_flag(getattr(trt.BuilderFlag, name))
        details["builder_flags"] = flags
    details["optimization_profiles"] = len(profiles)
    engine = build_common.build(builder, network, config, request.qdq_onnx.name)
    del parser  # it owns the network's weights: alive until the engine is built
    return BuildResult(engine, details)


# ============================================================================ implicit
def _precision_flags(request: BuildRequest) -> list[str]:
    precisions = set(request.node_precisions.values())
    flags = []
    if any(p.is_integer for p in precisions):
        flags.append("INT8")
    if Precision.FP16 in precisions:
        flags.append("FP16")
    if Precision.BF16 in precisions:
        flags.append("BF16")
    return flags


def constrain_layers(trt: ModuleType, network: Any, request: BuildRequest) -> dict[str, Any]:
    """Per-layer precision for the layers of nodes the plan keeps in float."""
    matched, names = 0, set()
    for index in range(network.num_layers):
        layer = network.get_layer(index)
        precision = request.node_precisions.get(layer.name)
        if precision in _FLOAT_TYPES:
            layer.precision = getattr(trt, _FLOAT_TYPES[precision])
            matched += 1
            names.add(layer.name)
    wanted = [n for n, p in request.node_precisions.items() if p in _FLOAT_TYPES]
    return {"constrained_layers": matched, "unmatched_float_nodes": sorted(set(wanted) - names)}


def _calibration_shapes(request: BuildRequest) -> dict[str, tuple[int, ...]]:
    if request.calibrator == "plan" or request.dataset is None:
        return {p.name: p.opt for p in request.profiles.values()}
    first = next(iter(request.dataset.batches(request.batch_size, limit=request.calibration_samples)), None)
    if first is None:
        raise BackendError(f"calibration data {getattr(request.dataset, 'source', '')} contains no samples")
    return {name: tuple(first[name].shape) for name in request.profiles}


def _calibrator(trt: ModuleType, request: BuildRequest, shapes: dict[str, tuple[int, ...]]) -> Any:
    if request.calibrator == "plan":
        return plan_calibrator(trt, request.cache, "entropy")
    if request.dataset is None:
        raise BackendError(f"calibrator={request.calibrator!r} needs calibration_data (the calibration set)")
    if request.device is None:
        raise BackendError("calibration needs device buffers (torch, cupy or cuda-python)")
    return dataset_calibrator(
        trt,
        request.calibrator,
        request.dataset,
        list(request.profiles),
        batch_size=request.batch_size,
        device=request.device,
        calibration_shapes=shapes,
        limit=request.calibration_samples,
        cache_path=str(request.calibration_cache_out) if request.calibration_cache_out else None,
    )


def _build_implicit(trt: ModuleType, request: BuildRequest) -> BuildResult:
    logger = build_common.make_logger(trt)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # weakly typed: the builder picks precisions per layer
    parser = build_common.parse_onnx(trt, builder, network, logger, request.float_onnx)
    config = builder.create_builder_config()
    profiles = build_common.configure(trt, builder, config, request)
    flags = _precision_flags(request)
    for name in flags:
        config.set_flag(getattr(trt.BuilderFlag, name))
    details: dict[str, Any] = {
        "network": "weakly typed (implicit quantization)",
        "source": request.float_onnx.name,
        "builder_flags": list(flags),
        "optimization_profiles": len(profiles),
    }
    precisions = set(request.node_precisions.values())
    # Float layers are pinned where the builder could otherwise choose another precision than the plan's:
    # next to INT8 layers (their I/O has ranges) or between FP16/BF16 and FP32 layers (same rule as trtexec's).
    if ("INT8" in flags or len(precisions) > 1) and precisions & set(_FLOAT_TYPES):
        details.update(constrain_layers(trt, network, request))
        if details["constrained_layers"]:
            config.set_flag(trt.BuilderFlag.PREFER_PRECISION_CONSTRAINTS)
            details["builder_flags"].append("PREFER_PRECISION_CONSTRAINTS")
    calibrator = None
    if "INT8" in flags:
        shapes = _calibration_shapes(request)
        calibrator = _calibrator(trt, request, shapes)
        config.int8_calibrator = calibrator
        if any_dynamic(request.profiles):
            config.set_calibration_profile(build_common.fixed_profile(builder, shapes))
            details["calibration_profile"] = {k: list(v) for k, v in shapes.items()}
        details["calibrator"] = request.calibrator
    try:
        engine = build_common.build(builder, network, config, request.float_onnx.name)
    except BackendError as exc:
        if calibrator is not None and calibrator.error:
            raise BackendError(f"{exc}; calibrator: {calibrator.error}") from None
        raise
    del parser  # it owns the network's weights: alive until the engine is built
    written = None
    if calibrator is not None:
        if request.calibrator == "plan":
            details["plan_cache_reads"] = calibrator.cache_reads
            if calibrator.batches_requested:
                details["warning"] = "TensorRT asked the plan calibrator for data; check the engine's scales"
        else:
            details["calibration_batches"] = calibrator.batches_served
            details["skipped_partial_batches"] = calibrator.batches_skipped
            written = calibrator.written
    return BuildResult(engine, details, written)
