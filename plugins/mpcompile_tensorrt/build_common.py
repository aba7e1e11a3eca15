"""Engine-building steps shared by the TensorRT 10 and 11 paths.

Only API that exists unchanged in both major versions is used here: ``Builder``,
``create_network``, ``OnnxParser.parse_from_file``, ``create_builder_config``,
``set_memory_pool_limit(MemoryPoolType.WORKSPACE, …)``, ``create_optimization_profile`` /
``set_shape`` / ``add_optimization_profile`` and ``build_serialized_network``. Everything
version-specific lives in ``trt10.py`` / ``trt11.py``. Every function takes the ``tensorrt``
module as an argument, so the paths can be checked against a recorded API surface.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

from mpcompile.backends.api import BackendError, Precision
from mpcompile_tensorrt.profiles import InputProfile, any_dynamic


@dataclasses.dataclass
class BuildRequest:
    """Everything a version-specific builder needs; files are already written."""

    qdq_onnx: Path
    float_onnx: Path
    quantization: str  # "explicit" | "implicit"
    profiles: Mapping[str, InputProfile]
    workspace: int
    calibrator: str = "plan"  # implicit: "plan" | "entropy" | "minmax"
    cache: bytes = b""  # the plan's calibration cache (implicit, calibrator "plan")
    node_precisions: Mapping[str, Precision] = dataclasses.field(default_factory=dict)
    dataset: Any = None  # entropy/minmax calibration data (an mpcompile Dataset)
    calibration_samples: int | None = None
    batch_size: int = 32
    device: Any = None  # cuda_memory.DeviceBuffers, for calibration batches
    calibration_cache_out: Path | None = None


@dataclasses.dataclass
class BuildResult:
    engine: bytes
    details: dict[str, Any] = dataclasses.field(default_factory=dict)
    calibrator_cache: bytes | None = None  # what TensorRT wrote through the calibrator (entropy/minmax)


def make_logger(trt: ModuleType) -> Any:
    return trt.Logger(trt.Logger.WARNING)


def parse_onnx(trt: ModuleType, builder: Any, network: Any, logger: Any, path: Path) -> Any:
    """Parse ``path`` into ``network``. The returned parser owns the weights: keep it until the engine is built."""
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(path)):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        shown = "; ".join(errors[:5]) or "no error reported"
        raise BackendError(f"TensorRT's ONNX parser rejected {path.name}: {shown}")
    return parser


def configure(trt: ModuleType, builder: Any, config: Any, request: BuildRequest) -> list[Any]:
    """Workspace limit and one optimization profile when an input is dynamic; returns the profiles added."""
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(request.workspace))
    if not any_dynamic(request.profiles):
        return []
    profile = builder.create_optimization_profile()
    for p in request.profiles.values():
        profile.set_shape(p.name, p.min, p.opt, p.max)
    config.add_optimization_profile(profile)
    return [profile]


def fixed_profile(builder: Any, shapes: Mapping[str, tuple[int, ...]]) -> Any:
    """A profile with min = opt = max (a calibration profile)."""
    profile = builder.create_optimization_profile()
    for name, shape in shapes.items():
        profile.set_shape(name, shape, shape, shape)
    return profile


def build(builder: Any, network: Any, config: Any, what: str) -> bytes:
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise BackendError(f"TensorRT could not build an engine from {what}; TensorRT's log above says why")
    return bytes(serialized)
