"""TensorRT 11.x: explicit quantization on a strongly typed network — the only INT8 path.

TensorRT 11 removed implicit quantization, the INT8 calibrators, ``BuilderFlag.FP16/BF16/
INT8``, ``set_dynamic_range`` and per-layer precision; every network is strongly typed
(the ``STRONGLY_TYPED`` creation flag is accepted and ignored). INT8 comes only from the
Q/DQ nodes of the TensorRT-ready ONNX and FP16/BF16 only from its tensor types, so the
builder here sets nothing but the workspace and the optimization profile. This module must
never touch the removed names (the tests check it against 11.x's API surface).
"""

from __future__ import annotations

from types import ModuleType

from mpcompile.backends.api import BackendError
from mpcompile_tensorrt import build_common
from mpcompile_tensorrt.build_common import BuildRequest, BuildResult

DEFAULT_QUANTIZATION = "explicit"
QUANTIZATION_MODES = ("explicit",)


def network_flags(trt: ModuleType) -> int:
    flag = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    return 0 if flag is None else 1 << int(flag)


def build(trt: ModuleType, request: BuildRequest) -> BuildResult:
    if request.quantization != "explicit":
        raise BackendError(
            f"TensorRT {getattr(trt, '__version__', '11')} has no implicit quantization (removed in 11.0); "
            f"use quantization='explicit' (the TensorRT-ready QDQ ONNX)"
        )
    logger = build_common.make_logger(trt)
    builder = trt.Builder(logger)
    network = builder.create_network(network_flags(trt))
    parser = build_common.parse_onnx(trt, builder, network, logger, request.qdq_onnx)
    config = builder.create_builder_config()
    profiles = build_common.configure(trt, builder, config, request)
    engine = build_common.build(builder, network, config, request.qdq_onnx.name)
    del parser  # it owns the network's weights: alive until the engine is built
    return BuildResult(
        engine,
        {"network": "strongly typed", "source": request.qdq_onnx.name, "optimization_profiles": len(profiles)},
    )
